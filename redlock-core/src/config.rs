//! Configuration of a [`LockManager`], validated once by its builder.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::LockBackend;
use crate::error::{Error, InvalidInput};
use crate::manager::LockManager;
use crate::runtime::{Clock, OsRandom, RandomSource, Spawner};
use crate::validity::DriftPpm;

/// The validated settings of a manager. Read them back with [`LockManager::config`].
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) retry_count: u32,
    pub(crate) retry_delay_min: Duration,
    pub(crate) retry_delay_max: Duration,
    pub(crate) drift_factor: f64,
    pub(crate) drift: DriftPpm,
    pub(crate) instance_timeout: Duration,
    pub(crate) internal_lock_timeout: Duration,
    pub(crate) key_prefix: Vec<u8>,
    pub(crate) wake_on_release: bool,
    /// Hand-off queues where every backend supports them (else announcements).
    pub(crate) hand_off: bool,
    /// Fair mode's grace, when fair mode is on.
    pub(crate) fair: Option<Duration>,
    /// Off only in tests that prove their checkers catch work running past the deadline.
    pub(crate) deadline_guard: bool,
    pub(crate) max_in_flight: usize,
    /// Re-check held locks when a backend announces a reconnection.
    pub(crate) restart_recovery: bool,
    /// Whether locks are fenced unless the call says otherwise.
    pub(crate) fenced: bool,
    /// Off only in tests that prove the fencing checker catches a missing raise round.
    pub(crate) fence_raise: bool,
}

impl Config {
    /// Total number of acquire attempts (aioredlock's `retry_count`, which counts attempts).
    #[must_use]
    pub fn retry_count(&self) -> u32 {
        self.retry_count
    }

    /// The range the random delay between attempts is drawn from.
    #[must_use]
    pub fn retry_delay(&self) -> (Duration, Duration) {
        (self.retry_delay_min, self.retry_delay_max)
    }

    /// The clock drift factor.
    #[must_use]
    pub fn drift_factor(&self) -> f64 {
        self.drift_factor
    }

    /// The drift allowance for a lease of `ttl`: `ttl × drift_factor + 2 ms`.
    #[must_use]
    pub fn drift(&self, ttl: Duration) -> Duration {
        self.drift.drift(ttl)
    }

    /// How long one call to one instance may take before it counts as failed.
    #[must_use]
    pub fn instance_timeout(&self) -> Duration {
        self.instance_timeout
    }

    /// The lease of locks taken without an explicit TTL (aioredlock's `internal_lock_timeout`).
    #[must_use]
    pub fn internal_lock_timeout(&self) -> Duration {
        self.internal_lock_timeout
    }

    /// The bytes put in front of every resource name to form the key.
    #[must_use]
    pub fn key_prefix(&self) -> &[u8] {
        &self.key_prefix
    }

    /// Whether waiters are woken by release announcements (where the backend supports them).
    #[must_use]
    pub fn wake_on_release(&self) -> bool {
        self.wake_on_release
    }

    /// Whether contended waiters queue for hand-offs (where every backend supports them)
    /// instead of being woken by announcements.
    #[must_use]
    pub fn hand_off(&self) -> bool {
        self.hand_off
    }

    /// Whether fair mode is on, and its grace period.
    #[must_use]
    pub fn fair(&self) -> Option<Duration> {
        self.fair
    }

    /// At most this many calls in flight to one instance.
    #[must_use]
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Whether held locks are re-checked when a backend announces a reconnection (see
    /// [`LockManagerBuilder::restart_recovery`]).
    #[must_use]
    pub fn restart_recovery(&self) -> bool {
        self.restart_recovery
    }

    /// Whether locks are fenced by default (see [`LockManagerBuilder::fenced`]).
    #[must_use]
    pub fn fenced(&self) -> bool {
        self.fenced
    }
}

/// Builds a [`LockManager`]; every value is checked by [`build`](Self::build).
///
/// # Default
///
/// | setting | default | aioredlock |
/// | --- | --- | --- |
/// | `retry_count` | 3 attempts | `retry_count=3` |
/// | `retry_delay` | 100 ms – 300 ms | `retry_delay_min=0.1`, `retry_delay_max=0.3` |
/// | `drift_factor` | 0.01 | 0.01 |
/// | `instance_timeout` | 100 ms | none (connection default) |
/// | `internal_lock_timeout` | 10 s | 10 s |
/// | `key_prefix` | none: the key is the resource name | none |
/// | randomness | [`OsRandom`] | `uuid4` |
/// | spawner | none | asyncio loop |
/// | `wake_on_release` | on: hand-off queues, or release announcements (where the backend supports them) | no: waiters sleep out the delay |
/// | `hand_off` | on (where every backend supports it) | no |
/// | `fair` | off | no |
/// | `max_in_flight` | 1024 calls per instance | no limit |
/// | `restart_recovery` | on (with a spawner, where the backend announces reconnections) | no |
/// | `fenced` | off: one round per acquire | no fencing |
#[derive(Debug)]
#[must_use]
pub struct LockManagerBuilder {
    instances: Vec<Arc<dyn LockBackend>>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn RandomSource>,
    spawner: Option<Arc<dyn Spawner>>,
    retry_count: u32,
    retry_delay: (Duration, Duration),
    drift_factor: f64,
    instance_timeout: Duration,
    internal_lock_timeout: Duration,
    key_prefix: Vec<u8>,
    wake_on_release: bool,
    hand_off: bool,
    fair: Option<Duration>,
    deadline_guard: bool,
    max_in_flight: usize,
    restart_recovery: bool,
    fenced: bool,
    fence_raise: bool,
}

/// Default total number of acquire attempts.
pub const DEFAULT_RETRY_COUNT: u32 = 3;
/// Default lower bound of the delay between attempts.
pub const DEFAULT_RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
/// Default upper bound of the delay between attempts.
pub const DEFAULT_RETRY_DELAY_MAX: Duration = Duration::from_millis(300);
/// Default clock drift factor.
pub const DEFAULT_DRIFT_FACTOR: f64 = 0.01;
/// Default per-instance timeout: small next to a 10 s lease, large next to a LAN round trip.
pub const DEFAULT_INSTANCE_TIMEOUT: Duration = Duration::from_millis(100);
/// Default lease of locks taken without an explicit TTL.
pub const DEFAULT_INTERNAL_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit of calls in flight to one instance from one manager.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// The longest delay between attempts accepted: one hour. Longer ones are almost certainly a
/// unit mistake, and would make `lock` hang for as long.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// The longest fair-mode grace accepted: one minute. The grace delays the releaser's next
/// acquire; a longer one is a unit mistake.
pub const MAX_FAIR_GRACE: Duration = Duration::from_secs(60);

impl LockManagerBuilder {
    /// A builder whose deadlines and sleeps use `clock` (tokio's in `redlock-fred`, a virtual one
    /// in `redlock-mock`).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            instances: Vec::new(),
            clock,
            random: Arc::new(OsRandom),
            spawner: None,
            retry_count: DEFAULT_RETRY_COUNT,
            retry_delay: (DEFAULT_RETRY_DELAY_MIN, DEFAULT_RETRY_DELAY_MAX),
            drift_factor: DEFAULT_DRIFT_FACTOR,
            instance_timeout: DEFAULT_INSTANCE_TIMEOUT,
            internal_lock_timeout: DEFAULT_INTERNAL_LOCK_TIMEOUT,
            key_prefix: Vec::new(),
            wake_on_release: true,
            hand_off: true,
            fair: None,
            deadline_guard: true,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            restart_recovery: true,
            fenced: false,
            fence_raise: true,
        }
    }

    /// Adds one instance.
    pub fn instance(mut self, backend: Arc<dyn LockBackend>) -> Self {
        self.instances.push(backend);
        self
    }

    /// Adds several instances.
    pub fn instances(mut self, backends: impl IntoIterator<Item = Arc<dyn LockBackend>>) -> Self {
        self.instances.extend(backends);
        self
    }

    /// The source of tokens and retry jitter. Keep the default outside simulations.
    pub fn random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.random = random;
        self
    }

    /// A spawner for background work (releasing dropped locks, cleaning up after cancelled
    /// acquires). Without one that work is left to the TTL.
    pub fn spawner(mut self, spawner: Arc<dyn Spawner>) -> Self {
        self.spawner = Some(spawner);
        self
    }

    /// Total number of acquire attempts, at least 1.
    pub fn retry_count(mut self, attempts: u32) -> Self {
        self.retry_count = attempts;
        self
    }

    /// The range a random delay between attempts is drawn from (uniformly, so that clients
    /// contending for one resource fall out of step). `min == max` and zero are allowed; `max`
    /// is at most [`MAX_RETRY_DELAY`].
    pub fn retry_delay(mut self, min: Duration, max: Duration) -> Self {
        self.retry_delay = (min, max);
        self
    }

    /// The clock drift factor, in `[0, 1)`.
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = factor;
        self
    }

    /// How long one call to one instance may take before it counts as failed; it bounds every
    /// round (acquire, extend, release, check). Must be shorter than the validity of
    /// `internal_lock_timeout` (its TTL less the drift allowance), so that a renewal round fits
    /// in the lease it renews.
    pub fn instance_timeout(mut self, timeout: Duration) -> Self {
        self.instance_timeout = timeout;
        self
    }

    /// The lease of locks taken without an explicit TTL, and of rehydrated locks.
    pub fn internal_lock_timeout(mut self, ttl: Duration) -> Self {
        self.internal_lock_timeout = ttl;
        self
    }

    /// Bytes put in front of every resource name to form the key. Leave empty to share locks
    /// with other Redlock clients (aioredlock, redlock-py, node-redlock use the bare name).
    pub fn key_prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Whether a waiting acquirer is woken by releases instead of sleeping out its retry delay.
    /// When every instance supports [`Handoff`](crate::Handoff), a refused acquirer queues on
    /// the instances and a release hands the key to the first queued waiter, reserved for it,
    /// and tells it alone: waiters are served in order across processes, and a release costs one
    /// attempt, not one per waiter. Otherwise an acquirer wakes as soon as a majority of
    /// instances announced a release (through the backends'
    /// [`ReleaseNotify`](crate::ReleaseNotify)). The jittered delay stays as the fallback, and
    /// every wake-up still runs a full attempt with the usual quorum and validity rules. Attempts made early this way do not
    /// count against `retry_count` while their retry window lasts, so several waiters woken by
    /// every release do not use up their attempts; the time bound of
    /// [`LockManager::lock`](crate::LockManager::lock) is unchanged. On by default; backends
    /// without the capability poll.
    pub fn wake_on_release(mut self, on: bool) -> Self {
        self.wake_on_release = on;
        self
    }

    /// Whether contended waiters queue on the instances for hand-offs (on by default; used when
    /// every backend supports [`Handoff`](crate::Handoff) and `wake_on_release` is on). Off,
    /// waiters are woken by release announcements instead: every waiter of every process wakes
    /// at each release and tries (the behaviour of earlier versions, which share servers with
    /// this one either way: a hand-off release announces when nobody is queued).
    pub fn hand_off(mut self, on: bool) -> Self {
        self.hand_off = on;
        self
    }

    /// Fair mode: after releasing a lock that someone was waiting for, this manager's next
    /// acquire of the same resource waits `grace` first, so the waiter gets its turn instead of
    /// the releaser winning again at once. A waiter that vanished delays the releaser by at most
    /// `grace` ([`DEFAULT_FAIR_GRACE`](crate::DEFAULT_FAIR_GRACE) is 20 ms; at most
    /// [`MAX_FAIR_GRACE`]). Needs `wake_on_release` (a build error otherwise) and a backend that
    /// reports listeners (without one it has no effect). With hand-offs the release already
    /// reserves the key for the waiter, and fair mode adds nothing.
    pub fn fair(mut self, grace: Duration) -> Self {
        self.fair = Some(grace);
        self
    }

    /// At most `n` calls in flight to one instance (at least 1): under overload, a call that
    /// finds the limit reached waits for a place within its round's time limit and, if none
    /// frees up, is not sent at all (reported as
    /// [`InstanceOutcome::Saturated`](crate::InstanceOutcome::Saturated)) instead of queueing
    /// behind thousands of requests whose callers have given up. Together with the local queue
    /// (one round per resource at a time), this bounds the requests a manager has pending on an
    /// instance, whatever the number of waiting tasks. Releases are counted but never held back:
    /// a release not sent would leave its key standing for the whole TTL, and there is at most
    /// one per lock or failed attempt.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Restart recovery: when a backend announces that its connection to an instance was lost
    /// and made again ([`LockBackend::reconnects`]), re-check at once every lock this manager
    /// holds there. A key the instance lost (it restarted empty) is set again with our token
    /// for the validity left, never longer; an instance where another client's token is found,
    /// or that cannot be checked, stops counting; and a lock left on fewer than a quorum is
    /// reported lost at once ([`LossReason::InstancesLost`](crate::LossReason::InstancesLost))
    /// instead of at its next renewal. Needs a [`spawner`](Self::spawner) (the re-checks run in
    /// the background); with more than 64 instances it is off. On by default.
    pub fn restart_recovery(mut self, on: bool) -> Self {
        self.restart_recovery = on;
        self
    }

    /// Whether locks carry a fencing token ([`Lock::fence`](crate::Lock::fence)) unless the call
    /// says otherwise ([`LockOptions::fenced`](crate::LockOptions::fenced)). Off by default: a
    /// plain acquire is one round, a fenced one three (the acquire, then a quorum of counter
    /// increments where the key holds our token, then a quorum of raise-only write-backs of the
    /// largest value). Every backend must keep fencing counters
    /// ([`LockBackend::fencing`](crate::LockBackend::fencing)), or the build fails. See the
    /// crate docs, "Fencing tokens", for the persistence the fences' monotonicity needs.
    pub fn fenced(mut self, on: bool) -> Self {
        self.fenced = on;
        self
    }

    /// **Testing only.** Fenced acquires skip their third round (the raise-only write-back of
    /// the largest counter value), so two grants can get the same fence. It exists so that a
    /// test can prove the fencing checker catches that bug; never use it anywhere else.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn without_fence_raise(mut self) -> Self {
        self.fence_raise = false;
        self
    }

    /// **Testing only.** Brings back the scoped form's old bug: renewal rounds bounded by the
    /// instance timeout instead of the lease's deadline, and the work raced against the renewal
    /// alone, so it can be polled after the deadline. It exists so that a test can prove its
    /// checker catches that bug; never use it anywhere else.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn without_deadline_guard(mut self) -> Self {
        self.deadline_guard = false;
        self
    }

    /// Checks every setting and builds the manager. Touches no instance.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when there is no instance, two instances share an id,
    /// `retry_count` is 0, the delay range has min > max or max above [`MAX_RETRY_DELAY`], the
    /// drift factor is not in `[0, 1)`, the instance timeout is zero or not shorter than the
    /// validity of `internal_lock_timeout`, `internal_lock_timeout` is not a usable TTL, fair
    /// mode is on without `wake_on_release` or with a grace above [`MAX_FAIR_GRACE`], fenced
    /// locks are asked for and a backend keeps no fencing counters
    /// ([`InvalidInput::NoFencing`]), or a backend refuses the settings
    /// ([`LockBackend::check_config`]).
    pub fn build(self) -> Result<LockManager, Error> {
        let invalid = |what| Err(Error::invalid(what));
        if self.instances.is_empty() {
            return invalid(InvalidInput::NoInstances);
        }
        let mut seen = HashSet::new();
        for backend in &self.instances {
            if !seen.insert(backend.id()) {
                return invalid(InvalidInput::DuplicateInstance(backend.id().to_owned()));
            }
        }
        if self.retry_count == 0 {
            return invalid(InvalidInput::ZeroRetryCount);
        }
        let (min, max) = self.retry_delay;
        if min > max {
            return invalid(InvalidInput::RetryDelayRange { min, max });
        }
        if max > MAX_RETRY_DELAY {
            return invalid(InvalidInput::Setting {
                setting: "retry_delay",
                problem: format!("max {max:?} is longer than {MAX_RETRY_DELAY:?}"),
            });
        }
        if self.max_in_flight == 0 {
            return invalid(InvalidInput::Setting {
                setting: "max_in_flight",
                problem: "must be at least 1".into(),
            });
        }
        if let Some(grace) = self.fair {
            if !self.wake_on_release {
                return invalid(InvalidInput::Setting {
                    setting: "fair",
                    problem: "fair mode needs wake_on_release: a waiter that is not woken by \
                              the release cannot take its turn"
                        .into(),
                });
            }
            if grace > MAX_FAIR_GRACE {
                return invalid(InvalidInput::Setting {
                    setting: "fair",
                    problem: format!("grace {grace:?} is longer than {MAX_FAIR_GRACE:?}"),
                });
            }
        }
        let Some(drift) = DriftPpm::from_factor(self.drift_factor) else {
            return invalid(InvalidInput::DriftFactor(self.drift_factor.to_string()));
        };
        if self.instance_timeout.is_zero() {
            return invalid(InvalidInput::ZeroInstanceTimeout);
        }
        let internal_lock_timeout =
            crate::validity::normalize_ttl(self.internal_lock_timeout, drift).map_err(
                |reason| {
                    Error::invalid(InvalidInput::Ttl {
                        ttl: self.internal_lock_timeout,
                        reason,
                    })
                },
            )?;
        let validity = drift.validity(internal_lock_timeout, Duration::ZERO);
        if self.instance_timeout >= validity {
            return invalid(InvalidInput::Setting {
                setting: "instance_timeout",
                problem: format!(
                    "{:?} must be shorter than the validity of internal_lock_timeout \
                     ({validity:?}), or no renewal round fits in the lease it renews",
                    self.instance_timeout
                ),
            });
        }
        let config = Config {
            retry_count: self.retry_count,
            retry_delay_min: min,
            retry_delay_max: max,
            drift_factor: self.drift_factor,
            drift,
            instance_timeout: self.instance_timeout,
            internal_lock_timeout,
            key_prefix: self.key_prefix,
            wake_on_release: self.wake_on_release,
            hand_off: self.hand_off,
            fair: self.fair,
            deadline_guard: self.deadline_guard,
            max_in_flight: self.max_in_flight,
            restart_recovery: self.restart_recovery,
            fenced: self.fenced,
            fence_raise: self.fence_raise,
        };
        if self.fenced {
            if let Some(b) = self.instances.iter().find(|b| b.fencing().is_none()) {
                return invalid(InvalidInput::NoFencing(b.id().to_owned()));
            }
        }
        for backend in &self.instances {
            backend
                .check_config(&config)
                .map_err(|msg| Error::invalid(InvalidInput::Config(msg)))?;
        }
        Ok(LockManager::from_parts(
            self.instances,
            config,
            self.clock,
            self.random,
            self.spawner,
        ))
    }
}
