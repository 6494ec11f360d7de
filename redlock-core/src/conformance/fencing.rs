//! The rules of the [`Fencing` contract](crate::Fencing#contract).

use std::time::Duration;

use super::{key, must, Fixture, LONG};
use crate::backend::{fence_key, BackendErrorKind, Fencing, LockBackend};
use crate::runtime::Clock;

/// [`LockBackend::fencing`] returns `Some` exactly when
/// [`Fixture::keeps_fence_counters`] says it should: a decorator that drops the capability,
/// or claims one its inner backend lacks, is caught.
pub fn fencing_is_offered_as_declared(backend: &dyn LockBackend, fixture: &dyn Fixture) {
    assert_eq!(
        backend.fencing().is_some(),
        fixture.keeps_fence_counters(),
        "fencing() must return Some exactly when the backend keeps fencing counters"
    );
}

fn fencing(backend: &dyn LockBackend) -> &dyn Fencing {
    backend
        .fencing()
        .expect("the fixture says this backend keeps fencing counters")
}

/// `next_fence` increments only for the holder of the key: 1, 2, ... for our token; `None`,
/// nothing changed, for another token, an absent key, or an expired one.
pub async fn next_fence_counts_only_for_the_holder(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let f = fencing(backend);
    let k = key(namespace, b"fence-holder");
    let c = fence_key(&k);
    fixture.delete(&c).await;
    assert_eq!(
        must(
            "next_fence on an absent key",
            f.next_fence(&k, b"tok-a", &c)
        )
        .await,
        None
    );
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    assert_eq!(
        must("next_fence", f.next_fence(&k, b"tok-a", &c)).await,
        Some(1),
        "an absent counter counts as 0"
    );
    assert_eq!(
        must("next_fence again", f.next_fence(&k, b"tok-a", &c)).await,
        Some(2)
    );
    assert_eq!(
        must("next_fence, another token", f.next_fence(&k, b"tok-b", &c)).await,
        None
    );
    assert_eq!(
        must(
            "next_fence, a prefix of the token",
            f.next_fence(&k, b"tok-", &c)
        )
        .await,
        None
    );
    assert!(must("release", backend.release(&k, b"tok-a")).await);
    assert_eq!(
        must("next_fence after release", f.next_fence(&k, b"tok-a", &c)).await,
        None
    );
    assert!(
        must(
            "short acquire",
            backend.acquire(&k, b"tok-b", Duration::from_millis(40))
        )
        .await
    );
    clock.sleep(Duration::from_millis(100)).await;
    assert_eq!(
        must("next_fence after expiry", f.next_fence(&k, b"tok-b", &c)).await,
        None
    );
    // Nothing above changed the counter after the second increment.
    assert_eq!(must("raise_fence 0", f.raise_fence(&c, 0)).await, 2);
    fixture.delete(&c).await;
}

/// `raise_fence` never lowers the counter, returns the value after, and the counter has no
/// expiry (it is not a lock key: `inspect` shows it without a TTL).
pub async fn raise_fence_never_lowers(
    backend: &dyn LockBackend,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let f = fencing(backend);
    let k = key(namespace, b"fence-raise");
    let c = fence_key(&k);
    fixture.delete(&c).await;
    assert_eq!(must("raise on absent", f.raise_fence(&c, 5)).await, 5);
    assert_eq!(must("lower raise", f.raise_fence(&c, 3)).await, 5);
    assert_eq!(must("equal raise", f.raise_fence(&c, 5)).await, 5);
    // Past 2^53: a backend comparing as floating point would get these wrong.
    let big = (1u64 << 53) + 1;
    assert_eq!(must("raise to 2^53 + 1", f.raise_fence(&c, big)).await, big);
    assert_eq!(
        must("raise to 2^53", f.raise_fence(&c, big - 1)).await,
        big,
        "2^53 is lower than 2^53 + 1"
    );
    let state = must("inspect the counter", backend.inspect(&c))
        .await
        .expect("the counter exists after a raise");
    assert_eq!(state.value, big.to_string().as_bytes());
    assert_eq!(state.ttl, None, "a fencing counter must not expire");
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    assert_eq!(
        must("next_fence after raise", f.next_fence(&k, b"tok-a", &c)).await,
        Some(big + 1)
    );
    assert!(must("release", backend.release(&k, b"tok-a")).await);
    fixture.delete(&c).await;
}

/// A lock key or a counter key holding a value of another type: both methods answer `Err` of
/// kind [`WrongType`](BackendErrorKind::WrongType) and leave it alone.
pub async fn fencing_on_another_type_is_an_error(
    backend: &dyn LockBackend,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let f = fencing(backend);
    let k = key(namespace, b"fence-wrong-type");
    let c = fence_key(&k);
    let expect = |what: &str, kind: Option<BackendErrorKind>| {
        assert_eq!(
            kind,
            Some(BackendErrorKind::WrongType),
            "{what} on a value of another type must be a WrongType error"
        );
    };
    fixture.plant_other_type(&k).await;
    let r = f.next_fence(&k, b"tok-a", &c).await;
    expect("next_fence (lock key)", r.err().map(|e| e.kind()));
    let intact = fixture.other_type_intact(&k).await;
    fixture.delete(&k).await;
    assert!(intact, "the lock key's value of another type was modified");

    fixture.plant_other_type(&c).await;
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    let r = f.next_fence(&k, b"tok-a", &c).await;
    expect("next_fence (counter)", r.err().map(|e| e.kind()));
    let r = f.raise_fence(&c, 7).await;
    expect("raise_fence", r.err().map(|e| e.kind()));
    let intact = fixture.other_type_intact(&c).await;
    fixture.delete(&c).await;
    assert!(must("release", backend.release(&k, b"tok-a")).await);
    assert!(intact, "the counter's value of another type was modified");
}
