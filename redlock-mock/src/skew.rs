//! A clock that runs at its own rate, offset and with jumps, over the simulation's true time.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use redlock_core::Clock;

use crate::clock::VirtualClock;

const PPM: i128 = 1_000_000;

/// One machine's view of time: the simulation's true time ([`VirtualClock`]) seen through an
/// offset, a rate error and forward jumps.
///
/// Give one to a [`MemoryBackend`](crate::MemoryBackend) and it expires keys on that server's
/// time; give one to a [`LockManager`](redlock_core::LockManager) and its deadlines run on that
/// client's time. The [`World`](crate::World) gives every instance and every client its own.
///
/// The rate is in parts per million: `10_000` runs 1 % fast (1.01 s pass here for each true
/// second), `-10_000` 1 % slow. A [`jump`](Self::jump) moves it forward at once, like a wall
/// clock stepped by NTP (the Kleppmann scenario). It never goes backwards, as the [`Clock`]
/// trait requires.
#[derive(Clone)]
pub struct SkewedClock {
    truth: VirtualClock,
    skew: Arc<Mutex<Skew>>,
}

#[derive(Debug, Clone, Copy)]
struct Skew {
    /// True time at which `local_at_anchor` was this clock's reading.
    true_anchor: Duration,
    local_at_anchor: Duration,
    rate_ppm: i64,
}

impl fmt::Debug for SkewedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let skew = *self.skew();
        f.debug_struct("SkewedClock")
            .field("now", &self.now())
            .field("rate_ppm", &skew.rate_ppm)
            .finish()
    }
}

fn scale(d: Duration, num: i128, den: i128, round_up: bool) -> Duration {
    let n = d.as_nanos() as i128 * num;
    let q = if round_up {
        (n + den - 1) / den
    } else {
        n / den
    };
    Duration::from_nanos(u64::try_from(q.max(0)).unwrap_or(u64::MAX))
}

impl SkewedClock {
    /// A clock that reads exactly the true time of `truth` (no offset, no rate error).
    #[must_use]
    pub fn new(truth: VirtualClock) -> Self {
        let now = truth.now();
        Self {
            truth,
            skew: Arc::new(Mutex::new(Skew {
                true_anchor: now,
                local_at_anchor: now,
                rate_ppm: 0,
            })),
        }
    }

    /// Starts `offset` ahead of true time (a different boot time; harmless for leases, which
    /// use durations only).
    #[must_use]
    pub fn with_offset(self, offset: Duration) -> Self {
        self.jump(offset);
        self
    }

    /// Runs `ppm` parts per million fast (negative: slow) from now on.
    #[must_use]
    pub fn with_rate_ppm(self, ppm: i64) -> Self {
        self.set_rate_ppm(ppm);
        self
    }

    fn skew(&self) -> MutexGuard<'_, Skew> {
        // Every update writes whole fields.
        self.skew.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The true time this clock is read against.
    #[must_use]
    pub fn truth(&self) -> &VirtualClock {
        &self.truth
    }

    /// The rate error in parts per million.
    #[must_use]
    pub fn rate_ppm(&self) -> i64 {
        self.skew().rate_ppm
    }

    /// Changes the rate from now on. Rates at or below −100 % would stop or reverse the clock,
    /// so they are clamped to −99.9999 %.
    pub fn set_rate_ppm(&self, ppm: i64) {
        let now_true = self.truth.now();
        let mut skew = self.skew();
        let local = skew.local(now_true);
        *skew = Skew {
            true_anchor: now_true,
            local_at_anchor: local,
            rate_ppm: ppm.max(-999_999),
        };
    }

    /// Moves this clock forward by `by` at once.
    pub fn jump(&self, by: Duration) {
        let mut skew = self.skew();
        skew.local_at_anchor = skew.local_at_anchor.saturating_add(by);
    }

    /// The true time at which this clock will read `local`, if its rate does not change and it
    /// does not jump meanwhile (rounded up). A reading already passed maps to the past.
    #[must_use]
    pub fn to_true(&self, local: Duration) -> Duration {
        let skew = *self.skew();
        if local >= skew.local_at_anchor {
            let span = local - skew.local_at_anchor;
            skew.true_anchor + scale(span, PPM, PPM + i128::from(skew.rate_ppm), true)
        } else {
            let span = skew.local_at_anchor - local;
            skew.true_anchor.saturating_sub(scale(
                span,
                PPM,
                PPM + i128::from(skew.rate_ppm),
                false,
            ))
        }
    }
}

impl Skew {
    fn local(&self, now_true: Duration) -> Duration {
        let span = now_true.saturating_sub(self.true_anchor);
        self.local_at_anchor + scale(span, PPM + i128::from(self.rate_ppm), PPM, false)
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> Duration {
        let now_true = self.truth.now();
        self.skew().local(now_true)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        // Rounded up so a sleep never ends before `duration` passed on this clock.
        let rate = self.skew().rate_ppm;
        let span = scale(duration, PPM, PPM + i128::from(rate), true);
        let deadline = self.truth.now().saturating_add(span);
        Box::pin(self.truth.sleep_until(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fast_and_maps_back_to_true_time() {
        let truth = VirtualClock::new();
        let clock = SkewedClock::new(truth.clone()).with_rate_ppm(10_000);
        truth.advance(Duration::from_secs(100));
        assert_eq!(clock.now(), Duration::from_secs(101));
        assert_eq!(
            clock.to_true(Duration::from_secs(202)),
            Duration::from_secs(200)
        );
    }

    #[test]
    fn jumps_forward_and_rate_changes_keep_it_monotonic() {
        let truth = VirtualClock::new();
        let clock = SkewedClock::new(truth.clone()).with_rate_ppm(-500_000);
        truth.advance(Duration::from_secs(10));
        assert_eq!(clock.now(), Duration::from_secs(5));
        clock.jump(Duration::from_secs(60));
        clock.set_rate_ppm(0);
        assert_eq!(clock.now(), Duration::from_secs(65));
        truth.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), Duration::from_secs(66));
    }

    #[test]
    fn a_sleep_lasts_its_duration_on_the_skewed_clock() {
        let sim = crate::Simulation::new();
        let truth = sim.clock();
        let clock = SkewedClock::new(truth.clone()).with_rate_ppm(250_000);
        let (local, real) = sim.run(async {
            clock.sleep(Duration::from_secs(5)).await;
            (clock.now(), truth.now())
        });
        assert_eq!(local, Duration::from_secs(5));
        assert_eq!(real, Duration::from_secs(4));
    }
}
