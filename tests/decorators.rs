//! Decorators over backends: a user's own decorator, generic over `B: LockBackend`, wraps an
//! `Arc<dyn LockBackend>` or a `Box<dyn LockBackend>` and goes to the manager builder, and
//! every decorator passes the inner backend's configuration check and announcements through.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ms, TTL};
use futures::stream::BoxStream;
use redlock_lease::{
    async_trait, BackendError, BackendErrorKind, Clock, Config, Fencing, Handoff, KeyState,
    LockBackend, LockManager, QueuePlace, ReleaseNotify,
};
use redlock_mock::{FaultyBackend, MemoryBackend, Simulation};

/// What a user might write: counts the calls that reach the instance, forwards everything.
#[derive(Debug)]
struct Counting<B> {
    inner: B,
    calls: AtomicU64,
}

impl<B: LockBackend> Counting<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
        }
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

fn no_announcements() -> BackendError {
    BackendError::new(BackendErrorKind::Other, "no release announcements")
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> LockBackend for Counting<B> {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.count();
        self.inner.acquire(key, token, ttl).await
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.count();
        self.inner.extend(key, token, ttl).await
    }

    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        self.count();
        self.inner.release(key, token).await
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.count();
        self.inner.inspect(key).await
    }

    fn check_config(&self, config: &Config) -> Result<(), String> {
        self.inner.check_config(config)
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
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
        self.inner.handoff().map(|_| self as &dyn Handoff)
    }

    async fn connect(&self) -> Result<(), BackendError> {
        self.inner.connect().await
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.inner.close().await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> ReleaseNotify for Counting<B> {
    async fn release_and_notify(
        &self,
        key: &[u8],
        token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        self.count();
        match self.inner.release_notify() {
            Some(notify) => notify.release_and_notify(key, token).await,
            None => Err(no_announcements()),
        }
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        self.count();
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
impl<B: LockBackend> Fencing for Counting<B> {
    async fn next_fence(
        &self,
        key: &[u8],
        token: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        self.count();
        match self.inner.fencing() {
            Some(fencing) => fencing.next_fence(key, token, counter).await,
            None => Err(no_counters()),
        }
    }

    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        self.count();
        match self.inner.fencing() {
            Some(fencing) => fencing.raise_fence(counter, value).await,
            None => Err(no_counters()),
        }
    }
}

fn no_handoffs() -> BackendError {
    BackendError::new(BackendErrorKind::Incompatible, "no hand-offs")
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> Handoff for Counting<B> {
    async fn listen(&self, token: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        self.count();
        match self.inner.handoff() {
            Some(h) => h.listen(token).await,
            None => Err(no_handoffs()),
        }
    }

    async fn acquire_or_queue(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError> {
        self.count();
        match self.inner.handoff() {
            Some(h) => h.acquire_or_queue(key, token, ttl, place).await,
            None => Err(no_handoffs()),
        }
    }

    async fn release_and_hand_off(
        &self,
        key: &[u8],
        token: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError> {
        self.count();
        match self.inner.handoff() {
            Some(h) => h.release_and_hand_off(key, token, leaving).await,
            None => Err(no_handoffs()),
        }
    }

    fn grants_by_hand_off(&self) -> bool {
        self.inner
            .handoff()
            .is_some_and(Handoff::grants_by_hand_off)
    }
}

/// A holder releases at 50 ms while a waiter, whose instances are `decorate`d, waits; returns
/// when the waiter got the lock.
fn waiter_through<D: LockBackend + 'static>(
    decorate: impl Fn(Arc<dyn LockBackend>, &Arc<dyn Clock>) -> D,
) -> (Duration, Vec<Arc<D>>) {
    waiter_through_on(false, decorate)
}

/// [`waiter_through`] on instances that hand keys to queued waiters when `hand_off`.
fn waiter_through_on<D: LockBackend + 'static>(
    hand_off: bool,
    decorate: impl Fn(Arc<dyn LockBackend>, &Arc<dyn Clock>) -> D,
) -> (Duration, Vec<Arc<D>>) {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let instances: Vec<Arc<dyn LockBackend>> = (0..3)
        .map(|i| {
            Arc::new(MemoryBackend::new(format!("mem-{i}"), Arc::clone(&clock)).hand_off(hand_off))
                as Arc<dyn LockBackend>
        })
        .collect();
    let decorated: Vec<Arc<D>> = instances
        .iter()
        .map(|b| Arc::new(decorate(Arc::clone(b), &clock)))
        .collect();
    let holder = LockManager::builder(Arc::clone(&clock))
        .instances(instances)
        .build()
        .unwrap();
    let waiter = LockManager::builder(Arc::clone(&clock))
        .instances(
            decorated
                .iter()
                .map(|d| Arc::clone(d) as Arc<dyn LockBackend>),
        )
        .build()
        .unwrap();
    let lock = sim.run(holder.lock("r", TTL)).unwrap();
    let sleeper = Arc::clone(&clock);
    sim.spawn(async move {
        sleeper.sleep(ms(50)).await;
        lock.release().await.unwrap();
    })
    .detach();
    let at = sim.run(async {
        let got = waiter.lock("r", TTL).await.unwrap();
        let at = clock.now();
        got.release().await.unwrap();
        at
    });
    (at, decorated)
}

#[test]
fn a_users_decorator_wraps_an_arc_dyn_backend_and_keeps_its_announcements() {
    let (at, decorated) = waiter_through(|b, _| Counting::new(b));
    // Woken by the release at 50 ms, not after a 100-300 ms retry delay.
    assert_eq!(at, ms(50));
    for d in &decorated {
        assert!(d.calls.load(Ordering::SeqCst) > 0, "{d:?}");
    }
}

#[test]
fn a_users_decorator_wraps_a_boxed_dyn_backend() {
    let (at, _) = waiter_through(|b: Arc<dyn LockBackend>, _| {
        let boxed: Box<dyn LockBackend> = Box::new(b);
        Counting::new(boxed)
    });
    assert_eq!(at, ms(50));
}

#[test]
fn faulty_backend_wraps_an_arc_dyn_backend() {
    let (at, decorated) = waiter_through(|b, clock| FaultyBackend::new(b, Arc::clone(clock)));
    assert_eq!(at, ms(50));
    for d in &decorated {
        assert!(d.faults().calls() > 0);
    }
}

/// The fred backend's own check, through decorators (the `fred` feature, on by default).
#[cfg(feature = "fred")]
mod over_redis {
    use super::*;
    use redlock_lease::fred::RedisBackend;
    use redlock_lease::{Error, InvalidInput};

    /// How a test puts a backend behind its decorators.
    type Wrap<'a> = Box<dyn FnOnce(RedisBackend) -> Arc<dyn LockBackend> + 'a>;

    /// The fred backend refuses a manager whose per-instance timeout is not above fred's own
    /// command timeout (90 ms by default); decorated, it still must.
    fn build_over_redis(
        clock: &Arc<dyn Clock>,
        wrap: impl FnOnce(RedisBackend) -> Arc<dyn LockBackend>,
    ) -> Result<(), Error> {
        // Never connects: the check runs at build, without the network.
        let redis = RedisBackend::new(("127.0.0.1", 1)).expect("a valid address");
        LockManager::builder(Arc::clone(clock))
            .instance(wrap(redis))
            .instance_timeout(ms(50))
            .build()
            .map(drop)
    }

    #[test]
    fn decorated_redis_backends_keep_their_timeout_check() {
        let clock: Arc<dyn Clock> = Simulation::new().clock_arc();
        let wraps: [(&str, Wrap<'_>); 4] = [
            ("plain", Box::new(|r| Arc::new(r))),
            (
                "FaultyBackend",
                Box::new(|r| Arc::new(FaultyBackend::new(r, Arc::clone(&clock)))),
            ),
            ("Counting", Box::new(|r| Arc::new(Counting::new(r)))),
            (
                "Counting<Arc<dyn>>",
                Box::new(|r| Arc::new(Counting::new(Arc::new(r) as Arc<dyn LockBackend>))),
            ),
        ];
        for (name, wrap) in wraps {
            match build_over_redis(&clock, wrap) {
                Err(Error::InvalidInput(InvalidInput::Config(message))) => {
                    assert!(message.contains("command timeout"), "{name}: {message}");
                }
                other => panic!("{name}: the fred backend's check was bypassed: {other:?}"),
            }
        }
    }
}

#[test]
fn a_users_decorator_passes_hand_offs_through() {
    // Two managers (two processes) on hand-off instances, the waiter's through the decorator:
    // it queues and is handed the key when the holder releases at 50 ms.
    let (at, decorated) = waiter_through_on(true, |b, _| Counting::new(b));
    // Handed the key at the release, not after a 100-300 ms retry delay.
    assert_eq!(at, ms(50));
    for d in &decorated {
        // A refused attempt, the listen, the queued attempt, the attempt after the hand-off
        // and the release: all through the decorator.
        assert!(d.calls.load(Ordering::SeqCst) >= 4, "{d:?}");
    }
}
