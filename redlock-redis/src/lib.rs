//! Redis backend for `redlock-core` on [redis-rs](https://docs.rs/redis) (the `redis` crate):
//! one multiplexed tokio connection per instance.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), redlock_core::Error> {
//! let manager = redlock_redis::manager([
//!     "redis://localhost:7001",
//!     "redis://localhost:7002/1",
//!     "redis://app:s3cret@localhost:7003",
//! ])
//! .build()?;
//! manager.connect().await?; // optional: finds a wrong password or address now
//! let lock = manager.lock("resource_name", Duration::from_secs(10)).await?;
//! lock.extend().await?;
//! lock.release().await?;
//! manager.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Which backend
//!
//! This crate and `redlock-fred` implement the same contract with the same keys, scripts and
//! release-announcement channels: managers on either, and aioredlock clients, can share the
//! same servers. This one is lighter per call (redis-rs shares socket writes between concurrent
//! scripts; see the repository's `BENCHMARKS.md`, section "redis-rs backend"), and fits an
//! application that already uses redis-rs. `redlock-fred` adds Sentinel, aioredlock's
//! URL and instance forms, and reconnection in the background.
//!
//! # Connections
//!
//! Each backend makes one connection for commands and, on the first contended lock, one for
//! release announcements and hand-offs, lazily, on the tokio runtime of the call that needs it.
//! Every call must come from a tokio runtime with timers (`enable_all`). A broken connection
//! fails the calls on it and is replaced by the next call; a server that refuses connections is
//! retried after a backoff (10 ms doubling up to [`ConnectionOptions::with_reconnect_max_delay`]).
//!
//! # Timeouts and ghost locks
//!
//! Every operation ends within the command timeout from its first poll, which
//! [`RedisManagerBuilder`] sets 10 % below the manager's per-instance timeout. A request not yet
//! written by then is dropped, never kept for a later connection: a lock request written after
//! the manager gave up would leave a key nobody releases until its TTL. Each request is sent
//! once: nothing is re-sent after a connection drops.
//!
//! # Security
//!
//! Passwords never appear in `Debug` or error messages of this crate; an invalid URL's error
//! shows its scheme only. Without the `tls` feature a `rediss://` URL is refused when the backend
//! is built, never connected to in plaintext.
//!
//! # Features
//!
//! - `tls`: `rediss://` through rustls (redis-rs's `tokio-rustls-comp`), with the system's root
//!   certificates, or your own through [`RedisBackend::from_client`] and redis-rs's
//!   `Client::build_with_tls`.

mod backend;
mod builder;
mod command;
mod config;
mod error;
mod handoff;
mod link;
mod notify;
mod options;
mod orphans;
mod scripts;

pub use backend::RedisBackend;
pub use builder::{manager, RedisManagerBuilder};
pub use options::ConnectionOptions;
pub use redlock_rt::tokio::{TokioClock, TokioSpawner};

/// The redis-rs crate this backend is built on.
pub use redis;
