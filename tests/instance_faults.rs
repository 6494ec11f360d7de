//! Instances that are down, hung, slow, lose replies, or answer with errors: a minority costs
//! nothing, a majority gives a clear error within a bound of virtual time, and after a failed
//! acquire no instance keeps our token, whatever happened to the replies.

mod common;

use std::error::Error as _;
use std::time::Duration;

use common::{ms, Cluster, TTL};
use redlock_lease::{BackendErrorKind, Error, InstanceOutcome};

const RIVAL: &[u8] = b"rival-token";

#[test]
fn a_minority_down_still_acquires() {
    let c = Cluster::new(5);
    c.faults[1].set_down(true);
    c.faults[3].set_down(true);
    let manager = c.manager(1);
    let lock = c
        .sim
        .run(manager.lock("res", TTL))
        .expect("3 of 5 is a quorum");
    assert_eq!(lock.validity(), ms(9_898));
    assert_eq!(
        c.now(),
        Duration::ZERO,
        "failures answer at once; nothing to wait for"
    );
    assert_eq!(c.holding(b"res", lock.token()), 3);
}

/// The documented bound of one acquire: `retry_count × (2 × instance_timeout + retry_delay_max)`.
fn bound(attempts: u32, timeout: Duration, delay_max: Duration) -> Duration {
    (timeout * 2 + delay_max) * attempts
}

#[test]
fn a_majority_down_is_unavailable_within_the_bound() {
    let c = Cluster::new(5);
    for f in &c.faults[..3] {
        f.set_down(true);
    }
    let manager = c
        .builder(3)
        .retry_count(4)
        .instance_timeout(ms(50))
        .retry_delay(ms(100), ms(300))
        .build()
        .expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("2 of 5 is not a quorum");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(c.now() <= bound(4, ms(50), ms(300)), "took {:?}", c.now());
    let f = common::failure(&err);
    assert_eq!(f.attempts, 4);
    assert_eq!(f.quorum, 3);
    assert_eq!(common::unreachable_ids(f), common::ids(0..3));
    for r in f.unreachable() {
        match &r.outcome {
            InstanceOutcome::Failed(e) => assert_eq!(e.kind(), BackendErrorKind::Connection),
            other => panic!("{}: {other:?}", r.instance),
        }
    }
    assert_eq!(c.with_key(b"res"), 0, "the two that said yes were released");
}

#[test]
fn a_majority_hung_is_unavailable_within_the_bound() {
    let c = Cluster::new(5);
    for f in &c.faults[2..] {
        f.set_hang(true);
    }
    let manager = c
        .builder(3)
        .retry_count(3)
        .instance_timeout(ms(100))
        .retry_delay(ms(100), ms(300))
        .build()
        .expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("2 of 5 is not a quorum");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(c.now() <= bound(3, ms(100), ms(300)), "took {:?}", c.now());
    let f = common::failure(&err);
    assert_eq!(f.attempts, 3);
    assert_eq!(
        f.elapsed,
        ms(100),
        "an attempt waits one instance timeout, no more"
    );
    assert_eq!(
        common::count(f, |o| matches!(o, InstanceOutcome::TimedOut)),
        3,
        "{f:?}"
    );
    assert_eq!(common::unreachable_ids(f), common::ids(2..5));
}

#[test]
fn one_hung_instance_does_not_delay_a_quorum() {
    let c = Cluster::new(5);
    c.set_latency(ms(20));
    c.faults[4].set_hang(true);
    let manager = c
        .builder(1)
        .instance_timeout(ms(500))
        .build()
        .expect("config");
    let lock = c.sim.run(manager.lock("res", TTL)).expect("4 of 5 answer");
    assert_eq!(
        c.now(),
        ms(20),
        "decided by the fast replies, not the timeout"
    );
    assert_eq!(lock.validity(), ms(9_878));
}

#[test]
fn a_decision_that_needs_the_hung_instance_costs_one_timeout() {
    // Two yes, two no: the hung instance's vote would decide, so the round waits for it.
    let c = Cluster::new(5);
    c.occupy([0, 1], b"res", RIVAL);
    c.faults[2].set_hang(true);
    let manager = c
        .builder(1)
        .retry_count(1)
        .instance_timeout(ms(250))
        .build()
        .expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("no quorum without the hung one");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let f = common::failure(&err);
    assert_eq!(f.elapsed, ms(250));
    assert!(matches!(f.instances[2].outcome, InstanceOutcome::TimedOut));
    // The release after it waits for the hung instance once more, and that is all.
    assert_eq!(c.now(), ms(500));
    assert_eq!(c.holding(b"res", RIVAL), 2);
    assert_eq!(c.with_key(b"res"), 2);
}

#[test]
fn lost_replies_are_released_after_a_failed_acquire() {
    // The writes land on three instances but their replies never come back: the manager sees
    // two yes and three timeouts, and must still clean up all five.
    let c = Cluster::new(5);
    for f in &c.faults[2..] {
        f.set_lose_replies(true);
    }
    let manager = c.builder(1).retry_count(3).build().expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("only two answered");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(c.now() < TTL, "cleanup, not expiry");
    for (i, m) in c.memories.iter().enumerate() {
        assert_eq!(m.get(b"res"), None, "instance {i} keeps our key");
    }
}

#[test]
fn late_replies_are_released_after_a_failed_acquire() {
    // 150 ms round trips against a 100 ms timeout: the request lands at 75 ms, the reply is
    // too late. The release lands the same way, inside its own timeout.
    let c = Cluster::new(5);
    for f in &c.faults[..3] {
        f.set_latency(ms(150));
    }
    let manager = c
        .builder(1)
        .retry_count(1)
        .instance_timeout(ms(100))
        .build()
        .expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("three timeouts");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(
        common::unreachable_ids(common::failure(&err)),
        common::ids(0..3)
    );
    assert_eq!(c.with_key(b"res"), 0);
}

#[test]
fn errored_instances_are_released_too() {
    // An instance that answered with an error may have applied the write (a proxy, a reply
    // mangled on the way back): the release goes to it as well.
    let c = Cluster::new(5);
    for f in &c.faults[..3] {
        f.set_error(Some((
            BackendErrorKind::Server,
            "READONLY You can't write against a read only replica.",
        )));
    }
    let manager = c.builder(1).retry_count(1).build().expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("three errors");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    for f in &c.faults {
        f.heal();
    }
    // One acquire and one release reached each instance.
    for (i, f) in c.faults.iter().enumerate() {
        assert_eq!(f.calls(), 2, "instance {i}");
    }
    assert_eq!(c.with_key(b"res"), 0);
}

#[test]
fn readonly_majority_fails_with_the_causes_attached() {
    let c = Cluster::new(5);
    for f in &c.faults[..3] {
        f.set_error(Some((
            BackendErrorKind::Server,
            "READONLY You can't write against a read only replica.",
        )));
    }
    let manager = c.builder(1).retry_count(2).build().expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("three errors");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let f = common::failure(&err);
    assert_eq!(f.attempts, 2);
    for r in &f.instances[..3] {
        match &r.outcome {
            InstanceOutcome::Failed(e) => {
                assert_eq!(e.kind(), BackendErrorKind::Server);
                assert!(e.message().starts_with("READONLY"), "{e}");
            }
            other => panic!("{}: {other:?}", r.instance),
        }
    }
    // The cause is reached through source(), not repeated in Display.
    let failure = err.source().expect("the failure report");
    let cause = failure.source().expect("an instance's error");
    assert!(cause.to_string().starts_with("READONLY"));
    assert!(!err.to_string().contains("READONLY"));
}

#[test]
fn a_readonly_minority_still_acquires() {
    let c = Cluster::new(5);
    for f in &c.faults[3..] {
        f.set_error(Some((BackendErrorKind::Server, "READONLY")));
    }
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("3 of 5");
    assert_eq!(c.holding(b"res", lock.token()), 3);
}

#[test]
fn wrongtype_majority_fails_and_leaves_the_data_alone() {
    let c = Cluster::new(5);
    for m in &c.memories[..3] {
        m.put_list(b"res");
    }
    let manager = c.builder(1).retry_count(1).build().expect("config");
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("the key holds application data of another type");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let f = common::failure(&err);
    for r in &f.instances[..3] {
        assert!(
            matches!(&r.outcome, InstanceOutcome::Failed(e) if e.kind() == BackendErrorKind::WrongType),
            "{}: {:?}",
            r.instance,
            r.outcome
        );
    }
    for m in &c.memories[..3] {
        let still_a_list = m.inspect_now(b"res").expect_err("the list is still there");
        assert_eq!(still_a_list.kind(), BackendErrorKind::WrongType);
    }
    assert_eq!(c.with_key(b"res"), 0, "our two keys were released");
}

#[test]
fn wrongtype_minority_still_acquires() {
    let c = Cluster::new(5);
    for m in &c.memories[..2] {
        m.put_list(b"res");
    }
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("3 of 5");
    assert_eq!(c.holding(b"res", lock.token()), 3);
    c.sim.run(lock.release()).expect("release");
    for m in &c.memories[..2] {
        assert!(
            m.inspect_now(b"res").is_err(),
            "the lists survive the release"
        );
    }
}
