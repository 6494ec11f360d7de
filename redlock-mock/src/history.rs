//! What happened in a run, in true time: every traced lock operation and every fault.

use std::fmt::{self, Write as _};
use std::time::Duration;

use redlock_core::{Error, LossReason};

/// A lock operation, as recorded by a [`TracedClient`](crate::TracedClient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`LockManager::lock`](redlock_core::LockManager::lock).
    Lock,
    /// [`Lock::extend`](redlock_core::Lock::extend).
    Extend,
    /// [`Lock::release`](redlock_core::Lock::release).
    Release,
    /// [`Lock::check`](redlock_core::Lock::check).
    Check,
    /// The handle was dropped: the holder stopped using it (the manager releases it in the
    /// background when it has a spawner).
    Drop,
}

/// How a traced operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// [`Error::Contended`].
    Contended,
    /// [`Error::Unavailable`].
    Unavailable,
    /// [`Error::ValidityExpired`].
    ValidityExpired,
    /// [`Error::Lost`]: the loss was reported.
    Lost(LossReason),
    /// [`Error::Released`].
    Released,
    /// Any other error (closed manager, invalid input).
    Other,
}

impl Outcome {
    /// Classifies a call's result.
    #[must_use]
    pub fn of<T>(result: &Result<T, Error>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(Error::Contended(_)) => Self::Contended,
            Err(Error::Unavailable(_)) => Self::Unavailable,
            Err(Error::ValidityExpired(_)) => Self::ValidityExpired,
            Err(Error::Lost(loss)) => Self::Lost(loss.reason),
            Err(Error::Released) => Self::Released,
            Err(_) => Self::Other,
        }
    }

    /// Whether this outcome reports that the lock is (or may be) gone.
    #[must_use]
    pub fn is_loss(self) -> bool {
        matches!(self, Self::Lost(_))
    }
}

/// One traced operation. Times are true (simulation) time unless named `local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    /// The client that made the call.
    pub client: usize,
    /// Which call.
    pub op: OpKind,
    /// The resource name.
    pub resource: Vec<u8>,
    /// The traced lock this call was about (a serial number unique in the run); for a failed
    /// `lock`, a fresh serial that no other record uses.
    pub lock: u64,
    /// When the call was made.
    pub start: Duration,
    /// When it returned.
    pub end: Duration,
    /// How long it took on the client's own clock (what the documented bounds are about).
    pub local_elapsed: Duration,
    /// The documented bound on `local_elapsed`.
    pub bound: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// For a successful `lock` or `extend`: the true time at which the client's deadline
    /// passes (its clock read `deadline`, converted to true time).
    pub holds_until: Option<Duration>,
    /// Whether the client was paused at some point during the call (bounds then do not apply).
    pub paused: bool,
    /// Instances that were reachable throughout the call yet kept our token after a failed
    /// `lock` or a `release` (should be empty).
    pub leftovers: Vec<usize>,
}

/// One entry of a [`History`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A traced operation returned.
    Op(OpRecord),
    /// A fault verb was applied.
    Fault {
        /// When.
        at: Duration,
        /// What, e.g. `crash 2`.
        what: String,
    },
    /// A task panicked (recorded by the sweep; always a violation).
    Panic {
        /// When.
        at: Duration,
        /// The panic message.
        message: String,
    },
}

/// Everything recorded in one run, in the order it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The entries, in order of true time (ties in the order they were recorded).
    pub entries: Vec<Entry>,
}

impl History {
    /// The traced operations only.
    pub fn ops(&self) -> impl Iterator<Item = &OpRecord> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Op(op) => Some(op),
            _ => None,
        })
    }

    /// How many lock operations (lock, extend, release, check) were traced.
    #[must_use]
    pub fn op_count(&self) -> usize {
        self.ops().filter(|op| op.op != OpKind::Drop).count()
    }

    /// One line per entry, stable across runs: two runs of one seed must render byte for byte
    /// the same text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            // Writing to a String cannot fail.
            let _ = match entry {
                Entry::Op(op) => writeln!(out, "{op}"),
                Entry::Fault { at, what } => writeln!(out, "{:>12} fault {what}", at.as_nanos()),
                Entry::Panic { at, message } => {
                    writeln!(out, "{:>12} PANIC {message}", at.as_nanos())
                }
            };
        }
        out
    }
}

impl fmt::Display for OpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>12} c{} {:?} {} #{} -> {:?} at {}",
            self.start.as_nanos(),
            self.client,
            self.op,
            String::from_utf8_lossy(&self.resource),
            self.lock,
            self.outcome,
            self.end.as_nanos()
        )?;
        if let Some(until) = self.holds_until {
            write!(f, " until {}", until.as_nanos())?;
        }
        if self.paused {
            f.write_str(" paused")?;
        }
        if !self.leftovers.is_empty() {
            write!(f, " leftovers {:?}", self.leftovers)?;
        }
        Ok(())
    }
}
