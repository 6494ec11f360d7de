//! The quorum is `N/2 + 1` of the *configured* instances, for every N from 1 to 9: exactly
//! quorum − 1 acquisitions fail, exactly quorum succeed. How the rest fail decides the error:
//! instances that answer "held by someone else" make it `Contended`, instances that cannot
//! answer make it `Unavailable`.

mod common;

use common::{Cluster, TTL};
use redlock_lease::{Error, InstanceOutcome};

const RIVAL: &[u8] = b"rival-token";

fn quorum_of(n: usize) -> usize {
    n / 2 + 1
}

#[test]
fn the_manager_reports_a_strict_majority() {
    for n in 1..=9 {
        let c = Cluster::new(n);
        assert_eq!(c.manager(1).quorum(), quorum_of(n), "N = {n}");
    }
}

#[test]
fn quorum_minus_one_refusals_is_contended() {
    for n in 1..=9 {
        let q = quorum_of(n);
        let c = Cluster::new(n);
        // The rival holds every instance but q − 1.
        c.occupy(q - 1..n, b"res", RIVAL);
        let manager = c.builder(1).retry_count(1).build().expect("config");
        let err = c
            .sim
            .run(manager.lock("res", TTL))
            .expect_err("quorum − 1 is not a lock");
        assert!(matches!(err, Error::Contended(_)), "N = {n}: {err:?}");
        let f = common::failure(&err);
        assert_eq!(f.quorum, q, "N = {n}");
        assert_eq!(
            f.instances.len(),
            n,
            "every configured instance is reported"
        );
        assert_eq!(
            common::count(f, |o| matches!(o, InstanceOutcome::Refused)),
            n - q + 1,
            "N = {n}: {f:?}"
        );
        // Our partial acquisition is given back; the rival's keys are not touched.
        for (i, m) in c.memories.iter().enumerate() {
            let expected = (i >= q - 1).then(|| RIVAL.to_vec());
            assert_eq!(m.get(b"res"), expected, "N = {n}, instance {i}");
        }
    }
}

#[test]
fn quorum_minus_one_reachable_is_unavailable() {
    for n in 1..=9 {
        let q = quorum_of(n);
        let c = Cluster::new(n);
        for f in &c.faults[q - 1..] {
            f.set_down(true);
        }
        let manager = c.builder(1).retry_count(1).build().expect("config");
        let err = c
            .sim
            .run(manager.lock("res", TTL))
            .expect_err("quorum − 1 is not a lock");
        assert!(matches!(err, Error::Unavailable(_)), "N = {n}: {err:?}");
        let f = common::failure(&err);
        assert_eq!(
            common::unreachable_ids(f),
            common::ids(q - 1..n),
            "N = {n}: {f:?}"
        );
        assert_eq!(
            c.with_key(b"res"),
            0,
            "N = {n}: partial acquisition released"
        );
    }
}

#[test]
fn exactly_quorum_succeeds_against_refusals() {
    for n in 1..=9 {
        let q = quorum_of(n);
        let c = Cluster::new(n);
        c.occupy(q..n, b"res", RIVAL);
        let manager = c.builder(1).retry_count(1).build().expect("config");
        let lock = c
            .sim
            .run(manager.lock("res", TTL))
            .unwrap_or_else(|e| panic!("N = {n}: quorum must be enough: {e:?}"));
        assert_eq!(c.holding(b"res", lock.token()), q, "N = {n}");
        assert_eq!(c.holding(b"res", RIVAL), n - q, "N = {n}");
    }
}

#[test]
fn exactly_quorum_succeeds_with_the_rest_down() {
    for n in 1..=9 {
        let q = quorum_of(n);
        let c = Cluster::new(n);
        for f in &c.faults[q..] {
            f.set_down(true);
        }
        let manager = c.builder(1).retry_count(1).build().expect("config");
        let lock = c
            .sim
            .run(manager.lock("res", TTL))
            .unwrap_or_else(|e| panic!("N = {n}: quorum must be enough: {e:?}"));
        assert_eq!(c.holding(b"res", lock.token()), q, "N = {n}");
    }
}

#[test]
fn quorum_counts_configured_instances_not_the_ones_that_answered() {
    // 2 of 5 answer yes and 3 are down. Counting only the instances that answered would make
    // 2 of 2 a "majority".
    let c = Cluster::new(5);
    for f in &c.faults[2..] {
        f.set_down(true);
    }
    let manager = c.builder(1).retry_count(1).build().expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("2 of 5 is a minority");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(common::failure(&err).quorum, 3);
}
