//! The connection forms of aioredlock, in Rust terms, and their parsing.
//!
//! Everything here is pure: parsing a URL or building an [`Instance`] never touches the network
//! (reading a CA file named by `ssl_ca_certs` is the only I/O).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use redlock_core::{Error, InvalidInput};

use crate::parse::{parse_url, redact_url};
use crate::secret::Secret;
use crate::sentinel::Sentinel;
use crate::tls::Tls;

/// The port Redis listens on when a URL names none.
pub const DEFAULT_PORT: u16 = 6379;
/// The port Sentinel listens on when a Sentinel URL names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

pub(crate) fn config_error(message: impl Into<String>) -> Error {
    Error::InvalidInput(InvalidInput::Config(message.into()))
}

/// One Redis server reached over TCP (aioredlock's `{'host': .., 'port': .., 'db': ..}` and
/// `(host, port)` forms).
///
/// `Debug` never shows the password (a [`Secret`]).
///
/// ```
/// use redlock_fred::RedisConfig;
///
/// let config = RedisConfig::new("localhost", 6379).with_db(1).with_auth("app", "s3cret");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
///
/// The fields are checked when the backend is built (an empty host, port 0 are refused there,
/// before any connection).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RedisConfig {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database index selected after connecting.
    pub db: u8,
    /// ACL user name (Redis 6+); `None` authenticates as the default user.
    pub username: Option<String>,
    /// Password; `None` sends no `AUTH`.
    pub password: Option<Secret>,
    /// TLS settings; `None` connects in plaintext.
    pub tls: Option<Tls>,
}

impl RedisConfig {
    /// A plaintext connection to `host:port`, database 0, no credentials.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            db: 0,
            username: None,
            password: None,
            tls: None,
        }
    }

    /// Selects database `db` after connecting.
    #[must_use]
    pub fn with_db(mut self, db: u8) -> Self {
        self.db = db;
        self
    }

    /// Authenticates with `password` as the default user (`requirepass`).
    #[must_use]
    pub fn with_password(mut self, password: impl Into<Secret>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Authenticates as ACL user `username` with `password`.
    #[must_use]
    pub fn with_auth(mut self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Connects over TLS.
    #[must_use]
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The failure-domain id: `host:port` with `localhost` and IP literals canonicalized.
    pub(crate) fn id(&self) -> String {
        tcp_id(&self.host, self.port)
    }
}

impl Default for RedisConfig {
    /// aioredlock's default instance: `localhost:6379`.
    fn default() -> Self {
        Self::new("localhost", DEFAULT_PORT)
    }
}

/// One Redis server reached over a unix domain socket.
///
/// `Debug` never shows the password (a [`Secret`]). An empty path is refused when the backend
/// is built.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UnixSocket {
    /// Path of the socket file.
    pub path: PathBuf,
    /// Database index selected after connecting.
    pub db: u8,
    /// ACL user name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
}

impl UnixSocket {
    /// The socket at `path`, database 0, no credentials.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            db: 0,
            username: None,
            password: None,
        }
    }

    /// Selects database `db` after connecting.
    #[must_use]
    pub fn with_db(mut self, db: u8) -> Self {
        self.db = db;
        self
    }

    /// Authenticates as `username` (or the default user when `None`) with `password`.
    #[must_use]
    pub fn with_auth(mut self, username: Option<String>, password: impl Into<Secret>) -> Self {
        self.username = username;
        self.password = Some(password.into());
        self
    }

    pub(crate) fn id(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

/// One lock instance in any of the forms aioredlock accepts; one list may mix them all.
///
/// | aioredlock | here |
/// | --- | --- |
/// | `('localhost', 6379)` | `("localhost", 6379).into()` |
/// | `{'host': 'localhost', 'port': 6379, 'db': 1}` | `RedisConfig::new("localhost", 6379).with_db(1).into()` |
/// | `'redis://localhost:6379/2'` | `"redis://localhost:6379/2".into()` |
/// | `Sentinel(('localhost', 26379), master='leader', db=3)` | `Sentinel::new([("localhost", 26379)], "leader").with_db(3).into()` |
/// | `Sentinel('redis://localhost:26379/4?master=leader&encoding=utf-8')` | `Sentinel::from_url("redis://localhost:26379/4?master=leader&encoding=utf-8")?.into()` |
///
/// A URL given as a string is parsed when the backend is built, so a malformed one surfaces as
/// [`InvalidInput::Config`] from [`RedisBackend::new`](crate::RedisBackend::new) or the
/// manager builder's `build`, before any connection is made. See [`Instance::parse`] for the
/// accepted URL forms.
#[derive(Clone)]
#[non_exhaustive]
pub enum Instance {
    /// A server over TCP.
    Redis(RedisConfig),
    /// A server over a unix domain socket.
    Unix(UnixSocket),
    /// The master of a Sentinel-managed group.
    Sentinel(Sentinel),
    /// A URL, parsed when the backend is built.
    Url(String),
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(c) => f.debug_tuple("Redis").field(c).finish(),
            Self::Unix(c) => f.debug_tuple("Unix").field(c).finish(),
            Self::Sentinel(c) => f.debug_tuple("Sentinel").field(c).finish(),
            Self::Url(u) => f.debug_tuple("Url").field(&redact_url(u)).finish(),
        }
    }
}

impl From<RedisConfig> for Instance {
    fn from(c: RedisConfig) -> Self {
        Self::Redis(c)
    }
}

impl From<UnixSocket> for Instance {
    fn from(c: UnixSocket) -> Self {
        Self::Unix(c)
    }
}

impl From<Sentinel> for Instance {
    fn from(c: Sentinel) -> Self {
        Self::Sentinel(c)
    }
}

impl From<(&str, u16)> for Instance {
    fn from((host, port): (&str, u16)) -> Self {
        Self::Redis(RedisConfig::new(host, port))
    }
}

impl From<(String, u16)> for Instance {
    fn from((host, port): (String, u16)) -> Self {
        Self::Redis(RedisConfig::new(host, port))
    }
}

impl From<&str> for Instance {
    fn from(url: &str) -> Self {
        Self::Url(url.to_owned())
    }
}

impl From<String> for Instance {
    fn from(url: String) -> Self {
        Self::Url(url)
    }
}

impl From<&String> for Instance {
    fn from(url: &String) -> Self {
        Self::Url(url.clone())
    }
}

impl Instance {
    /// Parses a URL into an instance, without touching the network.
    ///
    /// | form | meaning |
    /// | --- | --- |
    /// | `redis://[[user]:password@]host[:port][/db]` | a server (port 6379 by default) |
    /// | `rediss://…` | the same over TLS, certificates verified against the system roots |
    /// | `redis://host:26379/4?master=leader` | aioredlock's Sentinel form: sentinel at `host`, master `leader`, db 4 |
    /// | `redis-sentinel://[[user]:password@]host[:port][/db]?sentinelServiceName=leader` | fred's Sentinel form (also `rediss-sentinel://`) |
    /// | `redis+unix:///path/to/redis.sock[?db=N]`, `unix:///path…` | a unix socket |
    ///
    /// Query parameters:
    /// - `db=N`: the database, when the path does not give one;
    /// - `encoding=…`: accepted for aioredlock compatibility and ignored (keys and tokens are
    ///   bytes here; there is nothing to decode);
    /// - `master=NAME` (aioredlock) or `sentinelServiceName=NAME` (fred): makes the URL a Sentinel
    ///   one; `node=host:port` (repeatable) names more sentinels; `sentinelUsername` and
    ///   `sentinelPassword` authenticate to the sentinels (the user and password of the URL
    ///   authenticate to the master);
    /// - `ssl_cert_reqs=CERT_REQUIRED|CERT_NONE` (only with TLS): `CERT_NONE` turns certificate
    ///   verification off; it is on otherwise;
    /// - `ssl_ca_certs=/path/ca.pem` (only with TLS): trust this CA file instead of the system
    ///   roots.
    ///
    /// Any other parameter is an error naming it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with [`InvalidInput::Config`]: malformed URL, unknown scheme or
    /// parameter, bad database number, TLS parameters without TLS, an unreadable CA file. The
    /// message never contains the password.
    pub fn parse(url: &str) -> Result<Self, Error> {
        parse_url(url)
    }

    /// Resolves [`Instance::Url`] into one of the structured forms.
    pub(crate) fn resolve(self) -> Result<Self, Error> {
        match self {
            Self::Url(url) => parse_url(&url),
            other => Ok(other),
        }
    }
}

/// The failure-domain id of a TCP endpoint. `localhost` is the loopback address, so
/// `localhost:7001` and `127.0.0.1:7001` are the same server; other host names are compared as
/// written (lowercased), since resolving them would need the network.
pub(crate) fn tcp_id(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lower = host.to_ascii_lowercase();
    if lower == "localhost" {
        return format!("127.0.0.1:{port}");
    }
    match lower.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => format!("{ip}:{port}"),
        Ok(IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{port}"),
            None if ip.is_loopback() => format!("[::1]:{port}"),
            None => format!("[{ip}]:{port}"),
        },
        Err(_) => format!("{lower}:{port}"),
    }
}

/// Refuses an address that cannot be connected to: an empty host, one that is not a host name
/// or IP address, port 0. `what` names the address in the message.
pub(crate) fn check_address(host: &str, port: u16, what: &str) -> Result<(), Error> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.is_empty() {
        return Err(config_error(format!("{what}: the host is empty")));
    }
    if bare.parse::<IpAddr>().is_err() {
        if let Err(e) = url::Host::parse(bare) {
            return Err(config_error(format!(
                "{what}: `{host}` is not a host name or IP address ({e})"
            )));
        }
    }
    if port == 0 {
        return Err(config_error(format!(
            "{what}: port 0 cannot be connected to"
        )));
    }
    Ok(())
}

impl Instance {
    /// Refuses what cannot work, before any connection: see [`check_address`], an empty socket
    /// path, a Sentinel without addresses or master name.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            Self::Redis(c) => check_address(&c.host, c.port, "Redis instance"),
            Self::Unix(u) if u.path.as_os_str().is_empty() => Err(config_error(
                "unix socket instance: the socket path is empty",
            )),
            Self::Unix(_) => Ok(()),
            Self::Sentinel(s) => s.validate(),
            Self::Url(url) => parse_url(url).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use redlock_core::InvalidInput;

    use super::*;

    fn config_message(e: Error) -> String {
        match e {
            Error::InvalidInput(InvalidInput::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn ids_canonicalize_loopback() {
        assert_eq!(tcp_id("localhost", 7001), "127.0.0.1:7001");
        assert_eq!(tcp_id("LOCALHOST", 7001), "127.0.0.1:7001");
        assert_eq!(tcp_id("127.0.0.1", 7001), "127.0.0.1:7001");
        assert_eq!(tcp_id("::1", 7001), "[::1]:7001");
        assert_eq!(tcp_id("[::ffff:10.0.0.1]", 7001), "10.0.0.1:7001");
        assert_eq!(tcp_id("Redis.Example", 7001), "redis.example:7001");
    }

    #[test]
    fn forms_that_cannot_connect_are_refused_without_network() {
        let cases: [(Instance, &str); 7] = [
            (RedisConfig::new("", 6379).into(), "host is empty"),
            (RedisConfig::new("[]", 6379).into(), "host is empty"),
            (RedisConfig::new("h", 0).into(), "port 0"),
            (RedisConfig::new("my host", 1).into(), "not a host name"),
            (UnixSocket::new("").into(), "socket path is empty"),
            (Sentinel::new([("", 26379)], "m").into(), "host is empty"),
            (Sentinel::new([("h", 0)], "m").into(), "port 0"),
        ];
        for (instance, needle) in cases {
            let message = config_message(instance.validate().expect_err(needle));
            assert!(message.contains(needle), "{instance:?}: {message}");
        }
        for fine in [
            Instance::from(("localhost", 1)),
            RedisConfig::new("::1", 1).into(),
            RedisConfig::new("[::1]", 1).into(),
            RedisConfig::new("redis.example", 1).into(),
            UnixSocket::new("/tmp/r.sock").into(),
        ] {
            fine.validate().expect("valid");
        }
    }

    #[test]
    fn debug_hides_passwords() {
        let c = RedisConfig::new("h", 1).with_auth("u", "hunter2");
        let u = UnixSocket::new("/s").with_auth(None, "hunter2");
        let i = Instance::from("redis://u:hunter2@h:1/0");
        let bare = Instance::from("redis://hunter2@h:1/0");
        for text in [
            format!("{c:?}"),
            format!("{u:?}"),
            format!("{i:?}"),
            format!("{bare:?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert!(format!("{i:?}").contains("u:***@h:1"));
    }
}
