//! `FaultyBackend` passes through everything its inner backend offers, and injects its faults
//! into release announcements like into every other call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{select, Either};
use futures::stream::{BoxStream, StreamExt};
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Clock, Config, Error, Fencing, InvalidInput,
    KeyState, LockBackend, LockManager, ReleaseNotify,
};
use redlock_mock::{FaultyBackend, MemoryBackend, Simulation};

const TTL: Duration = Duration::from_secs(10);
/// Longer than any latency injected here: a call still pending after it never answers.
const PATIENCE: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An in-memory instance whose provided methods show that they were reached: it refuses
/// every configuration, logs `close`, and announces releases only when told to.
#[derive(Debug)]
struct Picky {
    inner: MemoryBackend,
    announces: bool,
    closed: Mutex<u32>,
}

impl Picky {
    fn new(clock: &Arc<dyn Clock>, announces: bool) -> Self {
        Self {
            inner: MemoryBackend::new("picky", Arc::clone(clock)),
            announces,
            closed: Mutex::new(0),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl LockBackend for Picky {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.inner.acquire(key, token, ttl).await
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

    fn check_config(&self, _config: &Config) -> Result<(), String> {
        Err("picky refuses every configuration".into())
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        // The point of this backend: a decorator must not announce what its inner one cannot.
        if self.announces {
            self.inner.release_notify()
        } else {
            None
        }
    }

    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        self.inner.reconnects()
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        // Likewise: a decorator must not offer counters its inner backend does not keep.
        if self.announces {
            self.inner.fencing()
        } else {
            None
        }
    }

    fn handoff(&self) -> Option<&dyn redlock_core::Handoff> {
        // The in-memory backend keeps no hand-off queues.
        self.inner.handoff()
    }

    async fn connect(&self) -> Result<(), BackendError> {
        Err(BackendError::new(
            BackendErrorKind::Auth,
            "picky refuses to connect",
        ))
    }

    async fn close(&self) -> Result<(), BackendError> {
        *self.closed.lock().unwrap() += 1;
        self.inner.close().await
    }
}

#[test]
fn check_config_connect_and_close_reach_the_inner_backend() {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let faulty = Arc::new(FaultyBackend::new(
        Picky::new(&clock, true),
        Arc::clone(&clock),
    ));
    let built = LockManager::builder(Arc::clone(&clock))
        .instance(Arc::clone(&faulty) as Arc<dyn LockBackend>)
        .build();
    match built {
        Err(Error::InvalidInput(InvalidInput::Config(message))) => {
            assert!(message.contains("picky refuses"), "{message}");
        }
        other => panic!("the inner backend's check was bypassed: {other:?}"),
    }
    let refused = sim.run(faulty.connect()).expect_err("picky refuses");
    assert_eq!(refused.kind(), BackendErrorKind::Auth);
    sim.run(faulty.close()).unwrap();
    assert_eq!(*faulty.inner().closed.lock().unwrap(), 1);
}

#[test]
fn announces_exactly_when_the_inner_backend_does() {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let loud = FaultyBackend::new(Picky::new(&clock, true), Arc::clone(&clock));
    let quiet = FaultyBackend::new(Picky::new(&clock, false), Arc::clone(&clock));
    assert!(loud.release_notify().is_some());
    assert!(quiet.release_notify().is_none());
    // Called anyway (it is public), the quiet one's capability answers an error, not a panic.
    let err = sim
        .run(ReleaseNotify::subscribe(&quiet, b"k"))
        .err()
        .expect("no announcements to subscribe to");
    assert_eq!(err.kind(), BackendErrorKind::Other);
}

#[test]
fn keeps_fence_counters_exactly_when_the_inner_backend_does() {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let keeping = FaultyBackend::new(Picky::new(&clock, true), Arc::clone(&clock));
    let bare = FaultyBackend::new(Picky::new(&clock, false), Arc::clone(&clock));
    assert!(keeping.fencing().is_some());
    assert!(bare.fencing().is_none());
    // Called anyway, the bare one's capability answers an error, not a panic.
    let err = sim
        .run(Fencing::raise_fence(&bare, b"c", 1))
        .expect_err("no counters to raise");
    assert_eq!(err.kind(), BackendErrorKind::Incompatible);
    // Counter calls go through the faults: a down instance fails them.
    keeping.faults().set_down(true);
    let err = sim
        .run(Fencing::next_fence(&keeping, b"k", b"t", b"c"))
        .expect_err("down");
    assert_eq!(err.kind(), BackendErrorKind::Connection);
}

/// One instance, a decorated view of it whose faults the test switches, and a healthy view.
struct Setup {
    sim: Simulation,
    clock: Arc<dyn Clock>,
    memory: MemoryBackend,
    faulty: FaultyBackend<MemoryBackend>,
}

impl Setup {
    fn new() -> Self {
        let sim = Simulation::new();
        let clock = sim.clock_arc();
        let memory = MemoryBackend::new("mem-0", Arc::clone(&clock));
        let faulty = FaultyBackend::new(memory.clone(), Arc::clone(&clock));
        Self {
            sim,
            clock,
            memory,
            faulty,
        }
    }

    fn notify(&self) -> &dyn ReleaseNotify {
        self.faulty
            .release_notify()
            .expect("the memory backend announces")
    }

    /// Holds `k` with `tok` on the instance, and subscribes to it directly there: the probe
    /// that tells whether a release through the decorator announced.
    fn held_and_watched(&self) -> BoxStream<'static, ()> {
        assert!(self.memory.acquire_now(b"k", b"tok", TTL).unwrap());
        self.sim.run(self.memory.subscribe(b"k")).unwrap()
    }

    /// Whether the instance has a live subscription to `k` right now (it would answer "heard").
    fn subscribed_on_instance(&self) -> bool {
        assert!(self.memory.acquire_now(b"k", b"probe", TTL).unwrap());
        let (released, heard) = self
            .sim
            .run(self.memory.release_and_notify(b"k", b"probe"))
            .unwrap();
        assert!(released);
        heard
    }

    /// Runs `fut` for up to [`PATIENCE`] of virtual time; `None` when it has not answered.
    fn within_patience<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        let sleep = self.clock.sleep(PATIENCE);
        self.sim.run(async move {
            match select(Box::pin(fut), sleep).await {
                Either::Left((answer, _)) => Some(answer),
                Either::Right(((), _)) => None,
            }
        })
    }
}

#[test]
fn healthy_calls_pass_through_and_count() {
    let s = Setup::new();
    let mut watch = s.held_and_watched();
    let mut sub = s.sim.run(s.notify().subscribe(b"k")).unwrap();
    let answer = s.sim.run(s.notify().release_and_notify(b"k", b"tok"));
    assert_eq!(answer.unwrap(), (true, true));
    assert_eq!(s.memory.get(b"k"), None);
    s.sim.run(async {
        assert_eq!(sub.next().await, Some(()));
        assert_eq!(watch.next().await, Some(()));
    });
    assert_eq!(s.faulty.faults().calls(), 2);
}

#[test]
fn down_refuses_both_without_reaching_the_instance() {
    let s = Setup::new();
    let watch = s.held_and_watched();
    s.faulty.faults().set_down(true);
    let err = s
        .sim
        .run(s.notify().release_and_notify(b"k", b"tok"))
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection);
    assert_eq!(s.memory.get(b"k").as_deref(), Some(&b"tok"[..]));
    let err = s.sim.run(s.notify().subscribe(b"k")).err().expect("down");
    assert_eq!(err.kind(), BackendErrorKind::Connection);
    assert_eq!(s.faulty.faults().calls(), 2);
    drop(watch);
    assert!(s.memory.release_now(b"k", b"tok").unwrap());
    assert!(
        !s.subscribed_on_instance(),
        "the refused subscribe was applied"
    );
}

#[test]
fn an_injected_error_answers_both_without_reaching_the_instance() {
    let s = Setup::new();
    let watch = s.held_and_watched();
    s.faulty
        .faults()
        .set_error(Some((BackendErrorKind::Server, "READONLY (injected)")));
    let err = s
        .sim
        .run(s.notify().release_and_notify(b"k", b"tok"))
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Server);
    assert_eq!(err.message(), "READONLY (injected)");
    assert_eq!(s.memory.get(b"k").as_deref(), Some(&b"tok"[..]));
    let err = s.sim.run(s.notify().subscribe(b"k")).err().expect("error");
    assert_eq!(err.kind(), BackendErrorKind::Server);
    drop(watch);
    assert!(s.memory.release_now(b"k", b"tok").unwrap());
    assert!(
        !s.subscribed_on_instance(),
        "the refused subscribe was applied"
    );
}

#[test]
fn a_hang_never_answers_and_never_reaches_the_instance() {
    let s = Setup::new();
    let watch = s.held_and_watched();
    s.faulty.faults().set_hang(true);
    assert!(s
        .within_patience(s.notify().release_and_notify(b"k", b"tok"))
        .is_none());
    assert_eq!(s.memory.get(b"k").as_deref(), Some(&b"tok"[..]));
    assert!(s.within_patience(s.notify().subscribe(b"k")).is_none());
    drop(watch);
    assert!(s.memory.release_now(b"k", b"tok").unwrap());
    assert!(
        !s.subscribed_on_instance(),
        "the hung subscribe was applied"
    );
}

#[test]
fn lost_replies_apply_without_answering() {
    let s = Setup::new();
    let mut watch = s.held_and_watched();
    s.faulty.faults().set_lose_replies(true);
    assert!(s
        .within_patience(s.notify().release_and_notify(b"k", b"tok"))
        .is_none());
    assert_eq!(s.memory.get(b"k"), None, "the release was applied");
    s.sim
        .run(async { assert_eq!(watch.next().await, Some(())) });
    drop(watch);

    // The subscription is made on the instance while its caller still waits for the
    // acknowledgement, and dropped when the caller gives up.
    let mut pending = s.notify().subscribe(b"k");
    let sleep = s.clock.sleep(PATIENCE);
    let answered = s
        .sim
        .run(async { matches!(select(&mut pending, sleep).await, Either::Left(_)) });
    assert!(!answered, "a lost acknowledgement answered");
    assert!(s.subscribed_on_instance(), "the subscribe was not applied");
    drop(pending);
    assert!(!s.subscribed_on_instance(), "giving up did not unsubscribe");
}

#[test]
fn latency_is_spent_on_both() {
    let s = Setup::new();
    let _watch = s.held_and_watched();
    s.faulty.faults().set_latency(ms(40));
    let answer = s.sim.run(s.notify().release_and_notify(b"k", b"tok"));
    assert_eq!(answer.unwrap(), (true, true));
    assert_eq!(s.clock.now(), ms(40));
    let _sub = s.sim.run(s.notify().subscribe(b"k")).unwrap();
    assert_eq!(s.clock.now(), ms(80));
}
