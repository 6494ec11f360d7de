//! `unlock` returns once a quorum has answered when the manager has a spawner: a slow or hung
//! instance no longer costs every release its delay, and its key still goes, by the delete that
//! is on its way or by its expiry. Without a spawner nobody could see the stragglers through, so
//! the release waits for every instance as before.

mod common;

use common::{ms, Cluster, TTL};
use redlock_lease::LockManager;

/// A manager whose release can leave its stragglers to a background task.
fn with_spawner(c: &Cluster, seed: u64) -> LockManager {
    c.builder(seed)
        .spawner(c.sim.spawner())
        .build()
        .expect("valid configuration")
}

#[test]
fn a_slow_instance_does_not_hold_up_unlock_and_its_key_still_goes() {
    let c = Cluster::new(3);
    let manager = with_spawner(&c, 1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let token = lock.token().to_vec();
    assert_eq!(c.keys_holding(&token), 3);
    // From now on its requests land half-way through 40 ms, its replies 20 ms later.
    c.faults[2].set_latency(ms(40));

    let start = c.now();
    c.sim.run(lock.release()).expect("released");
    assert_eq!(c.now(), start, "returned with the two fast deletes");
    assert_eq!(c.keys_holding(&token), 1, "the slow delete is on its way");
    // A rival gets the lock at once: the quorum is free.
    let rival = with_spawner(&c, 2);
    let taken = c
        .sim
        .run(rival.try_lock("res", TTL))
        .expect("free on a quorum");
    assert_eq!(c.now(), start);
    // The slow delete lands (half its latency): our key goes, the rival's stays untouched.
    c.sim.run(c.clock.sleep(ms(20)));
    assert_eq!(c.keys_holding(&token), 0, "the straggler's delete landed");
    assert_eq!(
        c.holding(b"res", taken.token()),
        2,
        "only the fast instances are the rival's"
    );
}

#[test]
fn without_a_spawner_unlock_waits_for_every_instance() {
    let c = Cluster::new(3);
    c.faults[2].set_latency(ms(40));
    let manager = c.manager(3);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let token = lock.token().to_vec();
    c.sim.run(c.clock.sleep(ms(40)));
    let start = c.now();
    c.sim.run(lock.release()).expect("released");
    assert_eq!(c.now(), start + ms(40), "waited for the slow instance");
    assert_eq!(c.keys_holding(&token), 0);
}

#[test]
fn a_hung_instance_costs_unlock_nothing_and_its_key_expires() {
    let c = Cluster::new(3);
    let manager = with_spawner(&c, 4);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let token = lock.token().to_vec();
    c.faults[2].set_hang(true);
    let start = c.now();
    c.sim.run(lock.release()).expect("released on a quorum");
    assert_eq!(c.now(), start);
    assert_eq!(c.keys_holding(&token), 1, "the hung instance keeps it");
    // The background call gives up at the per-instance timeout; the key goes at its expiry.
    c.sim.run(c.clock.sleep(TTL));
    assert_eq!(c.keys_holding(&token), 0);
}

#[test]
fn a_release_refused_by_a_quorum_is_still_reported_lost() {
    // Returning at quorum must not turn a loss into a release.
    let c = Cluster::new(3);
    c.faults[2].set_latency(ms(40));
    let manager = with_spawner(&c, 5);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.sim.run(c.clock.sleep(ms(40)));
    for m in &c.memories[..2] {
        m.delete(b"res");
    }
    let err = c
        .sim
        .run(lock.release())
        .expect_err("two of three no longer hold it");
    assert!(
        matches!(err, redlock_lease::Error::Lost(_)),
        "expected Lost, got {err:?}"
    );
}

#[test]
fn close_waits_for_the_deletes_still_on_their_way() {
    let c = Cluster::new(3);
    let manager = with_spawner(&c, 6);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let token = lock.token().to_vec();
    c.faults[2].set_latency(ms(40));
    c.sim.run(lock.release()).expect("released");
    assert_eq!(c.keys_holding(&token), 1);
    let start = c.now();
    c.sim.run(manager.close()).expect("closed");
    assert_eq!(
        c.keys_holding(&token),
        0,
        "the slow delete landed before the close"
    );
    assert_eq!(c.now(), start + ms(40), "and its reply came back");
}
