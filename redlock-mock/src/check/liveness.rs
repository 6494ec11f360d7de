//! "Every waiter is eventually served or told why": calls after a close fail at once, acquires
//! in progress at a close end soon, waiters that may wait forever do not give up, and no waiter
//! waits while its resource stays free.

use std::time::Duration;

use redlock_core::Patience;

use super::{ns, windows, Violation, ViolationKind};
use crate::history::{History, OpKind, OpRecord, Outcome};

/// The rate difference between a client's clock and true time allowed when a bound given on
/// the client's clock is compared with true times: clients run within ±0.4 % in the sweeps.
const RATE_SLACK_PPM: u32 = 10_000;

fn with_slack(d: Duration) -> Duration {
    d.saturating_add(d / 1_000_000 * RATE_SLACK_PPM)
        .saturating_add(Duration::from_micros(1))
}

/// Whether `op` is a call of the client's own (not a record of what a job saw, nor a drop).
fn is_call(op: &OpRecord) -> bool {
    !matches!(op.op, OpKind::Drop | OpKind::Renewed | OpKind::Close)
}

/// After a client's close started: every call it starts later fails with `Closed`, and every
/// acquire still in progress ends within one attempt of the manager's (the close's bound).
pub(super) fn closes(history: &History, violations: &mut Vec<Violation>) {
    for close in history.ops().filter(|op| op.op == OpKind::Close) {
        let mine = history
            .ops()
            .filter(|op| op.client == close.client && is_call(op));
        for op in mine {
            // Calls started at the very same instant may have run before the close did.
            if op.start > close.start {
                if op.outcome != Outcome::Closed {
                    violations.push(Violation {
                        kind: ViolationKind::IgnoredClose,
                        detail: format!(
                            "c{} {:?} {:?} #{} started at {} after the close at {} and \
                             answered {:?}",
                            op.client,
                            op.op,
                            String::from_utf8_lossy(&op.resource),
                            op.lock,
                            ns(op.start),
                            ns(close.start),
                            op.outcome
                        ),
                    });
                }
                continue;
            }
            let in_progress = op.op == OpKind::Lock && op.end > close.start;
            if in_progress && op.outcome == Outcome::Ok {
                violations.push(Violation {
                    kind: ViolationKind::IgnoredClose,
                    detail: format!(
                        "c{} {:?} {:?} #{} ({:?}) was in progress at the close at {} and was \
                         granted at {}: a lock of a closed manager, which the close did not \
                         release and no call can",
                        op.client,
                        op.op,
                        String::from_utf8_lossy(&op.resource),
                        op.lock,
                        op.patience,
                        ns(close.start),
                        ns(op.end),
                    ),
                });
            }
            let limit = close.start.saturating_add(with_slack(close.bound));
            if in_progress && !op.paused && !close.paused && op.end > limit {
                violations.push(Violation {
                    kind: ViolationKind::IgnoredClose,
                    detail: format!(
                        "c{} {:?} {:?} #{} ({:?}) was in progress at the close at {} and \
                         returned {:?} at {}, more than one attempt ({:?}) later",
                        op.client,
                        op.op,
                        String::from_utf8_lossy(&op.resource),
                        op.lock,
                        op.patience,
                        ns(close.start),
                        op.outcome,
                        ns(op.end),
                        close.bound
                    ),
                });
            }
        }
    }
}

/// A waiter documented to wait until served or cancelled returns nothing else but `Closed`.
pub(super) fn gave_up(history: &History, violations: &mut Vec<Violation>) {
    for op in history.ops() {
        let gave_up = matches!(
            op.outcome,
            Outcome::Contended | Outcome::Unavailable | Outcome::ValidityExpired
        );
        if op.op == OpKind::Lock && op.patience == Some(Patience::UntilCancelled) && gave_up {
            violations.push(Violation {
                kind: ViolationKind::NotServed,
                detail: format!(
                    "c{} UntilCancelled {:?} #{} gave up with {:?} at {}",
                    op.client,
                    String::from_utf8_lossy(&op.resource),
                    op.lock,
                    op.outcome,
                    ns(op.end)
                ),
            });
        }
    }
}

/// Judges the waiters that may wait forever
/// ([`Patience::UntilCancelled`](redlock_core::Patience::UntilCancelled)): from `since` on,
/// none may keep waiting (until it was served, cancelled or the history ends) through a
/// stretch of `free_for` in which no one held its resource, by the holders' windows (any client,
/// any task).
///
/// `since` must be a time from which the deployment is healthy (every fault over, every key set
/// before it expired or released), and `free_for` must cover what a waiter needs to notice a
/// free resource: the expiry of keys whose holder's window ended without a release, a retry
/// delay, a fair grace, and an attempt. Then a violation is a waiter left waiting on a free
/// resource: served neither by its own attempts nor by the local queue handing it on.
#[must_use]
pub fn served(history: &History, since: Duration, free_for: Duration) -> Vec<Violation> {
    let windows = windows(history);
    let mut violations = Vec::new();
    for op in history.ops() {
        if op.op != OpKind::Lock || op.patience != Some(Patience::UntilCancelled) {
            continue;
        }
        let (from, to) = (op.start.max(since), op.end);
        if to <= from {
            continue;
        }
        let mut busy: Vec<(Duration, Duration)> = windows
            .iter()
            .filter(|w| w.resource == op.resource && w.end > from && w.start < to)
            .map(|w| (w.start.max(from), w.end.min(to)))
            .collect();
        busy.sort();
        let mut free_from = from;
        let mut longest = (Duration::ZERO, from);
        for (start, end) in busy.into_iter().chain([(to, to)]) {
            let free = start.saturating_sub(free_from);
            if free > longest.0 {
                longest = (free, free_from);
            }
            free_from = free_from.max(end);
        }
        if longest.0 >= free_for {
            violations.push(Violation {
                kind: ViolationKind::NotServed,
                detail: format!(
                    "c{} UntilCancelled {:?} #{} waited from {} to {} ({:?}); no one held the \
                     resource for {:?} from {} (allowed {:?})",
                    op.client,
                    String::from_utf8_lossy(&op.resource),
                    op.lock,
                    ns(op.start),
                    ns(op.end),
                    op.outcome,
                    longest.0,
                    ns(longest.1),
                    free_for
                ),
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Entry;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn op(client: usize, op: OpKind, lock: u64, span: (u64, u64), outcome: Outcome) -> OpRecord {
        OpRecord {
            client,
            op,
            resource: b"r".to_vec(),
            lock,
            start: ms(span.0),
            end: ms(span.1),
            local_elapsed: ms(span.1 - span.0),
            bound: ms(50),
            patience: (op == OpKind::Lock).then_some(Patience::UntilCancelled),
            outcome,
            holds_until: None,
            paused: false,
            leftovers: Vec::new(),
            fence: None,
        }
    }

    fn granted(client: usize, lock: u64, at: u64, until: u64) -> Entry {
        let mut grant = op(client, OpKind::Lock, lock, (at, at), Outcome::Ok);
        grant.patience = Some(Patience::NoWait);
        grant.holds_until = Some(ms(until));
        Entry::Op(grant)
    }

    #[test]
    fn a_waiter_behind_busy_holders_is_not_starved() {
        // Two holders, one after the other, with a 5 ms gap: the waiter is cancelled at 300.
        let history = History {
            entries: vec![
                granted(1, 1, 0, 150),
                granted(0, 2, 155, 300),
                Entry::Op(op(0, OpKind::Lock, 3, (10, 300), Outcome::Cancelled)),
            ],
        };
        assert!(served(&history, Duration::ZERO, ms(20)).is_empty());
    }

    #[test]
    fn a_waiter_left_waiting_on_a_free_resource_is_reported() {
        let history = History {
            entries: vec![
                granted(1, 1, 0, 100),
                Entry::Op(op(0, OpKind::Lock, 3, (10, 300), Outcome::Cancelled)),
            ],
        };
        let found = served(&history, Duration::ZERO, ms(150));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, ViolationKind::NotServed);
        // The same stretch before `since` does not count.
        assert!(served(&history, ms(200), ms(150)).is_empty());
    }

    #[test]
    fn a_call_after_a_close_must_fail_closed_and_one_in_progress_must_end_soon() {
        let mut close = op(0, OpKind::Close, 9, (100, 100), Outcome::Ok);
        close.bound = ms(30);
        let history = History {
            entries: vec![
                Entry::Op(close),
                // In progress at the close, ends 20 ms later: fine.
                Entry::Op(op(0, OpKind::Lock, 1, (50, 120), Outcome::Closed)),
                // In progress, ends 100 ms later: too late.
                Entry::Op(op(0, OpKind::Lock, 2, (60, 200), Outcome::Contended)),
                // Made after the close, and it succeeded.
                Entry::Op(op(0, OpKind::Lock, 3, (110, 110), Outcome::Ok)),
                // Another client is not concerned.
                Entry::Op(op(1, OpKind::Lock, 4, (110, 400), Outcome::Ok)),
                // In progress, and granted a lock after the close.
                Entry::Op(op(0, OpKind::Lock, 5, (90, 105), Outcome::Ok)),
            ],
        };
        let mut found = Vec::new();
        closes(&history, &mut found);
        let locks: Vec<&str> = found
            .iter()
            .filter_map(|v| {
                ["#2", "#3", "#5"]
                    .into_iter()
                    .find(|n| v.detail.contains(n))
            })
            .collect();
        assert_eq!(locks, ["#2", "#3", "#5"], "{found:?}");
        assert!(found.iter().all(|v| v.kind == ViolationKind::IgnoredClose));
    }

    #[test]
    fn an_until_cancelled_waiter_that_gives_up_is_reported() {
        let history = History {
            entries: vec![
                Entry::Op(op(0, OpKind::Lock, 1, (0, 10), Outcome::Contended)),
                Entry::Op(op(0, OpKind::Lock, 2, (0, 10), Outcome::Closed)),
            ],
        };
        let mut found = Vec::new();
        gave_up(&history, &mut found);
        assert_eq!(found.len(), 1);
        assert!(found[0].detail.contains("#1"));
    }
}
