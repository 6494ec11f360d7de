//! [`LockBackend`] on one fred client per instance.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::bytes::Bytes;
use fred::bytes_utils::Str;
use fred::clients::{Client, SubscriberClient};
use fred::error::ErrorKind;
use fred::interfaces::{ClientLike, EventInterface, KeysInterface};
use fred::types::config::{
    Config as FredConfig, ConnectionConfig, PerformanceConfig, ReconnectPolicy, Server,
    ServerConfig, TcpConfig,
};
use fred::types::{ClusterHash, ConnectHandle, CustomCommand, Expiration, SetOptions, Value};
use futures::stream::BoxStream;
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Error, KeyState, LockBackend, ReleaseNotify,
};

use crate::config::Instance;
use crate::notify::Notifier;
use crate::scripts::{self, Script};
use crate::secret::Secret;

/// How the backend talks to its server.
///
/// # Default
/// | setting | default | why |
/// | --- | --- | --- |
/// | `command_timeout` | 90 ms | just under the manager's default 100 ms per-instance timeout |
/// | `connection_timeout` | 1 s | also bounds `AUTH`/`SELECT`/Sentinel queries while connecting |
/// | `reconnect_max_delay` | 1 s | exponential backoff from 10 ms, forever, so a restarted server rejoins |
///
/// The command timeout must stay *below* the manager's per-instance timeout: fred marks a command
/// that timed out on its own clock and never writes it, while a command merely abandoned by the
/// manager stays queued and is written after a reconnect, leaving a ghost lock key for a whole
/// TTL. [`RedisManagerBuilder`](crate::RedisManagerBuilder) keeps the two in step.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ConnectionOptions {
    command_timeout: Duration,
    connection_timeout: Duration,
    reconnect_max_delay: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_millis(90),
            connection_timeout: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(1),
        }
    }
}

impl ConnectionOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The command timeout for a manager whose per-instance timeout is `instance_timeout`:
    /// 10 % (at least 1 ms) shorter, so fred's timeout fires first.
    pub fn for_instance_timeout(mut self, instance_timeout: Duration) -> Self {
        let margin = (instance_timeout / 10).max(Duration::from_millis(1));
        self.command_timeout = instance_timeout
            .saturating_sub(margin)
            .max(Duration::from_millis(1));
        self
    }

    /// fred's timeout for every command (zero is raised to 1 ms: fred reads zero as "none").
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Timeout of one connection attempt, including TLS and the handshake commands.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Longest delay between reconnection attempts.
    pub fn with_reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay.max(Duration::from_millis(10));
        self
    }

    /// fred's command timeout.
    #[must_use]
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }
}

enum Connection {
    NotStarted,
    Running(ConnectHandle),
    Closed,
}

/// One Redis server (direct, over a unix socket, or the master behind Sentinel) as a
/// [`LockBackend`].
///
/// Holds one fred client, whose single connection pipelines concurrent calls. The connection is
/// made lazily, by the first call, on the tokio runtime running that call (keep that runtime
/// alive for the backend's life); a call made before it is up waits at most the command
/// timeout. Dropped connections are re-made in the background with exponential backoff.
///
/// Each operation is one Lua script, sent with `EVALSHA` and re-sent as `EVAL` when the server
/// answers `NOSCRIPT` (after a restart, a failover or `SCRIPT FLUSH`).
pub struct RedisBackend {
    id: String,
    sentinel: bool,
    client: Client,
    /// A second connection, made on first use, for release announcements.
    notifier: Notifier,
    /// Bits of the scripts known to be in the server's script cache (see `run`).
    cached: Arc<AtomicU8>,
    /// fred's command timeout; must stay below the manager's instance timeout.
    command_timeout: Duration,
    connection: Mutex<Connection>,
    rediscovering: Arc<AtomicBool>,
    /// Secrets scrubbed from every error message, in case a server or fred echoes one.
    secrets: Vec<Secret>,
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
    /// A backend for `instance`, with default [`ConnectionOptions`]. Does not connect.
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn new(instance: impl Into<Instance>) -> Result<Self, Error> {
        Self::with_options(instance, &ConnectionOptions::default())
    }

    /// A backend for `instance`. Parses and validates; does not connect.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] ([`InvalidInput::Config`](redlock_core::InvalidInput::Config)):
    /// a malformed URL or unknown parameter, a Sentinel without addresses, TLS asked for but the
    /// `tls` feature not compiled in, an unusable CA certificate.
    pub fn with_options(
        instance: impl Into<Instance>,
        options: &ConnectionOptions,
    ) -> Result<Self, Error> {
        let instance = instance.into().resolve()?;
        instance.validate()?;
        let mut config = FredConfig {
            // Retry the first connection like any later one: an instance that is down when the
            // manager starts must rejoin when it comes up.
            fail_fast: false,
            ..FredConfig::default()
        };
        let mut secrets = Vec::new();
        let (id, sentinel, tls) = match instance {
            Instance::Redis(c) => {
                config.server = ServerConfig::Centralized {
                    server: Server::new(c.host.clone(), c.port),
                };
                config.username = c.username.clone();
                config.password = c.password.as_ref().map(|p| p.expose().to_owned());
                config.database = (c.db != 0).then_some(c.db);
                secrets.extend(c.password.clone());
                (c.id(), false, c.tls)
            }
            Instance::Unix(u) => {
                config.server = ServerConfig::Unix {
                    path: u.path.clone(),
                };
                config.username = u.username.clone();
                config.password = u.password.as_ref().map(|p| p.expose().to_owned());
                config.database = (u.db != 0).then_some(u.db);
                secrets.extend(u.password.clone());
                (u.id(), false, None)
            }
            Instance::Sentinel(s) => {
                config.server = ServerConfig::Sentinel {
                    hosts: s
                        .sentinels
                        .iter()
                        .map(|(h, p)| Server::new(h.clone(), *p))
                        .collect(),
                    service_name: s.master.clone(),
                    username: s.sentinel_username.clone(),
                    password: s.sentinel_password.as_ref().map(|p| p.expose().to_owned()),
                };
                config.username = s.username.clone();
                config.password = s.password.as_ref().map(|p| p.expose().to_owned());
                config.database = (s.db != 0).then_some(s.db);
                secrets.extend(s.password.clone());
                secrets.extend(s.sentinel_password.clone());
                (s.id(), true, s.tls)
            }
            Instance::Url(_) => unreachable!("resolve() parses URLs"),
        };
        if let Some(tls) = tls {
            #[cfg(feature = "tls")]
            {
                config.tls = Some(tls.to_fred()?);
            }
            #[cfg(not(feature = "tls"))]
            {
                let _ = tls;
                return Err(crate::tls::tls_not_compiled(&format!("instance {id}")));
            }
        }
        secrets.retain(|s| !s.is_empty());

        let perf = PerformanceConfig {
            default_command_timeout: options.command_timeout,
            ..PerformanceConfig::default()
        };
        let connection = ConnectionConfig {
            connection_timeout: options.connection_timeout,
            internal_command_timeout: options.connection_timeout,
            tcp: TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            },
            ..ConnectionConfig::default()
        };
        let max_delay = u32::try_from(options.reconnect_max_delay.as_millis()).unwrap_or(u32::MAX);
        let mut policy = ReconnectPolicy::new_exponential(0, 10, max_delay, 2);
        policy.set_jitter(20);
        let subscriber = SubscriberClient::new(
            config.clone(),
            Some(perf.clone()),
            Some(connection.clone()),
            Some(policy.clone()),
        );
        let client = Client::new(config, Some(perf), Some(connection), Some(policy));
        Ok(Self {
            id,
            sentinel,
            client,
            notifier: Notifier::new(subscriber),
            cached: Arc::new(AtomicU8::new(0)),
            command_timeout: options.command_timeout,
            connection: Mutex::new(Connection::NotStarted),
            rediscovering: Arc::new(AtomicBool::new(false)),
            secrets,
        })
    }

    /// The underlying fred client, for commands of your own on the same connection. It is
    /// connected by the first lock operation (or [`connect`](Self::connect)).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Starts connecting now instead of on the first call, and waits up to `timeout` for the
    /// connection. Connecting goes on in the background either way.
    ///
    /// # Errors
    /// [`BackendError`] ([`BackendErrorKind::Timeout`]) when the connection is not up within
    /// `timeout`, [`BackendErrorKind::Closed`] after close, or
    /// [`BackendErrorKind::Other`] outside a tokio runtime.
    pub async fn connect(&self, timeout: Duration) -> Result<(), BackendError> {
        self.ensure_started()?;
        if self.client.is_connected() {
            return Ok(());
        }
        match tokio::time::timeout(timeout, self.client.wait_for_connect()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.map_error(e, "connect")),
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!("{}: not connected within {timeout:?}", self.id),
            )),
        }
    }

    fn lock_connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // The state is a plain enum written whole; a panic elsewhere cannot tear it.
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_started(&self) -> Result<(), BackendError> {
        let mut connection = self.lock_connection();
        match *connection {
            Connection::Running(_) => Ok(()),
            Connection::Closed => Err(BackendError::new(
                BackendErrorKind::Closed,
                format!("{}: backend closed", self.id),
            )),
            Connection::NotStarted => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(BackendError::new(
                        BackendErrorKind::Other,
                        format!("{}: the fred backend needs a tokio runtime", self.id),
                    ));
                }
                // A new connection may reach a server with an empty script cache (restart,
                // failover): go back to EVAL until each script is cached again.
                let cached = Arc::clone(&self.cached);
                drop(self.client.on_reconnect(move |_| {
                    cached.store(0, Ordering::Release);
                    async { Ok(()) }
                }));
                *connection = Connection::Running(self.client.connect());
                Ok(())
            }
        }
    }

    fn is_closed(&self) -> bool {
        matches!(*self.lock_connection(), Connection::Closed)
    }

    /// Asks the sentinels again for the master, in the background, once at a time.
    fn rediscover(&self) {
        if !self.sentinel || self.rediscovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let client = self.client.clone();
        let flag = Arc::clone(&self.rediscovering);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            flag.store(false, Ordering::Release);
            return;
        };
        drop(handle.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.force_reconnection()).await;
            flag.store(false, Ordering::Release);
        }));
    }

    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.expose()) {
                text = text.replace(secret.expose(), "<redacted>");
            }
        }
        text
    }

    fn map_error(&self, error: fred::error::Error, op: &str) -> BackendError {
        let details = error.details();
        let first = details.split_whitespace().next().unwrap_or("");
        let kind = match first {
            "WRONGTYPE" => BackendErrorKind::WrongType,
            "READONLY" => {
                // The master we know was demoted (failover): find the new one.
                self.rediscover();
                BackendErrorKind::Server
            }
            _ => match error.kind() {
                ErrorKind::IO | ErrorKind::Routing | ErrorKind::Sentinel => {
                    BackendErrorKind::Connection
                }
                ErrorKind::Canceled if self.is_closed() => BackendErrorKind::Closed,
                ErrorKind::Canceled => BackendErrorKind::Connection,
                ErrorKind::Timeout => BackendErrorKind::Timeout,
                ErrorKind::Auth => BackendErrorKind::Server,
                ErrorKind::Protocol | ErrorKind::Parse => BackendErrorKind::Protocol,
                #[cfg(feature = "tls")]
                ErrorKind::Tls => BackendErrorKind::Connection,
                _ if !first.is_empty() && first.bytes().all(|b| b.is_ascii_uppercase()) => {
                    // A Redis error code: OOM, BUSY, LOADING, MASTERDOWN, NOAUTH, ERR, ...
                    BackendErrorKind::Server
                }
                _ => BackendErrorKind::Other,
            },
        };
        let cause = FredCause {
            kind: format!("{:?}", error.kind()),
            message: self.scrub(details),
        };
        BackendError::new(kind, format!("{}: {op} failed", self.id)).with_source(cause)
    }

    async fn run(
        &self,
        script: &Script,
        key: &[u8],
        args: &[Value],
    ) -> Result<Value, BackendError> {
        self.ensure_started()?;
        let key = Value::Bytes(Bytes::copy_from_slice(key));
        let command = |head: Str| {
            let mut command = Vec::with_capacity(3 + args.len());
            command.extend([Value::String(head), Value::Integer(1), key.clone()]);
            command.extend_from_slice(args);
            command
        };
        // Custom commands are pipelined; fred's own EVALSHA is not (it waits for each reply),
        // which would serialize every lock call on the connection.
        let eval = || async {
            let eval = CustomCommand::new_static("EVAL", ClusterHash::FirstKey, false);
            let body = Str::from_static(script.body);
            let reply = self
                .client
                .custom::<Value, Value>(eval, command(body))
                .await;
            if reply.is_ok() {
                self.cached.fetch_or(script.bit, Ordering::AcqRel);
            }
            reply.map_err(|e| self.map_error(e, script.name))
        };
        if self.cached.load(Ordering::Acquire) & script.bit == 0 {
            // Not known to be cached on this connection's server: EVAL, in one write. An
            // EVALSHA whose NOSCRIPT reply nobody awaits any more (the manager stops waiting
            // once a quorum answered) would never be followed by the EVAL, and the instance
            // would silently miss the call.
            return eval().await;
        }
        let evalsha = CustomCommand::new_static("EVALSHA", ClusterHash::FirstKey, false);
        match self
            .client
            .custom::<Value, Value>(evalsha, command(script.sha.clone()))
            .await
        {
            Ok(v) => Ok(v),
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                // The script cache was emptied (restart, failover, SCRIPT FLUSH): every script
                // is suspect until EVAL caches it again.
                self.cached.store(0, Ordering::Release);
                eval().await
            }
            Err(e) => Err(self.map_error(e, script.name)),
        }
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
        self.ensure_started()?;
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let set = self.client.set::<Value, _, _>(
            Bytes::copy_from_slice(key),
            Bytes::copy_from_slice(tok),
            Some(Expiration::PX(ms)),
            Some(SetOptions::NX),
            true,
        );
        match set.await {
            Ok(Value::Null) => return Ok(true),
            Ok(Value::Bytes(held)) if held.as_ref() != tok => return Ok(false),
            Ok(Value::String(held)) if held.as_bytes() != tok => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(self.map_error(e, "acquire")),
        }
        let reply = self
            .run(&scripts::ACQUIRE, key, &[token(tok), millis(ttl)])
            .await?;
        self.code(reply, "acquire")
    }

    async fn extend(&self, key: &[u8], tok: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        let reply = self
            .run(&scripts::EXTEND, key, &[token(tok), millis(ttl)])
            .await?;
        self.code(reply, "extend")
    }

    async fn release(&self, key: &[u8], tok: &[u8]) -> Result<bool, BackendError> {
        let reply = self.run(&scripts::RELEASE, key, &[token(tok)]).await?;
        self.code(reply, "release")
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        match self.run(&scripts::INSPECT, key, &[]).await? {
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
                "{}: fred's command timeout {:?} must be shorter than the manager's instance                  timeout {:?} (build through redlock_fred::manager, or set                  ConnectionOptions::for_instance_timeout)",
                self.id,
                self.command_timeout,
                config.instance_timeout()
            ));
        }
        Ok(())
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        Some(self)
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.notifier.close().await;
        let previous = std::mem::replace(&mut *self.lock_connection(), Connection::Closed);
        if let Connection::Running(handle) = previous {
            // QUIT waits for a writable connection; a dead server must not hold up close.
            let _ = tokio::time::timeout(Duration::from_millis(500), self.client.quit()).await;
            handle.abort();
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
            .run(&scripts::RELEASE_NOTIFY, key, &[token(tok), channel])
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
        if self.is_closed() {
            return Err(BackendError::new(
                BackendErrorKind::Closed,
                format!("{}: backend closed", self.id),
            ));
        }
        self.notifier
            .subscribe(key, |e| self.map_error(e, "subscribe"))
            .await
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        // The connection task reconnects forever; without this it would outlive the backend.
        if let Connection::Running(handle) =
            std::mem::replace(&mut *self.lock_connection(), Connection::Closed)
        {
            handle.abort();
        }
    }
}

/// fred's error, with secrets scrubbed from its message.
#[derive(Debug)]
struct FredCause {
    kind: String,
    message: String,
}

impl fmt::Display for FredCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for FredCause {}
