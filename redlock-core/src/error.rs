//! The one public error type, and the per-instance report it carries.
//!
//! # Mapping to aioredlock
//!
//! | aioredlock | here |
//! | --- | --- |
//! | `LockAcquiringError` (lock not acquired) | [`Error::Contended`], [`Error::Unavailable`], [`Error::ValidityExpired`] |
//! | `LockRuntimeError` (instances failed during extend / unlock) | [`Error::Unavailable`] |
//! | `LockError` on extend / unlock of a lost lock | [`Error::Lost`] |
//! | `lock.valid == False` after unlock | [`Error::Released`] on later use |
//! | `IndexError` after `destroy()` | [`Error::Closed`] |
//! | `ValueError` for bad arguments | [`Error::InvalidInput`] |

use std::fmt;
use std::time::Duration;

use crate::backend::BackendError;

/// Everything a lock operation can fail with. Match on the variant to decide what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The arguments or configuration are wrong. Nothing was sent to any instance.
    #[error("invalid input: {0}")]
    InvalidInput(InvalidInput),

    /// Another client holds the resource: enough instances answered, but too many said no.
    /// Trying again later may succeed.
    #[error("{} is held by another client", Named(.0))]
    Contended(#[source] Box<Failure>),

    /// Too few instances answered (errors or timeouts) to reach or refute a quorum.
    #[error("{}: too few instances answered to decide", Named(.0))]
    Unavailable(#[source] Box<Failure>),

    /// A quorum was reached, but so slowly that no validity was left (elapsed + drift >= TTL).
    #[error("{}: quorum reached too late, no validity left", Named(.0))]
    ValidityExpired(#[source] Box<Failure>),

    /// The lock is no longer held by this client. Anything it protected may already be in
    /// another holder's hands.
    #[error("lock lost: {}", .0.reason)]
    Lost(Box<Loss>),

    /// The lock handle was already released by this client.
    #[error("lock already released")]
    Released,

    /// The manager was closed; no further operations are possible.
    #[error("lock manager is closed")]
    Closed,
}

impl Error {
    /// The per-instance report, when the error came from a round of calls to the instances.
    #[must_use]
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Contended(f) | Self::Unavailable(f) | Self::ValidityExpired(f) => Some(f),
            Self::Lost(l) => l.failure.as_deref(),
            _ => None,
        }
    }

    /// Whether trying the same call again later could succeed (contention or unavailability).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Contended(_) | Self::Unavailable(_) | Self::ValidityExpired(_)
        )
    }

    /// Names `resource` in the per-instance report, so that the message says which lock.
    pub(crate) fn about(mut self, resource: &[u8]) -> Self {
        let failure = match &mut self {
            Self::Contended(f) | Self::Unavailable(f) | Self::ValidityExpired(f) => Some(&mut **f),
            Self::Lost(l) => l.failure.as_deref_mut(),
            _ => None,
        };
        if let Some(f) = failure {
            f.resource = Some(resource.to_vec());
        }
        self
    }

    pub(crate) fn invalid(what: InvalidInput) -> Self {
        Self::InvalidInput(what)
    }

    pub(crate) fn lost(reason: LossReason, failure: Option<Failure>) -> Self {
        Self::Lost(Box::new(Loss {
            reason,
            failure: failure.map(Box::new),
        }))
    }
}

/// What was wrong with the input. Nothing was sent to any instance.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The builder was given no instance.
    NoInstances,
    /// Two instances are the same server (same [`id`](crate::LockBackend::id)).
    DuplicateInstance(String),
    /// `retry_count` is the total number of attempts and must be at least 1.
    ZeroRetryCount,
    /// The retry delay range has `min > max`.
    RetryDelayRange {
        /// The lower bound given.
        min: Duration,
        /// The upper bound given.
        max: Duration,
    },
    /// The drift factor must be finite and in `[0, 1)`.
    DriftFactor(String),
    /// The per-instance timeout must be greater than zero.
    ZeroInstanceTimeout,
    /// The TTL is zero, too short to ever leave validity after the drift allowance, or too long.
    Ttl {
        /// The TTL given.
        ttl: Duration,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The resource name is empty.
    EmptyResource,
    /// The resource name (with the key prefix) exceeds [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    ResourceTooLong(usize),
    /// A token given to rehydrate a lock is empty or too long.
    Token(&'static str),
    /// The key (prefix + resource name) starts with
    /// [`RESERVED_KEY_PREFIX`](crate::RESERVED_KEY_PREFIX) (`0xFF redlock-`), which is reserved
    /// for fencing counters and hand-off queues.
    ReservedKey,
    /// A fenced lock was asked for, but this instance's backend keeps no fencing counters
    /// ([`LockBackend::fencing`](crate::LockBackend::fencing) returned `None`).
    NoFencing(String),
    /// A manager setting is out of range or conflicts with another.
    Setting {
        /// The builder setting, e.g. `"instance_timeout"`.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A backend-specific configuration problem (bad URL, unknown parameter, TLS not compiled
    /// in, ...).
    Config(String),
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoInstances => f.write_str("at least one instance is required"),
            Self::DuplicateInstance(id) => {
                write!(
                    f,
                    "instance {id} is configured twice (a quorum needs distinct servers)"
                )
            }
            Self::ZeroRetryCount => {
                f.write_str("retry_count is the number of attempts; it must be at least 1")
            }
            Self::RetryDelayRange { min, max } => {
                write!(f, "retry delay min {min:?} is greater than max {max:?}")
            }
            Self::DriftFactor(v) => write!(f, "drift factor {v} must be finite and in [0, 1)"),
            Self::ZeroInstanceTimeout => {
                f.write_str("the per-instance timeout must be greater than zero")
            }
            Self::Ttl { ttl, reason } => write!(f, "TTL {ttl:?} {reason}"),
            Self::EmptyResource => f.write_str("the resource name is empty"),
            Self::ResourceTooLong(len) => write!(
                f,
                "the key is {len} bytes; at most {} are allowed",
                crate::MAX_KEY_LEN
            ),
            Self::Token(reason) => write!(f, "token {reason}"),
            Self::ReservedKey => f.write_str(
                "the key starts with the byte 0xFF and \"redlock-\", which are reserved for \
                 fencing counters and hand-off queues",
            ),
            Self::NoFencing(id) => write!(
                f,
                "fenced locks need fencing counters, and instance {id} does not keep them"
            ),
            Self::Setting { setting, problem } => write!(f, "{setting}: {problem}"),
            Self::Config(msg) => f.write_str(msg),
        }
    }
}

/// Why a lock is no longer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// Its validity ran out on this client's clock (no network call was needed to know).
    Expired,
    /// A quorum of instances answered that they do not hold our token: the keys expired, were
    /// deleted, or another client holds them.
    NotHeld,
    /// The connection to an instance was lost and made again, and a re-check found that fewer
    /// than a quorum of instances still hold our token: an instance restarted empty and another
    /// client took the key there, or the instance could not be checked (see
    /// [`LockBackend::reconnects`](crate::LockBackend::reconnects)).
    InstancesLost,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Expired => "its validity ran out",
            Self::NotHeld => "a quorum of instances does not hold this lock's token",
            Self::InstancesLost => {
                "after a reconnection, fewer than a quorum of instances still hold this lock's token"
            }
        })
    }
}

/// Details of [`Error::Lost`].
#[derive(Debug)]
pub struct Loss {
    /// Why the lock is gone.
    pub reason: LossReason,
    /// The per-instance answers that showed it, when a round of calls was made.
    pub failure: Option<Box<Failure>>,
}

/// What one instance did in a round.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum InstanceOutcome {
    /// It did what was asked (acquired, extended, released, or holds our token).
    Succeeded,
    /// It answered no (held by someone else, or not held by us).
    Refused,
    /// It answered with an error.
    Failed(BackendError),
    /// It did not answer within the per-instance timeout.
    TimedOut,
    /// Its answer was not awaited: the round's outcome was already decided.
    NotAwaited,
    /// Not sent: the manager already had as many calls in flight to this instance as it allows
    /// (see [`LockManagerBuilder::max_in_flight`](crate::LockManagerBuilder::max_in_flight)),
    /// and none finished within the round's time limit.
    Saturated,
}

/// One instance's line in a [`Failure`].
#[derive(Debug, Clone)]
pub struct InstanceReport {
    /// The instance's [`id`](crate::LockBackend::id).
    pub instance: String,
    /// What it did.
    pub outcome: InstanceOutcome,
}

/// The per-instance report of a failed operation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Failure {
    /// The resource the operation was about, when known.
    pub resource: Option<Vec<u8>>,
    /// How many attempts were made (acquire retries; 1 for other operations).
    pub attempts: u32,
    /// The quorum that was needed.
    pub quorum: usize,
    /// What each configured instance did in the last attempt, in configuration order.
    pub instances: Vec<InstanceReport>,
    /// How long the last attempt took on the manager's clock.
    pub elapsed: Duration,
}

/// Displays a failure's resource name for a message: quoted, lossy UTF-8, shortened.
struct Named<'a>(&'a Failure);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        match &self.0.resource {
            None => f.write_str("the resource"),
            Some(name) => {
                let text = String::from_utf8_lossy(&name[..name.len().min(SHOWN)]);
                let more = if name.len() > SHOWN { "…" } else { "" };
                write!(f, "resource {:?}{more}", text.as_ref())
            }
        }
    }
}

impl Failure {
    fn count(&self, pred: impl Fn(&InstanceOutcome) -> bool) -> usize {
        self.instances.iter().filter(|r| pred(&r.outcome)).count()
    }

    /// The instances that failed or timed out in the last attempt.
    pub fn unreachable(&self) -> impl Iterator<Item = &InstanceReport> {
        self.instances.iter().filter(|r| {
            matches!(
                r.outcome,
                InstanceOutcome::Failed(_) | InstanceOutcome::TimedOut | InstanceOutcome::Saturated
            )
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ok = self.count(|o| matches!(o, InstanceOutcome::Succeeded));
        let no = self.count(|o| matches!(o, InstanceOutcome::Refused));
        let failed = self.count(|o| matches!(o, InstanceOutcome::Failed(_)));
        let timed_out =
            self.count(|o| matches!(o, InstanceOutcome::TimedOut | InstanceOutcome::Saturated));
        write!(
            f,
            "after {} attempt(s): {ok} succeeded, {no} refused, {failed} failed, {timed_out} timed out of {} (quorum {})",
            self.attempts,
            self.instances.len(),
            self.quorum
        )
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.instances.iter().find_map(|r| match &r.outcome {
            InstanceOutcome::Failed(e) => Some(e as &(dyn std::error::Error + 'static)),
            _ => None,
        })
    }
}
