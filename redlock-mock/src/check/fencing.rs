//! The fencing checker: a fenced grant handed out before another was granted has the smaller
//! fence.

use std::collections::BTreeMap;

use crate::history::{History, OpKind, OpRecord, Outcome};

/// Two fenced grants of one resource whose fences do not grow: `earlier` was handed out (its
/// `lock` call returned) before `later`'s call started, yet `later.fence <= earlier.fence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRegression {
    /// The grant handed out first: its `lock` record.
    pub earlier: OpRecord,
    /// The grant made after it: its `lock` record.
    pub later: OpRecord,
}

impl FenceRegression {
    /// The earlier grant's fence.
    #[must_use]
    pub fn earlier_fence(&self) -> u64 {
        self.earlier.fence.unwrap_or_default()
    }

    /// The later grant's fence.
    #[must_use]
    pub fn later_fence(&self) -> u64 {
        self.later.fence.unwrap_or_default()
    }
}

/// Every later fenced grant whose fence is not above the largest fence handed out before its
/// call started, paired with that grant.
///
/// "Before" is judged from the records alone, conservatively: `earlier.end < later.start`
/// (the earlier call had returned, so its grant was handed out; the later one had not started,
/// so it was granted after). Grants whose calls overlap in time are not compared: their order is
/// not known from outside.
#[must_use]
pub fn fence_regressions(history: &History) -> Vec<FenceRegression> {
    let mut by_resource: BTreeMap<&[u8], Vec<&OpRecord>> = BTreeMap::new();
    for op in history.ops() {
        if op.op == OpKind::Lock && op.outcome == Outcome::Ok && op.fence.is_some() {
            by_resource.entry(&op.resource).or_default().push(op);
        }
    }
    let mut out = Vec::new();
    for grants in by_resource.into_values() {
        let mut handed_out = grants.clone();
        handed_out.sort_by_key(|op| (op.end, op.lock));
        let mut later = grants;
        later.sort_by_key(|op| (op.start, op.lock));
        // The grant with the largest fence among those handed out so far.
        let mut best: Option<&OpRecord> = None;
        let mut next = 0;
        for b in later {
            while next < handed_out.len() && handed_out[next].end < b.start {
                let a = handed_out[next];
                if best.is_none_or(|x| a.fence > x.fence) {
                    best = Some(a);
                }
                next += 1;
            }
            if let Some(a) = best {
                if b.fence <= a.fence {
                    out.push(FenceRegression {
                        earlier: a.clone(),
                        later: b.clone(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::history::Entry;

    fn grant(lock: u64, span: (u64, u64), fence: Option<u64>) -> Entry {
        let ms = Duration::from_millis;
        Entry::Op(OpRecord {
            client: 0,
            op: OpKind::Lock,
            resource: b"r".to_vec(),
            lock,
            start: ms(span.0),
            end: ms(span.1),
            local_elapsed: Duration::ZERO,
            bound: Duration::MAX,
            patience: None,
            outcome: Outcome::Ok,
            holds_until: Some(ms(span.1 + 100)),
            paused: false,
            leftovers: Vec::new(),
            fence,
        })
    }

    fn found(entries: Vec<Entry>) -> Vec<(u64, u64)> {
        fence_regressions(&History { entries })
            .iter()
            .map(|r| (r.earlier.lock, r.later.lock))
            .collect()
    }

    #[test]
    fn growing_fences_are_clean() {
        assert!(found(vec![
            grant(1, (0, 10), Some(1)),
            grant(2, (20, 30), Some(2)),
            grant(3, (40, 50), Some(7)),
        ])
        .is_empty());
    }

    #[test]
    fn an_equal_or_lower_fence_after_a_hand_out_is_caught() {
        assert_eq!(
            found(vec![
                grant(1, (0, 10), Some(5)),
                grant(2, (20, 30), Some(3)),
                grant(3, (40, 50), Some(5)),
                grant(4, (60, 70), Some(6)),
            ]),
            [(1, 2), (1, 3)]
        );
    }

    #[test]
    fn overlapping_calls_and_plain_locks_are_not_compared() {
        assert!(found(vec![
            grant(1, (0, 30), Some(5)),
            // Started before #1 returned: order unknown.
            grant(2, (20, 40), Some(4)),
            // Plain.
            grant(3, (50, 60), None),
        ])
        .is_empty());
    }
}
