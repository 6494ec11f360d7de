//! The checkers: each invariant of FAULTS.md judged over a recorded [`History`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::history::{Entry, History, OpKind, OpRecord, Outcome};

mod fencing;
mod liveness;

pub use fencing::{fence_regressions, FenceRegression};
pub use liveness::served;

/// The true-time interval during which a client believed it held a lock: from `lock` (or a
/// successful `extend`, or a renewal its scoped job saw) returning until its deadline on the
/// client's clock, cut short by the start of its release (or drop, or its manager's close) or
/// by a reported loss. Every lock has its own windows, so two tasks of one client are judged
/// against each other as two clients are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The holder.
    pub client: usize,
    /// The lock's serial number in the history.
    pub lock: u64,
    /// The resource.
    pub resource: Vec<u8>,
    /// Start, true time.
    pub start: Duration,
    /// End, true time (exclusive).
    pub end: Duration,
}

/// Two clients believing they hold the same resource at the same true time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The window that started first (the old holder).
    pub first: Window,
    /// The window that started inside it (the new holder).
    pub second: Window,
}

impl Overlap {
    /// When both held it.
    #[must_use]
    pub fn from(&self) -> Duration {
        self.second.start
    }
}

/// Which invariant a [`Violation`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// Invariant 1: two holders' windows overlap.
    Overlap,
    /// Invariant 2: after an overlap, the old holder's extend, check or release succeeded.
    SuccessAfterLoss,
    /// Invariant 2: after an overlap, the old holder's next call did not report the loss.
    LossNotReported,
    /// Invariant 3: a call took longer than its documented bound.
    Bound,
    /// Invariant 3: a task panicked.
    Panic,
    /// Invariant 4: a reachable instance kept our token after a failed acquire or a release.
    Leftover,
    /// The simulation stalled (a task waits forever with no timer pending), or a run went on
    /// long after every call in it should have ended (a call that never returns).
    Stalled,
    /// Invariant 5: the same seed gave a different history.
    Nondeterministic,
    /// A scoped job was polled at or after its lease's deadline (see [`PollLog`](crate::PollLog)).
    PolledPastDeadline,
    /// A scoped job was polled at or after a rival was granted its resource (see
    /// [`PollLog`](crate::PollLog)).
    PolledAfterRivalGrant,
    /// A call made after its manager was closed did not fail with `Closed`, or an acquire in
    /// progress at the close ran on for longer than one attempt (see [`OpKind::Close`]).
    IgnoredClose,
    /// A waiter was not served nor told why: a
    /// [`Patience::UntilCancelled`](redlock_core::Patience::UntilCancelled) acquire gave up with
    /// an error other than `Closed`, or waited through a long stretch in which its resource
    /// was free (see [`served`]).
    NotServed,
    /// A fenced grant made after another was handed out got a fence that is not larger (see
    /// [`fence_regressions`]).
    FenceNotIncreasing,
}

/// One broken invariant, with enough detail to find it in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// What happened, with true times in nanoseconds.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// What the checkers found in one history.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Every holder's window.
    pub windows: Vec<Window>,
    /// Every pair of overlapping windows (invariant 1).
    pub overlaps: Vec<Overlap>,
    /// Per overlap (same index): the outcome of the old holder's first extend, check or release
    /// made after the overlap began, if it made one.
    pub followups: Vec<Option<Outcome>>,
    /// Every violation, overlaps included.
    pub violations: Vec<Violation>,
    /// Every pair of fenced grants whose fences do not grow (each also a
    /// [`FenceNotIncreasing`](ViolationKind::FenceNotIncreasing) violation).
    pub fence_regressions: Vec<FenceRegression>,
}

impl CheckReport {
    /// Whether no invariant was broken.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations other than overlaps themselves: what must hold even when an assumption
    /// was broken on purpose.
    pub fn beyond_overlaps(&self) -> impl Iterator<Item = &Violation> {
        self.violations
            .iter()
            .filter(|v| v.kind != ViolationKind::Overlap)
    }

    /// Whether every overlap was followed by a loss reported by the old holder's next call
    /// (and the old holder did make one).
    #[must_use]
    pub fn every_overlap_reported(&self) -> bool {
        self.followups
            .iter()
            .all(|f| f.is_some_and(Outcome::is_loss))
    }
}

fn ns(d: Duration) -> u128 {
    d.as_nanos()
}

/// Runs every checker over `history`.
#[must_use]
pub fn check(history: &History) -> CheckReport {
    let mut report = CheckReport {
        windows: windows(history),
        ..CheckReport::default()
    };
    report.overlaps = overlaps(&report.windows);
    for o in &report.overlaps {
        report.violations.push(Violation {
            kind: ViolationKind::Overlap,
            detail: format!(
                "{:?}: c{} (lock #{}) held [{}, {}) and c{} (lock #{}) held [{}, {})",
                String::from_utf8_lossy(&o.first.resource),
                o.first.client,
                o.first.lock,
                ns(o.first.start),
                ns(o.first.end),
                o.second.client,
                o.second.lock,
                ns(o.second.start),
                ns(o.second.end),
            ),
        });
    }
    let followups: Vec<Option<Outcome>> = report
        .overlaps
        .iter()
        .map(|o| loss_after(history, o, &mut report.violations))
        .collect();
    report.followups = followups;
    for op in history.ops() {
        // A skewed clock reads in whole nanoseconds on each side of a sleep: allow 1 µs.
        if !op.paused && op.local_elapsed > op.bound.saturating_add(Duration::from_micros(1)) {
            report.violations.push(Violation {
                kind: ViolationKind::Bound,
                detail: format!(
                    "c{} {:?} took {:?} on its clock, bound {:?} (started {})",
                    op.client,
                    op.op,
                    op.local_elapsed,
                    op.bound,
                    ns(op.start)
                ),
            });
        }
        if !op.leftovers.is_empty() {
            report.violations.push(Violation {
                kind: ViolationKind::Leftover,
                detail: format!(
                    "c{} {:?} {:?} #{} returned {:?} at {} but instances {:?} keep its token",
                    op.client,
                    op.op,
                    String::from_utf8_lossy(&op.resource),
                    op.lock,
                    op.outcome,
                    ns(op.end),
                    op.leftovers
                ),
            });
        }
    }
    report.fence_regressions = fence_regressions(history);
    for r in &report.fence_regressions {
        report.violations.push(Violation {
            kind: ViolationKind::FenceNotIncreasing,
            detail: format!(
                "{:?}: c{} (lock #{}) got fence {} in [{}, {}), after c{} (lock #{}) was handed \
                 out fence {} at {}",
                String::from_utf8_lossy(&r.later.resource),
                r.later.client,
                r.later.lock,
                r.later_fence(),
                ns(r.later.start),
                ns(r.later.end),
                r.earlier.client,
                r.earlier.lock,
                r.earlier_fence(),
                ns(r.earlier.end),
            ),
        });
    }
    liveness::closes(history, &mut report.violations);
    liveness::gave_up(history, &mut report.violations);
    for entry in &history.entries {
        if let Entry::Panic { at, message } = entry {
            report.violations.push(Violation {
                kind: ViolationKind::Panic,
                detail: format!("at {}: {message}", ns(*at)),
            });
        }
    }
    report
}

/// Builds each lock's window from its records.
fn windows(history: &History) -> Vec<Window> {
    struct Acc<'a> {
        first: &'a OpRecord,
        spans: Vec<(Duration, Duration)>,
        cut: Option<Duration>,
    }
    let mut locks: BTreeMap<u64, Acc<'_>> = BTreeMap::new();
    let closes: Vec<&OpRecord> = history.ops().filter(|op| op.op == OpKind::Close).collect();
    for op in history.ops() {
        if op.op == OpKind::Close {
            continue;
        }
        let acc = locks.entry(op.lock).or_insert_with(|| Acc {
            first: op,
            spans: Vec::new(),
            cut: None,
        });
        if let (Outcome::Ok, Some(until), OpKind::Lock | OpKind::Extend | OpKind::Renewed) =
            (op.outcome, op.holds_until, op.op)
        {
            acc.spans.push((op.end, until));
        }
        // A release ends the window when it starts: from then on the holder may be deleting
        // keys, and a rival may win before the release returns.
        let cut = match (op.op, op.outcome) {
            (OpKind::Release | OpKind::Drop, _) => Some(op.start),
            (_, Outcome::Lost(_)) => Some(op.end),
            _ => None,
        };
        if let Some(cut) = cut {
            acc.cut = Some(acc.cut.map_or(cut, |c| c.min(cut)));
        }
    }
    let mut out = Vec::new();
    for (serial, mut acc) in locks {
        // Closing the manager releases every lock it holds, under its holders' feet: from the
        // start of the close, as for a release. A lock granted after the close started is not
        // one of them (and is a violation of its own, see `IgnoredClose`).
        let closed = closes
            .iter()
            .filter(|c| c.client == acc.first.client && c.start >= acc.first.end)
            .map(|c| c.start)
            .min();
        if let Some(closed) = closed {
            acc.cut = Some(acc.cut.map_or(closed, |c| c.min(closed)));
        }
        acc.spans.sort();
        let mut merged: Vec<(Duration, Duration)> = Vec::new();
        for (s, e) in acc.spans {
            let e = acc.cut.map_or(e, |c| e.min(c));
            if e <= s {
                continue;
            }
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        for (start, end) in merged {
            out.push(Window {
                client: acc.first.client,
                lock: serial,
                resource: acc.first.resource.clone(),
                start,
                end,
            });
        }
    }
    out.sort_by(|a, b| (&a.resource, a.start, a.lock).cmp(&(&b.resource, b.start, b.lock)));
    out
}

fn overlaps(windows: &[Window]) -> Vec<Overlap> {
    let mut out = Vec::new();
    for (i, a) in windows.iter().enumerate() {
        for b in &windows[i + 1..] {
            if b.resource != a.resource || b.start >= a.end {
                break;
            }
            if b.lock != a.lock {
                out.push(Overlap {
                    first: a.clone(),
                    second: b.clone(),
                });
            }
        }
    }
    out
}

/// The old holder's calls after the overlap began: none may succeed, and the first must report
/// the loss.
fn loss_after(history: &History, o: &Overlap, violations: &mut Vec<Violation>) -> Option<Outcome> {
    let mut first = None;
    for op in history.ops() {
        if op.lock != o.first.lock
            || matches!(op.op, OpKind::Lock | OpKind::Drop | OpKind::Close)
            || op.start < o.second.start
        {
            continue;
        }
        if first.is_none() {
            first = Some(op.outcome);
            if !op.outcome.is_loss() && op.outcome != Outcome::Ok {
                violations.push(Violation {
                    kind: ViolationKind::LossNotReported,
                    detail: format!(
                        "c{} lock #{}: {:?} at {} after the overlap from {} answered {:?}",
                        op.client,
                        op.lock,
                        op.op,
                        ns(op.start),
                        ns(o.second.start),
                        op.outcome
                    ),
                });
            }
        }
        if op.outcome == Outcome::Ok {
            violations.push(Violation {
                kind: ViolationKind::SuccessAfterLoss,
                detail: format!(
                    "c{} lock #{}: {:?} at {} succeeded after c{} took the lock at {}",
                    op.client,
                    op.lock,
                    op.op,
                    ns(op.start),
                    o.second.client,
                    ns(o.second.start)
                ),
            });
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use redlock_core::Patience;

    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn op(client: usize, op: OpKind, lock: u64, span: (u64, u64)) -> Entry {
        Entry::Op(OpRecord {
            client,
            op,
            resource: b"r".to_vec(),
            lock,
            start: ms(span.0),
            end: ms(span.1),
            local_elapsed: Duration::ZERO,
            bound: ms(100),
            patience: (op == OpKind::Lock).then_some(Patience::NoWait),
            outcome: Outcome::Ok,
            holds_until: (op == OpKind::Lock).then(|| ms(span.1 + 100)),
            paused: false,
            leftovers: Vec::new(),
            fence: None,
        })
    }

    #[test]
    fn two_locks_of_one_client_are_checked_against_each_other() {
        let history = History {
            entries: vec![
                op(0, OpKind::Lock, 1, (0, 10)),
                op(0, OpKind::Lock, 2, (0, 50)),
            ],
        };
        let report = check(&history);
        assert_eq!(report.overlaps.len(), 1, "{:?}", report.violations);
        assert_eq!(
            report.overlaps[0].first.client,
            report.overlaps[0].second.client
        );
    }

    #[test]
    fn a_close_ends_the_windows_of_its_clients_locks_only() {
        let history = History {
            entries: vec![
                op(0, OpKind::Lock, 1, (0, 10)),
                op(1, OpKind::Lock, 2, (0, 45)),
                op(0, OpKind::Close, 3, (40, 45)),
                // Client 0's lock was released by the close: a rival from 60 ms is no overlap.
                op(2, OpKind::Lock, 4, (0, 60)),
            ],
        };
        let report = check(&history);
        let ends: Vec<(u64, Duration)> = report.windows.iter().map(|w| (w.lock, w.end)).collect();
        assert_eq!(ends, [(1, ms(40)), (2, ms(145)), (4, ms(160))]);
        assert_eq!(report.overlaps.len(), 1, "only client 1's lock overlaps");
        assert_eq!(report.overlaps[0].first.lock, 2);
    }
}
