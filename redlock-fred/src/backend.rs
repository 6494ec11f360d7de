//! [`LockBackend`] on one fred client per instance.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::bytes::Bytes;
use fred::bytes_utils::Str;
use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface};
use fred::types::config::Options;
use fred::types::{
    ClientState, ClusterHash, ConnectHandle, CustomCommand, Expiration, SetOptions, Value,
};
use futures::stream::BoxStream;
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Fencing, Handoff, KeyState, LockBackend,
    QueuePlace, ReleaseNotify,
};

use crate::build::Parts;
use crate::health::Health;
use crate::notify::Notifier;
use crate::runtime::check_context;
use crate::scripts::{self, Script};

enum Connection {
    NotStarted,
    Running {
        /// fred's connection task, when the backend started it (`None`: the application's).
        task: Option<ConnectHandle>,
        listener: tokio::task::JoinHandle<()>,
    },
    Closed,
}

/// One Redis server (direct, over a unix socket, or the master behind Sentinel) as a
/// [`LockBackend`].
///
/// Holds one fred client, whose single connection pipelines concurrent calls. The connection is
/// made lazily, by the first call (or [`LockBackend::connect`]), on the tokio runtime running
/// that call: keep that runtime alive for the backend's life, since the connection's tasks run
/// on it (once it is shut down every call fails with an error saying so). A call made before
/// the connection is up waits at most the command timeout. Dropped connections are re-made in
/// the background with exponential backoff.
///
/// Every call must come from a tokio runtime with timers (`enable_all`); elsewhere it fails
/// at once with an error saying so, never a panic.
///
/// Each operation is one command or Lua script, sent once: fred does not re-send a command
/// whose connection dropped (see [`ConnectionOptions`](crate::ConnectionOptions)). Scripts go
/// as `EVALSHA`, and as `EVAL` when the server answers `NOSCRIPT` (after a restart, a failover
/// or `SCRIPT FLUSH`).
///
/// A failed call says what a person can act on: [`BackendError::kind`] is
/// [`Auth`](BackendErrorKind::Auth) (the server's reply in the message),
/// [`Connection`](BackendErrorKind::Connection) (refused, timed out connecting, lost),
/// [`Timeout`](BackendErrorKind::Timeout) (connected, but no reply in time),
/// [`Incompatible`](BackendErrorKind::Incompatible) (Redis older than 7.0, checked once per
/// connection), [`Protocol`](BackendErrorKind::Protocol), [`Server`](BackendErrorKind::Server)
/// or [`WrongType`](BackendErrorKind::WrongType).
pub struct RedisBackend {
    id: String,
    sentinel: bool,
    client: Client,
    /// A second connection, made on first use, for release announcements.
    notifier: Notifier,
    /// Bits of the scripts known to be in the server's script cache (see `run`).
    cached: Arc<AtomicU16>,
    /// fred's command timeout; must stay below the manager's instance timeout.
    command_timeout: Duration,
    connection: Mutex<Connection>,
    rediscovering: Arc<AtomicBool>,
    health: Arc<Health>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("id", &self.id)
            .field("sentinel", &self.sentinel)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    pub(crate) fn from_parts(parts: Parts) -> Self {
        let health = Arc::new(Health::new(
            parts.id.clone(),
            parts.command_timeout,
            parts.connection_timeout,
            parts.secrets,
        ));
        Self {
            id: parts.id,
            sentinel: parts.sentinel,
            notifier: Notifier::new(parts.subscriber, parts.client.clone()),
            client: parts.client,
            cached: Arc::new(AtomicU16::new(0)),
            command_timeout: parts.command_timeout,
            connection: Mutex::new(Connection::NotStarted),
            rediscovering: Arc::new(AtomicBool::new(false)),
            health,
        }
    }

    /// The underlying fred client, for commands of your own on the same connection. It is
    /// connected by the first lock operation (or [`LockBackend::connect`]).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn lock_connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // The state is a plain enum written whole; a panic elsewhere cannot tear it.
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn other(&self, op: &str, why: &str) -> BackendError {
        BackendError::new(BackendErrorKind::Other, format!("{}: {op}: {why}", self.id))
    }

    /// Checks the calling context and the connection, and connects on first use.
    fn ensure_started(&self, op: &str) -> Result<(), BackendError> {
        check_context().map_err(|problem| self.other(op, problem.message()))?;
        let mut connection = self.lock_connection();
        match &*connection {
            Connection::Running { task: Some(task), .. } if task.is_finished() => Err(self.other(
                op,
                "the connection's task has ended, which happens when the tokio runtime it was started on shuts down: a backend stays on the runtime of its first call, so build the manager in the runtime that uses it, or keep that runtime alive",
            )),
            Connection::Running { .. } => {
                drop(connection);
                match self.health.incompatible(&self.client, op) {
                    Some(error) => Err(error),
                    None => Ok(()),
                }
            }
            Connection::Closed => Err(BackendError::new(
                BackendErrorKind::Closed,
                format!("{}: {op}: backend closed", self.id),
            )),
            Connection::NotStarted => {
                // Listening first: the first attempt's failure must be heard.
                let listener = self.health.listen(&self.client);
                // A new connection may reach a server with an empty script cache (restart,
                // failover): go back to EVAL until each script is cached again.
                let cached = Arc::clone(&self.cached);
                drop(self.client.on_reconnect(move |_| {
                    cached.store(0, Ordering::Release);
                    async { Ok(()) }
                }));
                // A client the application already connected stays the application's.
                let task = (self.client.state() == ClientState::Disconnected)
                    .then(|| self.client.connect());
                *connection = Connection::Running { task, listener };
                Ok(())
            }
        }
    }

    fn is_closed(&self) -> bool {
        matches!(*self.lock_connection(), Connection::Closed)
    }

    /// Asks the sentinels again for the master, in the background, once at a time.
    fn rediscover(&self) {
        if !self.sentinel
            || check_context().is_err()
            || self.rediscovering.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let client = self.client.clone();
        let flag = Arc::clone(&self.rediscovering);
        drop(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.force_reconnection()).await;
            flag.store(false, Ordering::Release);
        }));
    }

    fn map_error(&self, error: &FredError, op: &str) -> BackendError {
        if error.details().starts_with("READONLY") {
            // The master we know was demoted (failover): find the new one.
            self.rediscover();
        }
        if error.is_canceled() && self.is_closed() {
            return BackendError::new(
                BackendErrorKind::Closed,
                format!("{}: {op}: backend closed", self.id),
            );
        }
        self.health.command_error(&self.client, error, op)
    }

    async fn run(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[Value],
    ) -> Result<Value, BackendError> {
        self.ensure_started(script.name)?;
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| Value::Bytes(Bytes::copy_from_slice(k)))
            .collect();
        let numkeys = i64::try_from(keys.len()).unwrap_or(i64::MAX);
        let command_args = |head: Str| {
            let mut command = Vec::with_capacity(2 + keys.len() + args.len());
            command.extend([Value::String(head), Value::Integer(numkeys)]);
            command.extend_from_slice(&keys);
            command.extend_from_slice(args);
            command
        };
        // Custom commands are pipelined; fred's own EVALSHA is not (it waits for each reply),
        // which would serialize every lock call on the connection.
        let custom = |name: &'static str, head: Str| {
            self.send(move |timeout| {
                let command = CustomCommand::new_static(name, ClusterHash::FirstKey, false);
                let args = command_args(head.clone());
                async move {
                    match timeout {
                        None => self.client.custom::<Value, Value>(command, args).await,
                        Some(t) => {
                            self.client
                                .with_options(&timeout_options(t))
                                .custom::<Value, Value>(command, args)
                                .await
                        }
                    }
                }
            })
        };
        let eval = || async {
            let reply = custom("EVAL", Str::from_static(script.body)).await;
            if reply.is_ok() {
                self.cached.fetch_or(script.bit, Ordering::AcqRel);
            }
            reply.map_err(|e| self.map_error(&e, script.name))
        };
        if self.cached.load(Ordering::Acquire) & script.bit == 0 {
            // Not known to be cached on this connection's server: EVAL, in one write. An
            // EVALSHA whose NOSCRIPT reply nobody awaits any more (the manager stops waiting
            // once a quorum answered) would never be followed by the EVAL, and the instance
            // would silently miss the call.
            return eval().await;
        }
        match custom("EVALSHA", script.sha.clone()).await {
            Ok(v) => Ok(v),
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                // The script cache was emptied (restart, failover, SCRIPT FLUSH): every script
                // is suspect until EVAL caches it again.
                self.cached.store(0, Ordering::Release);
                eval().await
            }
            Err(e) => Err(self.map_error(&e, script.name)),
        }
    }

    /// Runs `call` (given `None`: fred's default timeout), and again if fred failed it without
    /// writing it: that happens to a command that reaches fred's router between the loss of a
    /// connection and the start of its reconnection ("Failed to route command"). Never written,
    /// it is sent once the connection is back: no re-send, and still within one command
    /// timeout counted from the first try (`call` gets what is left), so nothing is written
    /// after the manager stopped waiting. Any other failure is returned as it is.
    async fn send<T, F, Fut>(&self, call: F) -> Result<T, FredError>
    where
        F: Fn(Option<Duration>) -> Fut,
        Fut: std::future::Future<Output = Result<T, FredError>>,
    {
        let deadline = Instant::now() + self.command_timeout;
        let mut result = call(None).await;
        while matches!(&result, Err(e) if never_written(e)) {
            self.health
                .wait_up(
                    &self.client,
                    deadline.saturating_duration_since(Instant::now()),
                )
                .await;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            result = call(Some(left)).await;
        }
        result
    }

    fn code(&self, value: Value, op: &str) -> Result<bool, BackendError> {
        match value {
            Value::Integer(1) => Ok(true),
            Value::Integer(0) => Ok(false),
            Value::Integer(scripts::WRONG_TYPE) => Err(self.wrong_type(op)),
            other => Err(self.unexpected(op, &other)),
        }
    }

    fn wrong_type(&self, op: &str) -> BackendError {
        BackendError::new(
            BackendErrorKind::WrongType,
            format!(
                "{}: {op} failed: the key holds a value of another type (WRONGTYPE)",
                self.id
            ),
        )
    }

    fn not_a_counter(&self, op: &str) -> BackendError {
        BackendError::new(
            BackendErrorKind::Server,
            format!(
                "{}: {op} failed: the fencing counter does not hold a decimal number",
                self.id
            ),
        )
    }

    fn unexpected(&self, op: &str, value: &Value) -> BackendError {
        BackendError::new(
            BackendErrorKind::Protocol,
            format!(
                "{}: {op}: unexpected reply of type {:?}",
                self.id,
                value.kind()
            ),
        )
    }
}

/// fred failed the command before writing it: it found no connection to write it to.
fn never_written(error: &FredError) -> bool {
    error.details().starts_with("Failed to route command")
}

fn timeout_options(timeout: Duration) -> Options {
    Options {
        timeout: Some(timeout),
        ..Options::default()
    }
}

fn millis(ttl: Duration) -> Value {
    Value::Integer(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

fn token(token: &[u8]) -> Value {
    Value::Bytes(Bytes::copy_from_slice(token))
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn id(&self) -> &str {
        &self.id
    }

    async fn acquire(&self, key: &[u8], tok: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        // The common case is one built-in `SET key token NX PX ttl GET` (Redis 7): fred
        // pipelines built-in commands into shared writes, while it flushes the socket after every
        // custom command such as EVALSHA, which made a lock cost one write per instance more than
        // a plain client (BENCHMARKS.md). A key of another type still answers WRONGTYPE, and a
        // replica READONLY. Only a key that already holds our token (a re-sent request) needs the
        // script, which resets the expiry atomically.
        self.ensure_started("acquire")?;
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let set = self.send(|timeout| {
            let (key, tok) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(tok));
            let (expiry, nx) = (Some(Expiration::PX(ms)), Some(SetOptions::NX));
            async move {
                match timeout {
                    None => {
                        self.client
                            .set::<Value, _, _>(key, tok, expiry, nx, true)
                            .await
                    }
                    Some(t) => {
                        self.client
                            .with_options(&timeout_options(t))
                            .set::<Value, _, _>(key, tok, expiry, nx, true)
                            .await
                    }
                }
            }
        });
        match set.await {
            Ok(Value::Null) => return Ok(true),
            Ok(Value::Bytes(held)) if held.as_ref() != tok => return Ok(false),
            Ok(Value::String(held)) if held.as_bytes() != tok => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(self.map_error(&e, "acquire")),
        }
        let reply = self
            .run(&scripts::ACQUIRE, &[key], &[token(tok), millis(ttl)])
            .await?;
        self.code(reply, "acquire")
    }

    async fn extend(&self, key: &[u8], tok: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        let reply = self
            .run(&scripts::EXTEND, &[key], &[token(tok), millis(ttl)])
            .await?;
        self.code(reply, "extend")
    }

    async fn release(&self, key: &[u8], tok: &[u8]) -> Result<bool, BackendError> {
        let reply = self.run(&scripts::RELEASE, &[key], &[token(tok)]).await?;
        self.code(reply, "release")
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        match self.run(&scripts::INSPECT, &[key], &[]).await? {
            Value::Integer(0) => Ok(None),
            Value::Integer(scripts::WRONG_TYPE) => Err(self.wrong_type("inspect")),
            Value::Array(mut parts) if parts.len() == 2 => {
                let pttl = parts.pop();
                let value = match parts.pop() {
                    Some(Value::Bytes(b)) => b.to_vec(),
                    Some(Value::String(s)) => s.as_bytes().to_vec(),
                    Some(other) => return Err(self.unexpected("inspect", &other)),
                    None => return Err(self.unexpected("inspect", &Value::Null)),
                };
                let ttl = match pttl {
                    // -2: gone between GET and PTTL, impossible inside a script; treat as absent.
                    Some(Value::Integer(-2)) => return Ok(None),
                    Some(Value::Integer(ms)) if ms >= 0 => {
                        Some(Duration::from_millis(ms.unsigned_abs()))
                    }
                    Some(Value::Integer(_)) => None,
                    Some(other) => return Err(self.unexpected("inspect", &other)),
                    None => return Err(self.unexpected("inspect", &Value::Null)),
                };
                Ok(Some(KeyState { value, ttl }))
            }
            other => Err(self.unexpected("inspect", &other)),
        }
    }

    fn check_config(&self, config: &redlock_core::Config) -> Result<(), String> {
        // fred's timeout must fire first: a command the manager merely stopped waiting for is
        // still written after a reconnect and leaves a ghost lock.
        if self.command_timeout >= config.instance_timeout() {
            return Err(format!(
                "{}: fred's command timeout {:?} must be shorter than the manager's instance timeout {:?}; give the backend ConnectionOptions::new().for_instance_timeout({:?}) (redlock_fred::manager does this itself)",
                self.id,
                self.command_timeout,
                config.instance_timeout(),
                config.instance_timeout()
            ));
        }
        Ok(())
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        Some(self)
    }

    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        // From the main connection, the one lock calls use: the release-announcement connection
        // carries no lock state, and it re-subscribes on its own.
        Some(Box::pin(self.health.reconnects()))
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        Some(self)
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        Some(self)
    }

    async fn connect(&self) -> Result<(), BackendError> {
        self.ensure_started("connect")?;
        self.health.wait_connected(&self.client).await
    }

    async fn close(&self) -> Result<(), BackendError> {
        // Outside a usable runtime fred's QUIT would panic on its timer: only stop the tasks.
        let usable = check_context().is_ok();
        if usable {
            self.notifier.close().await;
        }
        let previous = std::mem::replace(&mut *self.lock_connection(), Connection::Closed);
        if let Connection::Running { task, listener } = previous {
            if let Some(task) = task {
                if usable {
                    // QUIT waits for a writable connection; a dead server must not hold up
                    // close.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), self.client.quit()).await;
                }
                task.abort();
            }
            listener.abort();
        }
        Ok(())
    }
}

#[async_trait]
impl ReleaseNotify for RedisBackend {
    async fn release_and_notify(
        &self,
        key: &[u8],
        tok: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        let channel = Value::from(crate::notify::channel(key));
        match self
            .run(&scripts::RELEASE_NOTIFY, &[key], &[token(tok), channel])
            .await?
        {
            Value::Integer(2) => Ok((true, true)),
            Value::Integer(1) => Ok((true, false)),
            Value::Integer(0) => Ok((false, false)),
            Value::Integer(scripts::WRONG_TYPE) => Err(self.wrong_type("release")),
            other => Err(self.unexpected("release", &other)),
        }
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        self.ensure_started("subscribe")?;
        let stream = self
            .notifier
            .subscribe(key, |e| self.map_error(&e, "subscribe"))
            .await?;
        // Registered once subscribed: a release that sees the registration publishes to a
        // subscription that is already there.
        let (_, waiters) = redlock_core::queue_keys(key);
        let reply = self
            .run(
                &scripts::WATCH_RELEASES,
                &[&waiters],
                &[millis(redlock_core::redis_lua::WATCH_FOR)],
            )
            .await?;
        self.code(reply, "subscribe")?;
        Ok(stream)
    }
}

#[async_trait]
impl Handoff for RedisBackend {
    async fn listen(&self, tok: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        self.ensure_started("listen")?;
        self.notifier
            .listen(tok, |e| self.map_error(&e, "listen"))
            .await
    }

    async fn acquire_or_queue(
        &self,
        key: &[u8],
        tok: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError> {
        let (queue, waiters) = redlock_core::queue_keys(key);
        let channel = Value::from(self.notifier.handoff_channel());
        let reply = self
            .run(
                &scripts::ACQUIRE_QUEUE,
                &[key, &queue, &waiters],
                &[
                    token(tok),
                    millis(ttl),
                    millis(place.stay),
                    millis(place.reserve),
                    channel,
                ],
            )
            .await?;
        self.code(reply, "acquire")
    }

    async fn release_and_hand_off(
        &self,
        key: &[u8],
        tok: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError> {
        // The script names the queue keys itself: one key on the wire, not three.
        let leaves = [token(tok), Value::String(Str::from_static("2"))];
        match self
            .run(
                &scripts::RELEASE_HAND_OFF,
                &[key],
                if leaving { &leaves } else { &leaves[..1] },
            )
            .await?
        {
            Value::Integer(2 | 3) => Ok((true, true)),
            Value::Integer(1) => Ok((true, false)),
            Value::Integer(0) => Ok((false, false)),
            Value::Integer(scripts::WRONG_TYPE) => Err(self.wrong_type("release")),
            other => Err(self.unexpected("release", &other)),
        }
    }

    /// The release script sets the key to the waiter's token with its reserve and only then
    /// publishes the hand-off, on this instance's connection; a message is delivered once, to
    /// the listener of its token, and nothing else yields an item (rule 6).
    fn grants_by_hand_off(&self) -> bool {
        true
    }
}

#[async_trait]
impl Fencing for RedisBackend {
    async fn next_fence(
        &self,
        key: &[u8],
        tok: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        let op = scripts::NEXT_FENCE.name;
        match self
            .run(&scripts::NEXT_FENCE, &[key, counter], &[token(tok)])
            .await?
        {
            Value::Integer(0) => Ok(None),
            Value::Integer(scripts::WRONG_TYPE) => Err(self.wrong_type(op)),
            Value::Integer(n) if n > 0 => Ok(Some(n.unsigned_abs())),
            Value::Integer(_) => Err(self.not_a_counter(op)),
            other => Err(self.unexpected(op, &other)),
        }
    }

    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        let op = scripts::RAISE_FENCE.name;
        let value = Value::String(Str::from(value.to_string()));
        let reply = self
            .run(&scripts::RAISE_FENCE, &[counter], &[value])
            .await?;
        let digits = match &reply {
            Value::Integer(scripts::WRONG_TYPE) => return Err(self.wrong_type(op)),
            Value::Integer(_) => return Err(self.not_a_counter(op)),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            Value::String(s) => Some(&**s),
            _ => None,
        };
        digits
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| self.unexpected(op, &reply))
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        // The connection task reconnects forever; without this it would outlive the backend.
        if let Connection::Running { task, listener } =
            std::mem::replace(&mut *self.lock_connection(), Connection::Closed)
        {
            if let Some(task) = task {
                task.abort();
            }
            listener.abort();
        }
    }
}
