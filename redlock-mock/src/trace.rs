//! Lock calls that record themselves in the world's history, for the checkers.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use redlock_core::{Clock, CloseReport, Error, Lock, LockManager, LockOptions, Patience};

mod scoped;

use crate::history::{Entry, OpKind, OpRecord, Outcome};
use crate::world::World;

/// A client's [`LockManager`] whose calls are recorded in the [`World`]'s history with their
/// true-time window, so [`World::check`] can judge them. Get one from [`World::traced`].
#[derive(Clone)]
pub struct TracedClient {
    world: World,
    client: usize,
}

/// A lock taken through a [`TracedClient`]; its calls are recorded too.
pub struct TracedLock {
    lock: Lock,
    serial: u64,
    traced: TracedClient,
}

impl fmt::Debug for TracedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedClient")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for TracedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedLock")
            .field("serial", &self.serial)
            .field("lock", &self.lock)
            .finish()
    }
}

pub(crate) struct Begin {
    start: Duration,
    start_local: Duration,
    pauses: u64,
    paused: bool,
}

impl TracedClient {
    pub(crate) fn new(world: World, client: usize) -> Self {
        Self { world, client }
    }

    /// The client index.
    #[must_use]
    pub fn index(&self) -> usize {
        self.client
    }

    /// The untraced manager.
    #[must_use]
    pub fn manager(&self) -> &LockManager {
        &self.world.parts(self.client).manager
    }

    /// [`LockManager::lock`], recorded.
    ///
    /// # Errors
    /// As [`LockManager::lock`].
    pub async fn lock(
        &self,
        resource: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<TracedLock, Error> {
        let resource = resource.as_ref();
        let patience = Patience::Attempts(self.manager().config().retry_count());
        self.acquire(resource, patience, self.manager().lock(resource, ttl))
            .await
    }

    /// [`LockManager::try_lock`], recorded.
    ///
    /// # Errors
    /// As [`LockManager::try_lock`].
    pub async fn try_lock(
        &self,
        resource: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<TracedLock, Error> {
        let resource = resource.as_ref();
        self.acquire(
            resource,
            Patience::NoWait,
            self.manager().try_lock(resource, ttl),
        )
        .await
    }

    /// [`LockManager::lock_opts`], recorded with the options' [`Patience`].
    ///
    /// # Errors
    /// As [`LockManager::lock_opts`].
    pub async fn lock_opts(
        &self,
        resource: impl AsRef<[u8]>,
        options: LockOptions,
    ) -> Result<TracedLock, Error> {
        let resource = resource.as_ref();
        let patience = options
            .patience
            .unwrap_or(Patience::Attempts(self.manager().config().retry_count()));
        self.acquire(
            resource,
            patience,
            self.manager().lock_opts(resource, options),
        )
        .await
    }

    /// [`LockManager::close`], recorded (see [`OpKind::Close`] for what the checkers hold it
    /// to).
    ///
    /// # Errors
    /// As [`LockManager::close`].
    pub async fn close(&self) -> Result<CloseReport, Error> {
        let begin = self.begin();
        let result = self.manager().close().await;
        let serial = self.world.next_lock_serial();
        let outcome = Outcome::of(&result);
        let call = Call {
            op: OpKind::Close,
            resource: &[],
            serial,
            patience: None,
            fence: None,
        };
        self.finish(begin, &call, outcome, None, None);
        result
    }

    /// Records an acquire: its outcome when `call` returns, [`Outcome::Cancelled`] when the
    /// caller drops it first.
    async fn acquire(
        &self,
        resource: &[u8],
        patience: Patience,
        call: impl Future<Output = Result<Lock, Error>>,
    ) -> Result<TracedLock, Error> {
        let pending = Pending::new(self, resource, patience);
        let result = call.await;
        let begin = pending.disarm();
        let serial = self.world.next_lock_serial();
        match result {
            Ok(lock) => {
                let holds_until = self.holds_until(lock.remaining());
                let call = Call {
                    op: OpKind::Lock,
                    resource,
                    serial,
                    patience: Some(patience),
                    fence: lock.fence(),
                };
                self.finish(begin, &call, Outcome::Ok, holds_until, None);
                Ok(TracedLock {
                    lock,
                    serial,
                    traced: self.clone(),
                })
            }
            Err(e) => {
                self.acquire_failed(begin, resource, serial, patience, &e);
                Err(e)
            }
        }
    }

    /// Records an acquire that failed with `e`, probing for what it left behind.
    pub(crate) fn acquire_failed(
        &self,
        begin: Begin,
        resource: &[u8],
        serial: u64,
        patience: Patience,
        e: &Error,
    ) {
        // A call refused locally (another task of the same manager holds or is acquiring the
        // resource: no attempt) sent nothing, so it cannot leave anything behind; the client's
        // last acquire token is then that other task's. So did a call refused because the
        // manager was closed, and a loss after winning is not a failed acquire. Otherwise the
        // call was the only one of its manager sending acquires for the key, and the last token
        // is its own.
        let attempted = matches!(
            e,
            Error::Contended(_) | Error::Unavailable(_) | Error::ValidityExpired(_)
        ) && e.failure().is_none_or(|f| f.attempts > 0);
        let key = self.key(resource);
        let token = attempted
            .then(|| {
                self.world
                    .net()
                    .lock()
                    .last_acquire_token(self.client, &key)
            })
            .flatten();
        let probe = token.map(|t| (key, t));
        let call = Call {
            op: OpKind::Lock,
            resource,
            serial,
            patience: Some(patience),
            fence: None,
        };
        self.finish(begin, &call, Outcome::of_error(e), None, probe);
    }

    fn key(&self, resource: &[u8]) -> Vec<u8> {
        let mut key = self.manager().config().key_prefix().to_vec();
        key.extend_from_slice(resource);
        key
    }

    pub(crate) fn begin(&self) -> Begin {
        let parts = self.world.parts(self.client);
        let gate = parts.gate.get();
        let start = self.world.now();
        Begin {
            start,
            start_local: parts.clock.now(),
            pauses: gate.pauses,
            paused: gate.until > start,
        }
    }

    /// The true time at which a lock with `remaining` validity runs out on this client's clock.
    pub(crate) fn holds_until(&self, remaining: Duration) -> Option<Duration> {
        let clock = &self.world.parts(self.client).clock;
        (!remaining.is_zero()).then(|| clock.to_true(clock.now() + remaining))
    }

    pub(crate) fn world(&self) -> &World {
        &self.world
    }

    /// The bound an acquire that waits `patience` documents; `fenced`: two more rounds per
    /// attempt.
    fn acquire_bound(&self, patience: Patience, fenced: bool) -> Duration {
        let config = self.manager().config();
        let timeout = config.instance_timeout();
        let round_trip = timeout.saturating_mul(if fenced { 4 } else { 2 });
        // Fair mode documents its own cost: one grace, before the first attempt, after a release
        // someone heard.
        let grace = config.fair().unwrap_or_default();
        match patience {
            Patience::Attempts(n) => round_trip
                .saturating_add(config.retry_delay().1)
                .saturating_mul(n.max(1))
                .saturating_add(grace),
            Patience::NoWait => round_trip.saturating_add(grace),
            Patience::For(d) => d.saturating_add(round_trip).saturating_add(grace),
            _ => Duration::MAX,
        }
    }

    /// `fenced`: the call got a fence, or its manager fences by default. (A failed acquire
    /// fenced by its options on a manager that does not fence by default is held to the plain
    /// bound: the simulation families fence per manager.)
    fn bound(&self, op: OpKind, patience: Option<Patience>, fenced: bool) -> Duration {
        let fenced = fenced || self.manager().config().fenced();
        match (op, patience) {
            (OpKind::Lock, Some(patience)) => self.acquire_bound(patience, fenced),
            (OpKind::Lock, None) => self.acquire_bound(
                Patience::Attempts(self.manager().config().retry_count()),
                fenced,
            ),
            // One attempt of the manager's: what an acquire in progress at the close may still
            // take (see `OpKind::Close`).
            (OpKind::Close, _) => self.acquire_bound(Patience::Attempts(1), fenced),
            (OpKind::Extend | OpKind::Release | OpKind::Check, _) => {
                self.manager().config().instance_timeout()
            }
            (OpKind::Drop | OpKind::Renewed, _) => Duration::ZERO,
        }
    }

    pub(crate) fn finish(
        &self,
        begin: Begin,
        call: &Call<'_>,
        outcome: Outcome,
        holds_until: Option<Duration>,
        probe: Option<(Vec<u8>, Vec<u8>)>,
    ) {
        let parts = self.world.parts(self.client);
        let gate = parts.gate.get();
        let end = self.world.now();
        let leftovers = match probe {
            Some((key, token)) => {
                let net = self.world.net().lock();
                (0..self.world.instance_count())
                    .filter(|&i| {
                        net.reachable_since(self.client, i, begin.start)
                            && net.servers[i].backend.get(&key).as_deref() == Some(&token[..])
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let record = OpRecord {
            client: self.client,
            op: call.op,
            resource: call.resource.to_vec(),
            lock: call.serial,
            start: begin.start,
            end,
            local_elapsed: parts.clock.now().saturating_sub(begin.start_local),
            bound: self.bound(call.op, call.patience, call.fence.is_some()),
            patience: call.patience,
            outcome,
            holds_until,
            paused: begin.paused || gate.pauses != begin.pauses,
            leftovers,
            fence: call.fence,
        };
        self.world.history_mut().entries.push(Entry::Op(record));
    }
}

/// What a record is about.
pub(crate) struct Call<'a> {
    pub(crate) op: OpKind,
    pub(crate) resource: &'a [u8],
    pub(crate) serial: u64,
    pub(crate) patience: Option<Patience>,
    /// The fence of a granted fenced lock.
    pub(crate) fence: Option<u64>,
}

/// An acquire in progress: records itself as [`Outcome::Cancelled`] if dropped before
/// [`disarm`](Self::disarm).
struct Pending<'a> {
    traced: &'a TracedClient,
    resource: &'a [u8],
    patience: Patience,
    begin: Option<Begin>,
}

impl<'a> Pending<'a> {
    fn new(traced: &'a TracedClient, resource: &'a [u8], patience: Patience) -> Self {
        Self {
            traced,
            resource,
            patience,
            begin: Some(traced.begin()),
        }
    }

    fn disarm(mut self) -> Begin {
        match self.begin.take() {
            Some(begin) => begin,
            // Only `disarm` takes it, and it consumes the guard.
            None => self.traced.begin(),
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(begin) = self.begin.take() {
            // Nothing was granted and nothing is probed: the manager releases whatever the
            // abandoned attempt set, in the background.
            let call = Call {
                op: OpKind::Lock,
                resource: self.resource,
                serial: self.traced.world.next_lock_serial(),
                patience: Some(self.patience),
                fence: None,
            };
            self.traced
                .finish(begin, &call, Outcome::Cancelled, None, None);
        }
    }
}

impl Drop for TracedLock {
    fn drop(&mut self) {
        self.record(self.traced.begin(), OpKind::Drop, Outcome::Ok, None, None);
    }
}

impl TracedLock {
    /// The underlying lock (for [`Lock::remaining`], [`Lock::token`], ...). Calls made on it
    /// directly are not recorded.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// The serial number under which the history records this lock.
    #[must_use]
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// [`Lock::remaining`].
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.lock.remaining()
    }

    fn record(
        &self,
        begin: Begin,
        op: OpKind,
        outcome: Outcome,
        holds_until: Option<Duration>,
        probe: Option<(Vec<u8>, Vec<u8>)>,
    ) {
        let call = Call {
            op,
            resource: self.lock.resource(),
            serial: self.serial,
            patience: None,
            fence: None,
        };
        self.traced
            .finish(begin, &call, outcome, holds_until, probe);
    }

    /// [`Lock::extend`], recorded.
    ///
    /// # Errors
    /// As [`Lock::extend`].
    pub async fn extend(&self) -> Result<(), Error> {
        let begin = self.traced.begin();
        let result = self.lock.extend().await;
        let holds_until = if result.is_ok() {
            self.traced.holds_until(self.lock.remaining())
        } else {
            None
        };
        self.record(
            begin,
            OpKind::Extend,
            Outcome::of(&result),
            holds_until,
            None,
        );
        result
    }

    /// [`Lock::check`], recorded.
    ///
    /// # Errors
    /// As [`Lock::check`].
    pub async fn check(&self) -> Result<Duration, Error> {
        let begin = self.traced.begin();
        let result = self.lock.check().await;
        self.record(begin, OpKind::Check, Outcome::of(&result), None, None);
        result
    }

    /// [`Lock::release`], recorded. The holder's window ends when this call starts.
    ///
    /// # Errors
    /// As [`Lock::release`].
    pub async fn release(&self) -> Result<(), Error> {
        let begin = self.traced.begin();
        let result = self.lock.release().await;
        let outcome = Outcome::of(&result);
        // Refused before anything was sent: nothing to probe.
        let probe = match outcome {
            Outcome::Released | Outcome::Closed | Outcome::Other => None,
            _ => Some((
                self.traced.key(self.lock.resource()),
                self.lock.token().to_vec(),
            )),
        };
        self.record(begin, OpKind::Release, outcome, None, probe);
        result
    }
}
