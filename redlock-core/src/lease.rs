//! The lease: how long a granted lock may be used, and when to renew it.
//!
//! Every read or write of lease state goes through [`Lease`], so that "renew after the deadline"
//! or "a deadline computed from the wrong start" cannot be written elsewhere.
//!
//! All instants are durations since the manager's [`Clock`](crate::Clock) origin.

use std::time::Duration;

use crate::holders::Holders;
use crate::validity::DriftPpm;

/// Renewals happen once this share of the lease has passed since it was granted (aioredlock
/// renews at 60 %), unless that would leave less than a whole round before the deadline.
pub const RENEW_AFTER_PERCENT: u32 = 60;

/// A lease granted by a quorum: an acquire, an extend, or a rehydration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The start (T1) of the round that granted it.
    granted_at: Duration,
    /// The lease the instances were given (acquire, extend), or the time a quorum of them still
    /// grants it (rehydration).
    span: Duration,
    /// `span − elapsed − drift`, at the moment of the grant.
    validity: Duration,
    /// `granted_at + elapsed + validity`: after this instant the lock must be considered gone.
    deadline: Duration,
    /// When a renewal should start: never later than `deadline − margin`.
    renew_at: Duration,
    /// The instances known to hold the key with our token (restart recovery counts them).
    holders: Holders,
}

impl Lease {
    /// The lease granted by a round that started at `t1`, gave the instances `span` and reached
    /// a quorum after `elapsed`; `None` when no validity is left. `margin` is the time a whole
    /// renewal round may take (the per-instance timeout).
    pub(crate) fn granted(
        t1: Duration,
        span: Duration,
        elapsed: Duration,
        drift: DriftPpm,
        margin: Duration,
    ) -> Option<Self> {
        let validity = drift.validity(span, elapsed);
        if validity.is_zero() {
            return None;
        }
        let deadline = t1.saturating_add(elapsed).saturating_add(validity);
        Some(Self {
            granted_at: t1,
            span,
            validity,
            deadline,
            renew_at: renew_at(t1, span, deadline, margin),
            holders: Holders::default(),
        })
    }

    /// This lease, held on `holders`.
    #[must_use]
    pub(crate) fn held_on(mut self, holders: Holders) -> Self {
        self.holders = holders;
        self
    }

    /// The instances known to hold the key with our token.
    pub(crate) fn holders(&self) -> Holders {
        self.holders
    }

    /// The start of the round that granted it.
    pub(crate) fn granted_at(&self) -> Duration {
        self.granted_at
    }

    /// When the lock must be considered gone.
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The validity granted, at the moment it was granted.
    pub(crate) fn validity(&self) -> Duration {
        self.validity
    }

    /// Validity left at `now`.
    pub(crate) fn remaining(&self, now: Duration) -> Duration {
        self.deadline.saturating_sub(now)
    }

    /// Whether validity is left at `now`.
    pub(crate) fn is_valid(&self, now: Duration) -> bool {
        now < self.deadline
    }

    /// When to start renewing.
    pub(crate) fn renew_at(&self) -> Duration {
        self.renew_at
    }

    /// The span of the lease (what the instances were given).
    #[cfg(test)]
    pub(crate) fn span(&self) -> Duration {
        self.span
    }
}

/// 60 % into the lease, but early enough that a whole round (`margin`) fits before the deadline.
///
/// When even that is impossible (validity shorter than twice the margin), renewal starts half-way
/// to the deadline: renewing at once after every grant would spin without time passing on a
/// zero-latency backend, and the renewal round is cut at the deadline anyway, so a late one can
/// only fail, never stretch the lease.
fn renew_at(t1: Duration, span: Duration, deadline: Duration, margin: Duration) -> Duration {
    let share = span
        .checked_mul(RENEW_AFTER_PERCENT)
        .map_or(Duration::MAX, |d| d / 100);
    let planned = t1.saturating_add(share);
    let latest = deadline.saturating_sub(margin);
    let halfway = t1 + deadline.saturating_sub(t1) / 2;
    planned.min(latest).max(halfway.min(planned))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_PERCENT: DriftPpm = DriftPpm(10_000);
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_ten_second_lease_renews_at_six_seconds() {
        let lease = Lease::granted(MS(1_000), MS(10_000), MS(20), ONE_PERCENT, MS(100)).unwrap();
        assert_eq!(lease.validity(), MS(9_878));
        assert_eq!(lease.deadline(), MS(1_000 + 20 + 9_878));
        assert_eq!(lease.renew_at(), MS(7_000));
        assert_eq!(lease.remaining(MS(10_000)), MS(898));
        assert!(lease.is_valid(MS(10_897)));
        assert!(!lease.is_valid(MS(10_898)));
        assert_eq!(lease.remaining(MS(20_000)), Duration::ZERO);
        assert_eq!(lease.span(), MS(10_000));
    }

    #[test]
    fn renewal_leaves_a_whole_round_before_the_deadline() {
        // A short rehydrated lease: 60 % in would leave 400 ms, but the margin is 500 ms.
        let lease = Lease::granted(MS(0), MS(1_000), MS(0), ONE_PERCENT, MS(450)).unwrap();
        assert_eq!(lease.deadline(), MS(988));
        assert_eq!(lease.renew_at(), MS(538));
        assert!(lease.renew_at() + MS(450) <= lease.deadline());
    }

    #[test]
    fn a_margin_longer_than_half_the_validity_renews_half_way() {
        let lease = Lease::granted(MS(100), MS(300), MS(0), ONE_PERCENT, MS(200)).unwrap();
        assert_eq!(lease.deadline(), MS(100 + 295));
        assert_eq!(lease.renew_at(), Duration::from_micros(247_500));
        assert!(
            lease.renew_at() > MS(100),
            "renewal never starts at the grant itself"
        );
    }

    #[test]
    fn renewal_is_never_after_the_deadline_for_any_span() {
        for span_ms in [3, 4, 10, 99, 100, 101, 1_000, 10_000, 1 << 40] {
            for margin_ms in [1, 50, 100, 5_000] {
                for elapsed_ms in [0, 1, span_ms / 2] {
                    let Some(lease) = Lease::granted(
                        MS(5),
                        MS(span_ms),
                        MS(elapsed_ms),
                        ONE_PERCENT,
                        MS(margin_ms),
                    ) else {
                        continue;
                    };
                    assert!(lease.renew_at() < lease.deadline(), "{span_ms} {margin_ms}");
                    assert!(lease.renew_at() >= MS(5));
                }
            }
        }
    }

    #[test]
    fn no_validity_no_lease() {
        assert_eq!(
            Lease::granted(MS(0), MS(3), MS(1), ONE_PERCENT, MS(1)),
            None
        );
        assert!(Lease::granted(MS(0), MS(3), MS(0), ONE_PERCENT, MS(1)).is_some());
        assert_eq!(
            Lease::granted(MS(0), MS(10_000), Duration::MAX, ONE_PERCENT, MS(1)),
            None
        );
    }
}
