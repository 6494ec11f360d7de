//! Lock calls that record themselves in the world's history, for the checkers.

use std::fmt;
use std::time::Duration;

use redlock_core::{Clock, Error, Lock, LockManager};

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

struct Begin {
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
        let begin = self.begin();
        let result = self.manager().lock(resource, ttl).await;
        let serial = self.world.next_lock_serial();
        let outcome = Outcome::of(&result);
        match result {
            Ok(lock) => {
                let holds_until = self.holds_until(&lock);
                self.finish(
                    begin,
                    OpKind::Lock,
                    resource,
                    serial,
                    outcome,
                    holds_until,
                    None,
                );
                Ok(TracedLock {
                    lock,
                    serial,
                    traced: self.clone(),
                })
            }
            Err(e) => {
                let key = self.key(resource);
                let token = self
                    .world
                    .net()
                    .lock()
                    .last_acquire_token(self.client, &key);
                let probe = token.map(|t| (key, t));
                self.finish(begin, OpKind::Lock, resource, serial, outcome, None, probe);
                Err(e)
            }
        }
    }

    fn key(&self, resource: &[u8]) -> Vec<u8> {
        let mut key = self.manager().config().key_prefix().to_vec();
        key.extend_from_slice(resource);
        key
    }

    fn begin(&self) -> Begin {
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

    fn holds_until(&self, lock: &Lock) -> Option<Duration> {
        let clock = &self.world.parts(self.client).clock;
        let remaining = lock.remaining();
        (!remaining.is_zero()).then(|| clock.to_true(clock.now() + remaining))
    }

    fn bound(&self, op: OpKind) -> Duration {
        let config = self.manager().config();
        let timeout = config.instance_timeout();
        match op {
            OpKind::Lock => {
                let per_attempt = timeout
                    .saturating_mul(2)
                    .saturating_add(config.retry_delay().1);
                // Fair mode documents its own cost: one grace, before the first attempt, after a
                // release someone heard.
                let grace = config.fair().unwrap_or_default();
                per_attempt
                    .saturating_mul(config.retry_count())
                    .saturating_add(grace)
            }
            OpKind::Extend | OpKind::Release | OpKind::Check => timeout,
            OpKind::Drop => Duration::ZERO,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        begin: Begin,
        op: OpKind,
        resource: &[u8],
        serial: u64,
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
            op,
            resource: resource.to_vec(),
            lock: serial,
            start: begin.start,
            end,
            local_elapsed: parts.clock.now().saturating_sub(begin.start_local),
            bound: self.bound(op),
            outcome,
            holds_until,
            paused: begin.paused || gate.pauses != begin.pauses,
            leftovers,
        };
        self.world.history_mut().entries.push(Entry::Op(record));
    }
}

impl Drop for TracedLock {
    fn drop(&mut self) {
        let t = &self.traced;
        let begin = t.begin();
        let resource = self.lock.resource();
        t.finish(
            begin,
            OpKind::Drop,
            resource,
            self.serial,
            Outcome::Ok,
            None,
            None,
        );
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

    /// [`Lock::extend`], recorded.
    ///
    /// # Errors
    /// As [`Lock::extend`].
    pub async fn extend(&self) -> Result<(), Error> {
        let t = &self.traced;
        let begin = t.begin();
        let result = self.lock.extend().await;
        let outcome = Outcome::of(&result);
        let holds_until = if result.is_ok() {
            t.holds_until(&self.lock)
        } else {
            None
        };
        let resource = self.lock.resource();
        t.finish(
            begin,
            OpKind::Extend,
            resource,
            self.serial,
            outcome,
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
        let t = &self.traced;
        let begin = t.begin();
        let result = self.lock.check().await;
        let outcome = Outcome::of(&result);
        let resource = self.lock.resource();
        t.finish(
            begin,
            OpKind::Check,
            resource,
            self.serial,
            outcome,
            None,
            None,
        );
        result
    }

    /// [`Lock::release`], recorded. The holder's window ends when this call starts.
    ///
    /// # Errors
    /// As [`Lock::release`].
    pub async fn release(&self) -> Result<(), Error> {
        let t = &self.traced;
        let begin = t.begin();
        let result = self.lock.release().await;
        let outcome = Outcome::of(&result);
        let resource = self.lock.resource();
        let probe = match outcome {
            Outcome::Released | Outcome::Other => None,
            _ => Some((t.key(resource), self.lock.token().to_vec())),
        };
        t.finish(
            begin,
            OpKind::Release,
            resource,
            self.serial,
            outcome,
            None,
            probe,
        );
        result
    }
}
