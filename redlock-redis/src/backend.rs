//! [`LockBackend`] on one redis-rs multiplexed connection per instance.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::stream::BoxStream;
use futures::FutureExt;
use redis::io::tcp::TcpSettings;
use redis::{Client, Cmd, ConnectionInfo, Value};
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Error, Fencing, Handoff, KeyState, LockBackend,
    QueuePlace, ReleaseNotify,
};
use tokio::time::Instant;

use crate::command::{self, Part};
use crate::link::{self, ConnRef, Link, Routed, Sending};
use crate::notify::Notifier;
use crate::options::ConnectionOptions;
use crate::scripts::{self, Script};
use crate::{config, error};

/// One Redis server (over TCP, TLS with the `tls` feature, or a unix socket) as a
/// [`LockBackend`], on redis-rs.
///
/// Holds one redis-rs `MultiplexedConnection`, which pipelines concurrent calls over one socket,
/// and a second connection, made on first use, for release announcements and hand-offs (see
/// [`Handoff`]). Connections are made lazily, by the first call (or [`LockBackend::connect`]),
/// on the tokio runtime running that call; keep that runtime alive while the backend is used.
///
/// Every call must come from a tokio runtime with timers (`enable_all`); elsewhere it fails at
/// once with an error saying so, never a panic.
///
/// # One attempt, never a replay
///
/// Each operation is one command or Lua script, handed to the connection on the call's first
/// poll (or, while the connection is being made, to a task that sends it once the connection is
/// up), and sent once. Every operation ends within the command timeout from its first poll
/// (see [`ConnectionOptions`]); a request not yet written by then is dropped, never written
/// later. (A call a manager's round polls is bounded by the round instead, whose limit is
/// longer: it then needs no timer of its own. Dropped before its command timeout, it still
/// ends by then.) A broken connection fails the calls on it and is replaced on the next call; nothing is
/// queued for the new connection. Scripts go as `EVALSHA` once the server is known to cache
/// them, as `EVAL` before (and after a `NOSCRIPT`).
///
/// # Errors
/// A failed call's [`BackendError::kind`] is [`Auth`](BackendErrorKind::Auth) (credentials
/// refused, or none given where the server wants them), [`Connection`](BackendErrorKind::Connection)
/// (refused, lost, timed out connecting), [`Timeout`](BackendErrorKind::Timeout) (no reply in
/// time), [`Incompatible`](BackendErrorKind::Incompatible) (a server older than Redis 7.0),
/// [`WrongType`](BackendErrorKind::WrongType), [`Server`](BackendErrorKind::Server) (any other
/// error reply, `READONLY` included), [`Protocol`](BackendErrorKind::Protocol) or
/// [`Closed`](BackendErrorKind::Closed).
pub struct RedisBackend {
    link: Arc<Link>,
    notifier: Notifier,
    command_timeout: Duration,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The id only: the connection info holds the password.
        f.debug_struct("RedisBackend")
            .field("id", &&*self.link.id)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// What the first command of an operation got.
enum Outcome {
    Reply(Value),
    /// `NOSCRIPT`: the server does not cache the script sent by its digest.
    NoScript,
}

impl RedisBackend {
    /// A backend for a `redis://`, `rediss://` (feature `tls`), `redis+unix://` or `unix://`
    /// URL, with [`ConnectionOptions::default`]. Parses and validates; does not connect.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] ([`InvalidInput::Config`](redlock_core::InvalidInput::Config)):
    /// see [`with_options`](Self::with_options).
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::with_options(url, &ConnectionOptions::default())
    }

    /// A backend for `url` with `options`. Parses and validates; does not connect.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] ([`InvalidInput::Config`](redlock_core::InvalidInput::Config)):
    /// a malformed URL, another scheme, an empty host, port 0, a negative database, or
    /// `rediss://` without the `tls` feature. The message never shows the URL beyond its scheme.
    pub fn with_options(url: &str, options: &ConnectionOptions) -> Result<Self, Error> {
        Self::from_connection_info(config::parse_url(url)?, options)
    }

    /// A backend for a redis-rs [`ConnectionInfo`] (address, credentials, database, RESP
    /// version). `TCP_NODELAY` is turned on. Does not connect.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] as for [`with_options`](Self::with_options).
    pub fn from_connection_info(
        info: ConnectionInfo,
        options: &ConnectionOptions,
    ) -> Result<Self, Error> {
        let info = config::validate(info)?;
        let info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = Client::open(info)
            .map_err(|e| config::config_error(format!("invalid connection settings: {e}")))?;
        Self::from_client(client, options)
    }

    /// A backend on a redis-rs [`Client`] of your own (TLS with your own certificates through
    /// `Client::build_with_tls`, say). The backend makes its own connections from it. Does not
    /// connect.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an address the backend cannot use (see
    /// [`with_options`](Self::with_options)).
    pub fn from_client(client: Client, options: &ConnectionOptions) -> Result<Self, Error> {
        let info = config::validate(client.get_connection_info().clone())?;
        let id: Arc<str> = config::id_of(&info).into();
        let link = Arc::new(Link::new(
            Arc::clone(&id),
            client.clone(),
            options.connection_timeout,
            options.reconnect_max_delay,
        ));
        Ok(Self {
            notifier: Notifier::new(
                id,
                client,
                // To pass on hand-offs that no call of this process waits for any more.
                Arc::clone(&link),
                options.connection_timeout,
                options.command_timeout,
            ),
            link,
            command_timeout: options.command_timeout,
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.command_timeout
    }

    /// Sends the first command of `op`, built by `build` from the scripts the connection's
    /// server is known to cache. The command is on its way (on the open connection, or in the
    /// queue of the one being made) when this is first polled.
    async fn first(
        &self,
        op: &'static str,
        build: impl FnOnce(u16) -> Cmd,
        deadline: Instant,
    ) -> Result<(Outcome, ConnRef), BackendError> {
        check_context(&self.link.id, op)?;
        // Read at the first poll: a call a manager's round polls is bounded by the round.
        let timed = !redlock_core::polled_by_round();
        let (sending, conn) = match self.link.route(op, build, deadline, timed)? {
            Routed::Sending(sending, conn) => (sending, conn),
            // Out of line: the wait for a connection being made (and its timer) would otherwise
            // be part of every call's state, which every call allocates and copies (a lock
            // cycle makes 2N calls).
            Routed::Queued(rx) => self.connected(op, rx, deadline).boxed().await?,
        };
        let sent = sending.await;
        finish(&self.link, op, self.command_timeout, sent, conn)
    }

    /// The command queued while the connection is being made, once that connection took it.
    async fn connected(
        &self,
        op: &str,
        rx: oneshot::Receiver<Result<(Sending, ConnRef), BackendError>>,
        deadline: Instant,
    ) -> Result<(Sending, ConnRef), BackendError> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(routed)) => routed,
            Ok(Err(_)) => Err(self.link.closed_error(op)),
            Err(_) => Err(link::timed_out(
                &self.link.id,
                &format!("{op}: not connected within {:?}", self.command_timeout),
            )),
        }
    }

    /// Runs `script` on `keys` with the arguments `args`.
    async fn script(
        &self,
        script: &'static Script,
        keys: &[Part<'_>],
        args: &[Part<'_>],
        deadline: Instant,
    ) -> Result<Value, BackendError> {
        let command = |sha: bool| {
            let (name, code) = if sha {
                ("EVALSHA", script.sha.as_bytes())
            } else {
                ("EVAL", script.body.as_bytes())
            };
            let count = i64::try_from(keys.len()).unwrap_or(i64::MAX);
            command::build_from(name, &[&[Part::Bytes(code), Part::Int(count)], keys, args])
        };
        // EVAL until the server is known to cache the script: an EVALSHA whose NOSCRIPT nobody
        // awaits any more (the manager stops waiting at a quorum) would never be followed by
        // the EVAL, and the instance would silently miss the call.
        let (outcome, conn) = self
            .first(
                script.name,
                |cached| command(cached & script.bit != 0),
                deadline,
            )
            .await?;
        match outcome {
            Outcome::Reply(value) => {
                conn.cached.fetch_or(script.bit, Ordering::AcqRel);
                Ok(value)
            }
            Outcome::NoScript => {
                // The script cache was emptied (restart, SCRIPT FLUSH): every script is suspect
                // until EVAL caches it again.
                conn.cached.store(0, Ordering::Release);
                // Boxed: rare, and it would otherwise double the state of every script call.
                match self
                    .first(script.name, |_| command(false), deadline)
                    .boxed()
                    .await?
                {
                    (Outcome::Reply(value), conn) => {
                        conn.cached.fetch_or(script.bit, Ordering::AcqRel);
                        Ok(value)
                    }
                    (Outcome::NoScript, _) => Err(BackendError::new(
                        BackendErrorKind::Server,
                        format!(
                            "{}: {}: NOSCRIPT in reply to EVAL",
                            self.link.id, script.name
                        ),
                    )),
                }
            }
        }
    }

    fn code(&self, value: &Value, op: &str) -> Result<bool, BackendError> {
        match value {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            Value::Int(scripts::WRONG_TYPE) => Err(self.wrong_type(op)),
            other => Err(self.unexpected(op, other)),
        }
    }

    fn not_a_counter(&self, op: &str) -> BackendError {
        BackendError::new(
            BackendErrorKind::Server,
            format!(
                "{}: {op} failed: the fencing counter does not hold a decimal number",
                self.link.id
            ),
        )
    }

    fn wrong_type(&self, op: &str) -> BackendError {
        BackendError::new(
            BackendErrorKind::WrongType,
            format!(
                "{}: {op} failed: the key holds a value of another type (WRONGTYPE)",
                self.link.id
            ),
        )
    }

    fn unexpected(&self, op: &str, value: &Value) -> BackendError {
        let what = match value {
            Value::Nil => "nil",
            Value::Int(_) => "integer",
            Value::BulkString(_) => "bulk string",
            Value::Array(_) => "array",
            Value::SimpleString(_) => "simple string",
            _ => "other",
        };
        BackendError::new(
            BackendErrorKind::Protocol,
            format!("{}: {op}: unexpected reply of type {what}", self.link.id),
        )
    }
}

/// Turns a sent command's result into an outcome; forgets a connection that broke.
fn finish(
    link: &Link,
    op: &str,
    timeout: Duration,
    result: link::Sent,
    conn: ConnRef,
) -> Result<(Outcome, ConnRef), BackendError> {
    match result {
        Ok(Ok(value)) => Ok((Outcome::Reply(value), conn)),
        Ok(Err(e)) if e.code() == Some("NOSCRIPT") => Ok((Outcome::NoScript, conn)),
        Ok(Err(e)) => {
            if error::is_broken(&e) {
                link.broken(&conn);
                if link.is_closed() {
                    return Err(link.closed_error(op));
                }
            }
            Err(error::command(&link.id, op, e))
        }
        Err(_) => Err(BackendError::new(
            BackendErrorKind::Timeout,
            format!("{}: {op}: no reply within {timeout:?}", link.id),
        )),
    }
}

fn check_context(id: &str, op: &str) -> Result<(), BackendError> {
    use redlock_rt::tokio::ContextProblem;
    redlock_rt::tokio::context().map_err(|problem| {
        let why = match problem {
            ContextProblem::NoRuntime => "called outside a tokio runtime: redlock-redis runs on tokio; call it from a task of a tokio runtime built with enable_all()",
            _ => "the tokio runtime has no timer driver: build it with enable_all() (or enable_time() and enable_io())",
        };
        BackendError::new(BackendErrorKind::Other, format!("{id}: {op}: {why}"))
    })
}

/// The lock key and its hand-off queue and waiter table ([`redlock_core::queue_keys`]).
fn queue_keys(key: &[u8]) -> [Part<'_>; 3] {
    [
        Part::Bytes(key),
        Part::Prefixed(redlock_core::QUEUE_KEY_PREFIX, key),
        Part::Prefixed(redlock_core::WAITERS_KEY_PREFIX, key),
    ]
}

/// The channel a release of `key` is announced on (`redis_lua::release_channel`).
fn release_channel(key: &[u8]) -> Part<'_> {
    Part::Hex(redlock_core::redis_lua::RELEASE_CHANNEL_PREFIX, key)
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn id(&self) -> &str {
        &self.link.id
    }

    async fn acquire(&self, key: &[u8], tok: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        // One built-in `SET key token NX PX ttl GET` (Redis 7) in the common case. A key of
        // another type still answers WRONGTYPE, a replica READONLY. Only a key that already
        // holds our token (a request sent again by the caller) needs the script, which resets
        // the expiry atomically (contract rule 2).
        let deadline = self.deadline();
        let ms = millis(ttl);
        let set = |_| {
            command::build(
                "SET",
                &[
                    Part::Bytes(key),
                    Part::Bytes(tok),
                    Part::Bytes(b"NX"),
                    Part::Bytes(b"PX"),
                    Part::Int(ms),
                    Part::Bytes(b"GET"),
                ],
            )
        };
        match self.first("acquire", set, deadline).await?.0 {
            Outcome::Reply(Value::Nil) => return Ok(true),
            Outcome::Reply(Value::BulkString(held)) if held != tok => return Ok(false),
            Outcome::Reply(Value::BulkString(_)) => {}
            Outcome::Reply(other) => return Err(self.unexpected("acquire", &other)),
            Outcome::NoScript => return Err(self.unexpected("acquire", &Value::Nil)),
        }
        // Boxed: rare (a request sent again), and it would otherwise add a script call's state
        // to every acquire's.
        let reply = self
            .script(
                &scripts::ACQUIRE,
                &[Part::Bytes(key)],
                &[Part::Bytes(tok), Part::Int(ms)],
                deadline,
            )
            .boxed()
            .await?;
        self.code(&reply, "acquire")
    }

    async fn extend(&self, key: &[u8], tok: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        let ms = millis(ttl);
        let reply = self
            .script(
                &scripts::EXTEND,
                &[Part::Bytes(key)],
                &[Part::Bytes(tok), Part::Int(ms)],
                self.deadline(),
            )
            .await?;
        self.code(&reply, "extend")
    }

    async fn release(&self, key: &[u8], tok: &[u8]) -> Result<bool, BackendError> {
        let reply = self
            .script(
                &scripts::RELEASE,
                &[Part::Bytes(key)],
                &[Part::Bytes(tok)],
                self.deadline(),
            )
            .await?;
        self.code(&reply, "release")
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        let reply = self
            .script(&scripts::INSPECT, &[Part::Bytes(key)], &[], self.deadline())
            .await?;
        match reply {
            Value::Int(0) => Ok(None),
            Value::Int(scripts::WRONG_TYPE) => Err(self.wrong_type("inspect")),
            Value::Array(parts) => match parts.as_slice() {
                // -2: gone between GET and PTTL, impossible inside a script; treat as absent.
                [_, Value::Int(-2)] => Ok(None),
                [Value::BulkString(value), Value::Int(ms)] => Ok(Some(KeyState {
                    value: value.clone(),
                    // -1: no expiry.
                    ttl: (*ms >= 0).then(|| Duration::from_millis(ms.unsigned_abs())),
                })),
                _ => Err(self.unexpected("inspect", &Value::Array(parts))),
            },
            other => Err(self.unexpected("inspect", &other)),
        }
    }

    fn check_config(&self, config: &redlock_core::Config) -> Result<(), String> {
        // The backend's timeout must fire first, so that a request the manager gave up on is
        // dropped by the backend before it is written.
        if self.command_timeout >= config.instance_timeout() {
            return Err(format!(
                "{}: the backend's command timeout {:?} must be shorter than the manager's instance timeout {:?}; give the backend ConnectionOptions::new().for_instance_timeout({:?}) (redlock_redis::manager does this itself)",
                self.link.id,
                self.command_timeout,
                config.instance_timeout(),
                config.instance_timeout()
            ));
        }
        if config.max_in_flight() > link::PIPELINE_BUFFER {
            return Err(format!(
                "{}: an in-flight limit of {} calls per instance is more than redlock-redis queues at once ({}): a call beyond that would wait before it is sent; set max_in_flight to {} or less",
                self.link.id,
                config.max_in_flight(),
                link::PIPELINE_BUFFER,
                link::PIPELINE_BUFFER
            ));
        }
        Ok(())
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        Some(self)
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        Some(self)
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        Some(self)
    }

    async fn connect(&self) -> Result<(), BackendError> {
        check_context(&self.link.id, "connect")?;
        match self.link.connect()? {
            None => Ok(()),
            Some(attempt) => attempt
                .await
                .unwrap_or_else(|_| Err(self.link.closed_error("connect"))),
        }
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.link.close();
        self.notifier.close().await;
        Ok(())
    }
}

/// The same scripts as redlock-fred's (and so the same counters): a manager on either backend
/// draws fences from one sequence per resource.
#[async_trait]
impl Fencing for RedisBackend {
    async fn next_fence(
        &self,
        key: &[u8],
        tok: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        let op = scripts::NEXT_FENCE.name;
        let reply = self
            .script(
                &scripts::NEXT_FENCE,
                &[Part::Bytes(key), Part::Bytes(counter)],
                &[Part::Bytes(tok)],
                self.deadline(),
            )
            .await?;
        match reply {
            Value::Int(0) => Ok(None),
            Value::Int(scripts::WRONG_TYPE) => Err(self.wrong_type(op)),
            Value::Int(n) if n > 0 => Ok(Some(n.unsigned_abs())),
            Value::Int(_) => Err(self.not_a_counter(op)),
            other => Err(self.unexpected(op, &other)),
        }
    }

    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        let op = scripts::RAISE_FENCE.name;
        let digits = value.to_string();
        let reply = self
            .script(
                &scripts::RAISE_FENCE,
                &[Part::Bytes(counter)],
                &[Part::Bytes(digits.as_bytes())],
                self.deadline(),
            )
            .await?;
        let text = match &reply {
            Value::Int(scripts::WRONG_TYPE) => return Err(self.wrong_type(op)),
            Value::Int(_) => return Err(self.not_a_counter(op)),
            Value::BulkString(b) => std::str::from_utf8(b).ok(),
            Value::SimpleString(s) => Some(s.as_str()),
            _ => None,
        };
        text.and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| self.unexpected(op, &reply))
    }
}

#[async_trait]
impl ReleaseNotify for RedisBackend {
    async fn release_and_notify(
        &self,
        key: &[u8],
        tok: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        let reply = self
            .script(
                &scripts::RELEASE_NOTIFY,
                &[Part::Bytes(key)],
                &[Part::Bytes(tok), release_channel(key)],
                self.deadline(),
            )
            .await?;
        match reply {
            Value::Int(2) => Ok((true, true)),
            Value::Int(1) => Ok((true, false)),
            Value::Int(0) => Ok((false, false)),
            Value::Int(scripts::WRONG_TYPE) => Err(self.wrong_type("release")),
            other => Err(self.unexpected("release", &other)),
        }
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        check_context(&self.link.id, "subscribe")?;
        if self.link.is_closed() {
            return Err(self.link.closed_error("subscribe"));
        }
        let stream = self.notifier.subscribe(key).await?;
        // Registered once subscribed: a release that sees the registration publishes to a
        // subscription that is already there.
        let reply = self
            .script(
                &scripts::WATCH_RELEASES,
                &[Part::Prefixed(redlock_core::WAITERS_KEY_PREFIX, key)],
                &[Part::Int(millis(redlock_core::redis_lua::WATCH_FOR))],
                self.deadline(),
            )
            .await?;
        self.code(&reply, "subscribe")?;
        Ok(stream)
    }
}

/// The same scripts, keys and channels as redlock-fred's: waiters of managers on either backend
/// share one queue per resource, and a release by either hands the key to the first of them.
#[async_trait]
impl Handoff for RedisBackend {
    async fn listen(&self, tok: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        check_context(&self.link.id, "listen")?;
        if self.link.is_closed() {
            return Err(self.link.closed_error("listen"));
        }
        self.notifier.listen(tok).await
    }

    async fn acquire_or_queue(
        &self,
        key: &[u8],
        tok: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError> {
        let channel = self.notifier.handoff_channel();
        let reply = self
            .script(
                &scripts::ACQUIRE_QUEUE,
                &queue_keys(key),
                &[
                    Part::Bytes(tok),
                    Part::Int(millis(ttl)),
                    Part::Int(millis(place.stay)),
                    Part::Int(millis(place.reserve)),
                    Part::Bytes(channel.as_bytes()),
                ],
                self.deadline(),
            )
            .await?;
        self.code(&reply, "acquire")
    }

    async fn release_and_hand_off(
        &self,
        key: &[u8],
        tok: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError> {
        let leaves = [Part::Bytes(tok), Part::Bytes(b"2")];
        let reply = self
            .script(
                &scripts::RELEASE_HAND_OFF,
                // The script names the queue keys itself: one key on the wire, not three.
                &[Part::Bytes(key)],
                if leaving { &leaves } else { &leaves[..1] },
                self.deadline(),
            )
            .await?;
        match reply {
            // 3: handed to a waiter; 2: deleted, and a subscriber heard the release.
            Value::Int(2 | 3) => Ok((true, true)),
            Value::Int(1) => Ok((true, false)),
            Value::Int(0) => Ok((false, false)),
            Value::Int(scripts::WRONG_TYPE) => Err(self.wrong_type("release")),
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
