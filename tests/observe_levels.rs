//! The operations' spans follow the subscriber in place at each call, and nobody pays for spans
//! nobody reads: an operation builds its `DEBUG` span, times itself and wraps its call only
//! when the level in force lets `DEBUG` through (or the `metrics` feature is on). That check is
//! made per call, so a subscriber installed after the manager was built, or a level raised at
//! run time, is seen by the next call.
//!
//! CI also runs this file with `tracing` alone (`--no-default-features --features tracing`), the
//! one build where the level decides; with `metrics` on every operation is observed, and the
//! assertions that depend on the level are left out.
//!
//! The level in force is the highest any subscriber in the process takes, so the tests of this
//! file run one at a time.

mod capture;
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capture::{Capture, Log};
use common::{Cluster, TTL};
use futures::future::BoxFuture;
use redlock_lease::{Clock, LockManager};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// One test at a time: a subscriber at `DEBUG` on one thread raises the level for all.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The cluster's clock, counting its reads.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Clock>,
    reads: AtomicUsize,
}

impl Clock for Counting {
    fn now(&self) -> Duration {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.inner.sleep(duration)
    }
}

/// A lock, extend, check and release of `resource`.
fn cycle(c: &Cluster, manager: &LockManager, resource: &str) {
    c.sim.run(async {
        let lock = manager.lock(resource, TTL).await.expect("free");
        lock.extend_for(TTL).await.expect("extend");
        lock.check().await.expect("held");
        lock.release().await.expect("release");
    });
}

/// A cycle under a subscriber at `level`: what it saw, and how often the clock was read.
fn cycle_at(
    level: LevelFilter,
    c: &Cluster,
    manager: &LockManager,
    clock: &Counting,
) -> (Log, usize) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(level)
        .with(capture.clone());
    let before = clock.reads.load(Ordering::Relaxed);
    tracing::subscriber::with_default(subscriber, || cycle(c, manager, "job"));
    let reads = clock.reads.load(Ordering::Relaxed) - before;
    let seen = std::mem::take(&mut *capture.0.lock().unwrap());
    (seen, reads)
}

fn counted(c: &Cluster) -> (LockManager, Arc<Counting>) {
    let clock = Arc::new(Counting {
        inner: Arc::clone(&c.clock),
        reads: AtomicUsize::new(0),
    });
    let manager = LockManager::builder(Arc::clone(&clock) as Arc<dyn Clock>)
        .instances(c.backends.iter().cloned())
        .random(Arc::new(redlock_lease::SeededRandom::new(1)))
        .build()
        .expect("valid configuration");
    (manager, clock)
}

#[test]
fn a_subscriber_at_debug_sees_every_operation_even_one_installed_after_the_manager_was_used() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::new(3);
    let (manager, clock) = counted(&c);
    // Used first with nothing listening on this thread.
    cycle(&c, &manager, "before");
    // One instance down: each round reports it, in a `DEBUG` event.
    c.faults[2].set_down(true);
    // Exactly DEBUG: a check for any level above it (TRACE) would find nothing enabled and
    // leave the spans out.
    let (seen, _) = cycle_at(LevelFilter::DEBUG, &c, &manager, &clock);
    let spans: Vec<(&str, &str)> = seen
        .spans
        .iter()
        .map(|span| (span.name, span.get("outcome")))
        .collect();
    assert_eq!(
        spans,
        [
            ("redlock.lock", "acquired"),
            ("redlock.extend", "extended"),
            ("redlock.check", "held"),
            ("redlock.release", "released"),
        ]
    );
    assert_eq!(seen.spans[0].get("attempts"), "1", "the lock's attempts");
    let gave_no_answer = seen
        .events
        .iter()
        .filter(|e| e.message == "instance gave no answer")
        .count();
    assert_eq!(gave_no_answer, 4, "one per round: {:?}", seen.events);
}

#[test]
fn below_debug_an_operation_makes_no_span_and_reads_no_clock_for_itself() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::new(3);
    let (manager, clock) = counted(&c);
    let (seen, debug_reads) = cycle_at(LevelFilter::DEBUG, &c, &manager, &clock);
    assert_eq!(seen.spans.len(), 4, "{seen:?}");
    for level in [LevelFilter::INFO, LevelFilter::OFF] {
        let (seen, reads) = cycle_at(level, &c, &manager, &clock);
        assert!(
            seen.spans
                .iter()
                .all(|span| !span.name.starts_with("redlock.")),
            "{level}: {seen:?}"
        );
        // Each of the four operations reads the clock at its start and its end to time itself.
        if cfg!(feature = "metrics") {
            assert_eq!(
                reads, debug_reads,
                "{level}: every call is timed for metrics"
            );
        } else {
            assert_eq!(reads + 8, debug_reads, "{level}");
        }
    }
    // And back at DEBUG on the same manager: seen again.
    let (seen, reads) = cycle_at(LevelFilter::DEBUG, &c, &manager, &clock);
    assert_eq!(seen.spans.len(), 4, "{seen:?}");
    assert_eq!(reads, debug_reads);
}
