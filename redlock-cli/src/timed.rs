//! A backend decorator that logs every call to its instance with its duration (`-v`), and notes
//! what the tool needs to know about the calls (a release a waiter heard, for `--fair`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use redlock_core::{
    async_trait, BackendError, Config, Fencing, Handoff, KeyState, LockBackend, QueuePlace,
    ReleaseNotify,
};

/// What the decorated backends saw, shared between them.
#[derive(Debug, Default)]
pub struct Observed {
    heard: AtomicBool,
}

impl Observed {
    /// Whether a release was announced to at least one waiting client.
    pub fn release_heard(&self) -> bool {
        self.heard.load(Ordering::Acquire)
    }
}

/// `B`, with each call logged at debug level: instance, operation, duration, outcome.
pub struct Timed<B> {
    inner: B,
    observed: Arc<Observed>,
}

impl<B: LockBackend> Timed<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, observed: Arc<Observed>) -> Self {
        Self { inner, observed }
    }
}

impl<B: fmt::Debug> fmt::Debug for Timed<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Timed").field(&self.inner).finish()
    }
}

/// Logs one call when it ends, or, if its future is dropped first (a round that was decided
/// stops waiting), that it was not awaited.
struct Call<'a> {
    id: &'a str,
    op: &'static str,
    started: Instant,
    done: bool,
}

impl<'a> Call<'a> {
    fn start(id: &'a str, op: &'static str) -> Self {
        Self {
            id,
            op,
            started: Instant::now(),
            done: false,
        }
    }

    fn ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1e3
    }

    fn end<T: fmt::Debug, E: std::error::Error>(mut self, result: &Result<T, E>) {
        self.done = true;
        let (id, op, ms) = (self.id, self.op, self.ms());
        match result {
            Ok(answer) => tracing::debug!("{id} {op}: {answer:?} in {ms:.3} ms"),
            // The backend keeps passwords out of its messages.
            Err(e) => {
                let e = crate::report::with_causes(e);
                tracing::debug!("{id} {op}: error after {ms:.3} ms: {e}");
            }
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.done {
            let (id, op, ms) = (self.id, self.op, self.ms());
            tracing::debug!("{id} {op}: not awaited (the round was decided after {ms:.3} ms)");
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> LockBackend for Timed<B> {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        let call = Call::start(self.id(), "acquire");
        let result = self.inner.acquire(key, token, ttl).await;
        call.end(&result);
        result
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        let call = Call::start(self.id(), "extend");
        let result = self.inner.extend(key, token, ttl).await;
        call.end(&result);
        result
    }

    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        let call = Call::start(self.id(), "release");
        let result = self.inner.release(key, token).await;
        call.end(&result);
        result
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        let call = Call::start(self.id(), "inspect (ttl)");
        let result = self.inner.inspect(key).await;
        call.end(&result.as_ref().map(|s| s.as_ref().map(|s| s.ttl)));
        result
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
        self.inner.fencing().map(|_| self as &dyn Fencing)
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        self.inner.handoff().map(|_| self as &dyn Handoff)
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
impl<B: LockBackend> ReleaseNotify for Timed<B> {
    async fn release_and_notify(
        &self,
        key: &[u8],
        token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        let Some(notify) = self.inner.release_notify() else {
            // Only reachable through `release_notify`, which checked the inner backend.
            return self.inner.release(key, token).await.map(|r| (r, false));
        };
        let call = Call::start(self.id(), "release+announce");
        let result = notify.release_and_notify(key, token).await;
        call.end(&result);
        if matches!(result, Ok((_, true))) {
            self.observed.heard.store(true, Ordering::Release);
        }
        result
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        let Some(notify) = self.inner.release_notify() else {
            return Err(BackendError::new(
                redlock_core::BackendErrorKind::Other,
                format!("{}: no release announcements", self.id()),
            ));
        };
        let call = Call::start(self.id(), "subscribe");
        let result = notify.subscribe(key).await;
        call.end(&result.as_ref().map(|_| ()));
        result
    }
}

fn no_counters(id: &str) -> BackendError {
    BackendError::new(
        redlock_core::BackendErrorKind::Incompatible,
        format!("{id}: no fencing counters"),
    )
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> Fencing for Timed<B> {
    async fn next_fence(
        &self,
        key: &[u8],
        token: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        let Some(fencing) = self.inner.fencing() else {
            return Err(no_counters(self.id()));
        };
        let call = Call::start(self.id(), "next_fence");
        let result = fencing.next_fence(key, token, counter).await;
        call.end(&result);
        result
    }

    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        let Some(fencing) = self.inner.fencing() else {
            return Err(no_counters(self.id()));
        };
        let call = Call::start(self.id(), "raise_fence");
        let result = fencing.raise_fence(counter, value).await;
        call.end(&result);
        result
    }
}

fn no_handoff(id: &str) -> BackendError {
    BackendError::new(
        redlock_core::BackendErrorKind::Other,
        format!("{id}: no hand-off queues"),
    )
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> Handoff for Timed<B> {
    async fn listen(&self, token: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        let Some(h) = self.inner.handoff() else {
            return Err(no_handoff(self.id()));
        };
        let call = Call::start(self.id(), "listen");
        let result = h.listen(token).await;
        call.end(&result.as_ref().map(|_| ()));
        result
    }

    async fn acquire_or_queue(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError> {
        let Some(h) = self.inner.handoff() else {
            return Err(no_handoff(self.id()));
        };
        let call = Call::start(self.id(), "acquire+queue");
        let result = h.acquire_or_queue(key, token, ttl, place).await;
        call.end(&result);
        result
    }

    async fn release_and_hand_off(
        &self,
        key: &[u8],
        token: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError> {
        let Some(h) = self.inner.handoff() else {
            return Err(no_handoff(self.id()));
        };
        let call = Call::start(self.id(), "release+hand-off");
        let result = h.release_and_hand_off(key, token, leaving).await;
        call.end(&result);
        if matches!(result, Ok((_, true))) {
            self.observed.heard.store(true, Ordering::Release);
        }
        result
    }

    fn grants_by_hand_off(&self) -> bool {
        self.inner
            .handoff()
            .is_some_and(Handoff::grants_by_hand_off)
    }
}
