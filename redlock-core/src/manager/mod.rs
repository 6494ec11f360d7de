//! The lock manager: acquire with retries, extend, release, queries, close.
//!
//! The rounds are the engine's; the manager adds what spans them: retries ([`acquire`]), the
//! handles' lease and status ([`held`]), the registry, tokens, the spawner, fair mode, closing.

mod acquire;
mod held;
mod recover;
mod stragglers;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::backend::{BackendError, LockBackend};
use crate::config::{Config, LockManagerBuilder};
use crate::engine::Engine;
use crate::error::{Error, InvalidInput, LossReason};
use crate::gate::Gate;
use crate::lease::Lease;
use crate::lock::{Lock, LockShared};
use crate::options::{LockOptions, Patience};
use crate::queue::KeyQueues;
use crate::round::Verdict;
use crate::runtime::{Clock, RandomSource, Spawner};
use crate::telemetry;
use crate::wait::Fairness;

/// The longest key (prefix + resource name) accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// The longest token accepted when rehydrating a lock, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Random bytes in a generated token (hex-encoded: the first 32 ASCII characters).
const TOKEN_BYTES: usize = 16;

/// Numbers the managers of this process, so that tokens differ between managers by construction
/// even when two of them draw the same random bytes (a seeded source).
static MANAGERS: AtomicU64 = AtomicU64::new(0);

/// Runs the Redlock algorithm over N independent instances.
///
/// Cheap to clone (all clones share one state); `Send + Sync`. Build one with
/// [`LockManager::builder`].
#[derive(Clone)]
pub struct LockManager {
    pub(crate) inner: Arc<Inner>,
}

/// The manager's state. The rounds themselves are the engine's; this adds what spans rounds:
/// the registry of held locks, tokens, the spawner, fair mode and closing.
pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) config: Config,
    random: Arc<dyn RandomSource>,
    pub(crate) spawner: Option<Arc<dyn Spawner>>,
    closed: AtomicBool,
    /// This manager's number in the process (see [`MANAGERS`]).
    nonce: u64,
    next_lock_id: AtomicU64,
    /// Owned locks handed out and not yet released, lost or dropped.
    active: Mutex<HashMap<u64, Arc<LockShared>>>,
    pub(crate) fairness: Fairness,
    /// Keys refused lately, whose first attempts queue for a hand-off.
    pub(crate) contention: crate::wait::Contention,
    /// One contender per key: the local FIFO queues.
    pub(crate) queues: KeyQueues,
    /// Releases finishing in the background after `unlock` returned at a quorum.
    pub(crate) stragglers: Arc<stragglers::Stragglers>,
    /// Whether the reconnection subscriptions were made (at the first owned lock).
    watching: AtomicBool,
    /// The reconnection subscriptions, stopped on close and drop.
    reconnect_tasks: Mutex<Vec<futures::future::AbortHandle>>,
}

/// A snapshot of a lock this manager holds (see [`LockManager::active_locks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveLock {
    /// The resource name, without the key prefix.
    pub resource: Vec<u8>,
    /// The lock's token.
    pub token: Vec<u8>,
    /// Validity left on the manager's clock.
    pub remaining: Duration,
}

/// What [`LockManager::close`] did.
#[derive(Debug, Default)]
pub struct CloseReport {
    /// Locks released on a quorum.
    pub released: usize,
    /// Locks that could not be released (resource name and why); they expire by their TTL.
    pub failed: Vec<(Vec<u8>, Error)>,
    /// Instances whose backend failed to close.
    pub backend_errors: Vec<(String, BackendError)>,
}

impl fmt::Debug for LockManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockManager")
            .field("instances", &self.inner.engine.instances)
            .field("config", &self.inner.config)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LockManager {
    /// A builder with aioredlock's defaults; `clock` drives all deadlines and sleeps.
    pub fn builder(clock: Arc<dyn Clock>) -> LockManagerBuilder {
        LockManagerBuilder::new(clock)
    }

    pub(crate) fn from_parts(
        instances: Vec<Arc<dyn LockBackend>>,
        config: Config,
        clock: Arc<dyn Clock>,
        random: Arc<dyn RandomSource>,
        spawner: Option<Arc<dyn Spawner>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine: Engine {
                    handoff: config.hand_off
                        && config.wake_on_release
                        && instances.iter().all(|b| b.handoff().is_some()),
                    handoff_grants: config.hand_off
                        && config.wake_on_release
                        && instances
                            .iter()
                            .all(|b| b.handoff().is_some_and(|h| h.grants_by_hand_off())),
                    gates: instances
                        .iter()
                        .map(|_| Gate::new(config.max_in_flight))
                        .collect(),
                    instances: instances.into_boxed_slice(),
                    clock,
                    drift: config.drift,
                    instance_timeout: config.instance_timeout,
                },
                fairness: Fairness::new(config.fair),
                contention: crate::wait::Contention::default(),
                config,
                random,
                spawner,
                closed: AtomicBool::new(false),
                nonce: MANAGERS.fetch_add(1, Ordering::Relaxed),
                next_lock_id: AtomicU64::new(0),
                active: Mutex::new(HashMap::new()),
                queues: KeyQueues::default(),
                stragglers: Arc::default(),
                watching: AtomicBool::new(false),
                reconnect_tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The validated settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The number of instances a lock must be held on: `N / 2 + 1`.
    #[must_use]
    pub fn quorum(&self) -> usize {
        self.inner.engine.quorum()
    }

    /// The manager's clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.engine.clock
    }

    /// Acquires `resource` for `ttl`, retrying up to `retry_count` attempts in total.
    ///
    /// Each attempt sends the acquire to all instances at once; it succeeds when a quorum
    /// accepted it and validity is left: `ttl − elapsed − (ttl × drift_factor + 2 ms) > 0`, with
    /// `elapsed` measured from the start of that attempt. The returned lock is safe to use
    /// until [`Lock::remaining`] reaches zero. A failed attempt is released on every instance
    /// (also those that did not answer) before the next one. Between attempts the manager waits
    /// a random delay in the retry range, or less when the holder's release is announced (see
    /// [`LockManagerBuilder::wake_on_release`]); `retry_count` counts the attempts made when a
    /// delay ran out, plus the first.
    ///
    /// Takes at most `retry_count × (2 × instance_timeout + retry_delay_max)`; a fenced lock
    /// `retry_count × (4 × instance_timeout + retry_delay_max)` (two more rounds per attempt).
    ///
    /// # Errors
    /// - [`Error::InvalidInput`]: empty or too long name, unusable TTL (nothing is sent);
    /// - [`Error::Contended`]: held by another client in the last attempt;
    /// - [`Error::Unavailable`]: too few instances answered in the last attempt;
    /// - [`Error::ValidityExpired`]: quorum reached too slowly in the last attempt;
    /// - [`Error::Closed`]: the manager was closed.
    pub async fn lock(&self, resource: impl AsRef<[u8]>, ttl: Duration) -> Result<Lock, Error> {
        self.inner.ensure_open()?;
        let resource = resource.as_ref();
        let key = self.inner.key(resource)?;
        let ttl = self.inner.ttl(ttl)?;
        let token = self.inner.new_token();
        let patience = Patience::Attempts(self.inner.config.retry_count);
        let fenced = self.inner.config.fenced;
        telemetry::observed!(
            telemetry::Op::acquire(self.inner.clock(), resource, &token, ttl),
            self.inner
                .acquire(resource, key, token, ttl, patience, fenced)
        )
        .map_err(|e| e.about(resource))
    }

    /// One attempt, no waiting: the lock if the resource is free, `Contended` at once otherwise
    /// (also, without sending anything, when another task of this manager holds or is acquiring
    /// it). For a cache stampede: one task recomputes, the others serve the old value or back
    /// off. The same as [`lock_opts`](Self::lock_opts) with [`Patience::NoWait`].
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub async fn try_lock(&self, resource: impl AsRef<[u8]>, ttl: Duration) -> Result<Lock, Error> {
        self.lock_opts(resource, LockOptions::new(ttl).patience(Patience::NoWait))
            .await
    }

    /// [`lock`](Self::lock) with per-call options: the lease and how long to wait
    /// ([`Patience`]). Which to use:
    /// - a **cache stampede** (many tasks want to recompute one value):
    ///   [`Patience::NoWait`] ([`try_lock`](Self::try_lock)); the losers do not queue;
    /// - a **singleton job** (one of N workers runs it, the others skip):
    ///   [`Patience::NoWait`] or a short [`Patience::For`];
    /// - a **critical section** (every caller must get its turn):
    ///   [`Patience::UntilCancelled`] or a [`Patience::For`] the caller can afford.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub async fn lock_opts(
        &self,
        resource: impl AsRef<[u8]>,
        options: LockOptions,
    ) -> Result<Lock, Error> {
        self.inner.ensure_open()?;
        let resource = resource.as_ref();
        let key = self.inner.key(resource)?;
        let ttl = self.inner.ttl(options.ttl)?;
        let token = self.inner.new_token();
        let patience = options
            .patience
            .unwrap_or(Patience::Attempts(self.inner.config.retry_count));
        let fenced = options.fenced.unwrap_or(self.inner.config.fenced);
        if fenced {
            self.inner.check_fencing().map_err(|e| e.about(resource))?;
        }
        telemetry::observed!(
            telemetry::Op::acquire(self.inner.clock(), resource, &token, ttl),
            self.inner
                .acquire(resource, key, token, ttl, patience, fenced)
        )
        .map_err(|e| e.about(resource))
    }

    /// Extends `lock` to a fresh lease of `ttl` (see [`Lock::extend_for`]).
    ///
    /// # Errors
    /// As [`Lock::extend_for`].
    pub async fn extend(&self, lock: &Lock, ttl: Duration) -> Result<(), Error> {
        lock.extend_for(ttl).await
    }

    /// Releases `lock` (see [`Lock::release`]).
    ///
    /// # Errors
    /// As [`Lock::release`].
    pub async fn unlock(&self, lock: &Lock) -> Result<(), Error> {
        lock.release().await
    }

    /// Whether `resource` is held by anyone (this client or another) on a quorum of instances.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name; [`Error::Unavailable`] when too few instances
    /// answered to tell; [`Error::Closed`].
    pub async fn is_locked(&self, resource: impl AsRef<[u8]>) -> Result<bool, Error> {
        self.inner.ensure_open()?;
        let resource = resource.as_ref();
        let key = self.inner.key(resource)?;
        let engine = &self.inner.engine;
        let round = engine.inspect(&key, |state| state.is_some()).await;
        match round.verdict() {
            Verdict::Quorum => Ok(true),
            Verdict::Refused => Ok(false),
            Verdict::Undecided => {
                Err(Error::Unavailable(Box::new(engine.failure(round, 1))).about(resource))
            }
        }
    }

    /// Rebuilds a handle for a lock taken earlier (possibly by another process) from its resource
    /// name and token (aioredlock's `get_lock`), to inspect, extend or release it.
    ///
    /// The lock's validity is what a quorum of instances still grants it, less the drift
    /// allowance; later [`Lock::extend`] calls use `internal_lock_timeout` as the lease, and
    /// [`Lock::keep_alive`] renews it before that validity runs out.
    ///
    /// The handle is **borrowed**: dropping it, or closing this manager, does not release the
    /// lock (its owner may still be using it). An explicit [`Lock::release`] does. Call
    /// [`Lock::adopt`] to make this manager the owner (released on drop and on close, listed by
    /// [`active_locks`](Self::active_locks)), e.g. when taking over the work of a dead process.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name or token; [`Error::Lost`] when a quorum does not
    /// hold the token ([`LossReason::NotHeld`]) or what they grant leaves no validity
    /// ([`LossReason::Expired`]); [`Error::Unavailable`]; [`Error::Closed`].
    pub async fn get_lock(
        &self,
        resource: impl AsRef<[u8]>,
        token: impl AsRef<[u8]>,
    ) -> Result<Lock, Error> {
        self.inner.ensure_open()?;
        let resource = resource.as_ref();
        let key = self.inner.key(resource)?;
        let token = token.as_ref();
        if token.is_empty() {
            return Err(Error::invalid(InvalidInput::Token("is empty")));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::invalid(InvalidInput::Token("is too long")));
        }
        let ttl = self.inner.config.internal_lock_timeout;
        match self.inner.engine.rehydrate(&key, token, ttl).await {
            Ok(lease) => {
                let shared = self
                    .inner
                    .new_shared(resource, key, token.into(), ttl, lease, None);
                Ok(Lock::new(shared, self.clone()))
            }
            Err(rejected) => Err(match rejected.verdict {
                Verdict::Refused => Error::lost(LossReason::NotHeld, Some(rejected.failure)),
                Verdict::Quorum => Error::lost(LossReason::Expired, Some(rejected.failure)),
                Verdict::Undecided => Error::Unavailable(Box::new(rejected.failure)),
            }
            .about(resource)),
        }
    }

    /// The locks this manager holds right now (not released, lost, or dropped).
    #[must_use]
    pub fn active_locks(&self) -> Vec<ActiveLock> {
        let now = self.inner.engine.clock.now();
        let mut locks: Vec<ActiveLock> = self
            .inner
            .active()
            .values()
            .filter_map(|shared| {
                let remaining = shared.state().remaining(now);
                (!remaining.is_zero()).then(|| ActiveLock {
                    resource: shared.resource.to_vec(),
                    token: shared.token.to_vec(),
                    remaining,
                })
            })
            .collect();
        locks.sort_by(|a, b| a.resource.cmp(&b.resource));
        locks
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Releases every lock this manager holds, waits for the deletes of earlier releases that
    /// returned at a quorum (each bounded by the per-instance timeout), closes the backends,
    /// and makes every later call
    /// (on the manager, its clones and its locks) fail with [`Error::Closed`]. aioredlock's
    /// `destroy`. Closing twice is harmless. Acquires in progress (queued or making rounds) end
    /// with [`Error::Closed`] before their next attempt, within one attempt of the close (an
    /// attempt, its cleanup, a retry delay and the fair grace); one that wins a round meanwhile
    /// releases it.
    ///
    /// # Errors
    /// [`Error::Closed`] when already closed. Locks or backends that fail to release or close are
    /// listed in the report, not returned as an error.
    pub async fn close(&self) -> Result<CloseReport, Error> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        self.inner.stop_watching();
        let mut held: Vec<Arc<LockShared>> = self.inner.active().drain().map(|(_, s)| s).collect();
        // In the order they were taken, not the map's: the same program sends the same
        // requests in the same order every run (a seeded simulation replays exactly).
        held.sort_by_key(|shared| shared.id);
        let mut report = CloseReport::default();
        let releases = held.iter().map(|shared| {
            let shared = Arc::clone(shared);
            async move {
                let result = self.inner.release_at_close(&shared).await;
                (shared, result)
            }
        });
        for (shared, result) in futures::future::join_all(releases).await {
            match result {
                Ok(()) => report.released += 1,
                Err(e) => report.failed.push((shared.resource.to_vec(), e)),
            }
        }
        // Deletes still on their way from earlier releases go before their connections do.
        self.inner.stragglers.settled().await;
        let closes = self
            .inner
            .engine
            .instances
            .iter()
            .map(|b| async move { (b.id().to_owned(), b.close().await) });
        for (id, result) in futures::future::join_all(closes).await {
            if let Err(e) = result {
                report.backend_errors.push((id, e));
            }
        }
        Ok(report)
    }
}

impl Inner {
    pub(crate) fn clock(&self) -> &dyn Clock {
        self.engine.clock.as_ref()
    }

    pub(crate) fn ensure_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn active(&self) -> MutexGuard<'_, HashMap<u64, Arc<LockShared>>> {
        // The map stays consistent even if a holder panicked: entries are inserted or removed
        // whole.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key of `resource`: shared by the handle and the local queue (one allocation).
    pub(crate) fn key(&self, resource: &[u8]) -> Result<Arc<[u8]>, Error> {
        if resource.is_empty() {
            return Err(Error::invalid(InvalidInput::EmptyResource));
        }
        let prefix = &self.config.key_prefix;
        let len = prefix.len().saturating_add(resource.len());
        if len > MAX_KEY_LEN {
            return Err(Error::invalid(InvalidInput::ResourceTooLong(len)));
        }
        let key: Arc<[u8]> = prefix.iter().chain(resource).copied().collect();
        // A lock on a counter's or a hand-off queue's key would let it be taken as a lock, or
        // deleted by a release.
        if key.starts_with(crate::backend::RESERVED_KEY_PREFIX) {
            return Err(Error::invalid(InvalidInput::ReservedKey));
        }
        Ok(key)
    }

    /// Whether every instance keeps fencing counters, as a fenced lock needs.
    pub(crate) fn check_fencing(&self) -> Result<(), Error> {
        match self.engine.instances.iter().find(|b| b.fencing().is_none()) {
            Some(b) => Err(Error::invalid(InvalidInput::NoFencing(b.id().to_owned()))),
            None => Ok(()),
        }
    }

    pub(crate) fn ttl(&self, ttl: Duration) -> Result<Duration, Error> {
        crate::validity::normalize_ttl(ttl, self.config.drift)
            .map_err(|reason| Error::invalid(InvalidInput::Ttl { ttl, reason }))
    }

    /// 128 random bits, hex-encoded, then this manager's number and the lock's: the suffix makes
    /// two tokens of one process differ even when their random parts are equal (managers built
    /// with the same seed), since a key that already holds "our" token counts as acquired.
    pub(crate) fn new_token(&self) -> Arc<[u8]> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut raw = [0u8; TOKEN_BYTES];
        self.random.fill_bytes(&mut raw);
        // Built on the stack and copied once: the exact length, one allocation.
        let mut buf = [0u8; TOKEN_BYTES * 2 + 2 * 17];
        let mut len = 0;
        let mut put = |c: u8| {
            buf[len] = c;
            len += 1;
        };
        for b in raw {
            put(HEX[usize::from(b >> 4)]);
            put(HEX[usize::from(b & 0xf)]);
        }
        let seq = self.next_lock_id.fetch_add(1, Ordering::Relaxed);
        for n in [self.nonce, seq] {
            put(b'-');
            // Hex without leading zeros.
            let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
            for shift in (0..digits).rev() {
                put(HEX[usize::try_from((n >> (shift * 4)) & 0xf).unwrap_or(0)]);
            }
        }
        Arc::from(&buf[..len])
    }

    /// A random delay in the retry range.
    pub(crate) fn retry_delay(&self) -> Duration {
        let (min, max) = (self.config.retry_delay_min, self.config.retry_delay_max);
        let span = max.saturating_sub(min).as_nanos();
        if span == 0 {
            return min;
        }
        let offset = u128::from(self.random.next_u64()) % (span + 1);
        min.saturating_add(Duration::from_nanos(
            u64::try_from(offset).unwrap_or(u64::MAX),
        ))
    }

    /// A handle's shared state, not registered (a borrowed handle, until adopted).
    pub(crate) fn new_shared(
        &self,
        resource: &[u8],
        key: Arc<[u8]>,
        token: Arc<[u8]>,
        ttl: Duration,
        lease: Lease,
        fence: Option<u64>,
    ) -> Arc<LockShared> {
        let id = self.next_lock_id.fetch_add(1, Ordering::Relaxed);
        let mut shared = LockShared::new(id, resource, key, token, ttl, lease);
        shared.fence = fence;
        Arc::new(shared)
    }

    /// The reconnection subscriptions (handles only: consistent after any panic).
    fn reconnect_tasks(&self) -> MutexGuard<'_, Vec<futures::future::AbortHandle>> {
        self.reconnect_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Makes this manager the owner of `shared`: released on drop and on close, re-checked on
    /// reconnections.
    pub(crate) fn register(self: &Arc<Self>, shared: &Arc<LockShared>) {
        if !shared.owned.swap(true, Ordering::AcqRel) {
            self.active().insert(shared.id, Arc::clone(shared));
            self.watch_reconnects();
        }
    }

    /// Takes `shared` out of the registry (close no longer releases it).
    pub(crate) fn forget(&self, shared: &LockShared) {
        if shared.owned.load(Ordering::Acquire) {
            self.active().remove(&shared.id);
        }
    }

    /// Forgets `shared`: out of the registry, and no longer a local holder of its key (the
    /// local waiter at the head of the key's queue, if any, tries at once).
    pub(crate) fn unregister(&self, shared: &LockShared) {
        self.forget(shared);
        let holding = shared
            .holding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(holding) = holding {
            self.queues.unhold(holding);
        }
        // Our token no longer holds anything: a late hand-off to it may be passed on now.
        drop(
            shared
                .listening
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    /// Marks `shared` lost (waking its watchers), forgets it, and returns the error to report.
    pub(crate) fn lose(
        &self,
        shared: &LockShared,
        reason: LossReason,
        failure: Option<crate::error::Failure>,
    ) -> Error {
        if shared.mark_lost(reason) {
            telemetry::lost(shared, reason, failure.as_ref());
        }
        self.unregister(shared);
        Error::lost(reason, failure)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_watching();
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("instances", &self.engine.instances.len())
            .finish_non_exhaustive()
    }
}
