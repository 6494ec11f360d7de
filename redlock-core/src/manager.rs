//! The lock manager: acquire with retries, extend, release, queries, close.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};

use crate::backend::{BackendError, KeyState, LockBackend};
use crate::config::{Config, LockManagerBuilder};
use crate::error::{Error, InvalidInput, LossReason};
use crate::lock::{Grant, Lock, LockShared, Status};
use crate::round::{self, Round, Verdict, Wait};
use crate::runtime::{Clock, RandomSource, Spawner};
use crate::wait::Waiter;

/// The longest key (prefix + resource name) accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// The longest token accepted when rehydrating a lock, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Random bytes in a generated token (hex-encoded, so tokens are 32 ASCII characters).
const TOKEN_BYTES: usize = 16;

/// Runs the Redlock algorithm over N independent instances.
///
/// Cheap to clone (all clones share one state); `Send + Sync`. Build one with
/// [`LockManager::builder`].
#[derive(Clone)]
pub struct LockManager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) instances: Box<[Arc<dyn LockBackend>]>,
    pub(crate) config: Config,
    pub(crate) clock: Arc<dyn Clock>,
    random: Arc<dyn RandomSource>,
    pub(crate) spawner: Option<Arc<dyn Spawner>>,
    closed: AtomicBool,
    next_lock_id: AtomicU64,
    /// Locks handed out and not yet released, lost or dropped.
    active: Mutex<HashMap<u64, Arc<LockShared>>>,
    /// Fair mode: keys this manager released while someone waited, and until when it lets
    /// them go first.
    yields: Mutex<HashMap<Arc<[u8]>, Duration>>,
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
            .field("instances", &self.inner.instances)
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
                instances: instances.into_boxed_slice(),
                config,
                clock,
                random,
                spawner,
                closed: AtomicBool::new(false),
                next_lock_id: AtomicU64::new(0),
                active: Mutex::new(HashMap::new()),
                yields: Mutex::new(HashMap::new()),
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
        round::quorum(self.inner.instances.len())
    }

    /// The manager's clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
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
    /// Takes at most `retry_count × (2 × instance_timeout + retry_delay_max)`.
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
        self.inner.acquire(resource, key, token, ttl).await
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
        let key = self.inner.key(resource.as_ref())?;
        let round = self.inner.inspect(&key, |state| state.is_some()).await;
        match round.verdict() {
            Verdict::Quorum => Ok(true),
            Verdict::Refused => Ok(false),
            Verdict::Undecided => Err(Error::Unavailable(Box::new(
                round.into_failure(1, &self.inner.instances),
            ))),
        }
    }

    /// Rebuilds a handle for a lock taken earlier (possibly by another process) from its resource
    /// name and token (aioredlock's `get_lock`).
    ///
    /// The lock's validity is what a quorum of instances still grants it, less the drift
    /// allowance; later [`Lock::extend`] calls use `internal_lock_timeout` as the lease.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name or token; [`Error::Lost`] when a quorum does not
    /// hold the token; [`Error::Unavailable`]; [`Error::Closed`].
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
        let t1 = self.inner.clock.now();
        let round = self
            .inner
            .inspect(&key, |s| s.as_ref().is_some_and(|s| s.value == token))
            .await;
        match round.verdict() {
            Verdict::Quorum => {}
            Verdict::Refused => {
                let failure = round.into_failure(1, &self.inner.instances);
                return Err(Error::lost(LossReason::NotHeld, Some(failure)));
            }
            Verdict::Undecided => {
                return Err(Error::Unavailable(Box::new(
                    round.into_failure(1, &self.inner.instances),
                )))
            }
        }
        let fallback = self.inner.config.internal_lock_timeout;
        let mut left: Vec<Duration> = round
            .answers
            .iter()
            .filter_map(|a| match a {
                Some(Ok(Some(s))) if s.value == token => Some(s.ttl.unwrap_or(fallback)),
                _ => None,
            })
            .collect();
        // The lock stands while a quorum of keys does: until the quorum-th longest expires.
        left.sort_unstable_by(|a, b| b.cmp(a));
        let held_for = left[self.quorum() - 1];
        let validity = self.inner.config.drift.validity(held_for, round.elapsed);
        if validity.is_zero() {
            return Err(Error::lost(LossReason::Expired, None));
        }
        let grant = Grant {
            ttl: fallback,
            granted_at: t1,
            validity,
        };
        let shared = self.inner.register(
            resource,
            key,
            token.into(),
            grant,
            t1 + round.elapsed + validity,
        );
        Ok(Lock::new(shared, self.clone()))
    }

    /// The locks this manager holds right now (not released, lost, or dropped).
    #[must_use]
    pub fn active_locks(&self) -> Vec<ActiveLock> {
        let now = self.inner.clock.now();
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

    /// Releases every lock this manager holds, closes the backends, and makes every later call
    /// (on the manager, its clones and its locks) fail with [`Error::Closed`]. aioredlock's
    /// `destroy`. Closing twice is harmless.
    ///
    /// # Errors
    /// [`Error::Closed`] when already closed. Locks or backends that fail to release or close are
    /// listed in the report, not returned as an error.
    pub async fn close(&self) -> Result<CloseReport, Error> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        let held: Vec<Arc<LockShared>> = self.inner.active().drain().map(|(_, s)| s).collect();
        let mut report = CloseReport::default();
        let releases = held.iter().map(|shared| {
            let shared = Arc::clone(shared);
            async move {
                let result = self.inner.release(&shared).await;
                (shared, result)
            }
        });
        for (shared, result) in futures::future::join_all(releases).await {
            match result {
                Ok(()) => report.released += 1,
                Err(e) => report.failed.push((shared.resource.to_vec(), e)),
            }
        }
        let closes = self
            .inner
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

    pub(crate) fn yields(&self) -> MutexGuard<'_, HashMap<Arc<[u8]>, Duration>> {
        // Entries are inserted or removed whole.
        self.yields.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, resource: &[u8]) -> Result<Box<[u8]>, Error> {
        if resource.is_empty() {
            return Err(Error::invalid(InvalidInput::EmptyResource));
        }
        let prefix = &self.config.key_prefix;
        let len = prefix.len().saturating_add(resource.len());
        if len > MAX_KEY_LEN {
            return Err(Error::invalid(InvalidInput::ResourceTooLong(len)));
        }
        let mut key = Vec::with_capacity(len);
        key.extend_from_slice(prefix);
        key.extend_from_slice(resource);
        Ok(key.into_boxed_slice())
    }

    pub(crate) fn ttl(&self, ttl: Duration) -> Result<Duration, Error> {
        crate::validity::normalize_ttl(ttl, self.config.drift)
            .map_err(|reason| Error::invalid(InvalidInput::Ttl { ttl, reason }))
    }

    fn new_token(&self) -> Box<[u8]> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut raw = [0u8; TOKEN_BYTES];
        self.random.fill_bytes(&mut raw);
        let mut token = Vec::with_capacity(TOKEN_BYTES * 2);
        for b in raw {
            token.push(HEX[usize::from(b >> 4)]);
            token.push(HEX[usize::from(b & 0xf)]);
        }
        token.into_boxed_slice()
    }

    pub(crate) fn retry_delay(&self) -> Duration {
        let (min, max) = (self.config.retry_delay_min, self.config.retry_delay_max);
        let span = (max - min).as_nanos();
        if span == 0 {
            return min;
        }
        let offset = u128::from(self.random.next_u64()) % (span + 1);
        min + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// The time limit of a round whose answers are only useful while `ttl` leaves validity.
    fn limit(&self, ttl: Duration) -> Duration {
        self.config
            .instance_timeout
            .min(self.config.drift.validity(ttl, Duration::ZERO))
    }

    async fn acquire(
        self: &Arc<Self>,
        resource: &[u8],
        key: Box<[u8]>,
        token: Box<[u8]>,
        ttl: Duration,
    ) -> Result<Lock, Error> {
        // `retry_count` counts attempts made at the end of a retry window (and the first). An
        // attempt made early because a release was announced is free while its window lasts:
        // with several waiters, all woken by each release, counting those would make the k-th
        // in line give up after k releases. The time bound is unchanged: a window lasts its
        // drawn delay, and an early attempt that runs past the window's end counts.
        let attempts = self.config.retry_count;
        let (mut made, mut counted) = (0u32, 0u32);
        let mut window_end: Option<Duration> = None;
        // If this future is dropped mid-attempt, keys may be set with our token: release them in
        // the background when a spawner is available (otherwise they expire by their TTL).
        let mut cleanup_on_drop = CancelCleanup {
            inner: Arc::clone(self),
            key: &key,
            token: &token,
            armed: true,
        };
        let mut waiter = Waiter::default();
        self.yield_to_waiters(&key).await;
        loop {
            made += 1;
            let t1 = self.clock.now();
            let round = round::run(
                &self.instances,
                self.clock.as_ref(),
                self.limit(ttl),
                Wait::UntilDecided,
                |b| b.acquire(&key, &token, ttl),
                |acquired| *acquired,
            )
            .await;
            let validity = self.config.drift.validity(ttl, round.elapsed);
            let verdict = round.verdict();
            if verdict == Verdict::Quorum && !validity.is_zero() {
                let deadline = t1 + round.elapsed + validity;
                cleanup_on_drop.armed = false;
                drop(cleanup_on_drop);
                let grant = Grant {
                    ttl,
                    granted_at: t1,
                    validity,
                };
                let shared = self.register(resource, key, token, grant, deadline);
                return Ok(Lock::new(
                    shared,
                    LockManager {
                        inner: Arc::clone(self),
                    },
                ));
            }
            let failure = Box::new(round.into_failure(made, &self.instances));
            let error = match verdict {
                Verdict::Quorum => Error::ValidityExpired(failure),
                Verdict::Refused => Error::Contended(failure),
                Verdict::Undecided => Error::Unavailable(failure),
            };
            // A timed-out or ambiguous acquire may still have landed: clean up everywhere. Not
            // announced: our own subscription would hear it and wake us for nothing.
            let cleanup = self.release_round(&key, &token, false);
            let now = self.clock.now();
            let until = match window_end {
                Some(end) if now < end => end,
                _ => {
                    counted += 1;
                    if counted >= attempts {
                        cleanup.await;
                        cleanup_on_drop.armed = false;
                        return Err(error);
                    }
                    now + self.retry_delay()
                }
            };
            let contended = verdict == Verdict::Refused;
            let wait = self.wait_for_retry(&key, &mut waiter, contended, until);
            let (_, woke) = futures::future::join(cleanup, wait).await;
            window_end = woke.then_some(until);
        }
    }

    /// Releases on every instance; with `announce`, through [`ReleaseNotify`] where supported,
    /// so waiters wake at once. Each answer is `(released, a waiter heard it)`.
    ///
    /// [`ReleaseNotify`]: crate::ReleaseNotify
    fn release_round<'a>(
        &'a self,
        key: &'a [u8],
        token: &'a [u8],
        announce: bool,
    ) -> BoxFuture<'a, Round<(bool, bool)>> {
        let announce = announce && self.config.wake_on_release;
        round::run(
            &self.instances,
            self.clock.as_ref(),
            self.config.instance_timeout,
            Wait::ForAll,
            move |b| match b.release_notify().filter(|_| announce) {
                Some(n) => n.release_and_notify(key, token),
                None => b.release(key, token).map_ok(|r| (r, false)).boxed(),
            },
            |(released, _)| *released,
        )
        .boxed()
    }

    pub(crate) async fn inspect<Y>(&self, key: &[u8], is_yes: Y) -> Round<Option<KeyState>>
    where
        Y: Fn(&Option<KeyState>) -> bool,
    {
        round::run(
            &self.instances,
            self.clock.as_ref(),
            self.config.instance_timeout,
            Wait::UntilDecided,
            |b| b.inspect(key),
            is_yes,
        )
        .await
    }

    fn register(
        &self,
        resource: &[u8],
        key: Box<[u8]>,
        token: Box<[u8]>,
        grant: Grant,
        deadline: Duration,
    ) -> Arc<LockShared> {
        let id = self.next_lock_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(LockShared::new(id, resource, key, token, grant, deadline));
        self.active().insert(id, Arc::clone(&shared));
        shared
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.active().remove(&id);
    }

    /// Marks `shared` lost (waking its watchers), forgets it, and returns the error to report.
    pub(crate) fn lose(
        &self,
        shared: &LockShared,
        reason: LossReason,
        failure: Option<crate::error::Failure>,
    ) -> Error {
        shared.mark_lost(reason);
        self.unregister(shared.id);
        Error::lost(reason, failure)
    }

    /// One extend round: a fresh lease of `ttl` on a quorum, within validity.
    pub(crate) async fn extend(&self, shared: &LockShared, ttl: Duration) -> Result<(), Error> {
        let t1 = self.clock.now();
        {
            let state = shared.state();
            match state.status {
                Status::Released => return Err(Error::Released),
                Status::Lost(reason) => return Err(Error::lost(reason, None)),
                Status::Held => {}
            }
            if state.remaining(t1).is_zero() {
                drop(state);
                return Err(self.lose(shared, LossReason::Expired, None));
            }
        }
        let round = round::run(
            &self.instances,
            self.clock.as_ref(),
            self.limit(ttl),
            Wait::UntilDecided,
            |b| b.extend(&shared.key, &shared.token, ttl),
            |extended| *extended,
        )
        .await;
        let validity = self.config.drift.validity(ttl, round.elapsed);
        match round.verdict() {
            Verdict::Quorum if !validity.is_zero() => {
                let mut state = shared.state();
                // A release that completed while we were extending wins: never revive a lock.
                if state.status == Status::Held {
                    state.deadline = t1 + round.elapsed + validity;
                    state.validity = validity;
                    state.ttl = ttl;
                    state.granted_at = t1;
                    Ok(())
                } else {
                    Err(Error::Released)
                }
            }
            Verdict::Quorum => Err(Error::ValidityExpired(Box::new(
                round.into_failure(1, &self.instances),
            ))),
            Verdict::Refused => Err(self.lose(
                shared,
                LossReason::NotHeld,
                Some(round.into_failure(1, &self.instances)),
            )),
            Verdict::Undecided => Err(Error::Unavailable(Box::new(
                round.into_failure(1, &self.instances),
            ))),
        }
    }

    /// Sends the release to every instance and reports whether the lock was still ours.
    pub(crate) async fn release(&self, shared: &LockShared) -> Result<(), Error> {
        let prior = shared.state().status;
        if prior == Status::Released {
            return Err(Error::Released);
        }
        let round = self.release_round(&shared.key, &shared.token, true).await;
        let heard = round
            .answers
            .iter()
            .any(|a| matches!(a, Some(Ok((_, true)))));
        self.note_release(&shared.key, heard);
        // Judged on the deadline, not the status: a concurrent extend or check that ran into
        // this very release's deletes marks the lock lost, but it was ours until now.
        let expired = shared.state().deadline <= self.clock.now();
        let verdict = round.verdict();
        if verdict == Verdict::Undecided && prior == Status::Held && !expired {
            // Unknown whether the keys are gone: keep the handle so the caller can retry.
            return Err(Error::Unavailable(Box::new(
                round.into_failure(1, &self.instances),
            )));
        }
        let result = match (prior, verdict) {
            (Status::Lost(reason), _) => Err(Error::lost(reason, None)),
            _ if expired => Err(Error::lost(LossReason::Expired, None)),
            (_, Verdict::Quorum) => Ok(()),
            _ => Err(Error::lost(
                LossReason::NotHeld,
                Some(round.into_failure(1, &self.instances)),
            )),
        };
        shared.mark_released();
        self.unregister(shared.id);
        result
    }

    /// Whether a quorum still holds our token, and the validity left.
    pub(crate) async fn check(&self, shared: &LockShared) -> Result<Duration, Error> {
        match shared.state().status {
            Status::Released => return Err(Error::Released),
            Status::Lost(reason) => return Err(Error::lost(reason, None)),
            Status::Held => {}
        }
        let round = self
            .inspect(&shared.key, |s| {
                s.as_ref().is_some_and(|s| *s.value == *shared.token)
            })
            .await;
        let remaining = shared.state().remaining(self.clock.now());
        if remaining.is_zero() {
            return Err(self.lose(shared, LossReason::Expired, None));
        }
        match round.verdict() {
            Verdict::Quorum => Ok(remaining),
            Verdict::Refused => Err(self.lose(
                shared,
                LossReason::NotHeld,
                Some(round.into_failure(1, &self.instances)),
            )),
            Verdict::Undecided => Err(Error::Unavailable(Box::new(
                round.into_failure(1, &self.instances),
            ))),
        }
    }
}

/// Releases a cancelled acquire's keys in the background.
struct CancelCleanup<'a> {
    inner: Arc<Inner>,
    key: &'a [u8],
    token: &'a [u8],
    armed: bool,
}

impl Drop for CancelCleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(spawner) = &self.inner.spawner {
            let inner = Arc::clone(&self.inner);
            let key = self.key.to_vec();
            let token = self.token.to_vec();
            spawner.spawn(Box::pin(async move {
                inner.release_round(&key, &token, false).await;
            }));
        }
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("instances", &self.instances.len())
            .finish_non_exhaustive()
    }
}
