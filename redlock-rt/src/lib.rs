//! The runtime pieces a [`LockManager`](redlock_core::LockManager) is built with: a
//! [`Clock`](redlock_core::Clock) that can sleep, and a [`Spawner`](redlock_core::Spawner) for
//! work that outlives a call (the release of a dropped lock, the renewals of
//! [`lock_auto`](redlock_core::LockManager::lock_auto)).
//!
//! `redlock-core` depends on no runtime; this crate holds the adapters, each behind a feature:
//!
//! - `tokio`: `tokio::TokioClock` and `tokio::TokioSpawner`;
//! - `smol`: `smol::SmolClock` (async-io's timer, which works under any executor) and
//!   `smol::SmolSpawner` (an async-executor `Executor`, which is what `smol::Executor` is).
//!
//! ```
//! # #[cfg(feature = "smol")] {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use redlock_core::{Clock, LockManager};
//! use redlock_mock::MemoryBackend;
//! use redlock_rt::smol::{SmolClock, SmolSpawner};
//!
//! let executor = Arc::new(async_executor::Executor::new());
//! let clock: Arc<dyn Clock> = Arc::new(SmolClock::new());
//! let manager = LockManager::builder(Arc::clone(&clock))
//!     .spawner(Arc::new(SmolSpawner::new(Arc::clone(&executor))))
//!     .instances(MemoryBackend::cluster(3, &clock))
//!     .build()?;
//! async_io::block_on(executor.run(async {
//!     let lock = manager.lock("job:7", Duration::from_secs(10)).await?;
//!     lock.release().await
//! }))?;
//! # }
//! # Ok::<(), redlock_core::Error>(())
//! ```
//!
//! Without a spawner a manager still works on any executor (`futures::executor::block_on`
//! included): the scoped form renews in the caller's task, and a dropped lock expires by its TTL
//! instead of being released in the background.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
pub mod smol;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
