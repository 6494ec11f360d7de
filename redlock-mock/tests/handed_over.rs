//! Hand-offs as the acquisition (rule 6 of the `Handoff` contract), on virtual time: a waiter
//! that a quorum of instances handed the key to holds the lock with no round of its own, its
//! lease measured from the round that first queued it, so that it never outlives a key handed
//! over; and where that cannot be trusted (a backend that does not promise it, a wait so long
//! that the lease would be due for renewal) the hand-off only wakes an ordinary attempt.
//!
//! Two managers (two processes) on three in-memory instances that hand off; the waiter's
//! instances go through [`Probe`], which logs the waiter's acquire requests and can hold back
//! hand-off messages (a slow subscriber connection) or deny rule 6.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use redlock_core::{
    async_trait, BackendError, Clock, Handoff, KeyState, LockBackend, LockManager, QueuePlace,
    ReleaseNotify,
};
use redlock_mock::{MemoryBackend, Simulation};

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

const TTL: Duration = Duration::from_secs(1);
/// The drift allowance of a 1 s TTL at the default factor (0.01): 10 ms + 2 ms.
const DRIFT: Duration = Duration::from_millis(12);

/// A waiter's instance: logs when its acquire requests were made, delays hand-off messages by
/// `message_delay`, and promises rule 6 only when `grants`.
#[derive(Debug)]
struct Probe {
    inner: MemoryBackend,
    clock: Arc<dyn Clock>,
    grants: bool,
    message_delay: Duration,
    /// When each acquire request was sent, and whether it was granted.
    acquires: Mutex<Vec<(Duration, bool)>>,
}

impl Probe {
    fn acquired(&self, at: Duration, answer: &Result<bool, BackendError>) {
        let granted = matches!(answer, Ok(true));
        self.acquires.lock().unwrap().push((at, granted));
    }
}

#[async_trait]
impl LockBackend for Probe {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        let at = self.clock.now();
        let answer = self.inner.acquire(key, token, ttl).await;
        self.acquired(at, &answer);
        answer
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.inner.extend(key, token, ttl).await
    }

    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        self.inner.release(key, token).await
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.inner.inspect(key).await
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        Some(self)
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        Some(self)
    }
}

#[async_trait]
impl ReleaseNotify for Probe {
    async fn release_and_notify(
        &self,
        key: &[u8],
        token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        self.inner.release_and_notify(key, token).await
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        self.inner.subscribe(key).await
    }
}

#[async_trait]
impl Handoff for Probe {
    async fn listen(&self, token: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        let (clock, delay) = (Arc::clone(&self.clock), self.message_delay);
        let heard = self.inner.listen(token).await?;
        Ok(heard.then(move |()| clock.sleep(delay)).boxed())
    }

    async fn acquire_or_queue(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError> {
        let at = self.clock.now();
        let answer = self.inner.acquire_or_queue(key, token, ttl, place).await;
        self.acquired(at, &answer);
        answer
    }

    async fn release_and_hand_off(
        &self,
        key: &[u8],
        token: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError> {
        self.inner.release_and_hand_off(key, token, leaving).await
    }

    fn grants_by_hand_off(&self) -> bool {
        self.grants
    }
}

/// What the waiter saw.
struct Seen {
    /// When its `lock` returned.
    at: Duration,
    /// The lock's remaining validity then.
    remaining: Duration,
    /// Per instance, how long the key it holds with the waiter's token still had then.
    keys_left: Vec<Option<Duration>>,
    /// The waiter's acquire requests: when, and whether granted.
    acquires: Vec<(Duration, bool)>,
}

/// Three in-memory instances that hand off, and a holder manager of its own on them.
fn instances_and_holder(clock: &Arc<dyn Clock>) -> (Vec<MemoryBackend>, LockManager) {
    let memories: Vec<MemoryBackend> = (0..3)
        .map(|i| MemoryBackend::new(format!("mem-{i}"), Arc::clone(clock)).hand_off(true))
        .collect();
    let holder = LockManager::builder(Arc::clone(clock))
        .instances(
            memories
                .iter()
                .map(|m| Arc::new(m.clone()) as Arc<dyn LockBackend>),
        )
        .build()
        .unwrap();
    (memories, holder)
}

/// A holder takes `r` at 0 and releases it at `release_at`; the waiter asks for it at 0 and
/// waits. The holder's lock lives long enough (TTL × 10) that only the release frees it.
fn hand_over(grants: bool, message_delay: Duration, release_at: Duration) -> Seen {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let (memories, holder) = instances_and_holder(&clock);
    let probes: Vec<Arc<Probe>> = memories
        .iter()
        .map(|m| {
            Arc::new(Probe {
                inner: m.clone(),
                clock: Arc::clone(&clock),
                grants,
                message_delay,
                acquires: Mutex::default(),
            })
        })
        .collect();
    // Attempts far apart: the waiter does not stumble on the free key by a retry of its own.
    let waiter = LockManager::builder(Arc::clone(&clock))
        .instances(probes.iter().map(|p| Arc::clone(p) as Arc<dyn LockBackend>))
        .retry_delay(TTL * 5, TTL * 5)
        .build()
        .unwrap();
    let held = sim.run(holder.lock("r", TTL * 10)).unwrap();
    let sleeper = Arc::clone(&clock);
    sim.spawn(async move {
        sleeper.sleep(release_at).await;
        held.release().await.unwrap();
    })
    .detach();
    sim.run(async {
        let lock = waiter.lock("r", TTL).await.unwrap();
        let at = clock.now();
        let remaining = lock.remaining();
        let mut keys_left = Vec::new();
        for m in &memories {
            let state = m.inspect(b"r").await.unwrap();
            keys_left.push(
                state
                    .filter(|s| s.value == lock.token())
                    .map(|s| s.ttl.expect("a lock key expires")),
            );
        }
        lock.release().await.unwrap();
        Seen {
            at,
            remaining,
            keys_left,
            acquires: probes
                .iter()
                .flat_map(|p| p.acquires.lock().unwrap().clone())
                .collect(),
        }
    })
}

/// The lease never outlives a key it counts on: a quorum of the instances hold the waiter's
/// token for at least the lock's remaining validity.
fn assert_keys_outlast_the_lease(seen: &Seen) {
    let outlasting = seen
        .keys_left
        .iter()
        .filter(|left| left.is_some_and(|l| l >= seen.remaining))
        .count();
    assert!(
        outlasting >= 2,
        "remaining {:?}, keys {:?}",
        seen.remaining,
        seen.keys_left
    );
}

#[test]
fn a_quorum_of_hand_offs_is_the_acquisition() {
    let seen = hand_over(true, Duration::ZERO, ms(50));
    assert_eq!(seen.at, ms(50), "taken at the release");
    // Its only requests were the refused ones of its first attempts, before the release.
    assert!(
        seen.acquires
            .iter()
            .all(|&(at, granted)| at < ms(50) && !granted),
        "{:?}",
        seen.acquires
    );
    // Measured from the round that queued it (at 0), not from the hand-off.
    assert_eq!(seen.remaining, TTL - DRIFT - ms(50));
    assert_keys_outlast_the_lease(&seen);
}

#[test]
fn a_late_hand_off_message_shortens_the_lease_not_the_keys() {
    // The messages arrive 200 ms after the keys were handed over: the keys have 800 ms left,
    // and the lease, measured from the queueing round, less.
    let seen = hand_over(true, ms(200), ms(50));
    assert_eq!(seen.at, ms(250));
    assert_eq!(seen.keys_left, vec![Some(ms(800)); 3]);
    // The promise first (a lease measured from the message would claim 988 ms).
    assert_keys_outlast_the_lease(&seen);
    assert!(seen.acquires.iter().all(|&(_, granted)| !granted));
    assert_eq!(seen.remaining, TTL - DRIFT - ms(250));
}

#[test]
fn without_rule_6_a_hand_off_wakes_an_attempt() {
    let seen = hand_over(false, Duration::ZERO, ms(50));
    assert_eq!(seen.at, ms(50));
    let after: Vec<_> = seen
        .acquires
        .iter()
        .filter(|&&(at, _)| at >= ms(50))
        .collect();
    assert_eq!(after.len(), 3, "one attempt after the hand-off: {after:?}");
    assert!(after.iter().all(|&&(_, granted)| granted));
    // That attempt's own lease: from its start, at the hand-off.
    assert_eq!(seen.remaining, TTL - DRIFT);
    assert_keys_outlast_the_lease(&seen);
}

#[test]
fn a_hand_off_after_a_long_wait_is_turned_into_an_attempt() {
    // Handed over 700 ms after the waiter queued: a lease from then would be due for renewal
    // already (at 60 % of the TTL), so the waiter makes an attempt, which sets the keys' expiry
    // afresh.
    let seen = hand_over(true, Duration::ZERO, ms(700));
    assert_eq!(seen.at, ms(700));
    let after = seen
        .acquires
        .iter()
        .filter(|&&(at, _)| at >= ms(700))
        .count();
    assert_eq!(after, 3, "{:?}", seen.acquires);
    assert_eq!(seen.remaining, TTL - DRIFT);
    assert_keys_outlast_the_lease(&seen);
}

/// Only a call that may take hand-offs as its acquisition waits for every answer of a refused
/// attempt: a `try_lock` (which never queues) still stops its attempt as soon as a quorum said
/// no, even with an instance that never answers.
#[test]
fn a_refused_try_lock_does_not_wait_for_a_hung_instance() {
    use redlock_mock::FaultyBackend;
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let (memories, holder) = instances_and_holder(&clock);
    let faulty: Vec<FaultyBackend<MemoryBackend>> = memories
        .iter()
        .map(|m| FaultyBackend::new(m.clone(), Arc::clone(&clock)))
        .collect();
    let rival = LockManager::builder(Arc::clone(&clock))
        .instances(
            faulty
                .iter()
                .map(|f| Arc::new(f.clone()) as Arc<dyn LockBackend>),
        )
        .build()
        .unwrap();
    let held = sim.run(holder.lock("r", TTL)).unwrap();
    faulty[2].faults().set_hang(true);
    let at = sim.run(async {
        let refused = rival.try_lock("r", TTL).await;
        assert!(
            matches!(refused, Err(redlock_core::Error::Contended(_))),
            "{refused:?}"
        );
        clock.now()
    });
    // The attempt stops at the two refusals; the release of what the hung instance may have
    // set (the cleanup every failed attempt makes where an answer is missing) is what waits
    // its instance timeout (100 ms), once. Waiting for every answer would double it.
    assert_eq!(at, ms(100), "returned after the cleanup alone");
    drop(held);
}
