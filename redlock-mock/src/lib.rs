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
//!   [`World::jump_instance_clock`]. With [`WorldBuilder::reconnect_delay`] the links also
//!   announce their reconnection after an instance restarts, and the managers' restart recovery
//!   runs; the [`recovery`] module checks it under majority restarts.
//!
//! Calls made through [`World::traced`] (`lock`, `try_lock`, `lock_opts`, `with_lock`, the
//! lock's calls, `close`) are recorded in a [`History`] with their windows in true time, and
//! [`World::check`] judges them against the invariants of Redlock: no two holders' windows
//! overlap (two tasks of one client are two holders), a loss is reported once an assumption
//! broke, nothing is left behind after a failed acquire or a release, every call returns within
//! its documented bound (for an acquire, the bound of its
//! [`Patience`](redlock_core::Patience), time queued behind the manager's other tasks
//! included), calls after a close fail with `Closed`; [`check::served`] adds that no waiter
//! waits on a free resource. The [`sweep`] module runs seeded families of random scenarios over
//! seed ranges (the managers wake on release announcements, as by default, one family puts half
//! the clients in fair mode, and one runs several tasks per client through its manager's local
//! queue); a violation prints the seed and the command that replays it.
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
//! # Checking that a scoped job stops in time
//!
//! [`with_lock`](redlock_core::LockManager::with_lock) promises to stop the job (drop its
//! future) once the lock is lost. To check that for your own job, wrap it in a [`PollLog`]
//! inside the closure: every poll of the job is recorded with the holder's clock, true time
//! and what its [`LockWatch`](redlock_core::LockWatch) had left, and [`PollLog::check`] reports
//! any poll at or after the lease's deadline, or at or after a rival's traced grant of the same
//! resource. Inject the faults you care about while it runs:
//!
//! ```
//! use std::time::Duration;
//! use redlock_mock::{PollLog, World};
//!
//! let world = World::builder().seed(7).instances(3).clients(2).build()?;
//! let log = PollLog::new(&world, 0);
//! let (w, job_log) = (world.clone(), log.clone());
//! let holder = world.spawn_client(0, async move {
//!     let (nemesis, job_world) = (w.clone(), w.clone());
//!     w.client(0)
//!         .with_lock("job", |watch| {
//!             // Renewals stall: the holder loses every instance 2 s into its job.
//!             w.spawn(async move {
//!                 nemesis.sleep(Duration::from_secs(2)).await;
//!                 nemesis.isolate(0);
//!             })
//!             .detach();
//!             job_log.wrap(watch, async move {
//!                 loop {
//!                     job_world.sleep(Duration::from_millis(3)).await; // one write per wake
//!                 }
//!             })
//!         })
//!         .await
//! });
//! let w = world.clone();
//! let rival = world.spawn_client(1, async move {
//!     let traced = w.traced(1);
//!     while traced.lock("job", Duration::from_secs(10)).await.is_err() {
//!         w.sleep(Duration::from_millis(5)).await;
//!     }
//! });
//! let (result, ()) = world.run(futures::future::join(holder, rival));
//! assert!(result.is_err()); // the lock was lost and the job stopped
//! let report = log.check();
//! assert!(report.is_clean(), "{report}"); // and never polled once it should not have been
//! # Ok::<(), redlock_core::Error>(())
//! ```
//!
//! The [`deadline`] module runs this check over seeded families whose renewals stall
//! (partitions, hung instances, slow links, fast instance clocks).
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
pub mod deadline;
mod executor;
mod faulty;
pub mod history;
mod memory;
mod net;
pub mod polls;
pub mod recovery;
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
pub use polls::{PollLog, PollRecord, PollReport, Polled};
pub use skew::SkewedClock;
pub use trace::{TracedClient, TracedLock};
pub use world::{World, WorldBuilder};
