//! Per-call options of [`LockManager::lock_opts`](crate::LockManager::lock_opts).

use std::time::Duration;

/// How long a lock call may wait for a resource that is held.
///
/// Every form bounds the whole call, including the time spent queued behind other tasks of the
/// same manager that want the same resource (see [`LockManager::lock`](crate::LockManager::lock)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Patience {
    /// Up to this many attempts, with the manager's jittered retry delay between them; the call
    /// returns within `attempts × (2 × instance_timeout + retry_delay_max)` plus the fair grace
    /// (`4 × instance_timeout` for a fenced lock: two more rounds per attempt; likewise below).
    /// What [`LockManager::lock`](crate::LockManager::lock) does with the manager's
    /// `retry_count`.
    Attempts(u32),
    /// One attempt and no waiting: `Contended` at once when the resource is held, or when
    /// another task of this manager holds or is acquiring it (then nothing is sent). Returns
    /// within two instance timeouts (the attempt and the cleanup of a failed one; four when
    /// fenced), plus the
    /// fair grace in fair mode.
    NoWait,
    /// Keep trying until this much time has passed since the call; returns within that plus two
    /// instance timeouts, plus the fair grace in fair mode.
    For(Duration),
    /// Keep trying until the lock is acquired or the call's future is dropped.
    UntilCancelled,
}

/// Options of one lock call: the lease and how long to wait.
///
/// ```
/// use std::time::Duration;
/// use redlock_core::{LockOptions, Patience};
///
/// // A cache stampede: one task recomputes, the others do not wait for the lock.
/// let stampede = LockOptions::new(Duration::from_secs(5)).patience(Patience::NoWait);
/// // A critical section: wait as long as it takes (or until the caller gives up).
/// let critical = LockOptions::new(Duration::from_secs(10)).patience(Patience::UntilCancelled);
/// # let _ = (stampede, critical);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct LockOptions {
    /// The lease asked for.
    pub ttl: Duration,
    /// How long to wait; `None` uses the manager's `retry_count` attempts.
    pub patience: Option<Patience>,
    /// Whether the lock carries a fencing token; `None` uses the manager's default
    /// ([`LockManagerBuilder::fenced`](crate::LockManagerBuilder::fenced)).
    pub fenced: Option<bool>,
}

impl LockOptions {
    /// A lease of `ttl`, waiting as the manager's settings say.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            patience: None,
            fenced: None,
        }
    }

    /// How long to wait for a held resource.
    pub fn patience(mut self, patience: Patience) -> Self {
        self.patience = Some(patience);
        self
    }

    /// Whether the lock carries a fencing token ([`Lock::fence`](crate::Lock::fence)): two
    /// more rounds per acquire. A fenced lock on a manager whose backends keep no fencing
    /// counters fails with [`InvalidInput::NoFencing`](crate::InvalidInput::NoFencing), nothing
    /// sent.
    pub fn fenced(mut self, fenced: bool) -> Self {
        self.fenced = Some(fenced);
        self
    }
}
