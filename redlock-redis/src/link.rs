//! One instance's connection: made lazily, replaced when it breaks, never replaying a request.
//!
//! redis-rs's `MultiplexedConnection` pipelines every concurrent call over one socket, but does
//! not reconnect. That is what the backend contract wants: a request is handed to the
//! connection on its first poll, or it is not sent at all. When the connection breaks, the
//! requests on it fail, nothing is kept for a later connection, and the next call starts a new
//! one. A server that refuses connections is tried again only after a backoff (10 ms doubling
//! up to the configured maximum); calls in between fail at once with the last error.
//!
//! Requests made while a connection is being made wait in a queue, in order, and are handed to
//! the new connection in that order before any later request (an acquire and the clean-up
//! release after it must reach the server in the order they were made, or the release finds
//! nothing and the acquire leaves a ghost key). A queued request whose deadline has passed is
//! dropped, never sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, RedisError, Value};
use redlock_core::{BackendError, BackendErrorKind};
use tokio::time::error::Elapsed;
use tokio::time::Instant;

use crate::error;
use crate::orphans::{Orphans, SendFuture};

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
    pub(crate) cached: Arc<AtomicU16>,
    /// Requests on this connection whose callers stopped waiting.
    orphans: Arc<Orphans>,
}

/// What a caller keeps of the connection its command went on: enough to record what the server
/// caches and to forget the connection if it broke, without a clone of the connection itself
/// (a handful of reference counts per command).
pub(crate) struct ConnRef {
    generation: u64,
    /// Bits of the scripts known to be in this server's script cache.
    pub(crate) cached: Arc<AtomicU16>,
}

impl Conn {
    fn handle(&self) -> ConnRef {
        ConnRef {
            generation: self.generation,
            cached: Arc::clone(&self.cached),
        }
    }
}

/// What a sent command got: its reply (a server error as `Err`), or the deadline passed.
pub(crate) type Sent = Result<Result<Value, RedisError>, Elapsed>;

/// One command on its way: once polled, it is in the connection's queue. Dropped before its
/// reply, it is finished by its connection's [`Orphans`] task, because redis-rs skips a queued
/// request whose caller is gone, and the contract wants every request polled once to reach the
/// server (the manager stops waiting once a quorum answered). The deadline still bounds it: a
/// request not written by then is dropped, never written later.
pub(crate) struct Sending {
    future: Option<SendFuture>,
    done: Option<Sent>,
    deadline: Instant,
    orphans: Arc<Orphans>,
}

impl Sending {
    /// `timed`: the command ends at `deadline` on its own. Without, whoever polls it bounds
    /// it (a manager's round, see `redlock_core::polled_by_round`); dropped before `deadline`,
    /// it still ends by then.
    fn new(conn: &Conn, cmd: Cmd, deadline: Instant, timed: bool) -> Self {
        let mut mux = conn.mux.clone();
        // The command is given back for reuse once the call ended, whatever the outcome (a
        // timeout too): redis-rs packed its own copy of the bytes when it queued the request.
        // Unconstrained: tokio's cooperative budget could otherwise make the first poll return
        // before the request is queued (its channel is budgeted), in a task that used its
        // budget up.
        let future: SendFuture = if timed {
            Box::pin(tokio::task::unconstrained(async move {
                let sent = tokio::time::timeout_at(deadline, mux.send_packed_command(&cmd)).await;
                crate::command::recycle(cmd);
                sent.map(reply)
            }))
        } else {
            // One timer fewer per command: a lock cycle sends 2N of them.
            Box::pin(tokio::task::unconstrained(async move {
                let sent = mux.send_packed_command(&cmd).await;
                crate::command::recycle(cmd);
                Ok(reply(sent))
            }))
        };
        Self {
            future: Some(future),
            done: None,
            deadline,
            orphans: Arc::clone(&conn.orphans),
        }
    }

    /// Polls once without a task to wake: puts the request in the connection's queue.
    fn start(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        if let Some(future) = self.future.as_mut() {
            if let Poll::Ready(sent) = future.as_mut().poll(&mut cx) {
                self.future = None;
                self.done = Some(sent);
            }
        }
    }
}

impl Future for Sending {
    type Output = Sent;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        if let Some(sent) = self.done.take() {
            return Poll::Ready(sent);
        }
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(Ok(Err(error::polled_after_completion())));
        };
        let sent = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(sent)
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            // Past its deadline, a request still queued is dropped unwritten (redis-rs skips a
            // request whose caller is gone); one already written needs nobody to read its reply.
            if Instant::now() >= self.deadline {
                return;
            }
            self.orphans.adopt(future, self.deadline);
        }
    }
}

/// A request waiting for the connection being made.
struct Queued {
    cmd: Cmd,
    deadline: Instant,
    timed: bool,
    reply: oneshot::Sender<Result<(Sending, ConnRef), BackendError>>,
}

enum State {
    Down {
        /// No new attempt before this (after a failed attempt).
        retry_at: Option<Instant>,
        /// The backoff after the next failed attempt.
        delay: Duration,
        last: Option<BackendError>,
    },
    Connecting {
        queue: Vec<Queued>,
        watchers: Vec<oneshot::Sender<Result<(), BackendError>>>,
    },
    Up(Conn),
    Closed,
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

/// Where a request went.
pub(crate) enum Routed {
    /// On the open connection, on its way.
    Sending(Sending, ConnRef),
    /// In the queue of the connection being made.
    Queued(oneshot::Receiver<Result<(Sending, ConnRef), BackendError>>),
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

    /// Sends the command `build` makes from the scripts the server is known to cache, on the
    /// open connection, or queues it for the connection being made (starting one if there is
    /// none, unless the last attempt failed less than its backoff ago: then the last error).
    /// Either way the request is on its way when this returns.
    pub(crate) fn route(
        self: &Arc<Self>,
        op: &str,
        build: impl FnOnce(u16) -> Cmd,
        deadline: Instant,
        timed: bool,
    ) -> Result<Routed, BackendError> {
        let mut state = self.state();
        match &mut *state {
            State::Up(conn) => {
                let cmd = build(conn.cached.load(Ordering::Acquire));
                let mut sending = Sending::new(conn, cmd, deadline, timed);
                sending.start();
                return Ok(Routed::Sending(sending, conn.handle()));
            }
            State::Connecting { queue, .. } => {
                let (reply, rx) = oneshot::channel();
                // A new connection's server is not known to cache any script.
                queue.push(Queued {
                    cmd: build(0),
                    deadline,
                    timed,
                    reply,
                });
                return Ok(Routed::Queued(rx));
            }
            State::Closed => return Err(self.closed_error(op)),
            State::Down { .. } => {}
        }
        let delay = self.backoff(&state, op, false)?;
        let (reply, rx) = oneshot::channel();
        *state = State::Connecting {
            queue: vec![Queued {
                cmd: build(0),
                deadline,
                timed,
                reply,
            }],
            watchers: Vec::new(),
        };
        self.start(delay);
        Ok(Routed::Queued(rx))
    }

    /// Connects (ignoring the backoff) unless connected; resolves once the attempt ended.
    pub(crate) fn connect(
        self: &Arc<Self>,
    ) -> Result<Option<oneshot::Receiver<Result<(), BackendError>>>, BackendError> {
        let mut state = self.state();
        let (tx, rx) = oneshot::channel();
        match &mut *state {
            State::Up(_) => return Ok(None),
            State::Connecting { watchers, .. } => {
                watchers.push(tx);
                return Ok(Some(rx));
            }
            State::Closed => return Err(self.closed_error("connect")),
            State::Down { .. } => {}
        }
        let delay = self.backoff(&state, "connect", true)?;
        *state = State::Connecting {
            queue: Vec::new(),
            watchers: vec![tx],
        };
        self.start(delay);
        Ok(Some(rx))
    }

    /// The backoff to apply if the attempt about to start fails; the last error if the last
    /// attempt failed less than its backoff ago (unless `now`).
    fn backoff(&self, state: &State, op: &str, now: bool) -> Result<Duration, BackendError> {
        let State::Down {
            retry_at,
            delay,
            last,
        } = state
        else {
            return Ok(FIRST_DELAY);
        };
        if let (Some(at), false) = (retry_at, now) {
            let left = at.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                let why = last.as_ref().map_or_else(
                    || "the last connection attempt failed".to_owned(),
                    |e| e.message().to_owned(),
                );
                let kind = last
                    .as_ref()
                    .map_or(BackendErrorKind::Connection, |e| e.kind());
                return Err(BackendError::new(
                    kind,
                    format!(
                        "{}: {op}: not connected, next attempt in {left:?} (last attempt: {why})",
                        self.id
                    ),
                ));
            }
        }
        Ok(*delay)
    }

    /// Connects in a task of its own, so that the attempt finishes (and is recorded) even when
    /// every caller waiting for it gave up; then hands the queued requests to the connection.
    fn start(self: &Arc<Self>, delay: Duration) {
        let link = Arc::clone(self);
        drop(tokio::spawn(async move {
            let result = link.open().await;
            let mut state = link.state();
            let previous = match &*state {
                State::Closed => State::Closed,
                _ => std::mem::replace(&mut *state, State::Closed),
            };
            let State::Connecting { queue, watchers } = previous else {
                // Closed meanwhile: the waiters' senders are gone with the old state.
                return;
            };
            match result {
                Ok(conn) => {
                    // In order, before the state says Up: a later request goes after these.
                    for q in queue {
                        if Instant::now() >= q.deadline {
                            drop(
                                q.reply
                                    .send(Err(timed_out(&link.id, "not connected in time"))),
                            );
                            continue;
                        }
                        let mut sending = Sending::new(&conn, q.cmd, q.deadline, q.timed);
                        sending.start();
                        // A caller that is gone leaves the request to finish on its own.
                        drop(q.reply.send(Ok((sending, conn.handle()))));
                    }
                    for w in watchers {
                        drop(w.send(Ok(())));
                    }
                    *state = State::Up(conn);
                }
                Err(e) => {
                    for q in queue {
                        drop(q.reply.send(Err(e.clone())));
                    }
                    for w in watchers {
                        drop(w.send(Err(e.clone())));
                    }
                    *state = State::Down {
                        retry_at: Some(Instant::now() + delay),
                        delay: (delay * 2).min(link.max_delay),
                        last: Some(e),
                    };
                }
            }
        }));
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
            orphans: Arc::new(Orphans::new()),
        })
    }

    /// Forgets `conn` after it failed as a connection: the next call makes a new one. Nothing
    /// sent on it is sent again.
    pub(crate) fn broken(&self, conn: &ConnRef) {
        let mut state = self.state();
        if matches!(&*state, State::Up(c) if c.generation == conn.generation) {
            *state = State::Down {
                retry_at: None,
                delay: FIRST_DELAY,
                last: None,
            };
        }
    }

    /// Drops the connection (redis-rs stops its task once the last clone is gone) and fails
    /// the queued requests.
    pub(crate) fn close(&self) {
        *self.state() = State::Closed;
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(*self.state(), State::Closed)
    }
}

pub(crate) fn timed_out(id: &str, what: &str) -> BackendError {
    BackendError::new(BackendErrorKind::Timeout, format!("{id}: {what}"))
}

/// A single command's reply, with a server error as `Err`.
pub(crate) fn reply(result: Result<Value, RedisError>) -> Result<Value, RedisError> {
    match result? {
        Value::ServerError(e) => Err(e.into()),
        other => Ok(other),
    }
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
