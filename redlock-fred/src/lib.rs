//! Redis and Sentinel backend for `redlock-core` on the [`fred`] client, and the core's runtime
//! traits on tokio (re-exported from `redlock-rt`).
//!
//! ```no_run
//! use std::time::Duration;
//! use redlock_fred::{Instance, RedisConfig, Sentinel};
//!
//! # async fn demo() -> Result<(), redlock_core::Error> {
//! // aioredlock: Aioredlock([('localhost', 7001), {...}, 'redis://...', Sentinel(...)])
//! let manager = redlock_fred::manager([
//!     Instance::from(("localhost", 7001)),
//!     RedisConfig::new("localhost", 7002).with_db(1).into(),
//!     "redis://localhost:7003/2".into(),
//!     Sentinel::from_url("redis://localhost:26379/4?master=leader&encoding=utf-8")?.into(),
//!     "rediss://:password@localhost:7004/0?ssl_cert_reqs=CERT_NONE".into(),
//! ])
//! .build()?;
//!
//! assert!(!manager.is_locked("resource_name").await?);
//! let lock = manager.lock("resource_name", Duration::from_secs(10)).await?;
//! assert!(lock.is_valid());
//! lock.extend().await?;
//! lock.release().await?;
//! manager.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Connection forms
//!
//! Every form of aioredlock's instance list has a Rust counterpart in [`Instance`]: a
//! `(host, port)` pair, a [`RedisConfig`], a URL string (`redis://`, `rediss://`, unix
//! sockets, aioredlock's and fred's Sentinel URLs: see [`Instance::parse`]), a [`UnixSocket`]
//! and a [`Sentinel`]. A bad URL is an
//! [`InvalidInput::Config`](redlock_core::InvalidInput::Config) error at build time.
//!
//! # Instance identity
//!
//! The manager refuses two instances that are the same server. Identity is decided without
//! the network: `host:port` with `localhost` read as `127.0.0.1`, the socket path, or the
//! Sentinel master name with its sentinel addresses. Two different host names for one server,
//! or a Sentinel master also listed directly, are not detected: list each server once.
//!
//! # Timeouts and ghost locks
//!
//! fred's own command timeout is set just below the manager's per-instance timeout. A command
//! that times out in fred is never written; a command the manager merely stops waiting for would
//! be written after the next reconnect and leave a lock key nobody releases until its TTL. fred
//! also sends each command at most once: a command whose connection drops before its reply
//! fails (the instance's vote is "no answer") instead of being sent again after the reconnect.
//!
//! # Failures
//!
//! An instance that cannot answer says why, in its [`BackendError`](redlock_core::BackendError)
//! (in [`Error::failure`](redlock_core::Error::failure)'s per-instance report): authentication
//! refused (with the server's reply), connection refused, timed out connecting, no reply to a
//! command in time, a server older than Redis 7.0, a protocol error. [`LockManager::connect`]
//! checks every instance at once at start-up.
//!
//! Every call must come from a tokio runtime with timers (`enable_all`), and the runtime of the
//! first call must stay up while the manager is used (the connections run on it). Elsewhere a
//! call fails with an error saying which of these is missing, never a panic.
//!
//! [`LockManager::connect`]: redlock_core::LockManager::connect
//!
//! # Security
//!
//! Passwords are [`Secret`]s from parsing to fred's configuration: they never appear in
//! `Debug`, `Display` or error messages of this crate, nor do the values of URL parameters other
//! than the known harmless ones (a `sentinelPassword`, a misspelt parameter). User information
//! and socket paths in URLs are percent-decoded (`+` is a plus sign, `%2B` too). TLS (the
//! default `tls` feature, rustls) verifies certificates unless told otherwise
//! ([`Tls::danger_accept_invalid_certs`], `ssl_cert_reqs=CERT_NONE`). Without the feature,
//! a TLS configuration is an error, never a silent plaintext connection.
//!
//! # Features
//!
//! - `tls` (default): TLS through rustls with the ring provider. Without it, a TLS
//!   configuration is refused when the manager is built.
//! - `tracing`: events when a connection is lost (`WARN`), re-made (`INFO`) or fails to come
//!   up (`DEBUG`), each with the instance's id.
//! - `metrics`: `redlock_backend_reconnects_total{instance}`, connections re-made after a loss.

mod backend;
mod build;
mod builder;
mod config;
mod health;
mod notify;
mod parse;
mod runtime;
mod scripts;
mod secret;
mod sentinel;
mod telemetry;
mod tls;

pub use backend::RedisBackend;
pub use build::ConnectionOptions;
pub use builder::{manager, RedisManagerBuilder};
pub use config::{Instance, RedisConfig, UnixSocket, DEFAULT_PORT, DEFAULT_SENTINEL_PORT};
pub use runtime::{TokioClock, TokioSpawner};
pub use secret::Secret;
pub use sentinel::Sentinel;
pub use tls::Tls;

/// The fred client this backend is built on, for commands of your own.
pub use fred;

/// The README's examples, compiled by `cargo test --doc` (never part of the docs).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
