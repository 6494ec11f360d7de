//! A [`LockManager`] on Redis in one call.

use std::sync::Arc;
use std::time::Duration;

use redlock_core::{
    Error, LockBackend, LockManager, LockManagerBuilder, RandomSource, DEFAULT_INSTANCE_TIMEOUT,
};

use crate::backend::RedisBackend;
use crate::build::ConnectionOptions;
use crate::config::Instance;
use crate::runtime::{TokioClock, TokioSpawner};

/// Starts a [`RedisManagerBuilder`] over `instances`, in any mix of the forms of [`Instance`]
/// (aioredlock's `Aioredlock(redis_instances)`).
///
/// ```no_run
/// # async fn demo() -> Result<(), redlock_core::Error> {
/// use redlock_fred::{RedisConfig, Sentinel};
///
/// let manager = redlock_fred::manager([
///     redlock_fred::Instance::from(("localhost", 7001)),
///     RedisConfig::new("localhost", 7002).with_db(1).into(),
///     "redis://localhost:7003/2".into(),
///     Sentinel::new([("localhost", 26379)], "leader").with_db(3).into(),
/// ])
/// .build()?;
/// let lock = manager.lock("resource_name", std::time::Duration::from_secs(10)).await?;
/// lock.release().await?;
/// # Ok(()) }
/// ```
pub fn manager<I>(instances: I) -> RedisManagerBuilder
where
    I: IntoIterator,
    I::Item: Into<Instance>,
{
    RedisManagerBuilder::new(instances)
}

/// Builds a [`LockManager`] over Redis instances, with the tokio clock and spawner.
///
/// Keeps fred's command timeout just below the manager's per-instance timeout (see
/// [`ConnectionOptions`]), which is why the per-instance timeout is set here and not on the core
/// builder.
///
/// # Default
/// The core builder's defaults ([`LockManagerBuilder`]), [`TokioClock`], [`TokioSpawner`], and
/// [`ConnectionOptions::default`] adjusted to the instance timeout.
///
/// Connections are made lazily: building touches no network, and each instance connects on
/// the first call that needs it (inside the caller's tokio runtime). An instance that is down
/// then is retried in the background and counts as a failed vote meanwhile. To find a wrong
/// password, a wrong address or a server too old at start-up instead, call
/// [`LockManager::connect`] on the built manager: it checks every instance at once.
#[derive(Debug)]
#[must_use]
pub struct RedisManagerBuilder {
    instances: Vec<Instance>,
    core: LockManagerBuilder,
    options: ConnectionOptions,
    instance_timeout: Duration,
}

impl RedisManagerBuilder {
    /// A builder over `instances`.
    pub fn new<I>(instances: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Instance>,
    {
        Self {
            instances: instances.into_iter().map(Into::into).collect(),
            core: LockManagerBuilder::new(Arc::new(TokioClock)).spawner(Arc::new(TokioSpawner)),
            options: ConnectionOptions::default(),
            instance_timeout: DEFAULT_INSTANCE_TIMEOUT,
        }
    }

    /// Adds one more instance.
    pub fn instance(mut self, instance: impl Into<Instance>) -> Self {
        self.instances.push(instance.into());
        self
    }

    /// How long one call to one instance may take; fred's command timeout is set 10 % below.
    pub fn instance_timeout(mut self, timeout: Duration) -> Self {
        self.instance_timeout = timeout;
        self
    }

    /// Timeout of one connection attempt (TCP, TLS, `AUTH`, `SELECT`, Sentinel queries).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.options = self.options.with_connection_timeout(timeout);
        self
    }

    /// Longest delay between reconnection attempts to a server that went away.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.options = self.options.with_reconnect_max_delay(delay);
        self
    }

    /// Total number of acquire attempts (see [`LockManagerBuilder::retry_count`]).
    pub fn retry_count(mut self, attempts: u32) -> Self {
        self.core = self.core.retry_count(attempts);
        self
    }

    /// The random delay range between attempts (see [`LockManagerBuilder::retry_delay`]).
    pub fn retry_delay(mut self, min: Duration, max: Duration) -> Self {
        self.core = self.core.retry_delay(min, max);
        self
    }

    /// The clock drift factor (see [`LockManagerBuilder::drift_factor`]).
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.core = self.core.drift_factor(factor);
        self
    }

    /// The lease of locks taken without an explicit TTL (see
    /// [`LockManagerBuilder::internal_lock_timeout`]).
    pub fn internal_lock_timeout(mut self, ttl: Duration) -> Self {
        self.core = self.core.internal_lock_timeout(ttl);
        self
    }

    /// Bytes put in front of every resource name (see [`LockManagerBuilder::key_prefix`]).
    pub fn key_prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.core = self.core.key_prefix(prefix);
        self
    }

    /// Wake waiting acquirers through Redis pub/sub when a lock is released (on by default; see
    /// [`LockManagerBuilder::wake_on_release`]).
    pub fn wake_on_release(mut self, on: bool) -> Self {
        self.core = self.core.wake_on_release(on);
        self
    }

    /// Queue contended waiters on the instances and hand each release to the first of them
    /// (on by default; see [`LockManagerBuilder::hand_off`]). Off, releases wake every waiter.
    pub fn hand_off(mut self, on: bool) -> Self {
        self.core = self.core.hand_off(on);
        self
    }

    /// Fair mode: after a release someone was waiting for, wait `grace` before taking the same
    /// resource again (see [`LockManagerBuilder::fair`]).
    pub fn fair(mut self, grace: Duration) -> Self {
        self.core = self.core.fair(grace);
        self
    }

    /// Fenced locks by default: each lock carries a fencing token (see
    /// [`LockManagerBuilder::fenced`]; the Redis backend keeps the counters).
    pub fn fenced(mut self, on: bool) -> Self {
        self.core = self.core.fenced(on);
        self
    }

    /// The source of tokens and jitter (see [`LockManagerBuilder::random`]).
    pub fn random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.core = self.core.random(random);
        self
    }

    /// Builds the backends and returns the core builder, pre-set with them, the tokio clock and
    /// spawner and the instance timeout, for settings this builder does not forward. Do not
    /// lower its `instance_timeout` below the one given here (see [`ConnectionOptions`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an instance that does not parse or validate (see
    /// [`RedisBackend::with_options`]), or an instance timeout of 1 ms or less (fred's own
    /// timeout must run out first). Touches no network.
    pub fn into_core(self) -> Result<LockManagerBuilder, Error> {
        let timeout = self.instance_timeout;
        if !timeout.is_zero() && timeout <= Duration::from_millis(1) {
            return Err(crate::config::config_error(format!(
                "instance timeout {timeout:?} is too short for Redis: fred's command timeout (1 ms at least) must run out before it, so give at least 2 ms"
            )));
        }
        let options = self
            .options
            .clone()
            .for_instance_timeout(self.instance_timeout);
        let backends = self
            .instances
            .into_iter()
            .map(|i| {
                RedisBackend::with_options(i, &options).map(|b| Arc::new(b) as Arc<dyn LockBackend>)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .core
            .instance_timeout(self.instance_timeout)
            .instances(backends))
    }

    /// Builds the manager. Touches no network.
    ///
    /// # Errors
    /// [`Error::InvalidInput`]: an instance that does not parse or validate, no instance, two
    /// instances that are the same server, or a setting the core refuses (see
    /// [`LockManagerBuilder::build`]).
    pub fn build(self) -> Result<LockManager, Error> {
        self.into_core()?.build()
    }
}
