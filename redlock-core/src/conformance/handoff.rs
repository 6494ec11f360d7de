//! The rules of the [`Handoff` contract](crate::Handoff#contract).

use std::time::Duration;

use super::notify::heard;
use super::{key, must, Fixture, LONG};
use crate::backend::{queue_keys, BackendErrorKind, Handoff, LockBackend, QueuePlace};
use crate::runtime::Clock;

/// A place that outlasts every rule, and a reserve long enough to look at.
const PLACE: QueuePlace = QueuePlace {
    stay: LONG,
    reserve: Duration::from_secs(20),
};

/// How much of the reserve a key handed over may have lost by the time the test reads it (the
/// item's delivery and one read, on a loaded machine).
const GRANT_SLACK: Duration = Duration::from_secs(5);

/// [`LockBackend::handoff`] returns `Some` exactly when [`Fixture::hands_off`] says it should:
/// a decorator that drops the capability, or claims one its inner backend lacks, is caught.
pub fn handoff_is_offered_as_declared(backend: &dyn LockBackend, fixture: &dyn Fixture) {
    assert_eq!(
        backend.handoff().is_some(),
        fixture.hands_off(),
        "handoff() must return Some exactly when the backend hands off"
    );
}

fn handoff(backend: &dyn LockBackend) -> &dyn Handoff {
    backend
        .handoff()
        .expect("the fixture says this backend hands off")
}

/// Deletes the key and its queue.
async fn clean(fixture: &dyn Fixture, k: &[u8]) {
    let (queue, waiters) = queue_keys(k);
    fixture.delete(k).await;
    fixture.delete(&queue).await;
    fixture.delete(&waiters).await;
}

/// A refused `acquire_or_queue` queues the waiter; the holder's `release_and_hand_off` sets the
/// key to the waiter's token for its reserve (the whole reserve where hand-offs are grants,
/// rule 6) and tells its listener; the waiter's acquire then
/// finds the key its own (expiry reset to its ttl) while a rival's is refused. With nobody
/// queued, the release deletes the key. A foreign token's release touches nothing.
pub async fn a_queued_waiter_is_handed_the_key(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let h = handoff(backend);
    let k = key(namespace, b"handoff-one");
    clean(fixture, &k).await;
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    let mut told = must("listen", h.listen(b"tok-b")).await;
    assert!(
        !must("queue", h.acquire_or_queue(&k, b"tok-b", LONG, PLACE)).await,
        "a held key was granted to a waiter"
    );
    assert_eq!(
        must(
            "foreign release",
            h.release_and_hand_off(&k, b"tok-c", false)
        )
        .await,
        (false, false),
        "another token released the holder's key"
    );
    assert_eq!(
        must(
            "release_and_hand_off",
            h.release_and_hand_off(&k, b"tok-a", false)
        )
        .await,
        (true, true),
        "released with a waiter queued"
    );
    heard(&mut told, clock, "the hand-off").await;
    let reserved = must("inspect", backend.inspect(&k))
        .await
        .expect("a handed-off key is reserved, not deleted");
    assert_eq!(reserved.value, b"tok-b", "the key went to the waiter");
    assert!(
        reserved.ttl.is_some_and(|t| t <= PLACE.reserve),
        "a reservation lasts the waiter's reserve, not more: {:?}",
        reserved.ttl
    );
    if h.grants_by_hand_off() {
        // Rule 6: the manager counts this hand-off as its acquisition, for the reserve from
        // before it queued: the key must have been set for the whole reserve, before the item.
        assert!(
            reserved
                .ttl
                .is_some_and(|t| t + GRANT_SLACK >= PLACE.reserve),
            "a backend whose hand-offs are grants set the key for less than the reserve: {:?}",
            reserved.ttl
        );
    }
    assert!(
        !must("rival acquire", backend.acquire(&k, b"tok-c", LONG)).await,
        "a rival took a key reserved for a waiter"
    );
    assert!(
        must(
            "waiter acquire",
            h.acquire_or_queue(&k, b"tok-b", LONG, PLACE)
        )
        .await,
        "the waiter was refused its own reservation"
    );
    let held = must("inspect", backend.inspect(&k)).await.expect("held");
    assert!(
        held.ttl.is_some_and(|t| t > PLACE.reserve),
        "the waiter's acquire resets the expiry to its ttl: {:?}",
        held.ttl
    );
    assert_eq!(
        must("last release", h.release_and_hand_off(&k, b"tok-b", false)).await,
        (true, false),
        "nobody is queued any more: the key is deleted, and nobody told"
    );
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
    clean(fixture, &k).await;
}

/// A queued waiter's `release_and_hand_off` of its own token keeps its place (a call cleaning
/// up a failed attempt still waits) unless `leaving` (a call that stops waiting): then the
/// holder's release finds nobody and deletes the key.
pub async fn a_waiter_leaves_with_its_release(
    backend: &dyn LockBackend,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let h = handoff(backend);
    let k = key(namespace, b"handoff-leave");
    clean(fixture, &k).await;
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    let _told = must("listen", h.listen(b"tok-b")).await;
    assert!(!must("queue", h.acquire_or_queue(&k, b"tok-b", LONG, PLACE)).await);
    assert_eq!(
        must("cleanup", h.release_and_hand_off(&k, b"tok-b", false)).await,
        (false, false),
        "a waiter's cleanup released the holder's key"
    );
    assert_eq!(
        must("release", h.release_and_hand_off(&k, b"tok-a", false)).await,
        (true, true),
        "a waiter's cleanup gave up its place"
    );
    assert!(must("claim", h.acquire_or_queue(&k, b"tok-b", LONG, PLACE)).await);
    assert!(!must("queue", h.acquire_or_queue(&k, b"tok-a", LONG, PLACE)).await);
    assert_eq!(
        must("leave", h.release_and_hand_off(&k, b"tok-a", true)).await,
        (false, false),
        "leaving the queue released the holder's key"
    );
    assert_eq!(
        must("inspect", backend.inspect(&k)).await.map(|s| s.value),
        Some(b"tok-b".to_vec()),
        "leaving the queue touched the lock"
    );
    assert_eq!(
        must("release", h.release_and_hand_off(&k, b"tok-b", false)).await,
        (true, false),
        "the waiter that left was handed the key"
    );
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
    clean(fixture, &k).await;
}

/// A key handed to a waiter that never claims it expires after the waiter's reserve, and when
/// that waiter leaves (`leaving`), nothing of the queue is left on the instance: no table
/// kept alive by the record of the reservation that ran out.
pub async fn a_reservation_that_ran_out_leaves_nothing(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let h = handoff(backend);
    let k = key(namespace, b"handoff-ran-out");
    clean(fixture, &k).await;
    let (queue, waiters) = queue_keys(&k);
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    let mut told = must("listen", h.listen(b"tok-b")).await;
    let brief = QueuePlace {
        stay: LONG,
        reserve: Duration::from_millis(1),
    };
    assert!(!must("queue", h.acquire_or_queue(&k, b"tok-b", LONG, brief)).await);
    assert_eq!(
        must("release", h.release_and_hand_off(&k, b"tok-a", false)).await,
        (true, true)
    );
    heard(&mut told, clock, "the hand-off").await;
    // The reservation runs out on the instance's clock; a margin for a coarse one.
    clock.sleep(Duration::from_millis(20)).await;
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
    assert_eq!(
        must("leave", h.release_and_hand_off(&k, b"tok-b", true)).await,
        (false, false)
    );
    for left in [&queue, &waiters] {
        // `inspect` answers `None` for an absent key and `WrongType` for a list or a table.
        assert!(
            matches!(backend.inspect(left).await, Ok(None)),
            "a queue key outlived its last waiter"
        );
    }
    clean(fixture, &k).await;
}

/// Waiters are handed the key in the order they queued; queueing again keeps a waiter's place.
pub async fn hand_offs_follow_the_queue(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let h = handoff(backend);
    let k = key(namespace, b"handoff-order");
    clean(fixture, &k).await;
    let mut first = must("listen", h.listen(b"tok-1")).await;
    let mut second = must("listen", h.listen(b"tok-2")).await;
    assert!(must("acquire", backend.acquire(&k, b"tok-0", LONG)).await);
    for waiter in [&b"tok-1"[..], b"tok-2", b"tok-1"] {
        assert!(!must("queue", h.acquire_or_queue(&k, waiter, LONG, PLACE)).await);
    }
    assert_eq!(
        must("release", h.release_and_hand_off(&k, b"tok-0", false)).await,
        (true, true)
    );
    heard(&mut first, clock, "the first waiter's turn").await;
    assert_eq!(
        must("inspect", backend.inspect(&k)).await.map(|s| s.value),
        Some(b"tok-1".to_vec()),
        "the first to queue is first, though it queued again after the second"
    );
    assert!(must("acquire", h.acquire_or_queue(&k, b"tok-1", LONG, PLACE)).await);
    assert_eq!(
        must("release", h.release_and_hand_off(&k, b"tok-1", false)).await,
        (true, true)
    );
    heard(&mut second, clock, "the second waiter's turn").await;
    assert_eq!(
        must("inspect", backend.inspect(&k)).await.map(|s| s.value),
        Some(b"tok-2".to_vec())
    );
    clean(fixture, &k).await;
}

/// A waiter whose place ran out is skipped, and so is one whose call stopped listening: the
/// hand-off to it is passed on to the next at once.
pub async fn gone_waiters_are_passed_over(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let h = handoff(backend);
    let k = key(namespace, b"handoff-gone");
    clean(fixture, &k).await;
    assert!(must("acquire", backend.acquire(&k, b"tok-0", LONG)).await);
    let brief = QueuePlace {
        stay: Duration::from_millis(1),
        reserve: PLACE.reserve,
    };
    let expired = must("listen", h.listen(b"tok-expired")).await;
    assert!(!must("queue", h.acquire_or_queue(&k, b"tok-expired", LONG, brief)).await);
    let dropped = must("listen", h.listen(b"tok-dropped")).await;
    assert!(!must("queue", h.acquire_or_queue(&k, b"tok-dropped", LONG, PLACE)).await);
    drop(dropped);
    let mut last = must("listen", h.listen(b"tok-last")).await;
    assert!(!must("queue", h.acquire_or_queue(&k, b"tok-last", LONG, PLACE)).await);
    // The first place runs out on the instance's clock; a margin for a coarse one.
    clock.sleep(Duration::from_millis(20)).await;
    assert_eq!(
        must("release", h.release_and_hand_off(&k, b"tok-0", false)).await,
        (true, true)
    );
    heard(
        &mut last,
        clock,
        "the hand-off passed on to the last waiter",
    )
    .await;
    assert_eq!(
        must("inspect", backend.inspect(&k)).await.map(|s| s.value),
        Some(b"tok-last".to_vec())
    );
    drop(expired);
    clean(fixture, &k).await;
}

/// A queue key that holds application data of another type makes a refused
/// `acquire_or_queue` an error of kind `WrongType`, and is left alone.
pub async fn a_queue_of_another_type_is_an_error(
    backend: &dyn LockBackend,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let h = handoff(backend);
    let k = key(namespace, b"handoff-other-type");
    clean(fixture, &k).await;
    let (_, waiters) = queue_keys(&k);
    fixture.plant_other_type(&waiters).await;
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    match h.acquire_or_queue(&k, b"tok-b", LONG, PLACE).await {
        Err(e) => assert_eq!(e.kind(), BackendErrorKind::WrongType, "{e:?}"),
        Ok(granted) => panic!("queueing into application data answered {granted}"),
    }
    assert!(fixture.other_type_intact(&waiters).await);
    clean(fixture, &k).await;
}
