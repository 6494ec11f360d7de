//! Extend and release: each failure is a clear error, no key is ever re-created or taken from
//! another client, the handle's deadline never grows on failure, and after a release completes
//! no instance keeps our token.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ms, Cluster, TTL};
use redlock_lease::{Error, InstanceOutcome, Lock, LossReason};

fn loss(e: &Error) -> LossReason {
    match e {
        Error::Lost(loss) => loss.reason,
        other => panic!("expected Lost, got {other:?}"),
    }
}

/// Where the handle's validity ends, on the virtual clock.
fn deadline(c: &Cluster, lock: &Lock) -> Duration {
    c.now() + lock.remaining()
}

#[test]
fn extend_renews_from_the_start_of_the_call() {
    let c = Cluster::new(5);
    c.set_latency(ms(20));
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.advance(ms(5_000));
    c.sim.run(lock.extend()).expect("extend");
    assert_eq!(c.now(), ms(5_040));
    assert_eq!(lock.validity(), ms(9_878));
    assert_eq!(
        deadline(&c, &lock),
        ms(5_020) + TTL - ms(102),
        "T1 + ttl − drift"
    );
    // The instances got a fresh TTL too (reply latency of 10 ms has passed since).
    for m in &c.memories {
        let state = m.inspect_now(b"res").expect("inspect").expect("held");
        assert_eq!(state.ttl, Some(TTL - ms(10)));
    }
    c.sim
        .run(manager.extend(&lock, Duration::from_secs(20)))
        .expect("extend for another lease");
    assert_eq!(lock.ttl(), Duration::from_secs(20));
    assert_eq!(lock.validity(), ms(20_000 - 20 - 202));
}

#[test]
fn extend_after_expiry_is_refused_without_a_call() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    // The local deadline has passed; the keys still have 102 ms on the instances.
    c.advance(ms(9_898));
    assert!(!lock.is_valid());
    assert_eq!(c.with_key(b"res"), 5);
    let calls = c.calls();
    let err = c.sim.run(lock.extend()).expect_err("expired");
    assert_eq!(loss(&err), LossReason::Expired);
    assert!(err.failure().is_none(), "no round was made");
    assert_eq!(
        c.calls(),
        calls,
        "an expired lock may already be someone else's"
    );
    let state = c.memories[0]
        .inspect_now(b"res")
        .expect("inspect")
        .expect("still there");
    assert_eq!(state.ttl, Some(ms(102)), "not extended behind our back");
    // And it stays lost.
    assert_eq!(
        loss(&c.sim.run(lock.extend()).expect_err("lost")),
        LossReason::Expired
    );
    assert_eq!(lock.remaining(), Duration::ZERO);
}

#[test]
fn extend_after_another_client_acquired_is_lost() {
    let c = Cluster::new(5);
    let a = c.manager(1);
    let b = c.manager(2);
    let lock_a = c.sim.run(a.lock("res", TTL)).expect("a locks");
    // The instances lose A's keys (a restart without persistence, an operator) and B wins.
    for m in &c.memories {
        m.flush();
    }
    let lock_b = c.sim.run(b.lock("res", TTL)).expect("b locks");
    let before = deadline(&c, &lock_a);
    let err = c.sim.run(lock_a.extend()).expect_err("B holds it");
    assert_eq!(loss(&err), LossReason::NotHeld);
    let f = common::failure(&err);
    assert!(common::count(f, |o| matches!(o, InstanceOutcome::Refused)) >= f.quorum);
    assert!(deadline(&c, &lock_a) <= before);
    assert!(!lock_a.is_valid(), "a lost handle is not valid");
    // B's keys are untouched: same token, TTL not reset by A.
    assert_eq!(c.holding(b"res", lock_b.token()), 5);
    // Releasing A reports the loss and leaves B alone.
    let err = c.sim.run(lock_a.release()).expect_err("lost");
    assert!(matches!(err, Error::Lost(_)), "{err:?}");
    assert_eq!(c.holding(b"res", lock_b.token()), 5);
    assert!(lock_b.is_valid());
    c.sim.run(lock_b.release()).expect("b still holds it");
}

#[test]
fn extend_never_recreates_keys() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    // Three instances forgot the key: our token is on a minority only.
    for m in &c.memories[..3] {
        m.flush();
    }
    let err = c.sim.run(lock.extend()).expect_err("held on a minority");
    assert_eq!(loss(&err), LossReason::NotHeld);
    for m in &c.memories[..3] {
        assert_eq!(m.get(b"res"), None, "extend re-created a key");
    }
    assert_eq!(lock.remaining(), Duration::ZERO);
}

#[test]
fn extend_reaching_a_minority_is_unavailable_and_keeps_the_deadline() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.advance(ms(3_000));
    let before = deadline(&c, &lock);
    for f in &c.faults[..3] {
        f.set_down(true);
    }
    let err = c.sim.run(lock.extend()).expect_err("two of five");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(
        common::unreachable_ids(common::failure(&err)),
        common::ids(0..3)
    );
    assert_eq!(
        deadline(&c, &lock),
        before,
        "a failed extend must not move the deadline"
    );
    assert_eq!(lock.validity(), ms(9_898), "nor the granted validity");
    // The handle is still usable once the instances are back.
    for f in &c.faults {
        f.heal();
    }
    c.sim.run(lock.extend()).expect("extend after healing");
    assert!(deadline(&c, &lock) > before);
}

#[test]
fn extend_too_slow_for_its_lease_keeps_the_deadline() {
    // A 100 ms lease leaves 97 ms of validity; 97 ms round trips leave none.
    let c = Cluster::new(5);
    let manager = c
        .builder(1)
        .instance_timeout(Duration::from_secs(1))
        .build()
        .expect("config");
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let before = deadline(&c, &lock);
    c.set_latency(ms(97));
    let err = c
        .sim
        .run(lock.extend_for(ms(100)))
        .expect_err("no validity left");
    assert!(matches!(err, Error::ValidityExpired(_)), "{err:?}");
    assert_eq!(deadline(&c, &lock), before);
    assert_eq!(lock.ttl(), TTL, "the lease of the handle is unchanged");
}

#[test]
fn release_twice() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.sim.run(manager.unlock(&lock)).expect("first release");
    assert_eq!(c.with_key(b"res"), 0);
    let calls = c.calls();
    let err = c.sim.run(lock.release()).expect_err("second release");
    assert!(matches!(err, Error::Released), "{err:?}");
    assert_eq!(c.calls(), calls, "nothing left to send");
    assert!(matches!(c.sim.run(lock.extend()), Err(Error::Released)));
    assert!(matches!(c.sim.run(lock.check()), Err(Error::Released)));
    assert!(!lock.is_valid());
}

#[test]
fn release_after_expiry_reports_the_loss_and_still_cleans_up() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.advance(ms(9_950));
    let err = c.sim.run(lock.release()).expect_err("ran out");
    assert_eq!(loss(&err), LossReason::Expired);
    assert_eq!(
        c.with_key(b"res"),
        0,
        "the keys' last 50 ms are given back anyway"
    );
    assert!(matches!(c.sim.run(lock.release()), Err(Error::Released)));
}

#[test]
fn release_never_deletes_another_clients_key() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    // Our keys expired on the instances (and the handle with them); a rival took over.
    c.advance(TTL);
    c.occupy(0..5, b"res", b"rival");
    let err = c.sim.run(lock.release()).expect_err("not ours any more");
    assert!(matches!(err, Error::Lost(_)), "{err:?}");
    assert_eq!(c.holding(b"res", b"rival"), 5);
}

#[test]
fn release_with_a_majority_unreachable_lists_them_and_can_be_retried() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.faults[0].set_down(true);
    c.faults[2].set_down(true);
    c.faults[4].set_hang(true);
    let err = c.sim.run(lock.release()).expect_err("only two reachable");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let f = common::failure(&err);
    assert_eq!(common::unreachable_ids(f), common::ids([0, 2, 4]));
    assert!(matches!(f.instances[4].outcome, InstanceOutcome::TimedOut));
    assert_eq!(c.now(), manager.config().instance_timeout());
    assert!(lock.is_valid(), "may still be held: the handle keeps it");
    assert!(
        manager
            .active_locks()
            .iter()
            .any(|l| l.token == lock.token()),
        "still listed as held"
    );
    for f in &c.faults {
        f.heal();
    }
    c.sim.run(lock.release()).expect("released on retry");
    assert_eq!(c.with_key(b"res"), 0);
    assert!(manager.active_locks().is_empty());
}

#[test]
fn extend_and_release_racing_leave_no_key() {
    // The extend starts at several offsets into the release, so its requests land before,
    // between and after the deletes.
    for offset in [0, 3, 5, 8, 10, 12, 15, 20, 25] {
        let c = Cluster::new(5);
        for (f, l) in c.faults.iter().zip([20, 10, 30, 20, 16]) {
            f.set_latency(ms(l));
        }
        let manager = c.manager(offset);
        let lock = Arc::new(c.sim.run(manager.lock("res", TTL)).expect("lock"));
        let token = lock.token().to_vec();
        let releaser = {
            let lock = Arc::clone(&lock);
            c.sim.spawn(async move { lock.release().await })
        };
        let extender = {
            let lock = Arc::clone(&lock);
            let clock = Arc::clone(&c.clock);
            c.sim.spawn(async move {
                clock.sleep(ms(offset)).await;
                lock.extend().await
            })
        };
        let (released, extended) = c.sim.run(futures::future::join(releaser, extender));
        released.unwrap_or_else(|e| panic!("offset {offset}: release: {e:?}"));
        assert!(
            matches!(extended, Ok(()) | Err(Error::Released | Error::Lost(_))),
            "offset {offset}: extend: {extended:?}"
        );
        assert_eq!(c.keys_holding(&token), 0, "offset {offset}: a key survived");
        assert_eq!(lock.remaining(), Duration::ZERO, "offset {offset}");
        assert!(matches!(c.sim.run(lock.extend()), Err(Error::Released)));
        // Nothing in flight can bring a key back later either.
        c.sim.run(c.clock.sleep(ms(200)));
        assert_eq!(c.keys_holding(&token), 0, "offset {offset}: a late write");
    }
}

#[test]
fn a_retried_release_whose_first_deletes_landed_is_a_release_not_a_loss() {
    // The deletes reach every instance, but the replies are lost: the first release cannot tell
    // and keeps the handle; the retry finds the keys gone, which is its own doing.
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    for f in &c.faults {
        f.set_lose_replies(true);
    }
    let err = c.sim.run(lock.release()).expect_err("no answer");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(c.with_key(b"res"), 0, "the deletes landed");
    for f in &c.faults {
        f.heal();
    }
    c.sim
        .run(lock.release())
        .expect("released until this very release: not Lost");
    assert!(matches!(c.sim.run(lock.release()), Err(Error::Released)));
}
