#![doc = include_str!("../README.md")]
//!
//! # Crates
//!
//! This facade re-exports [`redlock_core`] (the algorithm), [`mock`] (the in-memory backend and
//! simulation) and, with the default `fred` feature, [`fred`] (Redis and Sentinel on tokio).

pub use redlock_core::*;
pub use redlock_mock as mock;

#[cfg(feature = "fred")]
pub use redlock_fred as fred;
