//! The in-memory backend meets the LockBackend and ReleaseNotify contracts (and, with its
//! hand-off queues on, the Handoff contract): directly, through `Arc<dyn LockBackend>`, through
//! a `FaultyBackend` with its faults off, and through the simulated network links of a `World`
//! (which keep no queues).

use std::sync::{Arc, Mutex};

use redlock_core::conformance::{self, Fixture};
use redlock_core::{async_trait, Clock, LockBackend};
use redlock_mock::{FaultyBackend, MemoryBackend, Simulation, World};

/// Direct access to the instance behind the backend under test, and whether that backend
/// should hand off (the suite checks that it does exactly then).
struct MemoryFixture(MemoryBackend, bool);

#[async_trait]
impl Fixture for MemoryFixture {
    async fn plant_other_type(&self, key: &[u8]) {
        self.0.put_list(key);
    }

    async fn other_type_intact(&self, key: &[u8]) -> bool {
        self.0.holds_list(key)
    }

    async fn delete(&self, key: &[u8]) {
        self.0.delete(key);
    }

    fn announces_releases(&self) -> bool {
        true
    }

    fn keeps_fence_counters(&self) -> bool {
        true
    }

    fn hands_off(&self) -> bool {
        self.1
    }
}

/// Runs the suite over `wrap(instance)` on a fresh simulation, with and without hand-off
/// queues on the instance (the wrapper must forward the capability as it is).
fn passes(wrap: impl Fn(MemoryBackend, &Arc<dyn Clock>) -> Arc<dyn LockBackend>) {
    for hand_off in [false, true] {
        passes_with(hand_off, &wrap);
    }
}

fn passes_with(
    hand_off: bool,
    wrap: impl Fn(MemoryBackend, &Arc<dyn Clock>) -> Arc<dyn LockBackend>,
) {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let memory = MemoryBackend::new("mem-0", Arc::clone(&clock)).hand_off(hand_off);
    let backend = wrap(memory.clone(), &clock);
    let fixture = MemoryFixture(memory.clone(), hand_off);
    sim.run(conformance::run_all(
        backend.as_ref(),
        clock.as_ref(),
        &fixture,
        b"conformance:",
    ));
    assert!(memory.is_empty(), "the suite cleans up after itself");
}

/// The suite on one in-memory backend, handing off when `hand_off` (then the `Handoff` rules
/// run too, and no queue key may be left behind).
fn memory_passes(hand_off: bool) {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let backend = MemoryBackend::new("mem-0", Arc::clone(&clock)).hand_off(hand_off);
    let fixture = MemoryFixture(backend.clone(), hand_off);
    sim.run(conformance::run_all(
        &backend,
        clock.as_ref(),
        &fixture,
        b"conformance:",
    ));
    assert!(backend.is_empty(), "the suite cleans up after itself");
}

#[test]
fn memory_backend_passes_the_conformance_suite() {
    memory_passes(false);
}

#[test]
fn a_handing_off_memory_backend_passes_the_conformance_suite() {
    memory_passes(true);
}

#[test]
fn an_arc_dyn_backend_passes_the_conformance_suite() {
    passes(|memory, _| Arc::new(Arc::new(memory) as Arc<dyn LockBackend>));
}

#[test]
fn a_boxed_dyn_backend_passes_the_conformance_suite() {
    passes(|memory, _| Arc::new(Box::new(memory) as Box<dyn LockBackend>));
}

#[test]
fn a_faulty_backend_with_faults_off_passes_the_conformance_suite() {
    passes(|memory, clock| Arc::new(FaultyBackend::new(memory, Arc::clone(clock))));
}

#[test]
fn a_faulty_backend_over_an_arc_dyn_backend_passes_the_conformance_suite() {
    passes(|memory, clock| {
        let inner: Arc<dyn LockBackend> = Arc::new(memory);
        Arc::new(FaultyBackend::new(inner, Arc::clone(clock)))
    });
}

/// Client 0's link to instance 0 of a two-client world (a [`redlock_mock::LinkBackend`]), as
/// its manager got it.
fn world_link(latency: redlock_mock::Latency) -> (World, Arc<dyn LockBackend>) {
    let link: Arc<Mutex<Option<Arc<dyn LockBackend>>>> = Arc::default();
    let slot = Arc::clone(&link);
    let world = World::builder()
        .seed(7)
        .instances(3)
        .clients(2)
        .latency(latency)
        .wrap_backends(move |c, i, backend| {
            if (c, i) == (0, 0) {
                *slot.lock().unwrap() = Some(Arc::clone(&backend));
            }
            backend
        })
        .build()
        .expect("a valid world");
    let link = link
        .lock()
        .unwrap()
        .take()
        .expect("client 0's link to instance 0");
    (world, link)
}

#[test]
fn a_world_link_passes_the_conformance_suite() {
    use redlock_mock::Latency;
    use std::time::Duration;
    for latency in [
        Latency::Fixed(Duration::ZERO),
        Latency::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
    ] {
        let (world, link) = world_link(latency);
        let clock = world.clock();
        let fixture = MemoryFixture(world.instance(0).clone(), false);
        world.run(conformance::run_all(
            link.as_ref(),
            &clock,
            &fixture,
            b"conformance:",
        ));
        assert!(
            world.instance(0).is_empty(),
            "{latency:?}: left keys behind"
        );
        assert!(
            world.notify_stats().subscriptions > 0,
            "{latency:?}: the announcement rules did not run over the link"
        );
    }
}

/// Restarts instance 0 of the world (empty, at once): every link to it reconnects.
struct Bounce(World);

#[async_trait]
impl conformance::Reconnect for Bounce {
    async fn break_connection(&self) {
        self.0.bounce(0);
    }
}

fn reconnecting_world_link(wrap: bool) -> (World, Arc<dyn LockBackend>) {
    use redlock_mock::Latency;
    use std::time::Duration;
    let link: Arc<Mutex<Option<Arc<dyn LockBackend>>>> = Arc::default();
    let slot = Arc::clone(&link);
    let world = World::builder()
        .seed(11)
        .instances(3)
        .clients(2)
        .latency(Latency::Fixed(Duration::from_millis(1)))
        .reconnect_delay(Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(50),
        })
        .wrap_backends(move |c, i, backend| {
            if (c, i) == (0, 0) {
                *slot.lock().unwrap() = Some(Arc::clone(&backend));
            }
            backend
        })
        .build()
        .expect("a valid world");
    let link = link.lock().unwrap().take().expect("client 0's link");
    let link: Arc<dyn LockBackend> = if wrap {
        Arc::new(FaultyBackend::new(link, Arc::new(world.clock())))
    } else {
        link
    };
    (world, link)
}

#[test]
fn a_reconnecting_world_link_announces_its_reconnections() {
    for wrap in [false, true] {
        let (world, link) = reconnecting_world_link(wrap);
        let clock = world.clock();
        let bounce = Bounce(world.clone());
        world.run(conformance::a_reconnection_is_announced(
            link.as_ref(),
            &clock,
            &bounce,
            b"conformance:",
        ));
        assert!(world.reconnected_at(0, 0).is_some(), "wrapped: {wrap}");
        assert!(world.instance(0).is_empty(), "wrapped: {wrap}: left keys");
    }
}

#[test]
fn a_world_without_reconnections_offers_no_stream() {
    let (_world, link) = world_link(redlock_mock::Latency::default());
    assert!(link.reconnects().is_none());
}

#[test]
#[should_panic(expected = "reconnects() is None")]
fn the_reconnection_rule_fails_a_backend_that_offers_nothing() {
    let (world, link) = world_link(redlock_mock::Latency::default());
    let clock = world.clock();
    let bounce = Bounce(world.clone());
    world.run(conformance::a_reconnection_is_announced(
        link.as_ref(),
        &clock,
        &bounce,
        b"conformance:",
    ));
}
