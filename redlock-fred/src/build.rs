//! Building a [`RedisBackend`]: from an [`Instance`], from a fred `Config`, or from a fred
//! client the application configured itself.

use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::types::config::{
    Config as FredConfig, ConnectionConfig, PerformanceConfig, ReconnectPolicy, Server,
    ServerConfig, TcpConfig,
};
use redlock_core::Error;

use crate::backend::RedisBackend;
use crate::config::{config_error, Instance, RedisConfig, UnixSocket};
use crate::secret::Secret;
use crate::sentinel::Sentinel;

/// How the backend talks to its server.
///
/// # Default
/// | setting | default | why |
/// | --- | --- | --- |
/// | `command_timeout` | 90 ms | just under the manager's default 100 ms per-instance timeout |
/// | `connection_timeout` | 1 s | also bounds `AUTH`/`SELECT`/Sentinel queries while connecting |
/// | `reconnect_max_delay` | 1 s | exponential backoff from 10 ms, forever, so a restarted server rejoins |
///
/// The command timeout must stay *below* the manager's per-instance timeout: fred marks a command
/// that timed out on its own clock and never writes it, while a command merely abandoned by the
/// manager stays queued and is written after a reconnect, leaving a ghost lock key for a whole
/// TTL. [`RedisManagerBuilder`](crate::RedisManagerBuilder) keeps the two in step.
///
/// Not an option: fred sends each command at most once (`max_command_attempts` 1). Its default
/// re-sends a command whose connection dropped before the reply came, after reconnecting; a
/// release that had already deleted the key would then run again, find nothing, and report a
/// lock held until that very release as lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ConnectionOptions {
    command_timeout: Duration,
    connection_timeout: Duration,
    reconnect_max_delay: Duration,
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
    /// 10 % (at least 1 ms) shorter, so fred's timeout fires first.
    pub fn for_instance_timeout(mut self, instance_timeout: Duration) -> Self {
        let margin = (instance_timeout / 10).max(Duration::from_millis(1));
        self.command_timeout = instance_timeout
            .saturating_sub(margin)
            .max(Duration::from_millis(1));
        self
    }

    /// fred's timeout for every command (zero is raised to 1 ms: fred reads zero as "none").
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Timeout of one connection attempt, including TLS and the handshake commands.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Longest delay between reconnection attempts.
    pub fn with_reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay.max(Duration::from_millis(10));
        self
    }

    /// fred's command timeout.
    #[must_use]
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }
}

/// What a backend is made of.
pub(crate) struct Parts {
    pub(crate) id: String,
    pub(crate) sentinel: bool,
    pub(crate) client: Client,
    pub(crate) subscriber: SubscriberClient,
    pub(crate) command_timeout: Duration,
    pub(crate) connection_timeout: Duration,
    pub(crate) secrets: Vec<Secret>,
}

fn exposed(secret: Option<&Secret>) -> Option<String> {
    secret.map(|s| s.expose().to_owned())
}

/// fred's configuration for `instance` (validated), with the secrets to scrub from messages.
fn fred_config(instance: Instance) -> Result<(FredConfig, Vec<Secret>), Error> {
    let instance = instance.resolve()?;
    instance.validate()?;
    let mut config = FredConfig::default();
    let mut secrets = Vec::new();
    let tls = match instance {
        Instance::Redis(c) => {
            config.server = ServerConfig::Centralized {
                server: Server::new(c.host.clone(), c.port),
            };
            config.username = c.username;
            config.password = exposed(c.password.as_ref());
            config.database = (c.db != 0).then_some(c.db);
            secrets.extend(c.password);
            c.tls
        }
        Instance::Unix(u) => {
            config.server = ServerConfig::Unix { path: u.path };
            config.username = u.username;
            config.password = exposed(u.password.as_ref());
            config.database = (u.db != 0).then_some(u.db);
            secrets.extend(u.password);
            None
        }
        Instance::Sentinel(s) => {
            config.server = ServerConfig::Sentinel {
                hosts: s
                    .sentinels
                    .iter()
                    .map(|(h, p)| Server::new(h.clone(), *p))
                    .collect(),
                service_name: s.master,
                username: s.sentinel_username,
                password: exposed(s.sentinel_password.as_ref()),
            };
            config.username = s.username;
            config.password = exposed(s.password.as_ref());
            config.database = (s.db != 0).then_some(s.db);
            secrets.extend(s.password);
            secrets.extend(s.sentinel_password);
            s.tls
        }
        Instance::Url(_) => unreachable!("resolve() parses URLs"),
    };
    if let Some(tls) = tls {
        #[cfg(feature = "tls")]
        {
            config.tls = Some(tls.to_fred()?);
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = tls;
            let (id, _) = describe(&config.server)?;
            return Err(crate::tls::tls_not_compiled(&format!("instance {id}")));
        }
    }
    Ok((config, secrets))
}

/// The failure-domain id of a fred server configuration, and whether it is a Sentinel one;
/// refuses what cannot be one lock instance or cannot be connected to.
fn describe(server: &ServerConfig) -> Result<(String, bool), Error> {
    let instance: Instance = match server {
        ServerConfig::Centralized { server } => {
            RedisConfig::new(server.host.to_string(), server.port).into()
        }
        ServerConfig::Unix { path } => UnixSocket::new(path.clone()).into(),
        ServerConfig::Sentinel {
            hosts,
            service_name,
            ..
        } => Sentinel::new(
            hosts.iter().map(|s| (s.host.to_string(), s.port)),
            service_name.clone(),
        )
        .into(),
        ServerConfig::Clustered { .. } => {
            return Err(config_error(
                "a Redis Cluster is not one lock instance: Redlock needs independent servers, so list each master as an instance of its own",
            ))
        }
    };
    instance.validate()?;
    Ok(match instance {
        Instance::Redis(c) => (c.id(), false),
        Instance::Unix(u) => (u.id(), false),
        Instance::Sentinel(s) => (s.id(), true),
        Instance::Url(_) => unreachable!("built from a structured form"),
    })
}

fn secrets_of(config: &FredConfig) -> Vec<Secret> {
    let mut secrets: Vec<Secret> = config.password.iter().map(Secret::from).collect();
    if let ServerConfig::Sentinel {
        password: Some(p), ..
    } = &config.server
    {
        secrets.push(Secret::from(p));
    }
    secrets
}

fn settings(options: &ConnectionOptions) -> (PerformanceConfig, ConnectionConfig, ReconnectPolicy) {
    let perf = PerformanceConfig {
        default_command_timeout: options.command_timeout,
        ..PerformanceConfig::default()
    };
    let connection = ConnectionConfig {
        connection_timeout: options.connection_timeout,
        internal_command_timeout: options.connection_timeout,
        max_command_attempts: 1,
        tcp: TcpConfig {
            nodelay: Some(true),
            ..TcpConfig::default()
        },
        ..ConnectionConfig::default()
    };
    let max_delay = u32::try_from(options.reconnect_max_delay.as_millis()).unwrap_or(u32::MAX);
    let mut policy = ReconnectPolicy::new_exponential(0, 10, max_delay, 2);
    policy.set_jitter(20);
    (perf, connection, policy)
}

impl RedisBackend {
    /// A backend for `instance`, with default [`ConnectionOptions`]. Does not connect.
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn new(instance: impl Into<Instance>) -> Result<Self, Error> {
        Self::with_options(instance, &ConnectionOptions::default())
    }

    /// A backend for `instance`. Parses and validates; does not connect.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] ([`InvalidInput::Config`](redlock_core::InvalidInput::Config)):
    /// a malformed URL or unknown parameter, an empty host, port 0, an empty socket path, a
    /// Sentinel without addresses, TLS asked for but the `tls` feature not compiled in, an
    /// unusable CA certificate.
    pub fn with_options(
        instance: impl Into<Instance>,
        options: &ConnectionOptions,
    ) -> Result<Self, Error> {
        let (config, secrets) = fred_config(instance.into())?;
        Self::build(config, options, secrets)
    }

    /// A backend on a fred [`Config`](FredConfig) of your own (server, credentials, TLS, RESP
    /// version, ...), with this crate's connection settings from `options`: the command timeout,
    /// one send per command, the reconnection policy. `fail_fast` is turned off, so an instance
    /// down at start-up rejoins when it comes up. Does not connect.
    ///
    /// # Errors
    /// [`Error::InvalidInput`]: a Redis Cluster configuration (not one instance), an empty
    /// host, port 0, an empty socket path, a Sentinel without addresses.
    pub fn from_config(config: FredConfig, options: &ConnectionOptions) -> Result<Self, Error> {
        describe(&config.server)?;
        let secrets = secrets_of(&config);
        Self::build(config, options, secrets)
    }

    fn build(
        config: FredConfig,
        options: &ConnectionOptions,
        secrets: Vec<Secret>,
    ) -> Result<Self, Error> {
        let (id, sentinel) = describe(&config.server)?;
        let config = FredConfig {
            // Retry the first connection like any later one: an instance that is down when the
            // manager starts must rejoin when it comes up.
            fail_fast: false,
            ..config
        };
        let (perf, connection, policy) = settings(options);
        let subscriber = SubscriberClient::new(
            config.clone(),
            Some(perf.clone()),
            Some(connection.clone()),
            Some(policy.clone()),
        );
        let client = Client::new(config, Some(perf), Some(connection), Some(policy));
        Ok(Self::from_parts(Parts {
            id,
            sentinel,
            client,
            subscriber,
            command_timeout: options.command_timeout,
            connection_timeout: options.connection_timeout,
            secrets,
        }))
    }

    /// A backend on a fred client your application configured itself. The backend uses it
    /// for lock commands, and a second client with the same settings for release
    /// announcements.
    ///
    /// What the backend requires of the client, checked here:
    /// - a command timeout (`PerformanceConfig::default_command_timeout`), shorter than the
    ///   manager's per-instance timeout (checked when the manager is built): fred never writes
    ///   a command that timed out on its own clock, while one the manager merely stopped
    ///   waiting for would be written after a reconnect and leave a ghost lock;
    /// - no re-sends (`ConnectionConfig::max_command_attempts` = 1): a release re-sent after a
    ///   reconnect would run twice and report a held lock as lost;
    /// - one server: direct, unix socket or Sentinel, not a Redis Cluster.
    ///
    /// Also advised: a reconnection policy (without one a dropped connection stays down) and
    /// `fail_fast = false`. A client that is already connected (or connecting) stays yours:
    /// the backend neither connects it again nor closes it. One that is not is connected by
    /// the backend's first call, which the backend's
    /// [`close`](redlock_core::LockBackend::close) then closes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the requirement the client does not meet.
    pub fn from_client(client: Client) -> Result<Self, Error> {
        let config = client.client_config();
        let (id, sentinel) = describe(&config.server)?;
        let connection = client.connection_config().clone();
        if connection.max_command_attempts != 1 {
            return Err(config_error(format!(
                "{id}: the fred client may send a command {} times (max_command_attempts); a lock command must be sent at most once, so set ConnectionConfig::max_command_attempts to 1",
                connection.max_command_attempts
            )));
        }
        let perf = client.perf_config();
        if perf.default_command_timeout.is_zero() {
            return Err(config_error(format!(
                "{id}: the fred client has no command timeout; set PerformanceConfig::default_command_timeout below the manager's instance timeout (see ConnectionOptions::for_instance_timeout)"
            )));
        }
        let subscriber = SubscriberClient::new(
            config.clone(),
            Some(perf.clone()),
            Some(connection.clone()),
            client.client_reconnect_policy(),
        );
        Ok(Self::from_parts(Parts {
            id,
            sentinel,
            secrets: secrets_of(&config),
            client,
            subscriber,
            command_timeout: perf.default_command_timeout,
            connection_timeout: connection.connection_timeout,
        }))
    }
}
