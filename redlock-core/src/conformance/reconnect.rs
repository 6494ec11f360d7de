//! The reconnection rule, for backends that announce reconnections
//! ([`LockBackend::reconnects`]).

use std::time::Duration;

use async_trait::async_trait;
use futures::future::{select, Either};
use futures::{FutureExt, StreamExt};

use super::{key, must, LONG};
use crate::backend::LockBackend;
use crate::runtime::Clock;

/// How long a reconnection may take to be announced before the rule fails. Not a speed
/// requirement: only a bound, so a broken backend fails the suite instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the reconnection rule needs from the test that runs it: a way to break the backend's
/// connection to its instance.
#[async_trait]
pub trait Reconnect: Send + Sync {
    /// Breaks the backend's connection to its instance (restart the server on the same
    /// address, reset the connection through a proxy, ...), and returns once the instance
    /// accepts a new connection. The backend must find its way back on its own.
    async fn break_connection(&self);
}

/// A backend that claims the capability announces each re-connection, and not the first
/// connection: after a connection made by a call, the stream is silent; after the connection
/// is broken and made again, it yields, and a call then succeeds.
///
/// # Panics
/// When the backend offers no reconnection stream, announces its first connection, announces
/// nothing within 10 s of the break, or fails a call after announcing.
pub async fn a_reconnection_is_announced(
    backend: &dyn LockBackend,
    clock: &dyn Clock,
    reconnect: &dyn Reconnect,
    namespace: &[u8],
) {
    let mut announced = backend
        .reconnects()
        .expect("this backend is meant to announce reconnections (reconnects() is None)");
    let k = key(namespace, b"reconnect");
    // The first connection, made by this call.
    assert!(must("acquire", backend.acquire(&k, b"tok-r", LONG)).await);
    assert!(must("release", backend.release(&k, b"tok-r")).await);
    assert!(
        announced.next().now_or_never().is_none(),
        "the first connection was announced as a re-connection"
    );
    reconnect.break_connection().await;
    match select(announced.next(), clock.sleep(PATIENCE)).await {
        Either::Left((Some(()), _)) => {}
        Either::Left((None, _)) => panic!("the reconnection stream ended instead of announcing"),
        Either::Right(_) => panic!("no reconnection announced within {PATIENCE:?} of the break"),
    }
    // Announced once the new connection can serve calls.
    assert!(
        must(
            "acquire after the announced reconnection",
            backend.acquire(&k, b"tok-r", LONG)
        )
        .await
    );
    assert!(must("release", backend.release(&k, b"tok-r")).await);
}
