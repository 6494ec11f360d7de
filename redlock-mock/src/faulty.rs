//! A fault-injecting decorator for any backend.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::stream::BoxStream;
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Clock, Config, Fencing, Handoff, KeyState,
    LockBackend, QueuePlace, ReleaseNotify,
};

/// Wraps a backend and injects faults into every call, switched at run time through its
/// [`Faults`] handle.
///
/// Latency is spent on the given clock before the call reaches the inner backend
/// (request in flight) and after it applied (reply in flight), half each way, so a caller that
/// gives up mid-way may leave the write applied, like a real network.
///
/// Everything the inner backend offers is passed through: its
/// [`check_config`](LockBackend::check_config), [`close`](LockBackend::close), and its release
/// announcements. When the inner backend implements [`ReleaseNotify`], so does the decorator,
/// and [`release_and_notify`](ReleaseNotify::release_and_notify) and
/// [`subscribe`](ReleaseNotify::subscribe) are calls like the others: they count, and every
/// fault applies to them (a subscription whose acknowledgement is lost is made on the instance
/// and dropped, so unsubscribed, when the caller gives up). A subscription already made keeps
/// hearing releases whatever faults are switched on later.
#[derive(Debug, Clone)]
pub struct FaultyBackend<B> {
    inner: B,
    clock: Arc<dyn Clock>,
    faults: Faults,
}

/// The switches of a [`FaultyBackend`]. Clones share the switches.
#[derive(Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Clone, Default)]
struct FaultState {
    down: bool,
    hang: bool,
    lose_replies: bool,
    error: Option<(BackendErrorKind, String)>,
    latency: Duration,
    calls: u64,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.lock(), f)
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call fails at once with a connection error (a crashed or unreachable server).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Calls never answer and never reach the instance (a `SIGSTOP`ped server).
    pub fn set_hang(&self, hang: bool) {
        self.lock().hang = hang;
    }

    /// Calls reach the instance and apply, but the reply never comes back (ambiguous write).
    pub fn set_lose_replies(&self, lose: bool) {
        self.lock().lose_replies = lose;
    }

    /// Every call is answered with this error without reaching the instance (`READONLY`,
    /// `OOM`, ...); `None` clears it.
    pub fn set_error(&self, error: Option<(BackendErrorKind, &str)>) {
        self.lock().error = error.map(|(k, m)| (k, m.to_owned()));
    }

    /// Round-trip latency added to every call.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Clears every fault.
    pub fn heal(&self) {
        let calls = self.lock().calls;
        *self.lock() = FaultState {
            calls,
            ..FaultState::default()
        };
    }

    /// How many calls the decorator has seen.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }
}

impl<B: LockBackend> FaultyBackend<B> {
    /// Wraps `inner`; latency is spent on `clock`.
    pub fn new(inner: B, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            clock,
            faults: Faults::default(),
        }
    }

    /// The switches.
    #[must_use]
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The wrapped backend.
    #[must_use]
    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn call<T, F>(&self, op: F) -> Result<T, BackendError>
    where
        F: std::future::Future<Output = Result<T, BackendError>> + Send,
        T: Send,
    {
        let state = {
            let mut s = self.faults.lock();
            s.calls += 1;
            s.clone()
        };
        if state.down {
            return Err(BackendError::new(
                BackendErrorKind::Connection,
                "connection refused (injected)",
            ));
        }
        if state.hang {
            futures::future::pending::<()>().await;
        }
        if let Some((kind, message)) = state.error {
            return Err(BackendError::new(kind, message));
        }
        let half = state.latency / 2;
        if !half.is_zero() {
            self.clock.sleep(half).await;
        }
        let result = op.await;
        if state.lose_replies {
            futures::future::pending::<()>().await;
        }
        if !half.is_zero() {
            self.clock.sleep(state.latency - half).await;
        }
        result
    }
}

fn no_counters() -> BackendError {
    BackendError::new(
        BackendErrorKind::Incompatible,
        "the inner backend keeps no fencing counters",
    )
}

fn no_announcements() -> BackendError {
    BackendError::new(
        BackendErrorKind::Other,
        "the inner backend does not announce releases",
    )
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> LockBackend for FaultyBackend<B> {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.call(self.inner.acquire(key, token, ttl)).await
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.call(self.inner.extend(key, token, ttl)).await
    }

    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        self.call(self.inner.release(key, token)).await
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.call(self.inner.inspect(key)).await
    }

    fn check_config(&self, config: &Config) -> Result<(), String> {
        self.inner.check_config(config)
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        // Announcements must go through the faults too, so the inner one is not handed out.
        self.inner
            .release_notify()
            .map(|_| self as &dyn ReleaseNotify)
    }

    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        self.inner.reconnects()
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        // Counter calls go through the faults too.
        self.inner.fencing().map(|_| self as &dyn Fencing)
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        // Queued acquires and hand-off releases go through the faults too.
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
impl<B: LockBackend> ReleaseNotify for FaultyBackend<B> {
    async fn release_and_notify(
        &self,
        key: &[u8],
        token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        self.call(async {
            match self.inner.release_notify() {
                Some(notify) => notify.release_and_notify(key, token).await,
                None => Err(no_announcements()),
            }
        })
        .await
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        self.call(async {
            match self.inner.release_notify() {
                Some(notify) => notify.subscribe(key).await,
                None => Err(no_announcements()),
            }
        })
        .await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> Fencing for FaultyBackend<B> {
    async fn next_fence(
        &self,
        key: &[u8],
        token: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        self.call(async {
            match self.inner.fencing() {
                Some(fencing) => fencing.next_fence(key, token, counter).await,
                None => Err(no_counters()),
            }
        })
        .await
    }

    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        self.call(async {
            match self.inner.fencing() {
                Some(fencing) => fencing.raise_fence(counter, value).await,
                None => Err(no_counters()),
            }
        })
        .await
    }
}

fn no_handoff() -> BackendError {
    BackendError::new(
        BackendErrorKind::Other,
        "the inner backend does not hand off",
    )
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: LockBackend> Handoff for FaultyBackend<B> {
    async fn listen(&self, token: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        self.call(async {
            match self.inner.handoff() {
                Some(h) => h.listen(token).await,
                None => Err(no_handoff()),
            }
        })
        .await
    }

    async fn acquire_or_queue(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError> {
        self.call(async {
            match self.inner.handoff() {
                Some(h) => h.acquire_or_queue(key, token, ttl, place).await,
                None => Err(no_handoff()),
            }
        })
        .await
    }

    async fn release_and_hand_off(
        &self,
        key: &[u8],
        token: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError> {
        self.call(async {
            match self.inner.handoff() {
                Some(h) => h.release_and_hand_off(key, token, leaving).await,
                None => Err(no_handoff()),
            }
        })
        .await
    }

    /// The inner backend's: the faults injected here lose, delay or fail calls, and never make
    /// up a hand-off item.
    fn grants_by_hand_off(&self) -> bool {
        self.inner
            .handoff()
            .is_some_and(Handoff::grants_by_hand_off)
    }
}
