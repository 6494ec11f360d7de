#![doc = include_str!("../README.md")]
//!
//! # Crates
//!
//! This facade re-exports [`redlock_core`] (the algorithm), [`mock`] (the in-memory backend and
//! simulation) and, with the default `fred` feature, [`fred`] (Redis and Sentinel on tokio).
//! With the `tokio` or `smol` feature, `rt` holds the clock and spawner of that runtime, for a
//! manager over any backend.
//!
//! # Features
//!
//! - `fred` (default): the Redis / Sentinel backend.
//! - `tracing` (default): spans and events through `tracing` (see "Observing it"). On by
//!   default because a loss or a failing renewal is what an operator most needs to see, and
//!   without a subscriber each span and event costs one cached check.
//! - `metrics`: counters and a histogram through the `metrics` facade (see "Observing it").
//!   Off by default: a recorder must be installed anyway, and it must be built on the same
//!   `metrics` version.
//! - `tokio`, `smol`: the runtime adapters of `redlock-rt`, as `rt`.

pub use redlock_core::*;
pub use redlock_mock as mock;

#[cfg(feature = "fred")]
pub use redlock_fred as fred;

#[cfg(any(feature = "tokio", feature = "smol"))]
pub use redlock_rt as rt;
