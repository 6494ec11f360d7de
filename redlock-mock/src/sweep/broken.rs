//! Deliberately broken backends for the queue family's [`Bug`](super::Bug)s (unit tests only).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Config, Fencing, Handoff, KeyState, LockBackend,
    ReleaseNotify,
};

/// Writes one value for every lock of a client, whatever token the manager chose: the bug of
/// a process id (or host name) used as the lock value. A key already holding that value counts
/// as acquired, so every task of the process "wins" a key one of them holds.
#[derive(Debug)]
pub struct OneToken {
    /// The link it wraps.
    pub inner: Arc<dyn LockBackend>,
    /// The value written for every lock.
    pub token: Vec<u8>,
}

fn no_announcements() -> BackendError {
    BackendError::new(BackendErrorKind::Other, "no release announcements")
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl LockBackend for OneToken {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn acquire(
        &self,
        key: &[u8],
        _token: &[u8],
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.inner.acquire(key, &self.token, ttl).await
    }

    async fn extend(&self, key: &[u8], _token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.inner.extend(key, &self.token, ttl).await
    }

    async fn release(&self, key: &[u8], _token: &[u8]) -> Result<bool, BackendError> {
        self.inner.release(key, &self.token).await
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.inner.inspect(key).await
    }

    fn check_config(&self, config: &Config) -> Result<(), String> {
        self.inner.check_config(config)
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        self.inner
            .release_notify()
            .map(|_| self as &dyn ReleaseNotify)
    }

    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        self.inner.reconnects()
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        // The queue family takes plain locks: the counters need not share the bug.
        self.inner.fencing()
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        self.inner.handoff()
    }

    async fn connect(&self) -> Result<(), BackendError> {
        self.inner.connect().await
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.inner.close().await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ReleaseNotify for OneToken {
    async fn release_and_notify(
        &self,
        key: &[u8],
        _token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        match self.inner.release_notify() {
            Some(notify) => notify.release_and_notify(key, &self.token).await,
            None => Err(no_announcements()),
        }
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        match self.inner.release_notify() {
            Some(notify) => notify.subscribe(key).await,
            None => Err(no_announcements()),
        }
    }
}

/// Answers every acquire "held by someone else" without asking: as if the key never expired
/// for this client. Its waiters are never served, whoever holds the resource.
#[derive(Debug)]
pub struct RefuseAcquires(pub Arc<dyn LockBackend>);

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl LockBackend for RefuseAcquires {
    fn id(&self) -> &str {
        self.0.id()
    }

    async fn acquire(
        &self,
        _key: &[u8],
        _token: &[u8],
        _ttl: Duration,
    ) -> Result<bool, BackendError> {
        Ok(false)
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.0.extend(key, token, ttl).await
    }

    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        self.0.release(key, token).await
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.0.inspect(key).await
    }

    fn check_config(&self, config: &Config) -> Result<(), String> {
        self.0.check_config(config)
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        self.0.release_notify()
    }

    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        self.0.reconnects()
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        // Only acquires are refused.
        self.0.fencing()
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        self.0.handoff()
    }

    async fn connect(&self) -> Result<(), BackendError> {
        self.0.connect().await
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.0.close().await
    }
}
