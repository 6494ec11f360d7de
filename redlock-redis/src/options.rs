//! How a backend talks to its server.

use std::time::Duration;

/// Connection settings of a [`RedisBackend`](crate::RedisBackend).
///
/// # Default
/// | setting | default | why |
/// | --- | --- | --- |
/// | `command_timeout` | 90 ms | just under the manager's default 100 ms per-instance timeout |
/// | `connection_timeout` | 1 s | also bounds `AUTH`, `SELECT` and the version check |
/// | `reconnect_max_delay` | 1 s | a server that refused a connection is tried again after 10 ms, doubling up to this |
///
/// The command timeout must stay *below* the manager's per-instance timeout, so that the backend
/// drops a request it has not written yet before the manager stops waiting for it: a request
/// written after its caller gave up would leave a lock key nobody releases until its TTL. (A
/// call the manager's round polls needs no timer of its own: the round drops it when it stops
/// waiting, by then past its command timeout. The timeout still ends a call the round dropped
/// earlier, and every call made outside a manager.)
/// [`RedisManagerBuilder`](crate::RedisManagerBuilder) keeps the two in step, and
/// [`LockBackend::check_config`](redlock_core::LockBackend::check_config) refuses a manager
/// whose instance timeout is not longer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ConnectionOptions {
    pub(crate) command_timeout: Duration,
    pub(crate) connection_timeout: Duration,
    pub(crate) reconnect_max_delay: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_millis(90),
            connection_timeout: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(1),
        }
    }
}

impl ConnectionOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The command timeout for a manager whose per-instance timeout is `instance_timeout`:
    /// 10 % (at least 1 ms) shorter, so the backend's own timeout fires first.
    pub fn for_instance_timeout(mut self, instance_timeout: Duration) -> Self {
        let margin = (instance_timeout / 10).max(Duration::from_millis(1));
        self.command_timeout = instance_timeout
            .saturating_sub(margin)
            .max(Duration::from_millis(1));
        self
    }

    /// The longest one operation may take, from its first poll to its reply, connecting
    /// included (zero is raised to 1 ms).
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Timeout of one connection attempt, including TLS, `AUTH`, `SELECT` and the version check.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Longest delay between connection attempts to a server that refused the last one.
    pub fn with_reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay.max(Duration::from_millis(10));
        self
    }

    /// The command timeout.
    #[must_use]
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// The connection timeout.
    #[must_use]
    pub fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }
}
