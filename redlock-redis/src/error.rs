//! redis-rs errors as the core's `BackendError` kinds.

use redis::{ErrorKind, RedisError};
use redlock_core::{BackendError, BackendErrorKind};

/// Whether the error means the connection is gone (to be replaced by a new one), as opposed to
/// an answer or a timeout on a connection that may still work.
pub(crate) fn is_broken(error: &RedisError) -> bool {
    (error.is_io_error() && !error.is_timeout())
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
}

/// The kind of a failed command on an open connection.
pub(crate) fn kind(error: &RedisError) -> BackendErrorKind {
    match error.code() {
        Some("WRONGTYPE") => return BackendErrorKind::WrongType,
        Some("NOAUTH" | "WRONGPASS") => return BackendErrorKind::Auth,
        _ => {}
    }
    match error.kind() {
        ErrorKind::AuthenticationFailed => BackendErrorKind::Auth,
        ErrorKind::Io if error.is_timeout() => BackendErrorKind::Timeout,
        ErrorKind::Io => BackendErrorKind::Connection,
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => BackendErrorKind::Protocol,
        ErrorKind::Server(_) | ErrorKind::Extension => BackendErrorKind::Server,
        _ => BackendErrorKind::Other,
    }
}

/// A failed command as a `BackendError`. redis-rs's messages carry the server's reply or the
/// I/O error, never the credentials.
pub(crate) fn command(id: &str, op: &str, error: RedisError) -> BackendError {
    let kind = kind(&error);
    BackendError::new(kind, format!("{id}: {op}: {error}")).with_source(error)
}

/// A failed connection attempt: a timeout while connecting is a connection failure, not a slow
/// reply.
pub(crate) fn connecting(id: &str, error: RedisError) -> BackendError {
    let kind = match kind(&error) {
        BackendErrorKind::Timeout => BackendErrorKind::Connection,
        other => other,
    };
    let what = match kind {
        BackendErrorKind::Auth => "the server refused the credentials",
        _ => "cannot connect",
    };
    BackendError::new(kind, format!("{id}: {what}: {error}")).with_source(error)
}

/// A `Sending` polled again after it returned its reply (a bug, reported instead of a panic).
pub(crate) fn polled_after_completion() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Client,
        "redlock-redis: a request was polled after it completed",
    ))
}
