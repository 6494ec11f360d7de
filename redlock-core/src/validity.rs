//! The arithmetic of a lease: drift allowance and remaining validity.
//!
//! All of it is integer arithmetic on nanoseconds, saturating, so no TTL, however small or
//! large, can panic or wrap.

use std::time::Duration;

/// The fixed part of the drift allowance: Redis expires keys with millisecond precision, so a
/// key can vanish up to a millisecond early on each side.
pub const DRIFT_FLOOR: Duration = Duration::from_millis(2);

/// The longest TTL accepted (2^40 ms, about 34.8 years): far beyond any sensible lease, and far
/// below what would overflow Redis' expiry arithmetic or the manager's deadlines.
pub const MAX_TTL: Duration = Duration::from_millis(1 << 40);

/// The drift factor as parts per million, so that `0.01` is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DriftPpm(pub(crate) u32);

impl DriftPpm {
    /// `None` unless `factor` is finite and in `[0, 1)`.
    pub(crate) fn from_factor(factor: f64) -> Option<Self> {
        if !factor.is_finite() || !(0.0..1.0).contains(&factor) {
            return None;
        }
        // In [0, 1e6): the cast cannot saturate.
        Some(Self((factor * 1e6).round() as u32))
    }

    /// `⌊ttl_ms × factor⌋ ms + 2 ms`: how much earlier than the TTL the lock must be considered
    /// gone, to cover clock-rate differences between this client and the instances. Whole
    /// milliseconds, as in the reference implementations (TTL 3 ms leaves 1 ms).
    pub(crate) fn drift(self, ttl: Duration) -> Duration {
        let scaled_ms = ttl.as_millis().saturating_mul(u128::from(self.0)) / 1_000_000;
        let scaled_ms = u64::try_from(scaled_ms).unwrap_or(u64::MAX);
        Duration::from_millis(scaled_ms).saturating_add(DRIFT_FLOOR)
    }

    /// `ttl − elapsed − drift`, or zero: the time left during which the lock is safe to use.
    pub(crate) fn validity(self, ttl: Duration, elapsed: Duration) -> Duration {
        ttl.saturating_sub(elapsed).saturating_sub(self.drift(ttl))
    }
}

/// Checks a TTL and rounds it down to whole milliseconds (the instances' resolution). Rounding
/// down keeps the lease conservative.
pub(crate) fn normalize_ttl(ttl: Duration, drift: DriftPpm) -> Result<Duration, &'static str> {
    if ttl > MAX_TTL {
        return Err("is longer than the maximum (2^40 ms)");
    }
    let ms = ttl.as_millis();
    if ms == 0 {
        return Err("is shorter than 1 ms");
    }
    // ms <= 2^40 here, so the conversion is exact.
    let ttl = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
    if drift.validity(ttl, Duration::ZERO).is_zero() {
        return Err("leaves no validity after the drift allowance (ttl × drift_factor + 2 ms)");
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_PERCENT: DriftPpm = DriftPpm(10_000);

    #[test]
    fn drift_for_ten_seconds_is_102_ms() {
        assert_eq!(
            ONE_PERCENT.drift(Duration::from_secs(10)),
            Duration::from_millis(102)
        );
    }

    #[test]
    fn validity_ten_seconds_after_twenty_ms_is_9878_ms() {
        assert_eq!(
            ONE_PERCENT.validity(Duration::from_secs(10), Duration::from_millis(20)),
            Duration::from_millis(9_878)
        );
    }

    #[test]
    fn validity_saturates_at_zero() {
        let ttl = Duration::from_secs(10);
        assert_eq!(
            ONE_PERCENT.validity(ttl, Duration::from_millis(9_898)),
            Duration::ZERO
        );
        assert_eq!(ONE_PERCENT.validity(ttl, Duration::MAX), Duration::ZERO);
        assert_eq!(
            ONE_PERCENT.validity(ttl, Duration::from_millis(9_897)),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn factor_conversion_is_exact_and_bounded() {
        assert_eq!(DriftPpm::from_factor(0.01), Some(ONE_PERCENT));
        assert_eq!(DriftPpm::from_factor(0.0), Some(DriftPpm(0)));
        for bad in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(DriftPpm::from_factor(bad), None, "{bad}");
        }
    }

    #[test]
    fn ttl_edges() {
        assert!(normalize_ttl(Duration::ZERO, ONE_PERCENT).is_err());
        assert!(normalize_ttl(Duration::from_micros(999), ONE_PERCENT).is_err());
        assert!(normalize_ttl(Duration::from_millis(1), ONE_PERCENT).is_err());
        assert!(normalize_ttl(Duration::from_millis(2), ONE_PERCENT).is_err());
        assert_eq!(
            normalize_ttl(Duration::from_millis(3), ONE_PERCENT),
            Ok(Duration::from_millis(3))
        );
        assert_eq!(
            ONE_PERCENT.validity(Duration::from_millis(3), Duration::ZERO),
            Duration::from_millis(1)
        );
        assert_eq!(
            normalize_ttl(Duration::from_micros(10_999), ONE_PERCENT),
            Ok(Duration::from_millis(10))
        );
        assert_eq!(normalize_ttl(MAX_TTL, ONE_PERCENT), Ok(MAX_TTL));
        assert!(normalize_ttl(MAX_TTL + Duration::from_nanos(1), ONE_PERCENT).is_err());
        assert!(normalize_ttl(Duration::MAX, ONE_PERCENT).is_err());
        // Huge factors shrink validity but never wrap.
        let big = DriftPpm(999_999);
        assert!(normalize_ttl(Duration::from_millis(100), big).is_err());
        assert!(big.validity(MAX_TTL, Duration::ZERO) > Duration::ZERO);
    }
}
