//! A simulated cluster shared by the behaviour tests: N in-memory instances, each behind a
//! fault-injecting decorator, all on one virtual clock driven by a deterministic executor.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use redlock_lease::{
    async_trait, BackendError, BackendErrorKind, Clock, Config, Error, Failure, Fencing, Handoff,
    InstanceOutcome, KeyState, LockBackend, LockManager, LockManagerBuilder, ReleaseNotify,
    SeededRandom,
};
use redlock_mock::{Faults, FaultyBackend, MemoryBackend, Simulation};

/// TTL used unless a test needs another: its drift is 102 ms, so validity at zero elapsed time
/// is 9 898 ms.
pub const TTL: Duration = Duration::from_secs(10);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// N instances and the executor that drives them.
pub struct Cluster {
    pub sim: Simulation,
    pub clock: Arc<dyn Clock>,
    /// The instances themselves, to look at or tamper with keys directly.
    pub memories: Vec<MemoryBackend>,
    /// The fault switches of the default client's view of each instance.
    pub faults: Vec<Faults>,
    /// What the default client talks to (the decorated instances), in order.
    pub backends: Vec<Arc<dyn LockBackend>>,
}

impl Cluster {
    pub fn new(n: usize) -> Self {
        let sim = Simulation::new();
        let clock = sim.clock_arc();
        let memories: Vec<MemoryBackend> = (0..n)
            .map(|i| MemoryBackend::new(format!("mem-{i}"), Arc::clone(&clock)))
            .collect();
        let mut faults = Vec::new();
        let mut backends: Vec<Arc<dyn LockBackend>> = Vec::new();
        for m in &memories {
            let faulty = FaultyBackend::new(m.clone(), Arc::clone(&clock));
            faults.push(faulty.faults());
            backends.push(Arc::new(faulty));
        }
        Self {
            sim,
            clock,
            memories,
            faults,
            backends,
        }
    }

    pub fn n(&self) -> usize {
        self.memories.len()
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Moves virtual time forward outside any run (a client that does nothing meanwhile).
    pub fn advance(&self, by: Duration) {
        self.sim.clock().advance(by);
    }

    /// A builder over the default client's view of the instances, with seeded randomness.
    pub fn builder(&self, seed: u64) -> LockManagerBuilder {
        LockManager::builder(Arc::clone(&self.clock))
            .instances(self.backends.iter().cloned())
            .random(Arc::new(SeededRandom::new(seed)))
    }

    pub fn manager(&self, seed: u64) -> LockManager {
        self.builder(seed).build().expect("valid configuration")
    }

    /// Another client on the same instances, through its own decorators (so its latency and
    /// faults are its own), with one latency per instance.
    pub fn client(&self, seed: u64, latencies: &[Duration]) -> (LockManagerBuilder, Vec<Faults>) {
        assert_eq!(latencies.len(), self.n());
        let mut faults = Vec::new();
        let mut builder =
            LockManager::builder(Arc::clone(&self.clock)).random(Arc::new(SeededRandom::new(seed)));
        for (m, latency) in self.memories.iter().zip(latencies) {
            let faulty = FaultyBackend::new(m.clone(), Arc::clone(&self.clock));
            faulty.faults().set_latency(*latency);
            faults.push(faulty.faults());
            builder = builder.instance(Arc::new(faulty));
        }
        (builder, faults)
    }

    pub fn set_latency(&self, latency: Duration) {
        for f in &self.faults {
            f.set_latency(latency);
        }
    }

    /// Calls that reached the default client's decorators, over all instances.
    pub fn calls(&self) -> u64 {
        self.faults.iter().map(Faults::calls).sum()
    }

    /// How many instances hold `token` under `key` right now.
    pub fn holding(&self, key: &[u8], token: &[u8]) -> usize {
        self.memories
            .iter()
            .filter(|m| m.get(key).as_deref() == Some(token))
            .count()
    }

    /// How many instances have any live value under `key`.
    pub fn with_key(&self, key: &[u8]) -> usize {
        self.memories
            .iter()
            .filter(|m| m.get(key).is_some())
            .count()
    }

    /// Keys anywhere that still hold `token`.
    pub fn keys_holding(&self, token: &[u8]) -> usize {
        self.memories
            .iter()
            .map(|m| m.keys_holding(token).len())
            .sum()
    }

    /// Puts `key = value` (no expiry) on the instances at `indexes`, as a rival holder would.
    pub fn occupy(&self, indexes: impl IntoIterator<Item = usize>, key: &[u8], value: &[u8]) {
        for i in indexes {
            self.memories[i].put(key, value);
        }
    }
}

/// The per-instance report of a round, or a panic naming the unexpected error.
pub fn failure(e: &Error) -> &Failure {
    e.failure()
        .unwrap_or_else(|| panic!("expected a per-instance report, got {e:?}"))
}

/// How many instances ended the last attempt with an outcome matching `pred`.
pub fn count(f: &Failure, pred: impl Fn(&InstanceOutcome) -> bool) -> usize {
    f.instances.iter().filter(|r| pred(&r.outcome)).count()
}

/// The ids of the instances `unreachable()` lists, sorted.
pub fn unreachable_ids(f: &Failure) -> Vec<String> {
    let mut ids: Vec<String> = f.unreachable().map(|r| r.instance.clone()).collect();
    ids.sort();
    ids
}

pub fn ids(indexes: impl IntoIterator<Item = usize>) -> Vec<String> {
    let mut ids: Vec<String> = indexes.into_iter().map(|i| format!("mem-{i}")).collect();
    ids.sort();
    ids
}

/// One call seen by a [`Recorder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub at: Duration,
    pub op: &'static str,
    pub instance: String,
    /// Empty for `inspect` and `subscribe`.
    pub token: Vec<u8>,
}

/// The shared log of a set of [`Recorder`]s.
pub type CallLog = Arc<Mutex<Vec<Call>>>;

/// Wraps a backend and logs every call with its virtual start time, to observe when attempts
/// happened.
#[derive(Debug)]
pub struct Recorder {
    inner: Arc<dyn LockBackend>,
    clock: Arc<dyn Clock>,
    log: CallLog,
}

impl Recorder {
    pub fn wrap(
        backends: &[Arc<dyn LockBackend>],
        clock: &Arc<dyn Clock>,
    ) -> (Vec<Arc<dyn LockBackend>>, CallLog) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let wrapped = backends
            .iter()
            .map(|b| {
                Arc::new(Self {
                    inner: Arc::clone(b),
                    clock: Arc::clone(clock),
                    log: Arc::clone(&log),
                }) as Arc<dyn LockBackend>
            })
            .collect();
        (wrapped, log)
    }

    fn note(&self, op: &'static str, token: &[u8]) {
        self.log.lock().expect("log").push(Call {
            at: self.clock.now(),
            op,
            instance: self.inner.id().to_owned(),
            token: token.to_vec(),
        });
    }
}

/// The distinct virtual times at which `op` calls started, in order.
pub fn times_of(log: &Mutex<Vec<Call>>, op: &str) -> Vec<Duration> {
    let mut times: Vec<Duration> = log
        .lock()
        .expect("log")
        .iter()
        .filter(|c| c.op == op)
        .map(|c| c.at)
        .collect();
    times.dedup();
    times
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl LockBackend for Recorder {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.note("acquire", token);
        self.inner.acquire(key, token, ttl).await
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.note("extend", token);
        self.inner.extend(key, token, ttl).await
    }

    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        self.note("release", token);
        self.inner.release(key, token).await
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.note("inspect", &[]);
        self.inner.inspect(key).await
    }

    fn check_config(&self, config: &Config) -> Result<(), String> {
        self.inner.check_config(config)
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        // Announcements are calls too: handing out the inner one would leave them unlogged.
        self.inner
            .release_notify()
            .map(|_| self as &dyn ReleaseNotify)
    }

    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        self.inner.reconnects()
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        self.inner.fencing().map(|_| self as &dyn Fencing)
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        self.inner.handoff()
    }

    async fn connect(&self) -> Result<(), BackendError> {
        self.inner.connect().await
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.inner.close().await
    }
}

fn no_announcements() -> BackendError {
    BackendError::new(BackendErrorKind::Other, "no release announcements")
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ReleaseNotify for Recorder {
    async fn release_and_notify(
        &self,
        key: &[u8],
        token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        self.note("release_and_notify", token);
        match self.inner.release_notify() {
            Some(notify) => notify.release_and_notify(key, token).await,
            None => Err(no_announcements()),
        }
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        self.note("subscribe", &[]);
        match self.inner.release_notify() {
            Some(notify) => notify.subscribe(key).await,
            None => Err(no_announcements()),
        }
    }
}

fn no_counters() -> BackendError {
    BackendError::new(BackendErrorKind::Incompatible, "no fencing counters")
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Fencing for Recorder {
    async fn next_fence(
        &self,
        key: &[u8],
        token: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        self.note("next_fence", token);
        match self.inner.fencing() {
            Some(fencing) => fencing.next_fence(key, token, counter).await,
            None => Err(no_counters()),
        }
    }

    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        self.note("raise_fence", &[]);
        match self.inner.fencing() {
            Some(fencing) => fencing.raise_fence(counter, value).await,
            None => Err(no_counters()),
        }
    }
}
