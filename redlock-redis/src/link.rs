//! One instance's connection: made lazily, replaced when it breaks, never replaying a request.
//!
//! redis-rs's `MultiplexedConnection` pipelines every concurrent call over one socket, but does
//! not reconnect. That is what the backend contract wants: a request is handed to the
//! connection on its first poll, or it is not sent at all. When the connection breaks, the
//! requests on it fail, nothing is kept for a later connection, and the next call starts a new
//! one. A server that refuses connections is tried again only after a backoff (10 ms doubling
//! up to the configured maximum); calls in between fail at once with the last error.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, RedisError, Value};
use redlock_core::{BackendError, BackendErrorKind};
use tokio::time::Instant;

use crate::error;

/// The first delay before trying again a server that refused a connection.
const FIRST_DELAY: Duration = Duration::from_millis(10);

/// redis-rs's queue between callers and the connection's task. A call waits for room in it,
/// and the contract wants every call on its way after its first poll: large enough that the
/// manager's default in-flight limit (1 024 calls per instance) never fills it.
pub(crate) const PIPELINE_BUFFER: usize = 1 << 16;

/// The oldest server whose commands the backend needs: `SET ... NX GET` and script shebangs are
/// Redis 7.0.
const MIN_MAJOR: u32 = 7;

/// One open connection, with what the backend learnt about its server.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) mux: MultiplexedConnection,
    generation: u64,
    /// Bits of the scripts known to be in this server's script cache.
    pub(crate) cached: Arc<AtomicU8>,
}

type Pending = Shared<BoxFuture<'static, Result<Conn, BackendError>>>;

enum State {
    Down {
        /// No new attempt before this (after a failed attempt).
        retry_at: Option<Instant>,
        /// The backoff after the next failed attempt.
        delay: Duration,
        last: Option<BackendError>,
    },
    Connecting(Pending),
    Up(Conn),
    Closed,
}

/// A connection to use now, or one on its way.
pub(crate) enum Ready {
    Now(Conn),
    Later(Pending),
}

pub(crate) struct Link {
    pub(crate) id: Arc<str>,
    client: Client,
    config: AsyncConnectionConfig,
    connection_timeout: Duration,
    max_delay: Duration,
    state: Mutex<State>,
    generations: AtomicU64,
}

impl Link {
    pub(crate) fn new(
        id: Arc<str>,
        client: Client,
        connection_timeout: Duration,
        max_delay: Duration,
    ) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connection_timeout))
            // The backend bounds every operation itself, one timer per call.
            .set_response_timeout(None)
            .set_pipeline_buffer_size(PIPELINE_BUFFER);
        Self {
            id,
            client,
            config,
            connection_timeout,
            max_delay,
            state: Mutex::new(State::Down {
                retry_at: None,
                delay: FIRST_DELAY,
                last: None,
            }),
            generations: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every transition writes a whole state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn closed_error(&self, op: &str) -> BackendError {
        BackendError::new(
            BackendErrorKind::Closed,
            format!("{}: {op}: backend closed", self.id),
        )
    }

    /// The connection, or the attempt making it. Starts an attempt when there is none, unless
    /// the last one failed less than its backoff ago (then the last error, at once); `now`
    /// ignores the backoff (an explicit `connect`).
    pub(crate) fn get(self: &Arc<Self>, op: &str, now: bool) -> Result<Ready, BackendError> {
        let mut state = self.state();
        let delay = match &*state {
            State::Up(conn) => return Ok(Ready::Now(conn.clone())),
            State::Connecting(pending) => return Ok(Ready::Later(pending.clone())),
            State::Closed => return Err(self.closed_error(op)),
            State::Down {
                retry_at,
                delay,
                last,
            } => {
                if let (Some(at), false) = (retry_at, now) {
                    if Instant::now() < *at {
                        let why = last.as_ref().map_or_else(
                            || "the last connection attempt failed".to_owned(),
                            |e| e.message().to_owned(),
                        );
                        let kind = last
                            .as_ref()
                            .map_or(BackendErrorKind::Connection, |e| e.kind());
                        return Err(BackendError::new(
                            kind,
                            format!("{}: {op}: not connected, next attempt in {:?} (last attempt: {why})", self.id, at.saturating_duration_since(Instant::now())),
                        ));
                    }
                }
                *delay
            }
        };
        let pending = self.start(delay);
        *state = State::Connecting(pending.clone());
        Ok(Ready::Later(pending))
    }

    /// Connects in a task of its own, so that the attempt finishes (and is recorded) even when
    /// every caller waiting for it gave up.
    fn start(self: &Arc<Self>, delay: Duration) -> Pending {
        let link = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = link.open().await;
            let mut state = link.state();
            if matches!(*state, State::Closed) {
                return Err(link.closed_error("connect"));
            }
            *state = match &result {
                Ok(conn) => State::Up(conn.clone()),
                Err(e) => State::Down {
                    retry_at: Some(Instant::now() + delay),
                    delay: (delay * 2).min(link.max_delay),
                    last: Some(e.clone()),
                },
            };
            result
        });
        let id = Arc::clone(&self.id);
        async move {
            task.await.unwrap_or_else(|_| {
                Err(BackendError::new(
                    BackendErrorKind::Other,
                    format!("{id}: the connection task ended before connecting (its tokio runtime shut down)"),
                ))
            })
        }
        .boxed()
        .shared()
    }

    async fn open(&self) -> Result<Conn, BackendError> {
        let attempt = async {
            let mut mux = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
                .map_err(|e| error::connecting(&self.id, e))?;
            // Also finds a password the server wants but was not given (NOAUTH).
            let info = reply(
                mux.send_packed_command(redis::cmd("INFO").arg("server"))
                    .await,
            )
            .map_err(|e| error::connecting(&self.id, e))?;
            check_version(&self.id, &info)?;
            Ok(mux)
        };
        let mux = tokio::time::timeout(self.connection_timeout, attempt)
            .await
            .map_err(|_| {
                BackendError::new(
                    BackendErrorKind::Connection,
                    format!(
                        "{}: cannot connect: no connection within {:?}",
                        self.id, self.connection_timeout
                    ),
                )
            })??;
        Ok(Conn {
            mux,
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            cached: Arc::default(),
        })
    }

    /// Forgets `conn` after it failed as a connection: the next call makes a new one. Nothing
    /// sent on it is sent again.
    pub(crate) fn broken(&self, conn: &Conn) {
        let mut state = self.state();
        if matches!(&*state, State::Up(c) if c.generation == conn.generation) {
            *state = State::Down {
                retry_at: None,
                delay: FIRST_DELAY,
                last: None,
            };
        }
    }

    /// Drops the connection (redis-rs stops its task once the last clone is gone).
    pub(crate) fn close(&self) {
        *self.state() = State::Closed;
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(*self.state(), State::Closed)
    }
}

/// A single command's reply, with a server error as `Err`.
pub(crate) fn reply(result: Result<Value, RedisError>) -> Result<Value, RedisError> {
    match result? {
        Value::ServerError(e) => Err(e.into()),
        other => Ok(other),
    }
}

/// Sends `cmd` on `conn` (on its way once this is polled), up to `deadline`.
pub(crate) async fn send(
    conn: &mut Conn,
    cmd: &Cmd,
    deadline: Instant,
) -> Result<Result<Value, RedisError>, tokio::time::error::Elapsed> {
    tokio::time::timeout_at(deadline, conn.mux.send_packed_command(cmd))
        .await
        .map(reply)
}

fn check_version(id: &str, info: &Value) -> Result<(), BackendError> {
    let text = match info {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim);
    let major = version.and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    match major {
        Some(m) if m >= MIN_MAJOR => Ok(()),
        _ => Err(BackendError::new(
            BackendErrorKind::Incompatible,
            format!(
                "{id}: Redis {} cannot serve locks: redlock-redis needs Redis 7.0 or later (SET NX GET, script shebangs)",
                version.unwrap_or("of unknown version")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_before_7_are_incompatible() {
        let info =
            |v: &str| Value::BulkString(format!("# Server\r\nredis_version:{v}\r\n").into_bytes());
        assert!(check_version("x", &info("7.0.15")).is_ok());
        assert!(check_version("x", &info("8.4.0")).is_ok());
        for old in ["6.2.14", "5.0.0", "garbage"] {
            let e = check_version("x", &info(old)).expect_err(old);
            assert_eq!(e.kind(), BackendErrorKind::Incompatible);
        }
        assert!(check_version("x", &Value::Nil).is_err());
    }
}
