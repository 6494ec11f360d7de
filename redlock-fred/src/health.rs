//! Failures a person can act on: why the connection is not up, what the server answered, and
//! whether the server can run this backend at all.
//!
//! fred reports a command sent while the connection is down as a plain timeout, whatever kept
//! the connection down. A task listens to fred's connection events and keeps the reason of the
//! last failed attempt (authentication refused, connection refused, timed out connecting, ...);
//! a command that fails while not connected is reported with that reason instead.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::Version;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use redlock_core::{BackendError, BackendErrorKind};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

use crate::secret::Secret;
use crate::telemetry;

/// The oldest Redis this backend runs on: `SET … NX GET` and script flags (`#!lua`) are 7.0.
const MIN_MAJOR: u64 = 7;

const UNCHECKED: u8 = 0;
const SUPPORTED: u8 = 1;
const TOO_OLD: u8 = 2;

/// Why the connection is not up, kept until the next successful connection.
#[derive(Clone)]
struct Reason {
    kind: BackendErrorKind,
    text: String,
    cause: Option<FredCause>,
}

/// The connection health of one backend, shared with its listener task.
pub(crate) struct Health {
    id: String,
    command_timeout: Duration,
    connection_timeout: Duration,
    /// Scrubbed from every message, in case a server or fred echoes one.
    secrets: Vec<Secret>,
    last_failure: Mutex<Option<Reason>>,
    /// The version check of the current connection: [`UNCHECKED`], [`SUPPORTED`] or
    /// [`TOO_OLD`] (then `incompatible` holds the message). Atomic, so a call pays one load.
    version: AtomicU8,
    incompatible: Mutex<Option<Reason>>,
    /// Woken on every connection event, for [`Health::wait_connected`].
    changed: Notify,
    /// Connections made so far (the first one is not a reconnection).
    connections: AtomicU64,
    /// The streams handed out by `LockBackend::reconnects`, told of every reconnection.
    reconnect_listeners: Mutex<Vec<UnboundedSender<()>>>,
}

impl Health {
    pub(crate) fn new(
        id: String,
        command_timeout: Duration,
        connection_timeout: Duration,
        secrets: Vec<Secret>,
    ) -> Self {
        Self {
            id,
            command_timeout,
            connection_timeout,
            secrets,
            last_failure: Mutex::new(None),
            version: AtomicU8::new(UNCHECKED),
            incompatible: Mutex::new(None),
            changed: Notify::new(),
            connections: AtomicU64::new(0),
            reconnect_listeners: Mutex::new(Vec::new()),
        }
    }

    /// A stream that yields at every reconnection (not at the first connection).
    pub(crate) fn reconnects(&self) -> UnboundedReceiver<()> {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        Self::lock(&self.reconnect_listeners).push(tx);
        rx
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        // Each holds one value written whole.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if !secret.is_empty() && text.contains(secret.expose()) {
                text = text.replace(secret.expose(), "<redacted>");
            }
        }
        text
    }

    fn cause(&self, error: &FredError) -> FredCause {
        FredCause {
            kind: format!("{:?}", error.kind()),
            message: self.scrub(error.details()),
        }
    }

    fn error(&self, op: &str, reason: &Reason) -> BackendError {
        let error = BackendError::new(reason.kind, format!("{}: {op}: {}", self.id, reason.text));
        match &reason.cause {
            Some(cause) => error.with_source(cause.clone()),
            None => error,
        }
    }

    /// Starts the listener: call before connecting, so the first attempt's failure is heard.
    pub(crate) fn listen(self: &Arc<Self>, client: &Client) -> tokio::task::JoinHandle<()> {
        let mut errors = client.error_rx();
        let mut connects = client.reconnect_rx();
        let health = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let errors = Box::pin(errors.recv());
                let connects = Box::pin(connects.recv());
                match futures::future::select(errors, connects).await {
                    futures::future::Either::Left((Ok((error, server)), _)) => {
                        health.failed(&error, server.is_some());
                    }
                    futures::future::Either::Right((Ok(_), _)) => health.connected(),
                    // Missed events: the next one tells the state again.
                    futures::future::Either::Left((Err(RecvError::Lagged(_)), _))
                    | futures::future::Either::Right((Err(RecvError::Lagged(_)), _)) => {}
                    _ => break,
                }
                health.changed.notify_waiters();
            }
        })
    }

    /// Records why a connection attempt failed (`established` false) or a connection broke.
    fn failed(&self, error: &FredError, established: bool) {
        if error.is_canceled() {
            // Our own QUIT or close.
            return;
        }
        let reason = if established {
            Reason {
                kind: BackendErrorKind::Connection,
                text: format!("connection lost: {}", self.scrub(error.details())),
                cause: Some(self.cause(error)),
            }
        } else {
            self.connect_reason(error)
        };
        telemetry::failed(&self.id, established, &reason.text);
        *Self::lock(&self.last_failure) = Some(reason);
    }

    fn connect_reason(&self, error: &FredError) -> Reason {
        let details = self.scrub(error.details());
        let (kind, text) = if is_auth(error) {
            (
                BackendErrorKind::Auth,
                format!("authentication refused by the server: {details}"),
            )
        } else {
            match error.kind() {
                ErrorKind::IO if details.to_ascii_lowercase().contains("refused") => (
                    BackendErrorKind::Connection,
                    "connection refused (is the server running, on this address and port?)"
                        .to_owned(),
                ),
                ErrorKind::Timeout => (
                    BackendErrorKind::Connection,
                    format!(
                        "timed out connecting: no connection and handshake within the connection timeout {:?}",
                        self.connection_timeout
                    ),
                ),
                ErrorKind::Protocol | ErrorKind::Parse => (
                    BackendErrorKind::Protocol,
                    format!("protocol error while connecting: {details}"),
                ),
                #[cfg(feature = "tls")]
                ErrorKind::Tls => (
                    BackendErrorKind::Connection,
                    format!("TLS handshake failed: {details}"),
                ),
                ErrorKind::Sentinel => (
                    BackendErrorKind::Connection,
                    format!("no sentinel gave a usable master: {details}"),
                ),
                _ => (
                    BackendErrorKind::Connection,
                    format!("cannot connect: {details}"),
                ),
            }
        };
        Reason {
            kind,
            text,
            cause: Some(self.cause(error)),
        }
    }

    /// A new connection: its version is checked by the next call (fred announces a connection
    /// before it records the server's version).
    fn connected(&self) {
        let earlier = self.connections.fetch_add(1, Ordering::Relaxed);
        telemetry::connected(&self.id, earlier);
        *Self::lock(&self.last_failure) = None;
        self.version.store(UNCHECKED, Ordering::Release);
        if earlier > 0 {
            // Dropped streams fall out here.
            Self::lock(&self.reconnect_listeners).retain(|tx| tx.unbounded_send(()).is_ok());
        }
    }

    fn version_reason(&self, version: Option<&Version>) -> Option<Reason> {
        // Unknown (INFO refused by an ACL, say): do not block on what we cannot tell.
        let version = version?;
        (version.major < MIN_MAJOR).then(|| Reason {
            kind: BackendErrorKind::Incompatible,
            text: format!(
                "the server runs Redis {version}; this backend needs Redis {MIN_MAJOR}.0 or later"
            ),
            cause: None,
        })
    }

    /// The error for a call to a server too old for this backend; checked once per connection,
    /// when it is up.
    pub(crate) fn incompatible(&self, client: &Client, op: &str) -> Option<BackendError> {
        match self.version.load(Ordering::Acquire) {
            SUPPORTED => None,
            TOO_OLD => Self::lock(&self.incompatible)
                .as_ref()
                .map(|reason| self.error(op, reason)),
            _ if client.is_connected() => {
                let reason = self.version_reason(client.server_version().as_ref());
                let error = reason.as_ref().map(|r| self.error(op, r));
                let verdict = if reason.is_some() { TOO_OLD } else { SUPPORTED };
                *Self::lock(&self.incompatible) = reason;
                self.version.store(verdict, Ordering::Release);
                error
            }
            _ => None,
        }
    }

    /// The error for a call that failed while the connection was not up.
    pub(crate) fn not_connected(&self, op: &str) -> BackendError {
        match Self::lock(&self.last_failure).as_ref() {
            Some(reason) => self.error(op, reason),
            None => self.error(
                op,
                &Reason {
                    kind: BackendErrorKind::Connection,
                    text: format!(
                        "not connected yet (still connecting; the connection timeout is {:?})",
                        self.connection_timeout
                    ),
                    cause: None,
                },
            ),
        }
    }

    /// Maps the error of a command: what the server said, or why there was no answer.
    pub(crate) fn command_error(
        &self,
        client: &Client,
        error: &FredError,
        op: &str,
    ) -> BackendError {
        let details = self.scrub(error.details());
        let code = details.split_whitespace().next().unwrap_or("");
        let reason = |kind, text: String| Reason {
            kind,
            text,
            cause: Some(self.cause(error)),
        };
        let reason = if code == "WRONGTYPE" {
            reason(
                BackendErrorKind::WrongType,
                "the key holds a value of another type (WRONGTYPE)".to_owned(),
            )
        } else if is_auth(error) {
            reason(
                BackendErrorKind::Auth,
                format!("authentication refused by the server: {details}"),
            )
        } else {
            match error.kind() {
                ErrorKind::Timeout if client.is_connected() => reason(
                    BackendErrorKind::Timeout,
                    format!(
                        "no reply within the command timeout {:?} (the server is slow or stopped)",
                        self.command_timeout
                    ),
                ),
                ErrorKind::Timeout | ErrorKind::Routing => return self.not_connected(op),
                // Found no connection to write the command to (see `RedisBackend::send`).
                ErrorKind::Unknown if details.starts_with("Failed to route command") => {
                    return self.not_connected(op)
                }
                ErrorKind::IO | ErrorKind::Canceled => reason(
                    BackendErrorKind::Connection,
                    format!(
                        "connection lost before the reply (the command may or may not have run): {details}"
                    ),
                ),
                ErrorKind::Protocol | ErrorKind::Parse => reason(
                    BackendErrorKind::Protocol,
                    format!("protocol error: {details}"),
                ),
                #[cfg(feature = "tls")]
                ErrorKind::Tls => reason(BackendErrorKind::Connection, format!("TLS: {details}")),
                ErrorKind::Sentinel => reason(
                    BackendErrorKind::Connection,
                    format!("no sentinel gave a usable master: {details}"),
                ),
                _ if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()) => {
                    // A Redis error code (OOM, BUSY, LOADING, MASTERDOWN, READONLY, ERR, ...).
                    // An old server refuses our commands with ERR: say why.
                    if let Some(old) = self.version_reason(client.server_version().as_ref()) {
                        old
                    } else {
                        reason(
                            BackendErrorKind::Server,
                            format!("the server refused the command: {details}"),
                        )
                    }
                }
                _ => reason(BackendErrorKind::Other, details),
            }
        };
        self.error(op, &reason)
    }

    /// Waits until the client is connected, for at most `limit`.
    pub(crate) async fn wait_up(&self, client: &Client, limit: Duration) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                let mut changed = std::pin::pin!(changed);
                changed.as_mut().enable();
                if client.is_connected() {
                    return;
                }
                // See `wait_connected`: the connected state can come without an event.
                let _ = tokio::time::timeout(Duration::from_millis(5), changed).await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Waits until the client is connected to a server that can run this backend, or the
    /// last attempt failed, for at most the connection timeout.
    pub(crate) async fn wait_connected(&self, client: &Client) -> Result<(), BackendError> {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                let mut changed = std::pin::pin!(changed);
                changed.as_mut().enable();
                if client.is_connected() {
                    return match self.version_reason(client.server_version().as_ref()) {
                        Some(old) => Err(self.error("connect", &old)),
                        None => Ok(()),
                    };
                }
                if let Some(reason) = Self::lock(&self.last_failure).as_ref() {
                    return Err(self.error("connect", reason));
                }
                // fred marks the client connected only after announcing the connection, and
                // announces nothing then: look again shortly even without an event.
                let _ = tokio::time::timeout(Duration::from_millis(10), changed).await;
            }
        };
        match tokio::time::timeout(self.connection_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(self.error(
                "connect",
                &Reason {
                    kind: BackendErrorKind::Connection,
                    text: format!(
                        "timed out connecting: not connected within the connection timeout {:?}",
                        self.connection_timeout
                    ),
                    cause: None,
                },
            )),
        }
    }
}

fn is_auth(error: &FredError) -> bool {
    let code = error.details().split_whitespace().next().unwrap_or("");
    *error.kind() == ErrorKind::Auth || matches!(code, "NOAUTH" | "WRONGPASS")
}

/// fred's error, with secrets scrubbed from its message.
#[derive(Debug, Clone)]
pub(crate) struct FredCause {
    kind: String,
    message: String,
}

impl fmt::Display for FredCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for FredCause {}
