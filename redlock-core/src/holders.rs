//! Which instances are known to hold a lock's key with its token: the yes-voters of the round
//! that granted the current lease, less those a reconnection re-check found without it.
//!
//! Restart recovery (see [`LockBackend::reconnects`](crate::LockBackend::reconnects)) counts
//! them against the quorum. Answers that came after a round was decided are not known, so the
//! set can be smaller than the truth, never larger: a lock is reported lost too early rather
//! than too late.

/// A set of instance indices, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Holders(u64);

/// Instances beyond this many are not tracked; a manager with more runs without restart
/// recovery.
pub(crate) const MAX_TRACKED: usize = 64;

impl Holders {
    /// The instances whose entry in `yes` is true, in configuration order.
    pub(crate) fn of(yes: impl IntoIterator<Item = bool>) -> Self {
        let bits = yes
            .into_iter()
            .take(MAX_TRACKED)
            .enumerate()
            .fold(0u64, |bits, (i, y)| bits | (u64::from(y) << i));
        Self(bits)
    }

    /// This set with instance `i` in (`holds`) or out.
    #[must_use]
    pub(crate) fn with(self, i: usize, holds: bool) -> Self {
        if i >= MAX_TRACKED {
            return self;
        }
        let bit = 1u64 << i;
        Self(if holds { self.0 | bit } else { self.0 & !bit })
    }

    /// Whether instance `i` is in the set.
    pub(crate) fn contains(self, i: usize) -> bool {
        i < MAX_TRACKED && self.0 & (1u64 << i) != 0
    }

    /// The instances in both sets.
    #[must_use]
    pub(crate) fn and(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// How many instances are in the set.
    pub(crate) fn count(self) -> usize {
        self.0.count_ones() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_of_yes_voters() {
        let h = Holders::of([true, false, true, true, false]);
        assert_eq!(h.count(), 3);
        assert!(h.contains(0) && !h.contains(1) && h.contains(3) && !h.contains(4));
        let h = h.with(0, false).with(4, true);
        assert_eq!(h.count(), 3);
        assert!(!h.contains(0) && h.contains(4));
        assert_eq!(h.and(Holders::of([false, false, true])).count(), 1);
        // Out of range: ignored, never counted.
        assert_eq!(h.with(MAX_TRACKED, true), h);
        assert!(!h.contains(MAX_TRACKED + 3));
        assert_eq!(
            Holders::of(vec![true; MAX_TRACKED + 5]).count(),
            MAX_TRACKED
        );
    }
}
