//! No lock key outlives its waiters after a mass drop, on virtual time. Thousands of tasks
//! queue on a few resources behind a saturated in-flight limit; every one of them is dropped at
//! once (the end of a run, a shutdown). The releases that clean up after them must all be sent,
//! even at the limit, and dropped waiters whose attempt never went out must not flood the
//! instances with releases for keys they never set.

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use common::{ms, Cluster, Recorder};
use futures::future::select;
use redlock_lease::{LockManager, LockOptions, Patience, SeededRandom};

/// Long enough that nothing expires on its own while the test looks.
const TTL: Duration = Duration::from_secs(60);

/// `tasks` tasks loop lock → hold 1 ms → release on `resources` resources for `run`, and are then
/// all dropped. Returns the keys left on the instances once every call in flight had time to
/// finish (at most `settle` of virtual time later, well inside the TTL).
fn left_after_mass_drop(seed: u64, tasks: usize, resources: usize) -> (usize, usize) {
    let c = Cluster::new(3);
    c.set_latency(ms(3));
    let (backends, log) = Recorder::wrap(&c.backends, &c.clock);
    let manager = LockManager::builder(Arc::clone(&c.clock))
        .instances(backends)
        .random(Arc::new(SeededRandom::new(seed)))
        .spawner(c.sim.spawner())
        .max_in_flight(8)
        .build()
        .expect("config");
    let names: Vec<String> = (0..resources).map(|r| format!("res-{r}")).collect();
    // Every task stops at the same instant, as at the end of a timed run: its lock call is
    // dropped right after its last poll, so a waiter promoted by the drop of the one ahead of
    // it may start an attempt just before being dropped in turn.
    let stop_at = c.now() + ms(500);
    for t in 0..tasks {
        let (manager, clock) = (manager.clone(), Arc::clone(&c.clock));
        let name = names[t % resources].clone();
        c.sim
            .spawn(async move {
                let work = async {
                    let options = LockOptions::new(TTL).patience(Patience::UntilCancelled);
                    loop {
                        if let Ok(lock) = manager.lock_opts(&name, options).await {
                            clock.sleep(ms(1)).await;
                            let _ = lock.release().await;
                        }
                    }
                };
                let stop = clock.sleep(stop_at.saturating_sub(clock.now()));
                select(pin!(work), stop).await;
            })
            .detach();
    }
    let clock = Arc::clone(&c.clock);
    c.sim
        .run(async move { clock.sleep(stop_at.saturating_sub(clock.now())).await });
    // Every call still in flight ends within one instance timeout and every background release
    // within another: wait until no key is left, or give up after a bound far above that.
    let left = || -> usize { names.iter().map(|n| c.with_key(n.as_bytes())).sum() };
    let clock = Arc::clone(&c.clock);
    let settle = Duration::from_secs(5);
    let deadline = c.now() + settle;
    c.sim.run(async {
        while left() > 0 && clock.now() < deadline {
            clock.sleep(ms(1)).await;
        }
    });
    assert!(c.now() < deadline + TTL, "nothing could have expired");
    let sent_after_stop = log
        .lock()
        .unwrap()
        .iter()
        .filter(|call| call.op == "acquire" && call.at >= stop_at)
        .count();
    (left(), sent_after_stop)
}

#[test]
fn no_key_outlives_a_mass_drop_of_waiters() {
    for seed in 1..=3 {
        let (left, _) = left_after_mass_drop(seed, 2_000, 20);
        assert_eq!(
            left, 0,
            "seed {seed}: {left} keys left after every waiter was dropped"
        );
    }
}

#[test]
fn dropped_waiters_send_nothing() {
    // Each dropped head of a queue promotes the next waiter, itself being dropped in the same
    // instant: it must not send an acquire (and then a cleanup release) on its way out. On a
    // real client a burst of 2 × waiters × N commands at the end of a run left the connection
    // queues so long that releases timed out unsent and their keys stayed for the TTL.
    for seed in 1..=3 {
        let (_, sent) = left_after_mass_drop(seed, 2_000, 20);
        // At most one attempt per resource, on every instance, may start at that very instant
        // for reasons of its own (a head promoted by a release just then).
        assert!(
            sent <= 20 * 3,
            "seed {seed}: {sent} acquire calls sent at or after the stop"
        );
    }
}
