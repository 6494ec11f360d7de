//! A [`LockManager`] on Redis through redis-rs in one call.

use std::sync::Arc;
use std::time::Duration;

use redlock_core::{
    Error, LockBackend, LockManager, LockManagerBuilder, RandomSource, DEFAULT_INSTANCE_TIMEOUT,
};

use crate::backend::RedisBackend;
use crate::options::ConnectionOptions;
use crate::{TokioClock, TokioSpawner};

/// Starts a [`RedisManagerBuilder`] over the servers at `urls` (`redis://`, `rediss://` with
/// the `tls` feature, `redis+unix://`, `unix://`).
///
/// ```no_run
/// # async fn demo() -> Result<(), redlock_core::Error> {
/// let manager = redlock_redis::manager([
///     "redis://localhost:7001",
///     "redis://:s3cret@localhost:7002/1",
///     "redis+unix:///run/redis/7003.sock",
/// ])
/// .build()?;
/// let lock = manager.lock("resource_name", std::time::Duration::from_secs(10)).await?;
/// lock.release().await?;
/// # Ok(()) }
/// ```
pub fn manager<I>(urls: I) -> RedisManagerBuilder
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    RedisManagerBuilder::new(urls)
}

/// Builds a [`LockManager`] over Redis instances on redis-rs, with the tokio clock and spawner.
///
/// Keeps each backend's command timeout just below the manager's per-instance timeout (see
/// [`ConnectionOptions`]), which is why the per-instance timeout is set here and not on the core
/// builder.
///
/// # Default
/// The core builder's defaults ([`LockManagerBuilder`]), [`TokioClock`], [`TokioSpawner`], and
/// [`ConnectionOptions::default`] adjusted to the instance timeout.
///
/// Building touches no network: each instance connects on the first call that needs it. To
/// find a wrong password, a wrong address or a server too old at start-up, call
/// [`LockManager::connect`] on the built manager.
#[derive(Debug)]
#[must_use]
pub struct RedisManagerBuilder {
    urls: Vec<String>,
    core: LockManagerBuilder,
    options: ConnectionOptions,
    instance_timeout: Duration,
}

impl RedisManagerBuilder {
    /// A builder over the servers at `urls`.
    pub fn new<I>(urls: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self {
            urls: urls.into_iter().map(|u| u.as_ref().to_owned()).collect(),
            core: LockManagerBuilder::new(Arc::new(TokioClock)).spawner(Arc::new(TokioSpawner)),
            options: ConnectionOptions::default(),
            instance_timeout: DEFAULT_INSTANCE_TIMEOUT,
        }
    }

    /// Adds one more instance.
    pub fn instance(mut self, url: impl AsRef<str>) -> Self {
        self.urls.push(url.as_ref().to_owned());
        self
    }

    /// How long one call to one instance may take; the backends' command timeout is set 10 %
    /// below.
    pub fn instance_timeout(mut self, timeout: Duration) -> Self {
        self.instance_timeout = timeout;
        self
    }

    /// Timeout of one connection attempt (TCP, TLS, `AUTH`, `SELECT`, version check).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.options = self.options.with_connection_timeout(timeout);
        self
    }

    /// Longest delay between connection attempts to a server that refused the last one.
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

    /// Fair mode (see [`LockManagerBuilder::fair`]).
    pub fn fair(mut self, grace: Duration) -> Self {
        self.core = self.core.fair(grace);
        self
    }

    /// The source of tokens and jitter (see [`LockManagerBuilder::random`]).
    pub fn random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.core = self.core.random(random);
        self
    }

    /// Builds the backends and returns the core builder, pre-set with them, the tokio clock and
    /// spawner and the instance timeout, for settings this builder does not forward. Do not
    /// lower its `instance_timeout` below the one given here.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a URL that does not parse or validate (see
    /// [`RedisBackend::with_options`]), or an instance timeout of 1 ms or less. Touches no
    /// network.
    pub fn into_core(self) -> Result<LockManagerBuilder, Error> {
        let timeout = self.instance_timeout;
        if !timeout.is_zero() && timeout <= Duration::from_millis(1) {
            return Err(crate::config::config_error(format!(
                "instance timeout {timeout:?} is too short: the backend's command timeout (1 ms at least) must run out before it, so give at least 2 ms"
            )));
        }
        let options = self.options.clone().for_instance_timeout(timeout);
        let backends = self
            .urls
            .iter()
            .map(|url| {
                RedisBackend::with_options(url, &options)
                    .map(|b| Arc::new(b) as Arc<dyn LockBackend>)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.core.instance_timeout(timeout).instances(backends))
    }

    /// Builds the manager. Touches no network.
    ///
    /// # Errors
    /// [`Error::InvalidInput`]: a URL that does not parse or validate, no instance, two
    /// instances that are the same server, or a setting the core refuses (see
    /// [`LockManagerBuilder::build`]).
    pub fn build(self) -> Result<LockManager, Error> {
        self.into_core()?.build()
    }
}
