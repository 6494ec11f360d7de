//! The checkers: each invariant of FAULTS.md judged over a recorded [`History`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::history::{Entry, History, OpKind, OpRecord, Outcome};

/// The true-time interval during which a client believed it held a lock: from `lock` (or a
/// successful `extend`) returning until its deadline on the client's clock, cut short by the
/// start of its release or by a reported loss.
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
    /// The simulation stalled (a task waits forever with no timer pending).
    Stalled,
    /// Invariant 5: the same seed gave a different history.
    Nondeterministic,
    /// A scoped job was polled at or after its lease's deadline (see [`PollLog`](crate::PollLog)).
    PolledPastDeadline,
    /// A scoped job was polled at or after a rival was granted its resource (see
    /// [`PollLog`](crate::PollLog)).
    PolledAfterRivalGrant,
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
        if !op.paused && op.local_elapsed > op.bound + Duration::from_micros(1) {
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
    for op in history.ops() {
        let acc = locks.entry(op.lock).or_insert_with(|| Acc {
            first: op,
            spans: Vec::new(),
            cut: None,
        });
        if let (Outcome::Ok, Some(until), OpKind::Lock | OpKind::Extend) =
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
            || matches!(op.op, OpKind::Lock | OpKind::Drop)
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
