//! The handle of an acquired lock.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use crate::error::{Error, LossReason};
use crate::lease::Lease;
use crate::manager::LockManager;
use crate::queue::Holding;

/// A lock held on a quorum of instances, until [`remaining`](Self::remaining) reaches zero.
///
/// Methods take `&self`, so a handle can be shared with a task that extends or checks it.
///
/// # Dropping
///
/// Dropping a held lock never blocks and never panics. When the manager has a
/// [`Spawner`](crate::Spawner) (the tokio one in `redlock-fred`, the simulation's in
/// `redlock-mock`), the release is sent in the background; without one the lock expires by its
/// TTL. Either way its renewals stop. Prefer [`release`](Self::release) (it reports a lost lock)
/// or the scoped form [`LockManager::with_lock`].
///
/// A handle rebuilt by [`LockManager::get_lock`] is *borrowed* until [`adopt`](Self::adopt)ed:
/// dropping it sends nothing, and closing the manager leaves the lock to its owner.
#[must_use = "dropping a Lock releases it at once; bind it (`let lock = ...`) for as long as the \
              resource is used, or use LockManager::with_lock"]
pub struct Lock {
    pub(crate) shared: Arc<LockShared>,
    pub(crate) manager: LockManager,
}

pub(crate) struct LockShared {
    pub(crate) id: u64,
    pub(crate) resource: Box<[u8]>,
    pub(crate) key: Arc<[u8]>,
    pub(crate) token: Arc<[u8]>,
    /// Whether the manager owns the lock (registered; released on drop and close), as opposed
    /// to a borrowed handle from `get_lock`.
    pub(crate) owned: AtomicBool,
    /// Counted among the manager's local holders of the key (see the local queue) until it is
    /// released, lost or dropped.
    pub(crate) holding: Mutex<Option<Holding>>,
    /// The acquiring call's hand-off listeners, kept until the lock is released, lost or
    /// dropped: a hand-off to our token that arrives after the grant (a late one from an
    /// instance that refused us in the round) is then absorbed here, where it would otherwise be
    /// passed on as a waiter gone, releasing a key of a lock that is held.
    pub(crate) listening: Mutex<Option<crate::wait::Listeners>>,
    /// A release round went out for this lock.
    pub(crate) release_sent: AtomicBool,
    /// Counts reconnection re-checks that found an instance without our token (see
    /// `manager::recover`): an extend round that saw it change must not count that instance
    /// again on the strength of an answer given before.
    pub(crate) rechecks: AtomicU64,
    /// The fencing token of a fenced acquire; set once, before the handle is made.
    pub(crate) fence: Option<u64>,
    state: Mutex<LockState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Held,
    Released,
    Lost(LossReason),
}

#[derive(Debug)]
pub(crate) struct LockState {
    pub(crate) status: Status,
    /// The current lease: every deadline and renewal time is read from it.
    pub(crate) lease: Lease,
    /// The lease used by [`Lock::extend`].
    pub(crate) ttl: Duration,
    /// Tasks waiting for the status to leave `Held`.
    pub(crate) wakers: Vec<Waker>,
}

impl LockState {
    pub(crate) fn remaining(&self, now: Duration) -> Duration {
        match self.status {
            Status::Held => self.lease.remaining(now),
            Status::Released | Status::Lost(_) => Duration::ZERO,
        }
    }
}

impl LockShared {
    pub(crate) fn new(
        id: u64,
        resource: &[u8],
        key: Arc<[u8]>,
        token: Arc<[u8]>,
        ttl: Duration,
        lease: Lease,
    ) -> Self {
        Self {
            id,
            resource: resource.into(),
            key,
            token,
            owned: AtomicBool::new(false),
            holding: Mutex::new(None),
            listening: Mutex::new(None),
            release_sent: AtomicBool::new(false),
            rechecks: AtomicU64::new(0),
            fence: None,
            state: Mutex::new(LockState {
                status: Status::Held,
                lease,
                ttl,
                wakers: Vec::new(),
            }),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, LockState> {
        // Every update writes whole fields, so a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the lock lost; whether it was held until now (a loss is reported once).
    pub(crate) fn mark_lost(&self, reason: LossReason) -> bool {
        self.leave_held(Status::Lost(reason))
    }

    /// Marks the lock released; whether it was held until now.
    pub(crate) fn mark_released(&self) -> bool {
        self.leave_held(Status::Released)
    }

    /// Ends the `Held` status (a lost lock may still become released) and wakes its watchers.
    /// Whether the status was `Held` until this call.
    fn leave_held(&self, to: Status) -> bool {
        let (wakers, was_held) = {
            let mut state = self.state();
            let was_held = match (state.status, to) {
                (Status::Released, _) | (Status::Lost(_), Status::Lost(_)) => return false,
                (from, _) => from == Status::Held,
            };
            state.status = to;
            (std::mem::take(&mut state.wakers), was_held)
        };
        wakers.into_iter().for_each(Waker::wake);
        was_held
    }
}

impl Lock {
    pub(crate) fn new(shared: Arc<LockShared>, manager: LockManager) -> Self {
        Self { shared, manager }
    }

    /// The resource name, without the key prefix.
    #[must_use]
    pub fn resource(&self) -> &[u8] {
        &self.shared.resource
    }

    /// The random token stored under the key; with the resource name it identifies the lock
    /// (see [`LockManager::get_lock`]).
    #[must_use]
    pub fn token(&self) -> &[u8] {
        &self.shared.token
    }

    /// The fencing token of a fenced lock ([`LockOptions::fenced`](crate::LockOptions::fenced),
    /// [`LockManagerBuilder::fenced`](crate::LockManagerBuilder::fenced)); `None` for a plain
    /// lock, and for a handle rebuilt by [`LockManager::get_lock`] (the fence is not stored
    /// with the lock). It stays the same across extends.
    ///
    /// Each fenced grant of a resource gets a fence greater than that of every grant handed out
    /// before it, as long as the instances keep their counters (see the crate docs, "Fencing
    /// tokens"): send it with every write to the protected resource, which rejects a write whose
    /// fence is lower than the highest it has seen.
    #[must_use]
    pub fn fence(&self) -> Option<u64> {
        self.shared.fence
    }

    /// The lease used by [`extend`](Self::extend).
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.shared.state().ttl
    }

    /// The validity granted by the last successful acquire or extend, at the moment it was
    /// granted: `ttl − elapsed − drift`.
    #[must_use]
    pub fn validity(&self) -> Duration {
        self.shared.state().lease.validity()
    }

    /// Validity left now, on the manager's clock; zero once released, lost or expired. Purely
    /// local: a process paused past this deadline must not trust the lock, whatever the servers
    /// say.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        let now = self.manager.inner.clock().now();
        self.shared.state().remaining(now)
    }

    /// Whether [`remaining`](Self::remaining) is above zero (aioredlock's `lock.valid`).
    #[must_use]
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// Whether this manager owns the lock: it releases it when the handle is dropped and when
    /// the manager is closed. Locks from [`LockManager::lock`] are owned; handles from
    /// [`LockManager::get_lock`] are borrowed until [`adopt`](Self::adopt)ed.
    #[must_use]
    pub fn is_owned(&self) -> bool {
        self.shared.owned.load(Ordering::Acquire)
    }

    /// Makes this manager the owner of a borrowed handle (from [`LockManager::get_lock`]):
    /// from now on dropping it releases the lock, closing the manager releases it, and it is
    /// listed by [`LockManager::active_locks`]. Only adopt a lock whose previous owner has
    /// stopped using it. Adopting an owned, released or lost handle changes nothing.
    pub fn adopt(&self) {
        if self.shared.state().status == Status::Held {
            self.manager.inner.register(&self.shared);
        }
    }

    /// The manager this lock belongs to.
    #[must_use]
    pub fn manager(&self) -> &LockManager {
        &self.manager
    }

    /// Extends the lock by its own TTL (aioredlock's `lock.extend()`).
    ///
    /// # Errors
    /// As [`extend_for`](Self::extend_for).
    pub async fn extend(&self) -> Result<(), Error> {
        let ttl = self.ttl();
        self.extend_for(ttl).await
    }

    /// Resets the lease to `ttl` on a quorum, measured from the start of this call. On any
    /// failure the deadline is unchanged.
    ///
    /// A lock whose validity already ran out is refused without a network call: a key that
    /// expired may already belong to someone else, and extending never re-creates a key.
    ///
    /// # Errors
    /// - [`Error::InvalidInput`]: unusable TTL;
    /// - [`Error::Lost`]: validity ran out, or a quorum no longer holds our token (the handle
    ///   then stays lost);
    /// - [`Error::Unavailable`]: too few instances answered (the lock keeps its old deadline);
    /// - [`Error::ValidityExpired`]: a quorum extended it, but too slowly to leave validity;
    /// - [`Error::Released`], [`Error::Closed`].
    pub async fn extend_for(&self, ttl: Duration) -> Result<(), Error> {
        let inner = &self.manager.inner;
        inner.ensure_open()?;
        let ttl = inner.ttl(ttl)?;
        inner
            .extend(&self.shared, ttl)
            .await
            .map_err(|e| e.about(&self.shared.resource))
    }

    /// Releases the lock on every instance (aioredlock's `unlock`).
    ///
    /// Releasing is always attempted, even for a lock already expired or lost, to clean up
    /// whatever keys are left; the result tells whether the lock was still ours until now.
    /// After any result other than [`Error::Unavailable`] the handle is released for good.
    ///
    /// With a spawner (see [`LockManagerBuilder::spawner`](crate::LockManagerBuilder::spawner))
    /// it returns as soon as a quorum has answered: the lock is then free for the next holder.
    /// The deletes to the slower instances are already on their way and are seen through in
    /// the background, up to the per-instance timeout; a key on an instance that never answers
    /// goes at its expiry. Such a leftover key is harmless: it holds our token, which no other
    /// lock uses, and alone it is no quorum. Without a spawner, and at
    /// [`LockManager::close`](crate::LockManager::close), it waits for every instance.
    ///
    /// # Errors
    /// - [`Error::Lost`]: the validity had run out, or a quorum did not hold our token: whatever
    ///   the lock protected may have been used by someone else meanwhile;
    /// - [`Error::Unavailable`]: too few instances answered; the lock may still be held, and
    ///   the handle can be released again;
    /// - [`Error::Released`]: already released; [`Error::Closed`].
    pub async fn release(&self) -> Result<(), Error> {
        let inner = &self.manager.inner;
        inner.ensure_open()?;
        inner
            .release(&self.shared)
            .await
            .map_err(|e| e.about(&self.shared.resource))
    }

    /// Asks the instances whether a quorum still holds this lock's token, and returns the
    /// validity left.
    ///
    /// # Errors
    /// - [`Error::Lost`]: validity ran out or a quorum does not hold the token (the handle then
    ///   stays lost);
    /// - [`Error::Unavailable`], [`Error::Released`], [`Error::Closed`].
    pub async fn check(&self) -> Result<Duration, Error> {
        let inner = &self.manager.inner;
        inner.ensure_open()?;
        inner
            .check(&self.shared)
            .await
            .map_err(|e| e.about(&self.shared.resource))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // A released or lost lock left the registry when its status changed: nothing to do, and
        // no registry lock taken on the usual lock-release-drop path.
        if self.shared.state().status != Status::Held {
            return;
        }
        let inner = &self.manager.inner;
        match (&inner.spawner, inner.ensure_open(), self.is_owned()) {
            (Some(spawner), Ok(()), true) => {
                // Out of the registry now; the next local waiter is let in once the release
                // round is done (it would only find the keys still there before).
                inner.forget(&self.shared);
                let shared = Arc::clone(&self.shared);
                let manager = self.manager.clone();
                spawner.spawn(Box::pin(async move {
                    // Nobody is left to hear the outcome; the TTL covers a failure. The handle
                    // is gone either way: stop counting it as a local holder.
                    drop(manager.inner.release(&shared).await);
                    manager.inner.unregister(&shared);
                    shared.mark_released();
                }));
            }
            // Stop renewals; the keys expire by their TTL (or stay with their owner, for a
            // borrowed handle).
            _ => {
                inner.unregister(&self.shared);
                self.shared.mark_released();
            }
        }
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state();
        f.debug_struct("Lock")
            .field("resource", &String::from_utf8_lossy(&self.shared.resource))
            .field("token", &String::from_utf8_lossy(&self.shared.token))
            .field("status", &state.status)
            .field("validity", &state.lease.validity())
            .field("owned", &self.is_owned())
            .finish()
    }
}
