//! The Redlock distributed lock: a lease held on a majority of N independent Redis masters,
//! ported from Python's [aioredlock](https://github.com/joanvila/aioredlock).
//!
//! A lock is yours until its deadline, with drift-corrected validity, jittered retries,
//! renewal while your work runs, and an error instead of silence when it is lost. The
//! algorithm runs on any async runtime (the clock, spawner and randomness are injected); the
//! Redis backend runs on tokio.
//!
//! This crate gathers the family in one dependency:
//!
//! | crate | re-exported as | feature |
//! | --- | --- | --- |
//! | [`redlock-core`](https://docs.rs/redlock-core): the algorithm, [`LockManager`], [`Lock`], [`LockBackend`] | the crate root | always |
//! | [`redlock-fred`](https://docs.rs/redlock-fred): Redis and Sentinel on the `fred` client, tokio clock and spawner | `redlock_lease::fred` | `fred` (default) |
//! | TLS (`rediss://`) through rustls, for `redlock-fred` | | `tls` (default) |
//! | [`redlock-redis`](https://docs.rs/redlock-redis): Redis on redis-rs (one multiplexed connection per instance), tokio clock and spawner | `redlock_lease::redis_rs` | `redis-rs` |
//! | [`redlock-mock`](https://docs.rs/redlock-mock): in-memory instances, virtual time, fault-injecting simulation | `redlock_lease::mock` | `mock` |
//! | spans and events through `tracing` | | `tracing` (default) |
//! | counters and a histogram through the `metrics` facade | | `metrics` |
//! | [`redlock-rt`](https://docs.rs/redlock-rt): the clock and spawner on tokio, or on the smol family (async-io, async-executor), for a manager over any backend | `redlock_lease::rt` | `tokio`, `smol` |
//!
//! `tracing` is on by default because a loss or a failing renewal is what an operator most
//! needs to see, and without a subscriber each span and event costs one cached check.
//! `metrics` is off by default: a recorder must be installed anyway, and it must be built on
//! the same `metrics` version. The spans, events and metric names are listed in
//! [`redlock-core`'s "Observing it"](https://docs.rs/redlock-core/latest/redlock_core/#observing-it).
//!
//! ```toml
//! [dependencies]
//! redlock-lease = "0.1"
//! tokio = { version = "1", features = ["rt-multi-thread", "macros"] }
//!
//! [dev-dependencies]
//! # The in-memory backend for your tests.
//! redlock-lease = { version = "0.1", features = ["mock"] }
//! ```
//!
//! Without TLS: `default-features = false, features = ["fred", "tracing"]`. Only the
//! algorithm, with a backend of your own: `default-features = false`.
//!
//! # Holding a lock
//!
//! The scoped form, the counterpart of aioredlock's `async with`, renews the lock while the
//! work runs, releases it when the work ends (also on error or panic), and stops the work with
//! [`Error::Lost`] if the lock is lost meanwhile:
//!
//! ```no_run
//! # #[cfg(feature = "fred")]
//! # async fn demo() -> Result<(), redlock_lease::Error> {
//! let manager = redlock_lease::fred::manager([
//!     "redis://127.0.0.1:7001",
//!     "redis://127.0.0.1:7002",
//!     "redis://127.0.0.1:7003",
//! ])
//! .build()?;
//!
//! let rows = manager
//!     .with_lock("reports:nightly", |lock| async move {
//!         // `lock` is a LockWatch: remaining(), is_valid(), lost(), check().
//!         42 // ... the work, renewed every 6 s on a 10 s lease ...
//!     })
//!     .await?;
//! # let _ = rows;
//! # Ok(()) }
//! ```
//!
//! The explicit calls mirror aioredlock's: [`LockManager::lock`], [`LockManager::extend`],
//! [`LockManager::unlock`], [`LockManager::is_locked`], [`LockManager::get_lock`],
//! [`LockManager::close`]. [`LockManager::with_lock`] states the exact promise about the
//! deadline, and the crate root of `redlock-core` what a Redlock lock does not protect against
//! (pauses after acquisition, server clock jumps, servers that lose keys) and how fencing
//! closes the first gap.
//!
//! Every call of the Redis backend must come from a tokio runtime with timers (`#[tokio::main]`
//! enables them); the connection forms (URLs, `(host, port)`, Sentinel, TLS, unix sockets) are
//! described in `redlock-fred`.
//!
//! # Testing code that takes locks
//!
//! With the `mock` feature, the same manager runs on in-memory instances and virtual time,
//! deterministically, and `mock::World` breaks the deployment on purpose (partitions, crashes,
//! pauses, clock skew) and checks the history for two holders at once:
//!
//! ```
//! # #[cfg(feature = "mock")]
//! # fn main() -> Result<(), redlock_lease::Error> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use redlock_lease::mock::{MemoryBackend, Simulation};
//! use redlock_lease::LockManager;
//!
//! let sim = Simulation::new();
//! let clock = sim.clock_arc();
//! let manager = LockManager::builder(Arc::clone(&clock))
//!     .instances(MemoryBackend::cluster(3, &clock))
//!     .build()?;
//! sim.run(async {
//!     let lock = manager.lock("job:7", Duration::from_secs(10)).await?;
//!     // Virtual time: no time passed, so the whole TTL minus the drift allowance is left.
//!     assert_eq!(lock.validity(), Duration::from_millis(9_898));
//!     lock.release().await
//! })?;
//! # Ok(()) }
//! # #[cfg(not(feature = "mock"))]
//! # fn main() {}
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use redlock_core::*;

/// The in-memory backend, virtual time and the simulated network: the crate `redlock-mock`.
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub use redlock_mock as mock;

/// The Redis and Sentinel backend and the tokio clock and spawner: the crate `redlock-fred`.
#[cfg(feature = "fred")]
#[cfg_attr(docsrs, doc(cfg(feature = "fred")))]
pub use redlock_fred as fred;

/// The Redis backend on redis-rs and the tokio clock and spawner: the crate `redlock-redis`.
#[cfg(feature = "redis-rs")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-rs")))]
pub use redlock_redis as redis_rs;

/// The README's Rust examples, compiled by `cargo test --doc` (never part of the docs).
#[cfg(all(doctest, feature = "fred"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The clock and spawner of the tokio or smol family: the crate `redlock-rt`.
#[cfg(any(feature = "tokio", feature = "smol"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tokio", feature = "smol"))))]
pub use redlock_rt as rt;
