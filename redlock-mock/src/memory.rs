//! An in-memory instance that behaves like one Redis server for the lock commands.

mod queue;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use futures::stream::BoxStream;
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Clock, Fencing, Handoff, KeyState, LockBackend,
    QueuePlace, ReleaseNotify,
};

use queue::{HandoffListeners, QueueValue};

/// One in-memory lock instance.
///
/// Keys are bytes; expiry is judged on the instance's own clock (the one given to
/// [`new`](Self::new)), like Redis judges it on the server's. A key can also hold a list
/// ([`put_list`](Self::put_list)), which makes every lock command on it fail like Redis'
/// `WRONGTYPE`. Calls complete immediately; latency and faults are the simulation's business.
///
/// Hand-off queues ([`Handoff`]) are opt-in, with [`hand_off`](Self::hand_off): off, the
/// backend offers no such capability and managers over it are woken by release announcements,
/// as before the capability existed.
#[derive(Clone)]
pub struct MemoryBackend {
    id: Arc<str>,
    clock: Arc<dyn Clock>,
    store: Arc<Mutex<HashMap<Vec<u8>, Entry>>>,
    /// Release subscriptions, per key (see [`ReleaseNotify`]).
    listeners: Arc<Mutex<Listeners>>,
    /// Hand-off listeners, per waiter token, shared by every handle on this instance.
    handoff_listeners: Arc<Mutex<HandoffListeners>>,
    /// Whether this handle offers [`Handoff`] (per handle: see [`hand_off`](Self::hand_off)).
    hand_off: bool,
}

/// Per key, the senders of its live release subscriptions.
type Listeners = HashMap<Vec<u8>, Vec<UnboundedSender<()>>>;

#[derive(Debug, Clone)]
enum Value {
    Str(Vec<u8>),
    /// Application data of another type (see [`MemoryBackend::put_list`]).
    List,
    /// A hand-off queue's order or waiter table (see [`Handoff`]).
    Queue(QueueValue),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    expires_at: Option<Duration>,
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("id", &self.id)
            .field("keys", &self.store().len())
            .field("hand_off", &self.hand_off)
            .finish()
    }
}

fn wrong_type() -> BackendError {
    BackendError::new(
        BackendErrorKind::WrongType,
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    )
}

impl MemoryBackend {
    /// An empty instance named `id`, expiring keys on `clock`.
    #[must_use]
    pub fn new(id: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            id: id.into().into(),
            clock,
            store: Arc::default(),
            listeners: Arc::default(),
            handoff_listeners: Arc::default(),
            hand_off: false,
        }
    }

    /// This handle with hand-off queues offered (`on`) or not: [`LockBackend::handoff`] then
    /// returns `Some`, and the queues follow the Redis backends' `ACQUIRE_QUEUE` and
    /// `RELEASE_HAND_OFF` scripts (see [`Handoff`]).
    ///
    /// The setting belongs to the handle: clones made before keep theirs, and every handle
    /// shares the instance's keys, queues and listeners. So a test can give some managers the
    /// capability over the same instance and leave it off for others (as older clients that
    /// share a server), and a handle on a [`World`](crate::World)'s instance can hand off.
    #[must_use]
    pub fn hand_off(mut self, on: bool) -> Self {
        self.hand_off = on;
        self
    }

    /// Tells the live subscriptions to `key` that it was released; whether anyone heard.
    fn announce(&self, key: &[u8]) -> bool {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let Some(senders) = listeners.get_mut(key) else {
            return false;
        };
        // A dropped subscription's sender fails to send: forget it.
        senders.retain(|tx| tx.unbounded_send(()).is_ok());
        let heard = !senders.is_empty();
        if !heard {
            listeners.remove(key);
        }
        heard
    }

    /// `n` instances named `mem-0` .. `mem-{n-1}` sharing `clock`, ready for a manager builder.
    #[must_use]
    pub fn cluster(n: usize, clock: &Arc<dyn Clock>) -> Vec<Arc<dyn LockBackend>> {
        (0..n)
            .map(|i| Arc::new(Self::new(format!("mem-{i}"), Arc::clone(clock))) as _)
            .collect()
    }

    fn store(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Entry>> {
        // Every operation leaves the map consistent before it can panic.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry under `key`, dropping it first if it has expired.
    fn live<'a>(
        store: &'a mut HashMap<Vec<u8>, Entry>,
        key: &[u8],
        now: Duration,
    ) -> Option<&'a mut Entry> {
        if store
            .get(key)
            .is_some_and(|e| e.expires_at.is_some_and(|at| at <= now))
        {
            store.remove(key);
        }
        store.get_mut(key)
    }

    /// The string value under `key` (no expiry applied), for tests that look at the instance
    /// directly.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let now = self.clock.now();
        match Self::live(&mut self.store(), key, now) {
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => Some(v.clone()),
            _ => None,
        }
    }

    /// Stores a list under `key`, as application data of another type would be.
    pub fn put_list(&self, key: &[u8]) {
        self.store().insert(
            key.to_vec(),
            Entry {
                value: Value::List,
                expires_at: None,
            },
        );
    }

    /// Whether `key` holds a list stored by [`put_list`](Self::put_list), still without
    /// expiry: what the conformance suite's fixture checks after the lock commands refused it.
    #[must_use]
    pub fn holds_list(&self, key: &[u8]) -> bool {
        matches!(
            self.store().get(key),
            Some(Entry {
                value: Value::List,
                expires_at: None,
            })
        )
    }

    /// Deletes `key` whatever it holds.
    pub fn delete(&self, key: &[u8]) {
        self.store().remove(key);
    }

    /// Stores a plain string without expiry, as another writer might.
    pub fn put(&self, key: &[u8], value: &[u8]) {
        self.store().insert(
            key.to_vec(),
            Entry {
                value: Value::Str(value.to_vec()),
                expires_at: None,
            },
        );
    }

    /// Forgets every key, as a restart without persistence does.
    pub fn flush(&self) {
        self.store().clear();
    }

    /// Number of live keys.
    #[must_use]
    pub fn len(&self) -> usize {
        let now = self.clock.now();
        let mut store = self.store();
        store.retain(|_, e| e.expires_at.is_none_or(|at| at > now));
        store.len()
    }

    /// Whether no key is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys whose value is `token`.
    #[must_use]
    pub fn keys_holding(&self, token: &[u8]) -> Vec<Vec<u8>> {
        let now = self.clock.now();
        let mut keys: Vec<Vec<u8>> = self
            .store()
            .iter()
            .filter(|(_, e)| {
                e.expires_at.is_none_or(|at| at > now)
                    && matches!(&e.value, Value::Str(v) if v == token)
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// `acquire` without the async wrapper; the simulation's network layer calls these.
    ///
    /// # Errors
    /// `WrongType` when the key holds a list.
    pub fn acquire_now(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let now = self.clock.now();
        let mut store = self.store();
        match Self::live(&mut store, key, now) {
            Some(Entry {
                value: Value::Str(v),
                expires_at,
            }) => {
                if v == token {
                    *expires_at = Some(now.saturating_add(ttl));
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            Some(Entry {
                value: Value::List | Value::Queue(_),
                ..
            }) => Err(wrong_type()),
            None => {
                store.insert(
                    key.to_vec(),
                    Entry {
                        value: Value::Str(token.to_vec()),
                        expires_at: Some(now.saturating_add(ttl)),
                    },
                );
                Ok(true)
            }
        }
    }

    /// `extend` without the async wrapper.
    ///
    /// # Errors
    /// `WrongType` when the key holds a list.
    pub fn extend_now(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let now = self.clock.now();
        match Self::live(&mut self.store(), key, now) {
            Some(Entry {
                value: Value::Str(v),
                expires_at,
            }) if v == token => {
                *expires_at = Some(now.saturating_add(ttl));
                Ok(true)
            }
            Some(Entry {
                value: Value::List | Value::Queue(_),
                ..
            }) => Err(wrong_type()),
            _ => Ok(false),
        }
    }

    /// `release` without the async wrapper.
    ///
    /// # Errors
    /// `WrongType` when the key holds a list.
    pub fn release_now(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        let now = self.clock.now();
        let mut store = self.store();
        match Self::live(&mut store, key, now) {
            Some(Entry {
                value: Value::Str(v),
                ..
            }) if v == token => {
                store.remove(key);
                Ok(true)
            }
            Some(Entry {
                value: Value::List | Value::Queue(_),
                ..
            }) => Err(wrong_type()),
            _ => Ok(false),
        }
    }

    /// The counter under `counter` (0 when absent), after the type checks of
    /// [`Fencing`]'s contract.
    fn counter_value(
        store: &mut HashMap<Vec<u8>, Entry>,
        counter: &[u8],
        now: Duration,
    ) -> Result<u64, BackendError> {
        match Self::live(store, counter, now) {
            None => Ok(0),
            Some(Entry {
                value: Value::List | Value::Queue(_),
                ..
            }) => Err(wrong_type()),
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    BackendError::new(
                        BackendErrorKind::Server,
                        "ERR value is not an integer or out of range",
                    )
                }),
        }
    }

    fn set_counter(store: &mut HashMap<Vec<u8>, Entry>, counter: &[u8], value: u64) {
        store.insert(
            counter.to_vec(),
            Entry {
                value: Value::Str(value.to_string().into_bytes()),
                expires_at: None,
            },
        );
    }

    /// [`Fencing::next_fence`] without the async wrapper.
    ///
    /// # Errors
    /// `WrongType` when the key or the counter holds a list; `Server` when the counter is not
    /// a number (or would overflow).
    pub fn next_fence_now(
        &self,
        key: &[u8],
        token: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        let now = self.clock.now();
        let mut store = self.store();
        let held = match Self::live(&mut store, key, now) {
            Some(Entry {
                value: Value::List | Value::Queue(_),
                ..
            }) => return Err(wrong_type()),
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => v == token,
            None => false,
        };
        if !held {
            // The type is checked even when the key is not ours, as the Redis script does.
            if let Some(Entry {
                value: Value::List | Value::Queue(_),
                ..
            }) = Self::live(&mut store, counter, now)
            {
                return Err(wrong_type());
            }
            return Ok(None);
        }
        let current = Self::counter_value(&mut store, counter, now)?;
        let next = current.checked_add(1).ok_or_else(|| {
            BackendError::new(BackendErrorKind::Server, "ERR increment would overflow")
        })?;
        Self::set_counter(&mut store, counter, next);
        Ok(Some(next))
    }

    /// [`Fencing::raise_fence`] without the async wrapper.
    ///
    /// # Errors
    /// `WrongType` when the counter holds a list; `Server` when it is not a number.
    pub fn raise_fence_now(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        let now = self.clock.now();
        let mut store = self.store();
        let current = Self::counter_value(&mut store, counter, now)?;
        if value > current {
            Self::set_counter(&mut store, counter, value);
        }
        Ok(current.max(value))
    }

    /// `inspect` without the async wrapper.
    ///
    /// # Errors
    /// `WrongType` when the key holds a list.
    pub fn inspect_now(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        let now = self.clock.now();
        match Self::live(&mut self.store(), key, now) {
            Some(Entry {
                value: Value::Str(v),
                expires_at,
            }) => Ok(Some(KeyState {
                value: v.clone(),
                ttl: expires_at.map(|at| at.saturating_sub(now)),
            })),
            Some(Entry {
                value: Value::List | Value::Queue(_),
                ..
            }) => Err(wrong_type()),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl LockBackend for MemoryBackend {
    fn id(&self) -> &str {
        &self.id
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.acquire_now(key, token, ttl)
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.extend_now(key, token, ttl)
    }

    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        self.release_now(key, token)
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.inspect_now(key)
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        Some(self)
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        Some(self)
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        if self.hand_off {
            Some(self)
        } else {
            None
        }
    }
}

#[async_trait]
impl Handoff for MemoryBackend {
    async fn listen(&self, token: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        Ok(self.listen_now(token))
    }

    async fn acquire_or_queue(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError> {
        self.acquire_or_queue_now(key, token, ttl, place)
    }

    async fn release_and_hand_off(
        &self,
        key: &[u8],
        token: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError> {
        self.release_and_hand_off_now(key, token, leaving)
    }

    /// A hand-off sets the key (with the waiter's reserve) before it tells the listener.
    fn grants_by_hand_off(&self) -> bool {
        true
    }
}

#[async_trait]
impl Fencing for MemoryBackend {
    async fn next_fence(
        &self,
        key: &[u8],
        token: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        self.next_fence_now(key, token, counter)
    }

    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        self.raise_fence_now(counter, value)
    }
}

#[async_trait]
impl ReleaseNotify for MemoryBackend {
    async fn release_and_notify(
        &self,
        key: &[u8],
        token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        let released = self.release_now(key, token)?;
        Ok((released, released && self.announce(key)))
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_vec())
            .or_default()
            .push(tx);
        Ok(Box::pin(rx))
    }
}
