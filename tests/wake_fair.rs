//! Wake-on-release and fair mode on virtual time, with in-memory instances that announce
//! releases (no latency: any delay measured here is the algorithm's own).

mod common;

use common::ms;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redlock_lease::{Clock, Error, LockBackend, LockManager, LockManagerBuilder, SeededRandom};
use redlock_mock::{MemoryBackend, Simulation};

const TTL: Duration = Duration::from_secs(10);
const HOLD: Duration = Duration::from_millis(20);

struct World {
    sim: Simulation,
    clock: Arc<dyn Clock>,
    instances: Vec<Arc<dyn LockBackend>>,
}

impl World {
    fn new(n: usize) -> Self {
        let sim = Simulation::new();
        let clock = sim.clock_arc();
        let instances = MemoryBackend::cluster(n, &clock);
        Self {
            sim,
            clock,
            instances,
        }
    }

    fn builder(&self, seed: u64) -> LockManagerBuilder {
        LockManager::builder(Arc::clone(&self.clock))
            .instances(self.instances.iter().cloned())
            .random(Arc::new(SeededRandom::new(seed)))
    }
}

/// When the waiter got the lock after the holder released at 50 ms.
fn waiter_acquired_at(wake: bool) -> Duration {
    let w = World::new(3);
    let holder = w.builder(1).build().unwrap();
    let waiter = w.builder(2).wake_on_release(wake).build().unwrap();
    let lock = w.sim.run(holder.lock("r", TTL)).unwrap();
    let clock = Arc::clone(&w.clock);
    w.sim
        .spawn(async move {
            clock.sleep(ms(50)).await;
            lock.release().await.unwrap();
        })
        .detach();
    let clock = Arc::clone(&w.clock);
    w.sim.run(async move {
        let got = waiter.lock("r", TTL).await.unwrap();
        let at = clock.now();
        got.release().await.unwrap();
        at
    })
}

#[test]
fn a_waiter_wakes_when_the_lock_is_released_not_when_its_delay_ends() {
    assert_eq!(waiter_acquired_at(true), ms(50));
    // Without announcements it sleeps out a 100–300 ms delay first.
    let polled = waiter_acquired_at(false);
    assert!(polled >= ms(100), "{polled:?}");
}

/// [`waiter_acquired_at`] through fault-injecting decorators with 4 ms per call: the
/// decorators pass the announcements through, delayed like every call.
fn waiter_behind_decorators_acquired_at(wake: bool) -> Duration {
    let c = common::Cluster::new(3);
    let latencies = [ms(4); 3];
    let holder = c.client(1, &latencies).0.build().unwrap();
    let waiter = c
        .client(2, &latencies)
        .0
        .wake_on_release(wake)
        .build()
        .unwrap();
    let lock = c.sim.run(holder.lock("r", TTL)).unwrap();
    let clock = Arc::clone(&c.clock);
    c.sim
        .spawn(async move {
            clock.sleep(ms(50)).await;
            lock.release().await.unwrap();
        })
        .detach();
    let clock = Arc::clone(&c.clock);
    c.sim.run(async move {
        let got = waiter.lock("r", TTL).await.unwrap();
        let at = clock.now();
        got.release().await.unwrap();
        at
    })
}

#[test]
fn a_waiter_behind_faulty_decorators_wakes_on_the_release() {
    let woken = waiter_behind_decorators_acquired_at(true);
    // The release starts at 54 ms (after the holder's 4 ms acquire) and lands 2 ms later; the
    // waiter's next attempt then takes one 4 ms round.
    assert_eq!(woken, ms(54 + 2 + 4));
    let polled = waiter_behind_decorators_acquired_at(false);
    assert!(polled >= ms(100), "{polled:?}");
}

#[test]
fn a_release_before_the_subscription_is_still_seen() {
    // The holder releases at the very moment the waiter's attempt is refused, before the
    // waiter subscribes: the check made right after subscribing must notice the free lock.
    let w = World::new(3);
    let holder = w.builder(3).build().unwrap();
    let waiter = w.builder(4).build().unwrap();
    let lock = w.sim.run(holder.lock("r", TTL)).unwrap();
    let clock = Arc::clone(&w.clock);
    let got = w.sim.run(async {
        let (got, released) = futures::future::join(waiter.lock("r", TTL), lock.release()).await;
        released.unwrap();
        (got.map(|l| l.token().to_vec()), clock.now())
    });
    let (got, at) = got;
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(at, Duration::ZERO, "no retry delay was slept");
}

/// Two tasks on one resource, each holding it 20 ms and asking again right after releasing,
/// for `span` of virtual time. Returns critical sections per task and the longest streak.
fn handoff(fair: bool, span: Duration) -> ([u64; 2], u64) {
    handoff_holding(fair, span, HOLD)
}

/// [`handoff`] with each critical section lasting `hold`.
fn handoff_holding(fair: bool, span: Duration, hold: Duration) -> ([u64; 2], u64) {
    let w = World::new(3);
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    for task in 0..2usize {
        let mut builder = w.builder(10 + task as u64);
        if fair {
            builder = builder.fair(redlock_lease::DEFAULT_FAIR_GRACE);
        }
        let manager = builder.build().unwrap();
        let clock = Arc::clone(&w.clock);
        let counts = Arc::clone(&counts);
        let log = Arc::clone(&log);
        let stop = Arc::clone(&stop);
        w.sim
            .spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match manager.lock("shared", TTL).await {
                        Ok(lock) => {
                            clock.sleep(hold).await;
                            counts[task].fetch_add(1, Ordering::SeqCst);
                            log.lock().unwrap().push(task);
                            lock.release().await.unwrap();
                        }
                        Err(Error::Contended(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
            .detach();
    }
    let clock = Arc::clone(&w.clock);
    let stop_at = Arc::clone(&stop);
    w.sim.run(async move {
        clock.sleep(span).await;
        stop_at.store(true, Ordering::SeqCst);
        clock.sleep(Duration::from_secs(1)).await;
    });
    let log = log.lock().unwrap().clone();
    let mut longest = 0;
    let mut run = 0;
    for (i, t) in log.iter().enumerate() {
        run = if i > 0 && log[i - 1] == *t {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
    }
    (
        [
            counts[0].load(Ordering::SeqCst),
            counts[1].load(Ordering::SeqCst),
        ],
        longest,
    )
}

#[test]
fn without_fair_mode_the_releaser_keeps_winning() {
    let ([a, b], longest) = handoff(false, Duration::from_secs(4));
    println!("unfair {a}/{b}, longest streak {longest}");
    let total = a + b;
    // The releaser asks again with no delay while the waiter still has to wake: it wins.
    assert!(a.min(b) * 10 < total, "a = {a}, b = {b}");
    assert!(longest * 2 > total, "longest streak {longest} of {total}");
}

#[test]
fn fair_mode_alternates_at_nearly_the_same_throughput() {
    let ([ua, ub], _) = handoff(false, Duration::from_secs(4));
    let ([a, b], longest) = handoff(true, Duration::from_secs(4));
    println!("unfair {ua}/{ub}, fair {a}/{b}, longest fair streak {longest}");
    let (fair, unfair) = (a + b, ua + ub);
    assert!(a * 10 >= fair * 4 && b * 10 >= fair * 4, "a = {a}, b = {b}");
    assert!(fair * 10 >= unfair * 9, "fair {fair} vs unfair {unfair}");
    assert!(longest <= 2, "longest streak {longest}");
}

#[test]
fn fair_mode_alternates_when_the_hold_is_shorter_than_the_grace() {
    // A 10 ms hold with a 20 ms grace: the waiter takes its turn and releases while the first
    // releaser is still stepping aside. The yielding releaser listens, so that release is heard
    // and the second releaser yields in turn, instead of taking the lock straight back.
    let ([a, b], longest) = handoff_holding(true, Duration::from_secs(4), ms(10));
    println!("fair, 10 ms hold: {a}/{b}, longest streak {longest}");
    let total = a + b;
    assert!(
        a * 10 >= total * 4 && b * 10 >= total * 4,
        "a = {a}, b = {b}"
    );
    // A releaser that slept through its yield without listening let the other take a second
    // turn in a row every time (streak 2).
    assert_eq!(longest, 1, "strict alternation");
}

#[test]
fn a_vanished_waiter_delays_the_releaser_by_exactly_the_grace() {
    let w = World::new(3);
    let releaser = w.builder(20).fair(ms(20)).build().unwrap();
    let lock = w.sim.run(releaser.lock("r", TTL)).unwrap();
    // A waiter that subscribed and then stopped (paused, or gone without closing its
    // connection): it hears the release but never takes its turn. The worst case.
    let _silent: Vec<_> = w.sim.run(async {
        let mut subs = Vec::new();
        for i in &w.instances {
            subs.push(i.release_notify().unwrap().subscribe(b"r").await.unwrap());
        }
        subs
    });
    let clock = Arc::clone(&w.clock);
    let (released_at, relocked_at) = w.sim.run(async {
        lock.release().await.unwrap();
        let released_at = clock.now();
        let again = releaser.lock("r", TTL).await.unwrap();
        let at = clock.now();
        again.release().await.unwrap();
        (released_at, at)
    });
    assert_eq!(relocked_at - released_at, ms(20));
}

#[test]
fn with_nobody_waiting_fair_mode_costs_nothing() {
    let w = World::new(3);
    let manager = w.builder(22).fair(ms(20)).build().unwrap();
    let clock = Arc::clone(&w.clock);
    let elapsed = w.sim.run(async {
        for _ in 0..100 {
            let lock = manager.lock("r", TTL).await.unwrap();
            lock.release().await.unwrap();
        }
        clock.now()
    });
    assert_eq!(elapsed, Duration::ZERO);
}

/// Four waiters queue behind a holder; each keeps the lock 50 ms. Returns how many of them got
/// it with the default three attempts.
fn queue_of_four(seed: u64, wake: bool) -> usize {
    let w = World::new(3);
    let holder = w.builder(seed).build().unwrap();
    let lock = w.sim.run(holder.lock("q", TTL)).unwrap();
    let got = Arc::new(AtomicU64::new(0));
    for i in 0..4u64 {
        let manager = w
            .builder(seed * 100 + i + 1)
            .wake_on_release(wake)
            .build()
            .unwrap();
        let clock = Arc::clone(&w.clock);
        let got = Arc::clone(&got);
        w.sim
            .spawn(async move {
                if let Ok(lock) = manager.lock("q", TTL).await {
                    got.fetch_add(1, Ordering::SeqCst);
                    clock.sleep(ms(50)).await;
                    lock.release().await.unwrap();
                }
            })
            .detach();
    }
    let clock = Arc::clone(&w.clock);
    w.sim.run(async move {
        clock.sleep(ms(50)).await;
        lock.release().await.unwrap();
        clock.sleep(Duration::from_secs(5)).await;
    });
    got.load(Ordering::SeqCst) as usize
}

#[test]
fn waiters_woken_by_every_release_do_not_use_up_their_attempts() {
    // Every release wakes every waiter and only one wins; attempts made early within a retry
    // window are free, so the fourth in line is not turned away after three releases.
    for seed in 1..=20 {
        assert_eq!(queue_of_four(seed, true), 4, "seed {seed}");
    }
}
