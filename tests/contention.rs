//! Several clients after one resource: a split vote fails for both, jitter breaks the tie while
//! a fixed delay can keep it forever, and K clients contending are served one at a time, all
//! eventually.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ms, Cluster, TTL};
use redlock_lease::{Error, InstanceOutcome, Lock, LockManager, RandomSource, SeededRandom};

/// Two clients on four instances, each close to one half: A reaches instances 0 and 1 in
/// 1 ms and 2, 3 in 5 ms; B the other way round. Started together, each wins its near half.
fn split_pair(
    c: &Cluster,
    seeds: (u64, u64),
    delay: (Duration, Duration),
    attempts: u32,
    wake_on_release: bool,
) -> (LockManager, LockManager) {
    let near_far = [ms(2), ms(2), ms(10), ms(10)];
    let far_near = [ms(10), ms(10), ms(2), ms(2)];
    let (a, _) = c.client(seeds.0, &near_far);
    let (b, _) = c.client(seeds.1, &far_near);
    let build = |builder: redlock_lease::LockManagerBuilder| {
        builder
            .retry_count(attempts)
            .retry_delay(delay.0, delay.1)
            .wake_on_release(wake_on_release)
            .build()
            .expect("config")
    };
    (build(a), build(b))
}

fn race(
    c: &Cluster,
    a: &LockManager,
    b: &LockManager,
) -> (Result<Lock, Error>, Result<Lock, Error>) {
    c.sim.run(futures::future::join(
        a.lock("res", TTL),
        b.lock("res", TTL),
    ))
}

#[test]
fn a_split_vote_fails_for_both() {
    let c = Cluster::new(4);
    let (a, b) = split_pair(&c, (1, 2), (ms(100), ms(300)), 1, true);
    let (ra, rb) = race(&c, &a, &b);
    for (name, result) in [("A", ra), ("B", rb)] {
        let err = result.expect_err("two of four is not a quorum");
        assert!(matches!(err, Error::Contended(_)), "{name}: {err:?}");
        let f = common::failure(&err);
        assert_eq!(
            common::count(f, |o| matches!(o, InstanceOutcome::Succeeded)),
            2,
            "{name}: {f:?}"
        );
        assert_eq!(
            common::count(f, |o| matches!(o, InstanceOutcome::Refused)),
            2,
            "{name}: {f:?}"
        );
    }
    assert_eq!(c.with_key(b"res"), 0, "both gave their halves back");
}

#[test]
fn a_fixed_delay_with_identical_timing_can_livelock() {
    // Why jitter exists: with min == max, two clients that collided once retry at the same
    // instant and collide again, for every attempt they have.
    for wake_on_release in [false, true] {
        let c = Cluster::new(4);
        let (a, b) = split_pair(&c, (1, 2), (ms(50), ms(50)), 20, wake_on_release);
        let (ra, rb) = race(&c, &a, &b);
        for (name, result) in [("A", ra), ("B", rb)] {
            let err = result.expect_err("lock-step retries never break the tie");
            assert!(matches!(err, Error::Contended(_)), "{name}: {err:?}");
            let attempts = common::failure(&err).attempts;
            if wake_on_release {
                // Listening does not break the symmetry: after the first collision both
                // subscribe, look once, find the resource free (both gave their halves back)
                // and retry at once, in step again. A wake-up attempt inside its retry window
                // is free, so there can be more attempts than `retry_count`.
                assert!(attempts >= 20, "{name}: {attempts}");
            } else {
                assert_eq!(attempts, 20, "{name}");
            }
        }
        assert_eq!(c.with_key(b"res"), 0);
        // Nobody held the resource at any point, although it was free all along.
    }
}

#[test]
fn jitter_lets_one_client_win_within_a_few_rounds() {
    for wake_on_release in [false, true] {
        jitter_round(wake_on_release);
    }
}

fn jitter_round(wake_on_release: bool) {
    for seed in 0..20 {
        let c = Cluster::new(4);
        let (a, b) = split_pair(
            &c,
            (seed * 2 + 1, seed * 2 + 2),
            (ms(10), ms(200)),
            10,
            wake_on_release,
        );
        let won_at = Arc::new(Mutex::new(None));
        let attempt = |m: LockManager| {
            let won_at = Arc::clone(&won_at);
            let clock = Arc::clone(&c.clock);
            async move {
                let result = m.lock("res", TTL).await;
                if result.is_ok() {
                    *won_at.lock().expect("won_at") = Some(clock.now());
                }
                result
            }
        };
        let (ra, rb) = c.sim.run(futures::future::join(attempt(a), attempt(b)));
        let winners = usize::from(ra.is_ok()) + usize::from(rb.is_ok());
        assert_eq!(winners, 1, "seed {seed}: {ra:?} / {rb:?}");
        let loser = ra.err().or(rb.err()).expect("one loser");
        assert!(
            matches!(loser, Error::Contended(_)),
            "seed {seed}: {loser:?}"
        );
        let won_at = won_at.lock().expect("won_at").expect("a winner");
        // Five rounds of at most 20 ms of calls and 200 ms of delay.
        assert!(won_at <= ms(5 * 220), "seed {seed}: won only at {won_at:?}");
    }
}

/// One holder's window: from the moment `lock` returned until it began releasing.
#[derive(Debug, Clone, Copy)]
struct Window {
    client: usize,
    from: Duration,
    to: Duration,
}

fn k_clients(seed: u64, k: usize, n: usize, wake_on_release: bool) -> Vec<Window> {
    let c = Cluster::new(n);
    let windows = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for client in 0..k {
        // Each client sees its own latency per instance, 1 to 9 ms, derived from the seed.
        let rng = SeededRandom::new(seed.wrapping_mul(1_000) + client as u64);
        let latencies: Vec<Duration> = (0..n).map(|_| ms(1 + rng.next_u64() % 9)).collect();
        let (builder, _) = c.client(seed * 100 + client as u64, &latencies);
        let manager = builder
            .retry_count(200)
            .retry_delay(ms(5), ms(60))
            .wake_on_release(wake_on_release)
            .build()
            .expect("config");
        let clock = Arc::clone(&c.clock);
        let windows = Arc::clone(&windows);
        handles.push(c.sim.spawn(async move {
            let lock = manager
                .lock("res", Duration::from_secs(1))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: client {client} never got it: {e}"));
            let from = clock.now();
            // The work, well inside the validity.
            clock.sleep(ms(40)).await;
            let to = clock.now();
            assert!(
                lock.is_valid(),
                "seed {seed}: client {client} worked past its validity"
            );
            windows
                .lock()
                .expect("windows")
                .push(Window { client, from, to });
            lock.release()
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: client {client} release: {e}"));
        }));
    }
    c.sim.run(futures::future::join_all(handles));
    let mut windows = windows.lock().expect("windows").clone();
    windows.sort_by_key(|w| w.from);
    windows
}

#[test]
fn k_clients_take_turns_and_all_get_it() {
    for (seed, wake_on_release) in (0..10).flat_map(|seed| [(seed, false), (seed, true)]) {
        let windows = k_clients(seed, 5, 5, wake_on_release);
        let mut clients: Vec<usize> = windows.iter().map(|w| w.client).collect();
        clients.sort_unstable();
        assert_eq!(
            clients,
            vec![0, 1, 2, 3, 4],
            "seed {seed} (wake {wake_on_release}): everyone acquired once"
        );
        for pair in windows.windows(2) {
            assert!(
                pair[0].to <= pair[1].from,
                "seed {seed} (wake {wake_on_release}): overlapping holders {pair:?}"
            );
        }
    }
}

#[test]
fn k_clients_are_reproducible_from_the_seed() {
    let order = |w: Vec<Window>| -> Vec<(usize, Duration)> {
        w.iter().map(|w| (w.client, w.from)).collect()
    };
    for wake in [false, true] {
        assert_eq!(
            order(k_clients(3, 5, 5, wake)),
            order(k_clients(3, 5, 5, wake))
        );
        assert_ne!(
            order(k_clients(3, 5, 5, wake)),
            order(k_clients(4, 5, 5, wake))
        );
    }
}
