//! Cancelled calls: an acquire dropped mid-flight leaves keys on the instances. With a spawner
//! the manager releases them in the background at once; without one they stay until their TTL
//! (the documented fallback). A release dropped mid-flight leaves the lock releasable.

mod common;

use std::pin::pin;

use common::{ms, Cluster, TTL};
use futures::future::{select, Either};
use redlock_lease::LockManager;

/// Starts an acquire whose requests land at 10 ms and replies come at 20 ms, and drops it at
/// 15 ms, when the keys are set but the client has not heard of it.
fn cancel_mid_acquire(c: &Cluster, manager: &LockManager) {
    c.set_latency(ms(20));
    c.sim.run(async {
        let acquire = pin!(manager.lock("res", TTL));
        let timer = c.clock.sleep(ms(15));
        match select(acquire, timer).await {
            Either::Left((result, _)) => {
                panic!("the acquire should still be in flight: {result:?}")
            }
            Either::Right(((), _)) => {}
        }
    });
    assert_eq!(c.now(), ms(15));
    assert_eq!(c.with_key(b"res"), 5, "the writes landed before the cancel");
}

#[test]
fn a_dropped_acquire_is_cleaned_up_in_the_background() {
    let c = Cluster::new(5);
    let manager = c
        .builder(1)
        .spawner(c.sim.spawner())
        .build()
        .expect("config");
    cancel_mid_acquire(&c, &manager);
    // The background release needs one round trip.
    c.sim.run(c.clock.sleep(ms(20)));
    assert_eq!(c.with_key(b"res"), 0, "orphaned keys left behind");
    assert!(manager.active_locks().is_empty());
    // The resource is free for the next caller straight away, not after the TTL.
    let lock = c.sim.run(manager.lock("res", TTL)).expect("free again");
    assert!(c.now() < ms(100));
    c.sim.run(lock.release()).expect("release");
}

#[test]
fn without_a_spawner_a_dropped_acquire_expires_by_its_ttl() {
    // Documented fallback: nothing can run after the future is gone, so the keys live on
    // until the instances expire them.
    let c = Cluster::new(5);
    let manager = c.manager(1);
    cancel_mid_acquire(&c, &manager);
    c.sim.run(c.clock.sleep(ms(1_000)));
    assert_eq!(c.with_key(b"res"), 5);
    assert!(
        manager.active_locks().is_empty(),
        "the caller never got a lock"
    );
    // Set at 10 ms with a 10 s TTL: they go at 10 010 ms, not before.
    c.sim.clock().advance_to(ms(10_009));
    assert_eq!(c.with_key(b"res"), 5);
    c.advance(ms(1));
    assert_eq!(c.with_key(b"res"), 0);
}

#[test]
fn a_dropped_release_leaves_the_lock_releasable() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.set_latency(ms(20));
    c.sim.run(async {
        let release = pin!(lock.release());
        // Dropped before any delete lands.
        if let Either::Left((result, _)) = select(release, c.clock.sleep(ms(5))).await {
            panic!("the release should still be in flight: {result:?}");
        }
    });
    assert_eq!(c.holding(b"res", lock.token()), 5);
    assert!(lock.is_valid());
    c.sim.run(lock.release()).expect("released for real");
    assert_eq!(c.with_key(b"res"), 0);
}

#[test]
fn a_release_dropped_after_its_deletes_landed_still_completes_cleanly() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    c.set_latency(ms(20));
    c.sim.run(async {
        let release = pin!(lock.release());
        if let Either::Left((result, _)) = select(release, c.clock.sleep(ms(15))).await {
            panic!("the release should still be in flight: {result:?}");
        }
    });
    assert_eq!(c.with_key(b"res"), 0, "the deletes landed at 10 ms");
    // The handle never heard back. Releasing again finds no token anywhere: the first release
    // went out while the lock was valid, so the keys that are gone are its own deletes (or, at
    // worst, vanished after the holder had let go). It reports the release, not a loss: a Lost
    // here would be a false alarm about a lock that was held until it was released.
    let again = c.sim.run(lock.release());
    assert!(matches!(again, Ok(())), "{again:?}");
    assert!(matches!(
        c.sim.run(lock.release()),
        Err(redlock_lease::Error::Released)
    ));
    assert!(!lock.is_valid());
}
