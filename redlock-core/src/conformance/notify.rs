//! The [`ReleaseNotify`](crate::ReleaseNotify) contract, for backends that announce releases.

use std::time::Duration;

use futures::future::{select, Either};
use futures::stream::{BoxStream, StreamExt};

use super::{key, must, Fixture, LONG};
use crate::backend::{LockBackend, ReleaseNotify};
use crate::runtime::Clock;

/// How long an announcement may take to arrive before the rule fails. Not a speed requirement:
/// only a bound, so a broken backend fails the suite instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(5);

/// Between two looks while waiting for an asynchronous unsubscription to take effect.
const RECHECK: Duration = Duration::from_millis(10);

fn notify_of(backend: &dyn LockBackend) -> &dyn ReleaseNotify {
    backend
        .release_notify()
        .expect("the fixture says this backend announces releases")
}

/// Waits for the next announcement on `stream`, at most [`PATIENCE`] on `clock`.
pub(super) async fn heard(stream: &mut BoxStream<'static, ()>, clock: &dyn Clock, what: &str) {
    match select(stream.next(), clock.sleep(PATIENCE)).await {
        Either::Left((Some(()), _)) => {}
        Either::Left((None, _)) => panic!("{what}: the subscription ended instead"),
        Either::Right(_) => panic!("{what}: no announcement within {PATIENCE:?}"),
    }
}

/// `release_notify` returns `Some` exactly when the fixture says the backend announces.
pub fn release_notify_is_offered_as_declared(backend: &dyn LockBackend, fixture: &dyn Fixture) {
    assert_eq!(
        backend.release_notify().is_some(),
        fixture.announces_releases(),
        "release_notify() is not what the fixture declares (a decorator that drops it?)"
    );
}

/// `release_and_notify` is `release` (token-checked, once) and, without a subscriber, answers
/// that nobody heard.
pub async fn release_and_notify_is_a_token_checked_release(
    backend: &dyn LockBackend,
    namespace: &[u8],
) {
    let notify = notify_of(backend);
    let k = key(namespace, b"notify-token");
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    for foreign in [&b"tok-b"[..], b"tok-", b"tok-a\x00"] {
        assert_eq!(
            must(
                "foreign release_and_notify",
                notify.release_and_notify(&k, foreign)
            )
            .await,
            (false, false),
            "token {foreign:?} released or announced another's lock"
        );
    }
    let state = must("inspect", backend.inspect(&k)).await.expect("present");
    assert_eq!(state.value, b"tok-a");
    assert_eq!(
        must(
            "release_and_notify",
            notify.release_and_notify(&k, b"tok-a")
        )
        .await,
        (true, false),
        "released, and nobody subscribed to hear it"
    );
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
    assert_eq!(
        must(
            "second release_and_notify",
            notify.release_and_notify(&k, b"tok-a")
        )
        .await,
        (false, false)
    );
    assert!(!must("extend after release", backend.extend(&k, b"tok-a", LONG)).await);
}

/// A subscription hears every release made after `subscribe` returned, and the release
/// reports that it was heard; a refused release reports nothing heard.
pub async fn a_subscription_hears_every_later_release(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    namespace: &[u8],
) {
    let notify = notify_of(backend);
    let k = key(namespace, b"notify-heard");
    let mut stream = must("subscribe", notify.subscribe(&k)).await;
    for round in 0..2 {
        assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
        assert_eq!(
            must(
                "foreign release_and_notify",
                notify.release_and_notify(&k, b"tok-b")
            )
            .await,
            (false, false),
            "round {round}: a refused release reported a listener"
        );
        assert_eq!(
            must(
                "release_and_notify",
                notify.release_and_notify(&k, b"tok-a")
            )
            .await,
            (true, true),
            "round {round}: released with a subscriber listening"
        );
        heard(&mut stream, clock, &format!("release {round}")).await;
    }
    assert_eq!(must("inspect", backend.inspect(&k)).await, None);
}

/// Releases of one key are not announced to subscribers of another.
pub async fn releases_are_heard_per_key(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    namespace: &[u8],
) {
    let notify = notify_of(backend);
    let watched = key(namespace, b"notify-watched");
    let other = key(namespace, b"notify-other");
    let mut stream = must("subscribe", notify.subscribe(&watched)).await;
    assert!(must("acquire", backend.acquire(&other, b"tok-a", LONG)).await);
    assert_eq!(
        must(
            "release_and_notify",
            notify.release_and_notify(&other, b"tok-a")
        )
        .await,
        (true, false),
        "a release of another key counted the subscriber of this one"
    );
    // The watched key's own release still arrives, after any stray one: not asserting silence,
    // which the contract allows to be broken by spurious wake-ups.
    assert!(must("acquire", backend.acquire(&watched, b"tok-a", LONG)).await);
    assert_eq!(
        must(
            "release_and_notify",
            notify.release_and_notify(&watched, b"tok-a")
        )
        .await,
        (true, true)
    );
    heard(&mut stream, clock, "release of the watched key").await;
}

/// Dropping a subscription unsubscribes it (possibly a little later: the rule waits), and
/// leaves the other subscriptions to the same key listening.
pub async fn dropping_a_subscription_unsubscribes(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    namespace: &[u8],
) {
    let notify = notify_of(backend);
    let k = key(namespace, b"notify-drop");
    let first = must("subscribe", notify.subscribe(&k)).await;
    let mut second = must("subscribe", notify.subscribe(&k)).await;
    drop(first);
    assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
    assert_eq!(
        must(
            "release_and_notify",
            notify.release_and_notify(&k, b"tok-a")
        )
        .await,
        (true, true),
        "dropping one subscription silenced another"
    );
    heard(&mut second, clock, "the remaining subscription").await;
    drop(second);
    let started = clock.now();
    loop {
        assert!(must("acquire", backend.acquire(&k, b"tok-a", LONG)).await);
        let (released, heard) = must(
            "release_and_notify",
            notify.release_and_notify(&k, b"tok-a"),
        )
        .await;
        assert!(released);
        if !heard {
            break;
        }
        assert!(
            clock.now().saturating_sub(started) < PATIENCE,
            "releases still heard {PATIENCE:?} after every subscription was dropped"
        );
        clock.sleep(RECHECK).await;
    }
}
