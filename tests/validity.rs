//! Validity arithmetic as the manager applies it to real rounds: `ttl − elapsed − drift`, with
//! elapsed measured on the virtual clock from the start of the attempt, and success only above
//! zero.

mod common;

use std::time::Duration;

use common::{ms, Cluster, TTL};
use redlock_lease::{Error, InstanceOutcome};

#[test]
fn ten_seconds_with_twenty_ms_elapsed_leaves_9878_ms() {
    let c = Cluster::new(5);
    c.set_latency(ms(20));
    let manager = c.manager(1);
    c.sim.run(async {
        let lock = manager.lock("res", TTL).await.expect("free lock");
        assert_eq!(c.now(), ms(20), "the round waits for the 20 ms replies");
        // 10 000 − 20 − (10 000 × 0.01 + 2)
        assert_eq!(lock.validity(), ms(9_878));
        assert_eq!(lock.remaining(), ms(9_878));
        // The deadline is T1 + ttl − drift, so time passing eats exactly into remaining().
        c.clock.sleep(ms(878)).await;
        assert_eq!(lock.remaining(), ms(9_000));
    });
}

#[test]
fn validity_is_measured_on_the_quorum_th_reply_not_the_slowest() {
    // Replies at 10, 20, 30 ms reach the quorum; the 1 s ones must not be waited for.
    let c = Cluster::new(5);
    for (f, l) in c.faults.iter().zip([10, 20, 30, 1_000, 1_000]) {
        f.set_latency(ms(l));
    }
    let manager = c
        .builder(1)
        .instance_timeout(ms(2_000))
        .build()
        .expect("config");
    c.sim.run(async {
        let lock = manager.lock("res", TTL).await.expect("quorum at 30 ms");
        assert_eq!(c.now(), ms(30));
        assert_eq!(lock.validity(), ms(9_868));
    });
}

/// Builds a single-attempt manager where every reply arrives after `latency`. The timeout is
/// larger than the TTL so that only the validity arithmetic decides (the internal lease is
/// raised with it: the builder wants a renewal round to fit in that lease).
fn attempt_with_latency(latency: Duration) -> (Cluster, Result<redlock_lease::Lock, Error>) {
    let c = Cluster::new(5);
    c.set_latency(latency);
    let manager = c
        .builder(1)
        .retry_count(1)
        .instance_timeout(ms(20_000))
        .internal_lock_timeout(ms(30_000))
        .build()
        .expect("config");
    let result = c.sim.run(manager.lock("res", TTL));
    (c, result)
}

#[test]
fn validity_exactly_zero_fails_with_validity_expired() {
    // 10 000 − 9 898 − 102 = 0. The round's time limit is capped at that same 9 898 ms (later
    // answers could not leave validity), so the replies and the timer fall due together; the
    // replies count, and the quorum they form is too late.
    let (c, result) = attempt_with_latency(ms(9_898));
    let err = result.expect_err("zero validity is not a lock");
    assert!(matches!(err, Error::ValidityExpired(_)), "{err:?}");
    let f = common::failure(&err);
    assert_eq!(f.attempts, 1);
    assert_eq!(f.elapsed, ms(9_898));
    assert!(
        common::count(f, |o| matches!(o, InstanceOutcome::Succeeded)) >= f.quorum,
        "{f:?}"
    );
    // The quorum it reached is given back, so nobody waits for our keys to expire.
    assert_eq!(c.with_key(b"res"), 0);
}

#[test]
fn one_ms_of_validity_is_enough() {
    let (c, result) = attempt_with_latency(ms(9_897));
    let lock = result.expect("1 ms of validity is still a lock");
    assert_eq!(lock.validity(), ms(1));
    assert_eq!(c.now(), ms(9_897));
    assert_eq!(lock.remaining(), ms(1));
}

#[test]
fn a_free_lock_takes_one_attempt_and_no_time() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("free lock");
    assert_eq!(c.now(), Duration::ZERO, "no retry delay, no timeout waited");
    assert_eq!(lock.validity(), ms(9_898));
    // One acquire per instance and nothing else: no release round, no second attempt. Every
    // instance gets the key, not just the first quorum to answer.
    assert_eq!(c.calls(), 5);
    assert_eq!(c.holding(b"res", lock.token()), 5);
}

#[test]
fn zero_drift_factor_leaves_only_the_fixed_two_ms() {
    let c = Cluster::new(3);
    let manager = c.builder(1).drift_factor(0.0).build().expect("config");
    let lock = c.sim.run(manager.lock("res", TTL)).expect("free lock");
    assert_eq!(lock.validity(), ms(9_998));
    assert_eq!(manager.config().drift(TTL), ms(2));
}
