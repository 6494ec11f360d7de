//! The backend conformance suite: one `async fn` per rule of the
//! [`LockBackend` contract](crate::LockBackend#contract) and of the
//! [`ReleaseNotify` contract](crate::ReleaseNotify#contract), of the
//! [`Fencing` contract](crate::Fencing#contract) and of the
//! [`Handoff` contract](crate::Handoff#contract). Every backend runs it.
//!
//! Each function panics (like `assert!`) when the backend breaks the rule. Keys are built from
//! `namespace`, so runs against a shared server do not collide; pass something unique per run.
//! Every rule deletes the keys it made, so the instance is left as it was found.
//!
//! Some rules need what a lock client cannot do, such as storing a list under a key; the test
//! that runs the suite provides it through a [`Fixture`] with direct access to the instance.
//!
//! ```no_run
//! use redlock_core::conformance::{self, Fixture};
//!
//! async fn demo(
//!     backend: &dyn redlock_core::LockBackend,
//!     clock: &dyn redlock_core::Clock,
//!     fixture: &dyn Fixture,
//! ) {
//!     conformance::run_all(backend, clock, fixture, b"my-test-run-42:").await;
//! }
//! ```
//!
//! A backend that announces reconnections ([`LockBackend::reconnects`]) also runs
//! [`a_reconnection_is_announced`], which is not part of [`run_all`]: it needs a way to break the
//! connection, given through a [`Reconnect`].
//!
//! A decorator (fault injection, metrics, ...) should pass the suite too, with its faults off,
//! wrapped around a backend that passes: it shows the decorator forwards what it must.

use std::time::Duration;

use async_trait::async_trait;

use crate::backend::LockBackend;
use crate::runtime::Clock;

mod fencing;
mod handoff;
mod notify;
mod reconnect;
mod wrong_type;

pub use fencing::{
    fencing_is_offered_as_declared, fencing_on_another_type_is_an_error,
    next_fence_counts_only_for_the_holder, raise_fence_never_lowers,
};
pub use handoff::{
    a_queue_of_another_type_is_an_error, a_queued_waiter_is_handed_the_key,
    a_reservation_that_ran_out_leaves_nothing, a_waiter_leaves_with_its_release,
    gone_waiters_are_passed_over, hand_offs_follow_the_queue, handoff_is_offered_as_declared,
};
pub use notify::{
    a_subscription_hears_every_later_release, dropping_a_subscription_unsubscribes,
    release_and_notify_is_a_token_checked_release, release_notify_is_offered_as_declared,
    releases_are_heard_per_key,
};
pub use reconnect::{a_reconnection_is_announced, Reconnect};
pub use wrong_type::another_type_is_an_error_and_left_alone;

const LONG: Duration = Duration::from_secs(30);

/// What the suite needs from the test that runs it, besides the backend: direct access to the
/// instance behind the backend, for what a lock client cannot do.
///
/// A failure to do what is asked should panic (it fails the test, as an assertion would).
#[async_trait]
pub trait Fixture: Send + Sync {
    /// Stores a value of a type other than a string under `key`, without expiry, as an
    /// application's data would be (a Redis list, say). Replaces whatever `key` held.
    async fn plant_other_type(&self, key: &[u8]);

    /// Whether `key` still holds exactly what [`plant_other_type`](Self::plant_other_type)
    /// stored there, still without expiry.
    async fn other_type_intact(&self, key: &[u8]) -> bool;

    /// Deletes `key`, whatever it holds.
    async fn delete(&self, key: &[u8]);

    /// Whether the backend is meant to announce releases
    /// ([`LockBackend::release_notify`] returns `Some`). The suite checks that it does exactly
    /// when this says so (a decorator that drops the capability is caught), and runs the
    /// [`ReleaseNotify`](crate::ReleaseNotify) rules when it does.
    fn announces_releases(&self) -> bool;

    /// Whether the backend is meant to keep fencing counters ([`LockBackend::fencing`]
    /// returns `Some`). The suite checks that it does exactly when this says so, and runs the
    /// [`Fencing`](crate::Fencing) rules when it does.
    fn keeps_fence_counters(&self) -> bool;

    /// Whether the backend is meant to hand keys off to queued waiters
    /// ([`LockBackend::handoff`] returns `Some`). The suite checks that it does exactly when
    /// this says so, and runs the [`Handoff`](crate::Handoff) rules when it does. By default
    /// `false`.
    fn hands_off(&self) -> bool {
        false
    }
}

fn key(namespace: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = namespace.to_vec();
    k.extend_from_slice(name);
    k
}

async fn must<T, E: std::fmt::Debug>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    match fut.await {
        Ok(v) => v,
        Err(e) => panic!("{what}: backend error {e:?}"),
    }
}

/// Runs every check of this module, in order.
pub async fn run_all(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    // A backend that connects lazily is connected first (within its connection timeout): the
    // rules are about the operations, and a first call racing the connection is not one.
    must("connect", backend.connect()).await;
    round_trip(backend, namespace).await;
    acquire_is_exclusive(backend, namespace).await;
    foreign_token_is_never_released_or_extended(backend, namespace).await;
    same_token_acquire_is_idempotent(backend, namespace).await;
    release_twice_is_false(backend, namespace).await;
    binary_names_are_distinct_keys(backend, namespace).await;
    ttl_expiry(backend, clock, namespace).await;
    extend_does_not_resurrect(backend, clock, namespace).await;
    extend_resets_ttl(backend, clock, namespace).await;
    another_type_is_an_error_and_left_alone(backend, fixture, namespace).await;
    release_notify_is_offered_as_declared(backend, fixture);
    if fixture.announces_releases() {
        release_and_notify_is_a_token_checked_release(backend, namespace).await;
        a_subscription_hears_every_later_release(backend, clock, namespace).await;
        releases_are_heard_per_key(backend, clock, namespace).await;
        dropping_a_subscription_unsubscribes(backend, clock, namespace).await;
    }
    fencing_is_offered_as_declared(backend, fixture);
    if fixture.keeps_fence_counters() {
        next_fence_counts_only_for_the_holder(backend, clock, fixture, namespace).await;
        raise_fence_never_lowers(backend, fixture, namespace).await;
        fencing_on_another_type_is_an_error(backend, fixture, namespace).await;
    }
    handoff_is_offered_as_declared(backend, fixture);
    if fixture.hands_off() {
        a_queued_waiter_is_handed_the_key(backend, clock, fixture, namespace).await;
        a_waiter_leaves_with_its_release(backend, fixture, namespace).await;
        a_reservation_that_ran_out_leaves_nothing(backend, clock, fixture, namespace).await;
        hand_offs_follow_the_queue(backend, clock, fixture, namespace).await;
        gone_waiters_are_passed_over(backend, clock, fixture, namespace).await;
        a_queue_of_another_type_is_an_error(backend, fixture, namespace).await;
    }
}

/// acquire → inspect shows the token with a TTL → release → absent.
pub async fn round_trip(backend: &dyn LockBackend, namespace: &[u8]) {
    let k = key(namespace, b"round-trip");
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    let state = must("inspect", backend.inspect(&k))
        .await
        .expect("key present after acquire");
    assert_eq!(state.value, b"tok-a");
    let ttl = state.ttl.expect("an acquired key has an expiry");
    assert!(
        ttl <= LONG && ttl > LONG / 2,
        "ttl {ttl:?} after acquiring for {LONG:?}"
    );
    assert!(must("release", backend.release(&k, b"tok-a")).await);
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
}

/// A held key refuses another token.
pub async fn acquire_is_exclusive(backend: &dyn LockBackend, namespace: &[u8]) {
    let k = key(namespace, b"exclusive");
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    assert!(!must("rival acquire", backend.acquire(&k, b"tok-b", LONG)).await);
    let state = must("inspect", backend.inspect(&k)).await.expect("present");
    assert_eq!(
        state.value, b"tok-a",
        "the rival must not overwrite the holder"
    );
    assert!(must("release", backend.release(&k, b"tok-a")).await);
}

/// Release and extend with a foreign token change nothing.
pub async fn foreign_token_is_never_released_or_extended(
    backend: &dyn LockBackend,
    namespace: &[u8],
) {
    let k = key(namespace, b"foreign");
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    assert!(!must("foreign release", backend.release(&k, b"tok-b")).await);
    assert!(
        !must(
            "foreign extend",
            backend.extend(&k, b"tok-b", Duration::from_secs(300))
        )
        .await
    );
    // A prefix of the token is a different token.
    assert!(!must("prefix release", backend.release(&k, b"tok-")).await);
    let state = must("inspect", backend.inspect(&k)).await.expect("present");
    assert_eq!(state.value, b"tok-a");
    assert!(
        state.ttl.expect("expiry") <= LONG,
        "a foreign extend must not lengthen the lease"
    );
    assert!(must("release", backend.release(&k, b"tok-a")).await);
}

/// Acquiring again with the same token succeeds and resets the TTL (safe re-sends).
pub async fn same_token_acquire_is_idempotent(backend: &dyn LockBackend, namespace: &[u8]) {
    let k = key(namespace, b"idempotent");
    assert!(
        must(
            "acquire",
            backend.acquire(&k, b"tok-a", Duration::from_secs(5))
        )
        .await
    );
    assert!(must("re-acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    let ttl = must("inspect", backend.inspect(&k))
        .await
        .expect("present")
        .ttl
        .expect("expiry");
    assert!(
        ttl > Duration::from_secs(5),
        "re-acquire must reset the TTL, got {ttl:?}"
    );
    assert!(must("release", backend.release(&k, b"tok-a")).await);
}

/// The second release of the same token answers `false`.
pub async fn release_twice_is_false(backend: &dyn LockBackend, namespace: &[u8]) {
    let k = key(namespace, b"twice");
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    assert!(must("release", backend.release(&k, b"tok-a")).await);
    assert!(!must("second release", backend.release(&k, b"tok-a")).await);
    assert!(!must("extend after release", backend.extend(&k, b"tok-a", LONG)).await);
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
}

/// Keys with NUL and non-UTF-8 bytes work, and differ when their bytes differ.
pub async fn binary_names_are_distinct_keys(backend: &dyn LockBackend, namespace: &[u8]) {
    let a = key(namespace, b"bin\x00\xff\xfe");
    let b = key(namespace, b"bin\x00\xff\xfd");
    let token = b"\x00tok\xff";
    assert!(must("acquire a", backend.acquire(&a, token, LONG)).await);
    assert!(must("acquire b", backend.acquire(&b, b"other", LONG)).await);
    let state = must("inspect a", backend.inspect(&a))
        .await
        .expect("present");
    assert_eq!(state.value, token);
    assert!(must("release a", backend.release(&a, token)).await);
    assert_eq!(must("inspect a", backend.inspect(&a)).await, None);
    assert!(must("inspect b", backend.inspect(&b)).await.is_some());
    assert!(must("release b", backend.release(&b, b"other")).await);
}

/// After the TTL has passed the key is gone and another token can take it.
pub async fn ttl_expiry(backend: &dyn LockBackend, clock: &dyn Clock, namespace: &[u8]) {
    let k = key(namespace, b"expiry");
    assert!(
        must(
            "acquire",
            backend.acquire(&k, b"tok-a", Duration::from_millis(50))
        )
        .await
    );
    clock.sleep(Duration::from_millis(120)).await;
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
    assert!(must("rival acquire", backend.acquire(&k, b"tok-b", LONG)).await);
    assert!(must("release", backend.release(&k, b"tok-b")).await);
}

/// Extending an expired key answers `false` and does not re-create it.
pub async fn extend_does_not_resurrect(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    namespace: &[u8],
) {
    let k = key(namespace, b"no-resurrect");
    assert!(
        must(
            "acquire",
            backend.acquire(&k, b"tok-a", Duration::from_millis(40))
        )
        .await
    );
    clock.sleep(Duration::from_millis(100)).await;
    assert!(!must("extend after expiry", backend.extend(&k, b"tok-a", LONG)).await);
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
}

/// Extending a held key sets its TTL to the new value.
pub async fn extend_resets_ttl(backend: &dyn LockBackend, clock: &dyn Clock, namespace: &[u8]) {
    let k = key(namespace, b"extend");
    assert!(
        must(
            "acquire",
            backend.acquire(&k, b"tok-a", Duration::from_millis(200))
        )
        .await
    );
    assert!(must("extend", backend.extend(&k, b"tok-a", LONG)).await);
    clock.sleep(Duration::from_millis(300)).await;
    let state = must("inspect", backend.inspect(&k))
        .await
        .expect("an extended key outlives its first TTL");
    assert_eq!(state.value, b"tok-a");
    assert!(must("release", backend.release(&k, b"tok-a")).await);
}
