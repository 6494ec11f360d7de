//! The per-instance primitives a backend implements. The algorithm lives in the manager.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

mod fencing;
mod forward;
mod handoff;

pub use fencing::{fence_key, Fencing, FENCE_KEY_PREFIX};
pub use handoff::{
    queue_keys, Handoff, QueuePlace, QUEUE_KEY_PREFIX, RESERVED_KEY_PREFIX, WAITERS_KEY_PREFIX,
};

/// One independent lock instance (one Redis master, one simulated server, ...).
///
/// A [`LockManager`](crate::LockManager) holds N of these and runs the Redlock algorithm over
/// them; a backend only knows its own instance.
///
/// # Contract
///
/// Every backend must meet all of the following; the `conformance` module (feature
/// `testing`) checks them.
///
/// 1. **Atomic and token-checked.** Each method is one atomic step on the instance. `extend` and
///    `release` act only when the key holds exactly `token`; a key that holds anything else
///    (another client's token, application data) is never modified or deleted.
/// 2. **acquire** sets `key = token` with expiry `ttl` only if the key is absent, and returns
///    `Ok(true)`. If the key already holds the same `token`, it resets the expiry to `ttl` and
///    returns `Ok(true)` (idempotent, so a transport that re-sends after a dropped connection is
///    harmless). Otherwise it returns `Ok(false)`.
/// 3. **extend** sets the expiry to `ttl` only if the key holds `token` and returns `Ok(true)`;
///    otherwise `Ok(false)`. It never re-creates an absent key: a lock that expired stays lost.
/// 4. **release** deletes the key only if it holds `token` and returns `Ok(true)`; otherwise
///    `Ok(false)`. Releasing twice is `Ok(false)` the second time.
/// 5. **inspect** returns the key's value and remaining time to live, or `None` when absent.
/// 6. **Expiry** is judged on the instance's own clock: after `ttl` has passed there, the key is
///    absent for every method.
/// 7. **Keys and tokens are bytes.** Non-UTF-8 bytes and NUL are ordinary; two keys are the same
///    key only when their bytes are equal.
/// 8. **"No" is not an error.** `Ok(false)` / `Ok(None)` are ordinary answers. `Err` means the
///    instance could not give an answer (unreachable, timed out, refused the command, the key
///    holds a value of another type, ...).
///    A key that holds a value of another type (application data: a Redis list, a hash, ...)
///    makes every method (`acquire`, `extend`, `release`, `inspect`, and
///    [`ReleaseNotify::release_and_notify`]) return `Err` of kind
///    [`BackendErrorKind::WrongType`], and leaves that value as it was.
/// 9. **On its way after the first poll.** Once a returned future has been polled once, the
///    request must reach the instance even if the future is then dropped (the manager polls every
///    call once, then may stop waiting as soon as a quorum has answered). A backend that needs
///    more polls before sending (a lazy connection, say) must queue the request on the first.
/// 10. **One attempt per call, no hidden retries** beyond what rule 2 makes harmless, and no
///    unbounded waiting: the manager bounds every call with its per-instance timeout, but a
///    backend should also give up on its own (a request abandoned by the manager must not be
///    written to the server later, or it leaves a ghost key). A call first polled by a round
///    may leave the waiting to the round (see [`polled_by_round`](crate::polled_by_round)), but
///    one dropped before its deadline must still end by it.
/// 11. `ttl` is at least one millisecond and a whole number of milliseconds.
/// 12. Futures are `Send` and the backend is `Send + Sync`, so one manager can drive instances of
///     different kinds as `Arc<dyn LockBackend>`.
///
/// # Decorators
///
/// A backend that wraps another (fault injection, logging, metrics) must forward every method,
/// the provided ones included: the defaults would silently drop the inner backend's
/// configuration check and its release announcements. Put `#[deny(clippy::missing_trait_methods)]`
/// on the impl so a method added later cannot be forgotten. `Arc<B>` and `Box<B>` forward
/// everything, so a decorator generic over `B: LockBackend` also wraps an `Arc<dyn LockBackend>`.
#[async_trait]
pub trait LockBackend: Send + Sync + fmt::Debug {
    /// The failure domain this instance belongs to, e.g. `"127.0.0.1:6379"`.
    ///
    /// Two backends with the same id are the same server, and the manager refuses to count them
    /// as two votes: a quorum of one server is a lie. Must not contain credentials; it appears in
    /// error messages.
    fn id(&self) -> &str;

    /// Sets `key = token` with expiry `ttl` if the key is absent or already holds `token`.
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer (see the contract, rule 8).
    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError>;

    /// Resets the expiry of `key` to `ttl` if it holds `token`; never re-creates it.
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer.
    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError>;

    /// Deletes `key` if it holds `token`.
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer.
    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError>;

    /// The value and remaining time to live of `key`, or `None` when it is absent.
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer, or the key holds a value of another
    /// type.
    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError>;

    /// Checks that this backend can serve a manager with `config`, when the manager is built
    /// (no network). A backend with its own timeouts, say, can refuse a per-instance timeout
    /// shorter than them. The default accepts everything.
    ///
    /// # Errors
    /// A message saying what does not fit; the build fails with
    /// [`InvalidInput::Config`](crate::InvalidInput::Config).
    fn check_config(&self, config: &crate::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Release notifications, when this backend supports them (see [`ReleaseNotify`]). The
    /// manager then wakes waiting acquirers as soon as a lock is released instead of letting
    /// them sleep out their retry delay.
    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        None
    }

    /// Fencing counters, when this backend supports them (see [`Fencing`]). A manager asked for
    /// fenced locks refuses, without sending anything, backends that return `None`.
    fn fencing(&self) -> Option<&dyn Fencing> {
        None
    }

    /// Hand-off queues, when this backend supports them (see [`Handoff`]). When every instance
    /// does, a contended acquirer queues on the instances and a release hands the key to one
    /// waiter instead of waking all of them.
    fn handoff(&self) -> Option<&dyn Handoff> {
        None
    }

    /// Connects now, if this backend connects at all, and checks that the instance can serve
    /// locks (reachable, credentials accepted, a version that supports the operations). Waits
    /// at most the backend's own connection timeout. The default has nothing to check and
    /// returns `Ok`.
    ///
    /// The manager calls it on every instance at once in
    /// [`LockManager::connect`](crate::LockManager::connect), so configuration mistakes show
    /// up at start-up instead of as failed votes later.
    ///
    /// # Errors
    /// [`BackendError`] saying why the instance cannot serve (its [`kind`](BackendError::kind)
    /// tells which: [`Auth`](BackendErrorKind::Auth), [`Connection`](BackendErrorKind::Connection),
    /// [`Incompatible`](BackendErrorKind::Incompatible), ...).
    async fn connect(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Reconnection announcements, when this backend can tell that its connection to the
    /// instance was lost and made again (see the contract below). The manager subscribes once,
    /// when it is built with a [`Spawner`](crate::Spawner), and re-checks at once every lock it
    /// holds on this instance after each announcement: an instance that restarted empty lost
    /// our keys, and a lock that no longer stands on a quorum is reported lost then, instead of
    /// at its next renewal. The default has nothing to announce and returns `None`.
    ///
    /// # Contract
    ///
    /// 1. The stream yields once each time the connection to the instance is re-established
    ///    after a loss (the server restarted, the connection was reset, ...), after the new
    ///    connection can serve calls. The first connection is not a re-connection.
    /// 2. It may yield spuriously (a re-check finds everything in place and costs one call per
    ///    held lock), and may merge announcements that come close together, but must not stay
    ///    silent after a re-connection.
    /// 3. Each call returns a new, independent stream; dropping it unsubscribes. The stream may
    ///    end when the backend is closed or dropped.
    ///
    /// Within the window between the restart and the re-connection nothing can be done by the
    /// client: only a fenced resource protects it.
    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        None
    }

    /// Closes connections. Later calls may fail with [`BackendErrorKind::Closed`].
    ///
    /// # Errors
    /// [`BackendError`] when closing failed; the manager reports it and carries on.
    async fn close(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Optional capability of a backend: telling waiters that a key was released.
///
/// # Contract
///
/// 1. [`release_and_notify`](Self::release_and_notify) is [`LockBackend::release`] (same
///    atomicity and token check) that also, when it deleted the key, notifies every active
///    subscription to that key on this instance, and reports whether any subscriber was told.
/// 2. [`subscribe`](Self::subscribe) returns only once the subscription is active: a release
///    that happens after it returns is delivered. The stream yields one item per release of the
///    key; it may also yield spuriously, and may end when the connection is lost (the manager then
///    falls back to polling). Dropping the stream unsubscribes. A backend may bound how long a
///    subscription keeps hearing releases made by [`Handoff::release_and_hand_off`] (which
///    announces only to the listeners it knows of, so that an uncontended release costs no
///    announcement): the Redis backends register each subscription on the instance for
///    [`redis_lua::WATCH_FOR`](crate::redis_lua::WATCH_FOR), 5 minutes.
/// 3. Notifications are a hint for speed only: the manager never trusts one for safety, it
///    always runs a full acquire attempt afterwards.
#[async_trait]
pub trait ReleaseNotify: Send + Sync {
    /// Releases `key` if it holds `token` and tells subscribers. Returns `(released, heard)`:
    /// whether the key was deleted, and whether at least one subscriber was notified.
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer.
    async fn release_and_notify(
        &self,
        key: &[u8],
        token: &[u8],
    ) -> Result<(bool, bool), BackendError>;

    /// Subscribes to releases of `key` on this instance.
    ///
    /// # Errors
    /// [`BackendError`] when the subscription could not be made.
    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError>;
}

/// What [`LockBackend::inspect`] found under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The stored value (a lock token, or anything another writer put there).
    pub value: Vec<u8>,
    /// Remaining time to live on the instance's clock; `None` when the key has no expiry.
    pub ttl: Option<Duration>,
}

/// Why an instance gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The connection failed, was reset, or could not be made.
    Connection,
    /// The backend's own timeout fired.
    Timeout,
    /// The key holds a value of another type (Redis `WRONGTYPE`).
    WrongType,
    /// The server refused the command (`READONLY`, `OOM`, `NOSCRIPT` after a failed reload,
    /// ...).
    Server,
    /// The server refused our credentials (wrong password, unknown user, or none given where
    /// one is required).
    Auth,
    /// The server cannot run this backend's operations (a version too old, say).
    Incompatible,
    /// The reply could not be understood.
    Protocol,
    /// The backend was closed.
    Closed,
    /// Anything else.
    Other,
}

/// An instance's failure to answer. Cheap to clone (the cause is shared).
#[derive(Clone)]
pub struct BackendError {
    kind: BackendErrorKind,
    message: Arc<str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    /// An error of `kind` with a message that must not contain credentials.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into().into(),
            source: None,
        }
    }

    /// Attaches the underlying cause, reachable through [`std::error::Error::source`].
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// What went wrong, broadly.
    #[must_use]
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The message, without the cause.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}
