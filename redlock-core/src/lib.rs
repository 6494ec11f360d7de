//! The Redlock algorithm over an abstract [`LockBackend`]: a lease held on a majority of N
//! independent instances, with drift-corrected validity, jittered retries and honest errors.
//!
//! This crate has no async runtime and no Redis client. It needs:
//! - N backends (`redlock-fred` for Redis and Sentinel, `redlock-mock` for an in-memory one);
//! - a [`Clock`] (tokio's in `redlock-fred`, a virtual one in `redlock-mock`).
//!
//! The main way to use a lock is the scoped form: renewed while the work runs, released when it
//! ends (also on error or panic), and the work is stopped with [`Error::Lost`] if the lock is lost.
//!
//! ```no_run
//! use std::time::Duration;
//! use redlock_core::{Error, LockManager};
//!
//! async fn work(manager: &LockManager) -> Result<u32, Error> {
//!     manager
//!         .with_lock("invoice:42", |lock| async move {
//!             // `lock.remaining()`, `lock.lost()` and `lock.check()` are at hand here.
//!             7
//!         })
//!         .await
//! }
//!
//! // The explicit calls, as in aioredlock:
//! async fn explicit(manager: &LockManager) -> Result<(), Error> {
//!     let lock = manager.lock("invoice:42", Duration::from_secs(10)).await?;
//!     assert!(lock.is_valid());
//!     assert!(manager.is_locked("invoice:42").await?);
//!     lock.extend().await?; // another 10 s, if a quorum agrees
//!     lock.release().await?; // Err(Error::Lost(..)) if it ran out meanwhile
//!     Ok(())
//! }
//! ```
//!
//! # The algorithm
//!
//! One acquire attempt samples `T1` on the monotonic clock, sends the acquire to all N instances
//! at once (each bounded by the per-instance timeout), and succeeds when at least `N/2 + 1`
//! accepted and `validity = ttl − (now − T1) − (ttl × drift_factor + 2 ms)` is above zero. The
//! lock then stands until `T1 + ttl − drift` on this client's clock. The attempt returns as
//! soon as its outcome is decided. A failed attempt is released on every instance that may hold
//! its key (a timed-out request may still have landed; an instance that said no wrote nothing),
//! then a random delay in `[retry_delay_min, retry_delay_max]` separates it from the next one.
//! Extend follows the same rules with a fresh `T1`; release sends a compare-and-delete to every
//! instance and, with a spawner, returns once a quorum has answered.
//!
//! # Hand-offs under contention
//!
//! When every backend supports [`Handoff`] (both Redis backends do), a refused call queues on
//! each instance (its first refusal takes a place at once with a second attempt), and a release
//! sets the key to the first live waiter's token instead of deleting it, telling that waiter
//! alone. What the queue changes is who gets the lock when: one waiter per release instead of
//! every waiter of every process, in queue order, and no taking back of a release by the
//! process that made it.
//!
//! Where the backends promise that a hand-off is a grant ([`Handoff::grants_by_hand_off`]; both
//! Redis backends and the in-memory one do), the queue place asks for the lock's TTL, and a
//! quorum of hand-offs *is* the waiter's acquisition, with no round of its own: one message
//! from each instance instead of a release, a message and an acquire round. It is an
//! acquisition by the rules above, with `T1` moved earlier: each of those keys was set to the
//! waiter's token, for the TTL, by an instance that had already received the waiter's queueing
//! request, so after the start `T0` of the round that first queued the call; the lock stands
//! until `T0 + ttl − drift`. Two conditions keep that true. Hand-offs count only from instances
//! to which the call never sent a release of the key (a cleanup still on its way could land
//! after the hand-off and undo it; to keep those few, a refused attempt of a call that waits
//! for hand-offs waits for every answer, up to the instance timeout, so that it cleans up only
//! where an instance did not say no; `try_lock` still stops at the decision). And a
//! hand-off that comes so late that the lease would already be due for renewal (60 % of the
//! TTL after `T0`) only wakes an ordinary attempt, whose acquire of a key that already holds
//! its token resets the expiry from that attempt, as with backends that do not promise it.
//!
//! A hand-off message that finds no call waiting for its token is passed on, so that a waiter
//! that went away costs the next one nothing. The pass-on must never release a key that a lock
//! holds: the instance remembers which token a key is reserved for until that token's acquire
//! claims it, and the pass-on releases only such an unclaimed reservation (a message can
//! arrive after the acquire it led to, on another connection). A lock taken by hand-offs never
//! claims its keys that way; it needs no claim, since each instance hands a token over once per
//! queue place and the lock keeps its call's listeners until it is released or lost: the
//! messages it counted were delivered, and a later one can only come from an instance outside
//! its quorum. A call that stops waiting leaves the queues (a hand-off release with its own
//! token), giving back any key handed to it.
//!
//! A lock taken by hand-offs has the validity left since its call first queued: at least 40 %
//! of the TTL less the drift (a later hand-off makes an attempt instead), not the nearly whole
//! TTL of a lock just granted by a round. [`Lock::validity`] and [`Lock::remaining`] report it,
//! and renewals are due accordingly.
//!
//! The cost of grants is liveness, not safety: a key handed to a waiter that does not take it
//! stays with that waiter for the TTL instead of a short reserve. That happens when its process
//! hangs while still connected (as a holder that hangs would keep the lock), and when a
//! hand-off message is lost and the waiter's call has ended: a subscriber connection that
//! drops messages or stopped reading, a pass-on or a leave that fails or times out, or a
//! cancelled call's leave with no spawner to run it. A waiter still waiting takes such a key at
//! its next attempt, which finds its own token.
//!
//! # The deadline
//!
//! A lock is yours until its deadline, `T1 + ttl − drift` on the manager's monotonic clock.
//! [`LockManager::with_lock`] checks it before every poll of the work and wakes at it, so the
//! work is never polled after the deadline, whatever the renewal is doing; renewal starts early
//! enough that a whole round fits before the deadline, and every renewal round is cut at it.
//! Once [`Lock::is_valid`] returns `false` it stays `false`. See [`LockManager::with_lock`] for
//! the exact promise and its limit (a step already running, a paused process).
//!
//! # What this lock does not protect against
//!
//! A Redlock lock is a lease: it is safe while its assumptions hold, and this library tells you
//! when it knows they broke, but it cannot stop everything.
//!
//! - **Pauses after acquisition.** A process that stops (GC, swap, `SIGSTOP`, a long blocking
//!   call) after checking [`Lock::remaining`] can wake after its lease ran out and write to the
//!   protected resource while another client holds the lock. No client-side check closes this
//!   window; the next extend, release or check reports [`Error::Lost`], but the write is done.
//! - **Clock jumps on a server.** Redis expires keys on its own wall clock. A server whose clock
//!   jumps forward expires the key early, and a rival can then win a majority. The drift factor
//!   covers rate differences (1 % by default), not jumps.
//! - **Servers that lose keys.** An instance restarted without persistence, or a replica
//!   promoted before it received the key, forgets the lock. Safety holds only if such a server
//!   stays out of the quorum for longer than the largest TTL (delayed restart). What the client
//!   can do it does: when a backend reports that its connection came back
//!   ([`LockBackend::reconnects`]), every lock held there is re-checked at once, a missing key
//!   is set again, and a lock no longer on a quorum is reported lost
//!   ([`LossReason::InstancesLost`]) one reconnection and one round after the restart instead of
//!   at its next renewal (see [`LockManagerBuilder::restart_recovery`]). Between the restart
//!   and the reconnection a rival can already hold the lock; only fencing covers that window.
//!
//! **Fencing** closes the first gap: have the protected resource reject writes from a holder
//! older than the newest one it has seen. Redlock tokens are random; ask for fenced locks
//! (below) to get a number that grows with every grant, or use the lock only where an
//! occasional double holder is harmless (efficiency, not correctness).
//!
//! # Fencing tokens
//!
//! With [`LockManagerBuilder::fenced`] (every lock of a manager) or [`LockOptions::fenced`]
//! (one call), a lock carries a fence, [`Lock::fence`] (and [`LockWatch::fence`]): for two
//! grants A and B of one resource where A was handed out before B was granted,
//! `fence(B) > fence(A)`. The protected resource keeps the highest fence it has seen and refuses
//! a write with a lower one (the README shows a Redis script that does it).
//!
//! **Protocol.** Each instance keeps a counter per lock key `k`, under
//! [`fence_key`]`(k)` = [`FENCE_KEY_PREFIX`] + `k`, without expiry ([`Fencing`] is the backend
//! capability). A fenced acquire is three rounds:
//! 1. the ordinary acquire (unchanged);
//! 2. on every instance, atomically: if `k` holds our token, increment the counter and return
//!    it. A quorum of values is needed; the candidate is their maximum;
//! 3. on every instance, `counter = max(counter, candidate)`. A quorum of acks is needed.
//!
//! Round 2 waits for every instance (within the per-instance timeout). Between rounds 2 and 3
//! the counters of the instances that answered without a value (they do not hold our key) are
//! read with `inspect`, and the candidate is raised to one more than the largest counter read. That only ever raises the candidate, so the argument
//! below is unchanged; it lets a single instance that kept its counter through a majority
//! restarted empty keep the fences growing.
//!
//! Only then is the lock handed out, with the candidate as its fence. Validity is `ttl −` the
//! time of all three rounds `−` the drift allowance; a round without a quorum, or out of time,
//! fails the attempt, which is cleaned up and retried like any other.
//!
//! **Why fences grow.** Let A be handed out before B is granted. B's round-2 quorum and A's
//! round-3 quorum are both majorities, so they share an instance m. B's increment at m runs
//! after B's grant, so after A's hand-out, so after A's raise landed at m: the value B reads
//! there exceeds fence(A), and B's candidate is at least that. Round 3 is what makes this work:
//! with the increment alone, quorums that differ let counters diverge, and two grants can get
//! the same value (N = 3: grants on {1,2}, {1,3}, {1,2}, then {2,3} draw 1, 2, 3 and 3).
//!
//! **What it needs: counters that are never lost.** The argument assumes m still has its
//! counter. A restart delayed past the largest TTL keeps the *locks* safe (every lock the
//! instance held has expired by then) but not the counters, which carry history older than any
//! TTL: an instance that comes back empty counts from 0, and if B's quorum meets A's only there,
//! fence(B) ≤ fence(A). Each instance must keep every acknowledged write across crashes: Redis
//! AOF with `appendfsync always` (`everysec` survives a killed process, not a host crash); a
//! failover to a replica that missed the last writes loses them the same way. The
//! counters are one small key per fenced resource per instance, kept forever.
//!
//! The manager refuses (as [`InvalidInput::ReservedKey`], touching no instance) every lock key
//! that starts with [`RESERVED_KEY_PREFIX`] (which [`FENCE_KEY_PREFIX`] extends); its first byte, `0xFF`, never occurs in UTF-8, so
//! clients that name resources with strings (aioredlock) never meet it. A fenced lock on a
//! manager whose backends keep no counters fails with [`InvalidInput::NoFencing`], also touching
//! nothing. [`LockManager::get_lock`] rebuilds handles without a fence.
//!
//! # Observing it
//!
//! Two optional features report what the manager does; with both off, neither code nor
//! dependency is added.
//!
//! **`tracing`**: one span per call, at `DEBUG`, named `redlock.lock` (every `lock`, `try_lock`,
//! `lock_opts`, and through them `lock_auto` and `with_lock`), `redlock.extend` (explicit and
//! renewals), `redlock.release` and `redlock.check`. Fields: `resource` (lossy UTF-8, at most
//! 128 bytes), `token` (its first 8 characters only: the whole token would let a reader release
//! the lock), `ttl_ms`, `attempts` (lock), `outcome` (the `outcome` words of the table below,
//! or `cancelled` when the call's future was dropped), `reason` (of a loss), `elapsed_us` (on the
//! manager's clock), `validity_ms` (granted; `remaining_ms` for a check) and, on failure,
//! `instances` (`id=outcome` per instance: `succeeded`, `refused`, `not_awaited`, or an error
//! `kind` of the table). Events: `lock lost` (`WARN`; `reason`, once per lock however it was
//! found), `lock renewal failed` (`WARN`; `outcome`, `retrying`), `background renewal stopped`
//! (`WARN`, from [`LockManager::lock_auto`]'s task, whose result nobody awaits), `fair mode:
//! letting a waiter go first` (`DEBUG`), `acquire attempt failed` (`DEBUG`; `attempt`,
//! `instances`) and `instance gave no answer` (`DEBUG`; `instance`, `kind`). `redlock-fred`'s
//! own `tracing` feature adds its connection events (lost, re-made). While the level in force
//! (`tracing`'s `LevelFilter::current()`) is below `DEBUG` and `metrics` is off, a
//! call neither builds its span nor reads the clock to time itself: the level is looked at on
//! each call, so a subscriber installed later is seen by the next one.
//!
//! **`metrics`**: through the `metrics` facade, for whatever recorder the application installs.
//! Resource names are never labels (their number has no bound); instance ids are (one per
//! configured instance).
//!
//! | name | type | labels | what is counted |
//! | --- | --- | --- | --- |
//! | `redlock_acquisitions_total` | counter | `outcome`: `acquired`, `contended`, `unavailable`, `validity_expired`, `closed`, `cancelled` | lock calls (`lock`, `try_lock`, `lock_opts`, `lock_auto`, `with_lock`) whose arguments were valid, by result |
//! | `redlock_acquire_duration_seconds` | histogram | `outcome`, as above | time from such a call to its result, local queue and retries included, on the manager's clock |
//! | `redlock_acquire_attempts_total` | counter | `outcome`: `acquired`, `contended` (contention: holders refused), `unavailable`, `validity_expired` | acquire rounds sent to the instances |
//! | `redlock_losses_total` | counter | `reason`: `expired`, `not_held`, `instances_lost` | locks lost, once per lock, whether found by a renewal, an extend, a check, a release, a reconnection re-check or the deadline |
//! | `redlock_renewal_failures_total` | counter | `error`: `unavailable`, `validity_expired`, `lost` | renewal rounds that failed ([`Lock::keep_alive`], [`LockManager::lock_auto`], [`LockManager::with_lock`]); `lost` ends the renewals, the others are retried |
//! | `redlock_instance_errors_total` | counter | `instance` (the backend's [`id`](LockBackend::id)); `kind`: `connection`, `timeout`, `wrong_type`, `server`, `auth`, `incompatible`, `protocol`, `closed`, `other` (the [`BackendErrorKind`]), `timed_out` (no answer within the per-instance timeout), `saturated` (not sent: too many calls in flight) | calls to one instance, in any round, that brought no answer |
//! | `redlock_fair_yields_total` | counter | none | acquires that stepped aside in fair mode to let a waiter go first |
//! | `redlock_handed_over_total` | counter | none | acquires that took a quorum of hand-offs as their acquisition, with no round of their own ([`Handoff::grants_by_hand_off`]) |
//! | `redlock_backend_reconnects_total` | counter | `instance` | `redlock-fred` with its `metrics` feature: connections re-made after one was lost |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod conformance;
mod connect;
mod engine;
mod error;
mod gate;
mod holders;
mod inbox;
mod lease;
mod lifecycle;
mod lock;
mod manager;
mod options;
mod queue;
pub mod redis_lua;
mod round;
mod runtime;
mod scoped;
mod telemetry;
#[cfg(test)]
mod test_util;
mod validity;
mod wait;

pub use backend::{
    fence_key, queue_keys, BackendError, BackendErrorKind, Fencing, Handoff, KeyState, LockBackend,
    QueuePlace, ReleaseNotify, FENCE_KEY_PREFIX, QUEUE_KEY_PREFIX, RESERVED_KEY_PREFIX,
    WAITERS_KEY_PREFIX,
};
pub use config::{
    Config, LockManagerBuilder, DEFAULT_DRIFT_FACTOR, DEFAULT_INSTANCE_TIMEOUT,
    DEFAULT_INTERNAL_LOCK_TIMEOUT, DEFAULT_MAX_IN_FLIGHT, DEFAULT_RETRY_COUNT,
    DEFAULT_RETRY_DELAY_MAX, DEFAULT_RETRY_DELAY_MIN, MAX_FAIR_GRACE, MAX_RETRY_DELAY,
};
pub use error::{Error, Failure, InstanceOutcome, InstanceReport, InvalidInput, Loss, LossReason};
pub use inbox::TaskInbox;
pub use lease::RENEW_AFTER_PERCENT;
pub use lifecycle::{AutoExtend, LockWatch, OnLoss};
pub use lock::Lock;
pub use manager::{ActiveLock, CloseReport, LockManager, MAX_KEY_LEN, MAX_TOKEN_LEN};
pub use options::{LockOptions, Patience};
pub use round::polled_by_round;
pub use runtime::{Clock, OsRandom, RandomSource, SeededRandom, Spawner};
pub use validity::{DRIFT_FLOOR, MAX_TTL};
pub use wait::DEFAULT_FAIR_GRACE;

/// Re-exported so backends implement [`LockBackend`] with the same macro version.
pub use async_trait::async_trait;

#[cfg(test)]
mod send_sync {
    use super::*;

    fn is_send_sync<T: Send + Sync>() {}
    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn handles_are_send_and_sync() {
        is_send_sync::<LockManager>();
        is_send_sync::<Lock>();
        is_send_sync::<Error>();
    }

    #[allow(dead_code)]
    fn futures_are_send(m: &LockManager, l: &Lock) {
        is_send(&m.lock("r", std::time::Duration::from_secs(1)));
        is_send(&m.is_locked("r"));
        is_send(&m.get_lock("r", "t"));
        is_send(&m.close());
        is_send(&l.extend());
        is_send(&l.release());
        is_send(&l.check());
    }
}

/// The README's examples, compiled by `cargo test --doc` (never part of the docs).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
