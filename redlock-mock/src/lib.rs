//! An in-memory Redlock backend, virtual time, a simulated network with fault injection, and
//! seeded safety checkers.
//!
//! Use it to test code that takes locks without running Redis, and to find out what your code
//! does when the lock is lost: crashes, restarts, partitions, pauses, skewed clocks, all on
//! virtual time and reproducible from one `u64` seed.
//!
//! # Two levels
//!
//! - **A backend and a clock.** [`MemoryBackend`] behaves like one Redis server for the lock
//!   commands (binary keys, expiry on its own clock, `WRONGTYPE`); [`Simulation`] runs futures on
//!   a [`VirtualClock`] and jumps time forward whenever every task waits.
//! - **A world.** [`World`] wires N simulated instances to C clients, each with its own
//!   [`LockManager`](redlock_core::LockManager) whose backends are per-link handles
//!   ([`LinkBackend`]), its own [`SkewedClock`], and a network that delivers requests (FIFO per
//!   link) even when the caller stopped waiting. Release announcements
//!   ([`ReleaseNotify`](redlock_core::ReleaseNotify), behind wake-on-release and fair mode) are
//!   messages on the same links, so they are delayed, lost and cut off like the rest: a partition
//!   silences a subscription, a crash ends it. Fault verbs: [`World::partition`],
//!   [`World::heal`], [`World::crash`], [`World::restart`], [`World::restart_after`],
//!   [`World::bounce`], [`World::hang`], [`World::pause`], [`World::set_latency`],
//!   [`World::lose_replies`], [`World::inject_error`], [`World::set_instance_rate`],
//!   [`World::jump_instance_clock`].
//!
//! Calls made through [`World::traced`] are recorded in a [`History`] with their windows in true
//! time, and [`World::check`] judges them against the invariants of Redlock: no two holders'
//! windows overlap, a loss is reported once an assumption broke, nothing is left behind after a
//! failed acquire or a release, every call returns within its documented bound. The
//! [`sweep`] module runs seeded families of random scenarios over seed ranges (the managers
//! wake on release announcements, as by default, and one family puts half the clients in fair
//! mode); a violation prints the seed and the command that replays it.
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
//!
//! # Testing a job under lock loss
//!
//! ```
//! use std::time::Duration;
//! use redlock_mock::World;
//!
//! let world = World::builder().seed(42).instances(5).clients(2).build()?;
//! let ttl = Duration::from_secs(1);
//! let w = world.clone();
//! let (remaining, extended) = world.run(world.spawn_client(0, async move {
//!     let lock = w.traced(0).lock("job", ttl).await.expect("free lock");
//!     w.pause(0, ttl * 2); // a GC pause longer than the lease
//!     w.sleep(Duration::from_millis(1)).await;
//!     (lock.remaining(), lock.extend().await)
//! }));
//! assert_eq!(remaining, Duration::ZERO); // the job must stop writing here
//! assert!(extended.is_err()); // and the loss is reported
//! assert!(world.check().is_clean());
//! # Ok::<(), redlock_core::Error>(())
//! ```
//!
//! See `examples/worker_lock_loss.rs` for a worker tested against a fault script.
//!
//! # What the simulation assumes
//!
//! Redlock is safe while instance clock rates stay within the drift factor of the client's and
//! no instance loses keys while a lock relying on them is live (a crashed instance must stay down
//! longer than the largest TTL). The standard sweep stays within these assumptions and must find
//! no overlap; the adversarial sweep breaks them on purpose (restart without delay, fast clocks
//! on a majority, a clock jump) and must find one, followed by a reported loss. A pause after
//! acquisition is not an overlap by this definition (the window ends at the client's deadline),
//! but a job that keeps writing after its deadline is wrong: test it as above, and fence writes
//! at the resource.

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
pub use net::{Latency, LinkBackend, NotifyStats, ServerStatus};
pub use skew::SkewedClock;
pub use trace::{TracedClient, TracedLock};
pub use world::{World, WorldBuilder};
