//! Queries and lifecycle of a manager: `is_locked`, `check`, `get_lock` rehydration,
//! `active_locks`, and `close` (after which everything is `Closed`).

mod common;

use std::time::Duration;

use common::{ms, Cluster, TTL};
use redlock_lease::{Error, LossReason};

fn loss(e: &Error) -> LossReason {
    match e {
        Error::Lost(loss) => loss.reason,
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[test]
fn is_locked_sees_any_holder_on_a_quorum() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    assert!(!c.sim.run(manager.is_locked("res")).expect("query"));
    let lock = c
        .sim
        .run(c.manager(2).lock("res", TTL))
        .expect("another client locks");
    assert!(c.sim.run(manager.is_locked("res")).expect("query"));
    assert!(!c.sim.run(manager.is_locked("other")).expect("query"));
    drop(lock);
    // Keys on a minority are not a lock.
    for m in &c.memories[..3] {
        m.flush();
    }
    assert!(!c.sim.run(manager.is_locked("res")).expect("query"));
}

#[test]
fn is_locked_is_unavailable_when_it_cannot_tell() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let _held = c.sim.run(manager.lock("res", TTL)).expect("lock");
    for f in &c.faults[..3] {
        f.set_down(true);
    }
    let err = c
        .sim
        .run(manager.is_locked("res"))
        .expect_err("2 of 5 answer");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(
        common::unreachable_ids(common::failure(&err)),
        common::ids(0..3)
    );
}

#[test]
fn check_confirms_loses_or_cannot_tell() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.advance(ms(1_000));
    assert_eq!(c.sim.run(lock.check()).expect("held"), ms(8_898));

    for f in &c.faults[..3] {
        f.set_down(true);
    }
    let err = c.sim.run(lock.check()).expect_err("2 of 5 answer");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(lock.is_valid(), "not knowing is not losing");
    for f in &c.faults {
        f.heal();
    }

    // A majority forgets the key: check reports it and the handle stays lost.
    for m in &c.memories[..3] {
        m.flush();
    }
    let err = c.sim.run(lock.check()).expect_err("not on a quorum");
    assert_eq!(loss(&err), LossReason::NotHeld);
    assert!(!lock.is_valid());
    assert!(manager.active_locks().is_empty());
    let calls = c.calls();
    assert_eq!(
        loss(&c.sim.run(lock.check()).expect_err("lost")),
        LossReason::NotHeld
    );
    assert_eq!(c.calls(), calls, "a lost handle needs no round to know");
}

#[test]
fn check_after_expiry_is_lost_even_if_keys_remain() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.advance(ms(9_900));
    assert_eq!(c.with_key(b"res"), 5, "the instances still have 100 ms");
    let err = c.sim.run(lock.check()).expect_err("local validity ran out");
    assert_eq!(loss(&err), LossReason::Expired);
}

#[test]
fn get_lock_rehydrates_with_the_validity_a_quorum_still_grants() {
    let c = Cluster::new(5);
    let owner = c.manager(1);
    let lock = c.sim.run(owner.lock("res", TTL)).expect("lock");
    let token = lock.token().to_vec();
    // Different TTLs left per instance: the lock stands until the 3rd longest expires.
    for (m, left) in c.memories.iter().zip([9_000, 8_000, 7_000, 6_000, 5_000]) {
        assert!(m.extend_now(b"res", &token, ms(left)).expect("extend"));
    }
    let other = c.manager(2);
    let again = c.sim.run(other.get_lock("res", &token)).expect("rehydrate");
    assert_eq!(again.token(), &token[..]);
    assert_eq!(again.resource(), b"res");
    // 7 000 − (7 000 × 0.01 + 2)
    assert_eq!(again.validity(), ms(6_928));
    assert_eq!(again.remaining(), ms(6_928));
    assert_eq!(again.ttl(), other.config().internal_lock_timeout());
    assert!(!again.is_owned(), "a rehydrated handle is borrowed");
    assert!(other.active_locks().is_empty());
    again.adopt();
    assert!(again.is_owned());
    assert_eq!(other.active_locks().len(), 1);
    // It is the same lock: releasing it through the other manager frees the resource.
    c.sim.run(again.release()).expect("release");
    assert_eq!(c.with_key(b"res"), 0);
    assert!(matches!(c.sim.run(lock.release()), Err(Error::Lost(_))));
}

#[test]
fn get_lock_with_the_wrong_token_is_lost() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let err = c
        .sim
        .run(manager.get_lock("res", "not-the-token"))
        .expect_err("wrong token");
    assert_eq!(loss(&err), LossReason::NotHeld);
    let err = c
        .sim
        .run(manager.get_lock("free", lock.token()))
        .expect_err("nothing under that name");
    assert_eq!(loss(&err), LossReason::NotHeld);
    assert_eq!(
        manager.active_locks().len(),
        1,
        "only the real lock is held"
    );
    assert_eq!(c.holding(b"res", lock.token()), 5, "queries change nothing");
}

#[test]
fn get_lock_is_unavailable_when_it_cannot_tell() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    for f in &c.faults[2..] {
        f.set_hang(true);
    }
    let err = c
        .sim
        .run(manager.get_lock("res", lock.token()))
        .expect_err("3 of 5 hang");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(c.now(), manager.config().instance_timeout());
}

#[test]
fn active_locks_lists_held_locks_only() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let a = c.sim.run(manager.lock("a", TTL)).expect("lock a");
    let b = c
        .sim
        .run(manager.lock("b", Duration::from_secs(1)))
        .expect("lock b");
    let d = c.sim.run(manager.lock("d", TTL)).expect("lock d");
    let listed = manager.active_locks();
    let names: Vec<&[u8]> = listed.iter().map(|l| &l.resource[..]).collect();
    assert_eq!(names, [&b"a"[..], b"b", b"d"]);
    assert_eq!(listed[0].token, a.token());
    assert_eq!(listed[0].remaining, ms(9_898));

    c.sim.run(a.release()).expect("release a");
    c.advance(Duration::from_secs(1));
    assert!(!b.is_valid());
    let names: Vec<Vec<u8>> = manager
        .active_locks()
        .into_iter()
        .map(|l| l.resource)
        .collect();
    assert_eq!(
        names,
        vec![b"d".to_vec()],
        "released and expired locks are gone"
    );
    drop(d);
    assert!(
        manager.active_locks().is_empty(),
        "a dropped handle is not held"
    );
}

#[test]
fn close_releases_everything_and_closes_the_manager() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let a = c.sim.run(manager.lock("a", TTL)).expect("lock a");
    let b = c.sim.run(manager.lock("b", TTL)).expect("lock b");
    let report = c.sim.run(manager.close()).expect("close");
    assert_eq!(report.released, 2);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(report.backend_errors.is_empty());
    assert_eq!(
        c.with_key(b"a") + c.with_key(b"b"),
        0,
        "keys gone on every instance"
    );
    assert!(manager.is_closed());
    assert!(manager.active_locks().is_empty());

    let calls = c.calls();
    let clone = manager.clone();
    assert!(matches!(
        c.sim.run(clone.lock("c", TTL)),
        Err(Error::Closed)
    ));
    assert!(matches!(
        c.sim.run(manager.is_locked("a")),
        Err(Error::Closed)
    ));
    assert!(matches!(
        c.sim.run(manager.get_lock("a", a.token())),
        Err(Error::Closed)
    ));
    assert!(matches!(c.sim.run(a.extend()), Err(Error::Closed)));
    assert!(matches!(c.sim.run(b.release()), Err(Error::Closed)));
    assert!(matches!(c.sim.run(b.check()), Err(Error::Closed)));
    assert!(matches!(c.sim.run(manager.close()), Err(Error::Closed)));
    assert_eq!(c.calls(), calls, "a closed manager sends nothing");
}

#[test]
fn close_reports_locks_it_could_not_release() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let _held = c.sim.run(manager.lock("a", TTL)).expect("lock");
    for f in &c.faults[..3] {
        f.set_down(true);
    }
    let report = c.sim.run(manager.close()).expect("close still closes");
    assert_eq!(report.released, 0);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, b"a".to_vec());
    assert!(matches!(report.failed[0].1, Error::Unavailable(_)));
    assert!(manager.is_closed());
}

/// Lets background tasks (a dropped lock's release) run.
fn settle(c: &Cluster) {
    let clock = std::sync::Arc::clone(&c.clock);
    c.sim.run(async move { clock.sleep(ms(1)).await });
}

#[test]
fn a_borrowed_handle_releases_nothing_when_dropped_or_closed() {
    let c = Cluster::new(3);
    let owner = c.manager(1);
    let lock = c.sim.run(owner.lock("res", TTL)).expect("lock");
    let token = lock.token().to_vec();
    let other = c.builder(2).spawner(c.sim.spawner()).build().unwrap();
    let borrowed = c.sim.run(other.get_lock("res", &token)).expect("rehydrate");
    drop(borrowed);
    settle(&c);
    assert_eq!(
        c.with_key(b"res"),
        3,
        "dropping a borrowed handle leaves the lock"
    );
    let _again = c.sim.run(other.get_lock("res", &token)).expect("rehydrate");
    let report = c.sim.run(other.close()).expect("close");
    assert_eq!(report.released, 0);
    assert_eq!(
        c.with_key(b"res"),
        3,
        "closing leaves a borrowed lock to its owner"
    );
    c.sim.run(lock.release()).expect("the owner still holds it");

    // Adopted, it is released on drop like any owned lock.
    let lock = c.sim.run(owner.lock("res", TTL)).expect("lock");
    let third = c.builder(3).spawner(c.sim.spawner()).build().unwrap();
    let adopted = c
        .sim
        .run(third.get_lock("res", lock.token()))
        .expect("rehydrate");
    adopted.adopt();
    drop(adopted);
    settle(&c);
    assert_eq!(
        c.with_key(b"res"),
        0,
        "an adopted handle is released when dropped"
    );
    assert!(matches!(c.sim.run(lock.release()), Err(Error::Lost(_))));
}

#[test]
fn errors_name_the_resource() {
    let c = Cluster::new(3);
    let holder = c.manager(1);
    let _held = c.sim.run(holder.lock("invoice:42", TTL)).expect("lock");
    let rival = c.builder(2).retry_count(1).build().expect("config");
    let err = c
        .sim
        .run(rival.lock("invoice:42", TTL))
        .expect_err("held by the first");
    assert!(matches!(err, Error::Contended(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "resource \"invoice:42\" is held by another client"
    );
    let never = c
        .sim
        .run(rival.get_lock("invoice:42", "not-a-token-of-it"))
        .expect_err("never held with that token");
    assert_eq!(
        never.to_string(),
        "lock lost: a quorum of instances does not hold this lock's token"
    );
    assert_eq!(
        common::failure(&never).resource.as_deref(),
        Some(&b"invoice:42"[..])
    );
}
