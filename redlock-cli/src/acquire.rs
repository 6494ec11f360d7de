//! Waiting for a lock: `--wait`, `--no-wait`, `--timeout`, and giving up on instances that do
//! not answer.
//!
//! The manager's own retries wait between attempts and wake early when the holder's release is
//! announced; this loop decides, after each of its calls, whether to call again. Contention is
//! waited out (up to `--timeout`); instances that do not answer end the wait after
//! [`UNANSWERED_CALLS`] calls in a row, so a dead Redis never makes the tool hang.

use std::future::Future;
use std::time::Duration;

use redlock_core::{Error, LockManager};

use crate::cli::WaitArgs;
use crate::exit::Failure;
use crate::report;

/// Attempts in one call to the manager while waiting: one retry window between them, in which
/// an announced release wakes the waiter at once.
pub const ATTEMPTS_PER_CALL: u32 = 2;

/// Calls in a row whose last attempt too few instances answered, after which waiting stops
/// (four attempts with [`ATTEMPTS_PER_CALL`] = 2).
pub const UNANSWERED_CALLS: u32 = 2;

/// How long to wait for a lock another client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// One attempt.
    No,
    /// Until it is free.
    Forever,
    /// At most this long.
    For(Duration),
}

impl WaitMode {
    /// The mode the flags ask for.
    pub fn of(args: &WaitArgs) -> Self {
        match (args.no_wait, args.timeout) {
            (true, _) => Self::No,
            (false, Some(d)) if d.is_zero() => Self::No,
            (false, Some(d)) => Self::For(d),
            (false, None) => Self::Forever,
        }
    }

    /// The manager's `retry_count` for this mode.
    pub fn retry_count(self) -> u32 {
        match self {
            Self::No => 1,
            Self::Forever | Self::For(_) => ATTEMPTS_PER_CALL,
        }
    }
}

/// Calls `call` (an acquire through the manager) until it succeeds, or the mode says to stop.
/// Errors other than contention and unavailability end it at once.
///
/// `--timeout` bounds the wait for the lock only: once `acquired()` is true (a call that
/// acquires and then runs the work under the lock, as `exec` does), it no longer applies.
///
/// # Errors
/// `conflict` (the `-E` status) when the lock stayed held by another client; 69 when too few
/// instances answered; the status of any other library error.
pub async fn acquire<T, F, Fut>(
    manager: &LockManager,
    resource: &[u8],
    mode: WaitMode,
    conflict: u8,
    acquired: impl Fn() -> bool,
    mut call: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let what = format!("cannot lock {}", report::quoted(resource));
    let mut last: Option<Error> = None;
    let attempts = async {
        let mut unanswered = 0u32;
        loop {
            let e = match call().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            match &e {
                Error::Contended(_) => {
                    unanswered = 0;
                    if mode == WaitMode::No {
                        return Err(e);
                    }
                }
                Error::Unavailable(_) | Error::ValidityExpired(_) => {
                    unanswered += 1;
                    if mode == WaitMode::No || unanswered >= UNANSWERED_CALLS {
                        return Err(e);
                    }
                }
                _ => return Err(e),
            }
            tracing::debug!("{what}: {}; trying again", report::error_text(&e));
            last = Some(e);
        }
    };
    let expiry = async {
        if let WaitMode::For(limit) = mode {
            tokio::time::sleep(limit).await;
            if !acquired() {
                return limit;
            }
        }
        futures::future::pending().await
    };
    let ended = tokio::select! {
        outcome = attempts => Ok(outcome),
        limit = expiry => Err(limit),
    };
    let outcome = match ended {
        Ok(outcome) => outcome,
        Err(limit) => return Err(timed_out(manager, resource, limit, last, conflict).await),
    };
    outcome.map_err(|e| {
        let mut failure = report::failure(&what, &e);
        if matches!(e, Error::Contended(_)) {
            failure.status = conflict;
        }
        failure
    })
}

/// The failure after `--timeout` ran out: contention or unavailability, from the last call, or
/// from a look at the instances when no call had finished.
async fn timed_out(
    manager: &LockManager,
    resource: &[u8],
    limit: Duration,
    last: Option<Error>,
    conflict: u8,
) -> Failure {
    let what = format!("cannot lock {} within {limit:?}", report::quoted(resource));
    let e = match last {
        Some(e) => e,
        None => match manager.is_locked(resource).await {
            Ok(held) => {
                let why = if held {
                    "it is held by another client"
                } else {
                    "no attempt finished in time (it is free now)"
                };
                return Failure::new(conflict, format!("{what}: {why}"));
            }
            Err(e) => e,
        },
    };
    let mut failure = report::failure(&what, &e);
    if matches!(e, Error::Contended(_)) {
        failure.status = conflict;
    }
    failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    fn args(no_wait: bool, timeout: Option<Duration>) -> WaitArgs {
        WaitArgs {
            wait: false,
            no_wait,
            timeout,
            conflict_exit_code: exit::NOT_ACQUIRED,
        }
    }

    #[test]
    fn modes() {
        assert_eq!(WaitMode::of(&args(true, None)), WaitMode::No);
        assert_eq!(WaitMode::of(&args(false, None)), WaitMode::Forever);
        assert_eq!(
            WaitMode::of(&args(false, Some(Duration::ZERO))),
            WaitMode::No
        );
        let d = Duration::from_secs(3);
        assert_eq!(WaitMode::of(&args(false, Some(d))), WaitMode::For(d));
        assert_eq!(WaitMode::No.retry_count(), 1);
        assert_eq!(WaitMode::Forever.retry_count(), ATTEMPTS_PER_CALL);
    }
}
