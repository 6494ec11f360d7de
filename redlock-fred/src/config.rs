//! The connection forms of aioredlock, in Rust terms, and their parsing.
//!
//! Everything here is pure: parsing a URL or building an [`Instance`] never touches the network
//! (reading a CA file named by `ssl_ca_certs` is the only I/O).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use redlock_core::{Error, InvalidInput};

use crate::sentinel::Sentinel;
use crate::tls::Tls;

/// The port Redis listens on when a URL names none.
pub const DEFAULT_PORT: u16 = 6379;
/// The port Sentinel listens on when a Sentinel URL names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

pub(crate) fn config_error(message: impl Into<String>) -> Error {
    Error::InvalidInput(InvalidInput::Config(message.into()))
}

/// Formats an optional secret without revealing it.
pub(crate) fn redacted(secret: &Option<String>) -> &'static str {
    if secret.is_some() {
        "Some(<redacted>)"
    } else {
        "None"
    }
}

/// One Redis server reached over TCP (aioredlock's `{'host': .., 'port': .., 'db': ..}` and
/// `(host, port)` forms).
///
/// `Debug` never shows the password.
///
/// ```
/// use redlock_fred::RedisConfig;
///
/// let config = RedisConfig::new("localhost", 6379).with_db(1).with_auth("app", "s3cret");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
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
    pub password: Option<String>,
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
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Authenticates as ACL user `username` with `password`.
    #[must_use]
    pub fn with_auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
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

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("tls", &self.tls)
            .finish()
    }
}

/// One Redis server reached over a unix domain socket.
///
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// Path of the socket file.
    pub path: PathBuf,
    /// Database index selected after connecting.
    pub db: u8,
    /// ACL user name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
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
    pub fn with_auth(mut self, username: Option<String>, password: impl Into<String>) -> Self {
        self.username = username;
        self.password = Some(password.into());
        self
    }

    pub(crate) fn id(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

impl fmt::Debug for UnixSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixSocket")
            .field("path", &self.path)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .finish()
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

/// The URL with any password replaced, for error messages and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let redacted_userinfo = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        // A lone userinfo part is a password for aioredis-style URLs; hide it too.
        "***".to_owned()
    };
    format!(
        "{}{}@{}",
        &url[..scheme_end + 3],
        redacted_userinfo,
        &rest[at + 1..]
    )
}

/// What a URL's query said, before deciding which kind of instance it describes.
#[derive(Default)]
struct Query {
    db: Option<u8>,
    master: Option<String>,
    nodes: Vec<(String, u16)>,
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
    cert_reqs: Option<bool>,
    ca_file: Option<String>,
}

fn parse_db(text: &str, shown: &str) -> Result<u8, Error> {
    text.parse::<u8>().map_err(|_| {
        config_error(format!(
            "invalid Redis URL `{shown}`: database `{text}` is not a number from 0 to 255"
        ))
    })
}

fn parse_host_port(text: &str, shown: &str) -> Result<(String, u16), Error> {
    let bad = || {
        config_error(format!(
            "invalid Redis URL `{shown}`: `node={text}` must be host:port"
        ))
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn parse_query(url: &url::Url, shown: &str) -> Result<Query, Error> {
    let mut q = Query::default();
    for (name, value) in url.query_pairs() {
        let value = value.into_owned();
        match name.as_ref() {
            "db" => q.db = Some(parse_db(&value, shown)?),
            // Keys and tokens are bytes: there is nothing to decode, so the encoding is moot.
            "encoding" => {}
            "master" | "sentinelServiceName" => {
                if value.is_empty() {
                    return Err(config_error(format!(
                        "invalid Redis URL `{shown}`: `{name}` needs a master name"
                    )));
                }
                q.master = Some(value);
            }
            "node" => q.nodes.push(parse_host_port(&value, shown)?),
            "sentinelUsername" => q.sentinel_username = Some(value),
            "sentinelPassword" => q.sentinel_password = Some(value),
            "ssl_cert_reqs" => {
                q.cert_reqs = Some(match value.as_str() {
                    "CERT_REQUIRED" | "required" => true,
                    "CERT_NONE" | "none" => false,
                    other => {
                        return Err(config_error(format!(
                            "invalid Redis URL `{shown}`: ssl_cert_reqs `{other}` is not CERT_REQUIRED or CERT_NONE"
                        )))
                    }
                });
            }
            "ssl_ca_certs" => q.ca_file = Some(value),
            other => {
                return Err(config_error(format!(
                    "invalid Redis URL `{shown}`: unknown parameter `{other}`"
                )))
            }
        }
    }
    Ok(q)
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn credentials(url: &url::Url) -> (Option<String>, Option<String>) {
    let user = (!url.username().is_empty()).then(|| decode(url.username()));
    let password = url.password().map(decode);
    (user, password)
}

fn db_from_path(url: &url::Url, query_db: Option<u8>, shown: &str) -> Result<u8, Error> {
    let path = url.path().trim_matches('/');
    match (path.is_empty(), query_db) {
        (true, db) => Ok(db.unwrap_or(0)),
        (false, None) => parse_db(path, shown),
        (false, Some(_)) => Err(config_error(format!(
            "invalid Redis URL `{shown}`: the database is given both in the path and as `db=`"
        ))),
    }
}

fn parse_url(raw: &str) -> Result<Instance, Error> {
    let shown = redact_url(raw);
    let url = url::Url::parse(raw).map_err(|e| {
        // Without a parse we cannot tell where a password would sit; show only what is safe.
        if raw.contains('@') || !raw.contains("://") {
            config_error(format!(
                "invalid Redis URL (not shown, it may hold a password): {e}"
            ))
        } else {
            config_error(format!("invalid Redis URL `{shown}`: {e}"))
        }
    })?;
    let q = parse_query(&url, &shown)?;
    let scheme = url.scheme().to_owned();
    let (tls, sentinel_scheme, unix) = match scheme.as_str() {
        "redis" => (false, false, false),
        "rediss" => (true, false, false),
        "redis-sentinel" => (false, true, false),
        "rediss-sentinel" => (true, true, false),
        "redis+unix" | "unix" => (false, false, true),
        other => {
            return Err(config_error(format!(
                "invalid Redis URL `{shown}`: unknown scheme `{other}` (expected redis, rediss, redis-sentinel, rediss-sentinel, redis+unix or unix)"
            )))
        }
    };
    if !tls && (q.cert_reqs.is_some() || q.ca_file.is_some()) {
        return Err(config_error(format!(
            "invalid Redis URL `{shown}`: ssl_cert_reqs and ssl_ca_certs need a TLS scheme (rediss://)"
        )));
    }
    let is_sentinel = sentinel_scheme || q.master.is_some();
    if !is_sentinel
        && (!q.nodes.is_empty() || q.sentinel_username.is_some() || q.sentinel_password.is_some())
    {
        return Err(config_error(format!(
            "invalid Redis URL `{shown}`: node, sentinelUsername and sentinelPassword need a Sentinel URL (master= or sentinelServiceName=)"
        )));
    }
    let (username, password) = credentials(&url);

    if unix {
        if is_sentinel {
            return Err(config_error(format!(
                "invalid Redis URL `{shown}`: a unix socket URL cannot name a Sentinel master"
            )));
        }
        let path = url.path();
        if path.is_empty() || path == "/" {
            return Err(config_error(format!(
                "invalid Redis URL `{shown}`: a unix socket URL needs a path"
            )));
        }
        return Ok(Instance::Unix(UnixSocket {
            path: PathBuf::from(decode(path)),
            db: q.db.unwrap_or(0),
            username,
            password,
        }));
    }

    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| config_error(format!("invalid Redis URL `{shown}`: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let db = db_from_path(&url, q.db, &shown)?;
    let tls = if tls {
        let mut t = match &q.ca_file {
            Some(path) => Tls::new().with_ca_file(path)?,
            None => Tls::new(),
        };
        if q.cert_reqs == Some(false) {
            t = t.danger_accept_invalid_certs();
        }
        Some(t)
    } else {
        None
    };

    if is_sentinel {
        let master = q.master.ok_or_else(|| {
            config_error(format!(
                "invalid Redis URL `{shown}`: a Sentinel URL needs sentinelServiceName= (or master=)"
            ))
        })?;
        let port = url.port().unwrap_or(DEFAULT_SENTINEL_PORT);
        let mut sentinels = vec![(host, port)];
        sentinels.extend(q.nodes);
        let mut s = Sentinel::new(sentinels, master).with_db(db);
        s.username = username;
        s.password = password;
        s.sentinel_username = q.sentinel_username;
        s.sentinel_password = q.sentinel_password;
        s.tls = tls;
        return Ok(Instance::Sentinel(s));
    }

    Ok(Instance::Redis(RedisConfig {
        host,
        port: url.port().unwrap_or(DEFAULT_PORT),
        db,
        username,
        password,
        tls,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_message(e: Error) -> String {
        match e {
            Error::InvalidInput(InvalidInput::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn redis(url: &str) -> RedisConfig {
        match Instance::parse(url).expect("parses") {
            Instance::Redis(c) => c,
            other => panic!("expected a TCP instance, got {other:?}"),
        }
    }

    fn sentinel(url: &str) -> Sentinel {
        match Instance::parse(url).expect("parses") {
            Instance::Sentinel(s) => s,
            other => panic!("expected a Sentinel instance, got {other:?}"),
        }
    }

    #[test]
    fn plain_url_with_db_and_credentials() {
        let c = redis("redis://app:p%40ss@example.com:7001/2");
        assert_eq!((c.host.as_str(), c.port, c.db), ("example.com", 7001, 2));
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert!(c.tls.is_none());
        let c = redis("redis://localhost");
        assert_eq!((c.port, c.db), (6379, 0));
        let c = redis("redis://:only-pass@127.0.0.1:7002?db=3");
        assert_eq!(c.username, None);
        assert_eq!(c.password.as_deref(), Some("only-pass"));
        assert_eq!(c.db, 3);
    }

    #[test]
    fn rediss_verifies_unless_cert_none() {
        let c = redis("rediss://localhost:6380/0");
        assert!(c.tls.expect("tls").verifies_certificates());
        let c = redis("rediss://localhost:6380/0?ssl_cert_reqs=CERT_NONE");
        assert!(!c.tls.expect("tls").verifies_certificates());
        let c = redis("rediss://localhost:6380/0?ssl_cert_reqs=CERT_REQUIRED");
        assert!(c.tls.expect("tls").verifies_certificates());
    }

    #[test]
    fn aioredlock_sentinel_urls() {
        let s = sentinel("redis://localhost:26379/4?master=leader&encoding=utf-8");
        assert_eq!(s.sentinels, vec![("localhost".to_owned(), 26379)]);
        assert_eq!((s.master.as_str(), s.db), ("leader", 4));
        assert!(s.tls.is_none() && s.password.is_none());

        let s = sentinel(
            "rediss://:password@localhost:26379/5?master=leader&encoding=utf-8&ssl_cert_reqs=CERT_NONE",
        );
        assert_eq!((s.master.as_str(), s.db), ("leader", 5));
        assert_eq!(s.password.as_deref(), Some("password"));
        assert!(!s.tls.expect("tls").verifies_certificates());
    }

    #[test]
    fn fred_sentinel_url() {
        let s = sentinel(
            "redis-sentinel://u:p@h1:26380/1?sentinelServiceName=svc&node=h2:26381&sentinelUsername=su&sentinelPassword=sp",
        );
        assert_eq!(
            s.sentinels,
            vec![("h1".to_owned(), 26380), ("h2".to_owned(), 26381)]
        );
        assert_eq!((s.master.as_str(), s.db), ("svc", 1));
        assert_eq!(s.username.as_deref(), Some("u"));
        assert_eq!(s.sentinel_password.as_deref(), Some("sp"));
        let s = sentinel("redis-sentinel://h1?sentinelServiceName=svc");
        assert_eq!(s.sentinels[0].1, 26379);
    }

    #[test]
    fn unix_socket_urls() {
        for url in ["redis+unix:///tmp/r.sock?db=2", "unix:///tmp/r.sock?db=2"] {
            match Instance::parse(url).expect("parses") {
                Instance::Unix(u) => {
                    assert_eq!(u.path, PathBuf::from("/tmp/r.sock"));
                    assert_eq!(u.db, 2);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_problem_and_hide_the_password() {
        let cases = [
            ("redis://:hunter2@h:1/0?frobnicate=1", "`frobnicate`"),
            ("redis://:hunter2@h:1/x", "database `x`"),
            ("redis://:hunter2@h:1/300", "database `300`"),
            ("http://:hunter2@h:1/0", "unknown scheme `http`"),
            (
                "redis://:hunter2@h:1/0?ssl_cert_reqs=CERT_NONE",
                "need a TLS scheme",
            ),
            ("redis-sentinel://:hunter2@h:1/0", "sentinelServiceName"),
            ("redis://:hunter2@h:1/0?node=h2:2", "need a Sentinel URL"),
            (
                "rediss://:hunter2@h:1/0?ssl_cert_reqs=MAYBE",
                "ssl_cert_reqs `MAYBE`",
            ),
            ("redis://:hunter2@:1/0", "invalid Redis URL"),
            ("not a url hunter2", "invalid Redis URL"),
        ];
        for (url, needle) in cases {
            let message = config_message(Instance::parse(url).expect_err(url));
            assert!(message.contains(needle), "{url}: {message}");
            assert!(!message.contains("hunter2"), "{url} leaks: {message}");
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
    fn debug_hides_passwords() {
        let c = RedisConfig::new("h", 1).with_auth("u", "hunter2");
        let i = Instance::from("redis://u:hunter2@h:1/0");
        let bare = Instance::from("redis://hunter2@h:1/0");
        for text in [format!("{c:?}"), format!("{i:?}"), format!("{bare:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert!(format!("{i:?}").contains("u:***@h:1"));
    }
}
