//! What happened in a run, in true time: every traced lock operation and every fault.

use std::fmt::{self, Write as _};
use std::time::Duration;

use redlock_core::{Error, LossReason, Patience};

/// A lock operation, as recorded by a [`TracedClient`](crate::TracedClient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// An acquire: [`LockManager::lock`](redlock_core::LockManager::lock),
    /// [`try_lock`](redlock_core::LockManager::try_lock),
    /// [`lock_opts`](redlock_core::LockManager::lock_opts), or the acquire of
    /// [`with_lock`](redlock_core::LockManager::with_lock) (recorded when its job is first
    /// polled); [`OpRecord::patience`] tells which.
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
    /// The job of a scoped lock ([`with_lock`](crate::TracedClient::with_lock)) saw at one of
    /// its polls that its lease had been renewed: the manager's renewals are internal, so the
    /// holder's window is extended when its job learns of them.
    Renewed,
    /// [`LockManager::close`](redlock_core::LockManager::close). It ends the windows of every
    /// lock of its client; every call the client starts after it must fail with `Closed`, and
    /// every acquire of the client in progress at its start must end within its
    /// [`bound`](OpRecord::bound), granting nothing.
    Close,
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
    /// [`Error::Closed`]: the manager was closed.
    Closed,
    /// The caller dropped the call's future before it returned (a timeout of its own, a
    /// `select`): the call was told nothing, and nothing was granted to it.
    Cancelled,
    /// Any other error (invalid input).
    Other,
}

impl Outcome {
    /// Classifies a call's result.
    #[must_use]
    pub fn of<T>(result: &Result<T, Error>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(e) => Self::of_error(e),
        }
    }

    /// Classifies an error.
    #[must_use]
    pub fn of_error(error: &Error) -> Self {
        match error {
            Error::Contended(_) => Self::Contended,
            Error::Unavailable(_) => Self::Unavailable,
            Error::ValidityExpired(_) => Self::ValidityExpired,
            Error::Lost(loss) => Self::Lost(loss.reason),
            Error::Released => Self::Released,
            Error::Closed => Self::Closed,
            _ => Self::Other,
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
    /// The documented bound on `local_elapsed` (`Duration::MAX` when there is none:
    /// [`Patience::UntilCancelled`]). For [`OpKind::Close`], also how long after the close
    /// started every acquire of that client still in progress may run: one attempt of the
    /// manager's (an attempt, its cleanup, a retry delay and the fair grace).
    pub bound: Duration,
    /// For a `lock` call: how long it was allowed to wait (plain `lock` and the acquire of
    /// `with_lock` wait the manager's `retry_count` attempts); `None` for the other calls.
    pub patience: Option<Patience>,
    /// How it ended.
    pub outcome: Outcome,
    /// For a successful `lock`, `extend` or renewal: the true time at which the client's deadline
    /// passes (its clock read `deadline`, converted to true time).
    pub holds_until: Option<Duration>,
    /// Whether the client was paused at some point during the call (bounds then do not apply).
    pub paused: bool,
    /// Instances that were reachable throughout the call yet kept our token after a failed
    /// `lock` or a `release` (should be empty).
    pub leftovers: Vec<usize>,
    /// For a successful fenced `lock`: the lock's fence ([`Lock::fence`](redlock_core::Lock::fence)).
    pub fence: Option<u64>,
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

    /// How many lock operations (lock, extend, release, check, close) were traced.
    #[must_use]
    pub fn op_count(&self) -> usize {
        self.ops()
            .filter(|op| !matches!(op.op, OpKind::Drop | OpKind::Renewed))
            .count()
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
        if let Some(patience) = self.patience {
            write!(f, " {patience:?}")?;
        }
        if let Some(until) = self.holds_until {
            write!(f, " until {}", until.as_nanos())?;
        }
        if let Some(fence) = self.fence {
            write!(f, " fence {fence}")?;
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
