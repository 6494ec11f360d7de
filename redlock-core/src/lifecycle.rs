//! Keeping a lock alive, noticing its loss, and scoping it to a piece of work.
//!
//! Everything here is a plain future: the renewal loop ([`Lock::keep_alive`]) runs wherever it
//! is polled, so the scoped form ([`LockManager::with_lock`]) needs no spawned task and works on
//! any executor. Only [`LockManager::lock_auto`] spawns, through the manager's [`Spawner`].
//!
//! [`Spawner`]: crate::Spawner

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::select;

use crate::error::{Error, InvalidInput, LossReason};
use crate::lock::{Lock, LockShared, Status};
use crate::manager::{Inner, LockManager};
use crate::telemetry;

/// What the scoped form does when the lock is lost while the work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnLoss {
    /// Stop the work (drop its future) and return [`Error::Lost`].
    #[default]
    Cancel,
    /// Let the work finish; it can observe the loss through [`LockWatch::lost`] or
    /// [`LockWatch::is_valid`].
    KeepRunning,
}

/// Options of the scoped form and of auto-extended locks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct AutoExtend {
    /// The lease renewed each time; `None` uses the manager's `internal_lock_timeout` (10 s).
    pub lease: Option<Duration>,
    /// At most this many renewals, then the lock runs out (the Redlock spec suggests a cap);
    /// `None` renews for as long as the work runs.
    pub max_renewals: Option<u32>,
    /// What the scoped form does on loss.
    pub on_loss: OnLoss,
}

impl AutoExtend {
    /// Renew `lease` each time instead of `internal_lock_timeout`.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Stop renewing after `n` renewals.
    pub fn with_max_renewals(mut self, n: u32) -> Self {
        self.max_renewals = Some(n);
        self
    }

    /// What to do with the work when the lock is lost.
    pub fn with_on_loss(mut self, on_loss: OnLoss) -> Self {
        self.on_loss = on_loss;
        self
    }
}

/// A read-only view of a lock, for the work it protects: validity, loss notification, and an
/// ownership check. Cheap to clone; does not release anything when dropped.
#[derive(Clone)]
pub struct LockWatch {
    shared: Arc<LockShared>,
    manager: LockManager,
}

impl std::fmt::Debug for LockWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockWatch")
            .field("resource", &String::from_utf8_lossy(&self.shared.resource))
            .field("status", &self.shared.state().status)
            .finish()
    }
}

impl LockWatch {
    /// The resource name, without the key prefix.
    #[must_use]
    pub fn resource(&self) -> &[u8] {
        &self.shared.resource
    }

    /// The lock's token.
    #[must_use]
    pub fn token(&self) -> &[u8] {
        &self.shared.token
    }

    /// The lock's fencing token (see [`Lock::fence`]).
    #[must_use]
    pub fn fence(&self) -> Option<u64> {
        self.shared.fence
    }

    /// Validity left now; zero once lost, released or expired.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.shared
            .state()
            .remaining(self.manager.inner.clock().now())
    }

    /// Whether validity is left.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// Completes when the lock is lost (see [`Lock::lost`]).
    pub async fn lost(&self) -> LossReason {
        wait_lost(&self.shared, &self.manager.inner).await
    }

    /// Asks the instances whether a quorum still holds the token (see [`Lock::check`]).
    ///
    /// # Errors
    /// As [`Lock::check`].
    pub async fn check(&self) -> Result<Duration, Error> {
        self.manager.inner.ensure_open()?;
        self.manager
            .inner
            .check(&self.shared)
            .await
            .map_err(|e| e.about(&self.shared.resource))
    }
}

/// Completes when the lock's status leaves `Held`.
struct StatusChange<'a> {
    shared: &'a LockShared,
}

impl Future for StatusChange<'_> {
    type Output = Status;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Status> {
        let mut state = self.shared.state();
        if state.status != Status::Held {
            return Poll::Ready(state.status);
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Sleeps until `until` on the manager's clock, or until the lock's status changes.
async fn sleep_or_change(shared: &LockShared, inner: &Inner, until: Duration) {
    let now = inner.clock().now();
    if until <= now {
        return;
    }
    let change = pin!(StatusChange { shared });
    drop(select(change, inner.clock().sleep(until - now)).await);
}

/// Completes with the reason once the lock is lost: marked lost by an extend or check, or its
/// deadline passed. Never completes once the lock is released.
pub(crate) async fn wait_lost(shared: &LockShared, inner: &Inner) -> LossReason {
    loop {
        let (status, deadline) = {
            let state = shared.state();
            (state.status, state.lease.deadline())
        };
        match status {
            Status::Lost(reason) => return reason,
            Status::Released => futures::future::pending::<()>().await,
            Status::Held => {}
        }
        if inner.clock().now() >= deadline {
            drop(inner.lose(shared, LossReason::Expired, None));
            continue;
        }
        sleep_or_change(shared, inner, deadline).await;
    }
}

/// Renews the lock until it is released (`Ok`) or lost (`Err`).
///
/// Renewal starts at the lease's `renew_at` (60 % in, or earlier so that a whole round fits
/// before the deadline), every extend round is cut at the deadline, and the loss is reported at
/// the deadline at the latest.
pub(crate) async fn keep_alive(
    shared: &LockShared,
    inner: &Inner,
    max_renewals: Option<u32>,
) -> Result<(), Error> {
    let mut renewals: u32 = 0;
    loop {
        inner.ensure_open()?;
        let (status, lease, ttl) = {
            let s = shared.state();
            (s.status, s.lease, s.ttl)
        };
        match status {
            Status::Released => return Ok(()),
            Status::Lost(reason) => return Err(Error::lost(reason, None)),
            Status::Held => {}
        }
        let now = inner.clock().now();
        if !lease.is_valid(now) {
            return Err(inner.lose(shared, LossReason::Expired, None));
        }
        let may_renew = max_renewals.is_none_or(|max| renewals < max);
        let renew_at = if may_renew {
            lease.renew_at()
        } else {
            lease.deadline()
        };
        if now < renew_at {
            sleep_or_change(shared, inner, renew_at).await;
            continue;
        }
        let renewed = inner.extend(shared, ttl).await;
        telemetry::renewal(shared, &renewed);
        match renewed {
            Ok(()) => renewals = renewals.saturating_add(1),
            Err(Error::Released) => return Ok(()),
            Err(e @ (Error::Lost(_) | Error::Closed | Error::InvalidInput(_))) => return Err(e),
            Err(_) => {
                // Unavailable or too slow: try again soon, but well before the deadline.
                let now = inner.clock().now();
                let left = lease.remaining(now);
                let pause = inner
                    .retry_delay()
                    .min(left / 3)
                    .max(Duration::from_millis(1));
                sleep_or_change(shared, inner, now.saturating_add(pause)).await;
            }
        }
    }
}

impl Lock {
    /// A view of this lock for the work it protects.
    #[must_use]
    pub fn watch(&self) -> LockWatch {
        LockWatch {
            shared: Arc::clone(&self.shared),
            manager: self.manager.clone(),
        }
    }

    /// Completes with the reason when this lock is lost: its validity ran out without renewal,
    /// an extend or check found that a quorum no longer holds it, or a re-check after a
    /// reconnection left it on fewer than a quorum
    /// ([`LossReason::InstancesLost`], see
    /// [`restart_recovery`](crate::LockManagerBuilder::restart_recovery)). Never completes
    /// after a release. Meant for `select!` next to the work the lock protects.
    pub async fn lost(&self) -> LossReason {
        wait_lost(&self.shared, &self.manager.inner).await
    }

    /// Renews the lock at 60 % of its lease until it is released (`Ok(())`) or lost. A failed
    /// renewal is retried until the deadline. Poll it next to the work (or spawn it); dropping
    /// it stops the renewals.
    ///
    /// # Errors
    /// [`Error::Lost`] when the lock is lost; [`Error::Closed`] when the manager closes.
    pub async fn keep_alive(&self) -> Result<(), Error> {
        keep_alive(&self.shared, &self.manager.inner, None).await
    }

    /// Like [`keep_alive`](Self::keep_alive), with at most `max_renewals` renewals.
    ///
    /// # Errors
    /// As [`keep_alive`](Self::keep_alive); after the last renewal the lock runs out and this
    /// returns [`Error::Lost`] with [`LossReason::Expired`].
    pub async fn keep_alive_capped(&self, max_renewals: u32) -> Result<(), Error> {
        keep_alive(&self.shared, &self.manager.inner, Some(max_renewals)).await
    }
}

impl LockManager {
    /// Acquires `resource` with the `internal_lock_timeout` lease and keeps it alive in the
    /// background until it is released, dropped or lost (aioredlock's `lock()` without
    /// `lock_timeout`). Needs a spawner; without one, use [`with_lock`](Self::with_lock) or poll
    /// [`Lock::keep_alive`] yourself.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the manager has no spawner (nothing is sent); otherwise as
    /// [`lock`](Self::lock).
    pub async fn lock_auto(&self, resource: impl AsRef<[u8]>) -> Result<Lock, Error> {
        self.lock_auto_with(resource, AutoExtend::default()).await
    }

    /// [`lock_auto`](Self::lock_auto) with options (lease, renewal cap).
    ///
    /// # Errors
    /// As [`lock_auto`](Self::lock_auto).
    pub async fn lock_auto_with(
        &self,
        resource: impl AsRef<[u8]>,
        options: AutoExtend,
    ) -> Result<Lock, Error> {
        let Some(spawner) = self.inner.spawner.clone() else {
            return Err(Error::invalid(InvalidInput::Config(
                "auto-extension in the background needs a spawner: use with_lock() or poll \
                 Lock::keep_alive()"
                    .into(),
            )));
        };
        let lease = options
            .lease
            .unwrap_or(self.inner.config.internal_lock_timeout);
        let lock = self.lock(resource, lease).await?;
        let shared = Arc::clone(&lock.shared);
        let manager = self.clone();
        spawner.spawn(Box::pin(async move {
            // Nobody awaits the outcome: the handle shows it (lost(), remaining()), and so does
            // the telemetry, where enabled.
            let renewed = keep_alive(&shared, &manager.inner, options.max_renewals).await;
            telemetry::background_renewal_ended(&shared, &renewed);
        }));
        Ok(lock)
    }
}
