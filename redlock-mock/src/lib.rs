//! An in-memory Redlock backend, virtual time, and a deterministic executor.
//!
//! Use it to test code that takes locks without running Redis, and to simulate faults
//! (crashes, partitions, pauses, clock drift) deterministically from a seed.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use redlock_core::LockManager;
//! use redlock_mock::{MemoryBackend, Simulation};
//!
//! let sim = Simulation::new();
//! let clock = sim.clock_arc();
//! let manager = LockManager::builder(Arc::clone(&clock))
//!     .instances(MemoryBackend::cluster(3, &clock))
//!     .build()?;
//! sim.run(async {
//!     let lock = manager.lock("job:7", Duration::from_secs(10)).await?;
//!     // No time passed: the whole TTL minus the drift allowance (10 s × 1 % + 2 ms).
//!     assert_eq!(lock.validity(), Duration::from_millis(9_898));
//!     lock.release().await
//! })?;
//! # Ok::<(), redlock_core::Error>(())
//! ```

pub mod check;
mod clock;
mod executor;
mod faulty;
pub mod history;
mod memory;
mod net;
mod skew;
pub mod sweep;
mod trace;
mod world;

pub use check::{CheckReport, Overlap, Violation, ViolationKind, Window};
pub use clock::{Sleep, VirtualClock};
pub use executor::{JoinHandle, Simulation, Stalled};
pub use faulty::{Faults, FaultyBackend};
pub use history::{History, OpKind, OpRecord, Outcome};
pub use memory::MemoryBackend;
pub use net::{Latency, LinkBackend, ServerStatus};
pub use skew::SkewedClock;
pub use trace::{TracedClient, TracedLock};
pub use world::{World, WorldBuilder};
