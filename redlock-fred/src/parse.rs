//! Parsing of instance URLs, and their redaction for messages and `Debug`.
//!
//! User, password and path are percent-decoded (RFC 3986: `+` is a plus sign); query values
//! are form-decoded (`+` is a space), as every Redis client does. No message made here shows a
//! password or the value of a parameter that is not known to be harmless.

use std::borrow::Cow;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use redlock_core::Error;

use crate::config::{
    config_error, Instance, RedisConfig, UnixSocket, DEFAULT_PORT, DEFAULT_SENTINEL_PORT,
};
use crate::secret::Secret;
use crate::sentinel::Sentinel;
use crate::tls::Tls;

/// Query parameters whose values are shown in messages and `Debug`; any other value (a
/// `sentinelPassword`, a misspelt one, an unknown one) is replaced by `***`.
const SHOWN_PARAMETERS: [&str; 8] = [
    "db",
    "encoding",
    "master",
    "sentinelServiceName",
    "node",
    "sentinelUsername",
    "ssl_cert_reqs",
    "ssl_ca_certs",
];

/// The URL with its credentials and non-harmless parameter values replaced by `***`, for
/// error messages and `Debug`.
///
/// Works on the raw text, so it also hides what a malformed URL holds: everything up to the
/// last `@` is user information (a password may contain `/`, `?` or `#` written unescaped), of
/// which only a user name before a `:` is kept; the fragment is dropped.
pub(crate) fn redact_url(url: &str) -> String {
    // Without a scheme there is no telling which part is what: show nothing of it. A `://`
    // after something that is no scheme (`:secret@://h`) does not make one.
    let Some(scheme_end) = url.find("://").filter(|&end| is_scheme(&url[..end])) else {
        return "<not shown: no scheme://>".to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let (userinfo, rest, continued) = match rest.rfind('@') {
        Some(at) => {
            let info = &rest[..at];
            let shown = match info.split_once(':') {
                Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***@"),
                // A lone user information part is a password for aioredis-style URLs.
                _ => "***@".to_owned(),
            };
            (shown, &rest[at + 1..], info.contains(['?', '#']))
        }
        None => (String::new(), rest, false),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((before, _)) => (before, "#***"),
        None => (rest, ""),
    };
    // An `@` after a `?` or `#`: either a password holding those, or an `@` inside the query.
    // Parameters after it are masked like any others.
    let (base, query) = match rest.split_once('?') {
        _ if continued && rest.contains(['=', '&']) => ("", Some(rest)),
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let mut shown = format!("{scheme}{userinfo}{base}");
    if let Some(query) = query {
        if !base.is_empty() || !continued {
            shown.push('?');
        }
        mask_query(query, &mut shown);
    }
    shown.push_str(fragment);
    shown
}

/// RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Appends `query` with every value but those of [`SHOWN_PARAMETERS`] replaced by `***`.
fn mask_query(query: &str, shown: &mut String) {
    for (i, item) in query.split('&').enumerate() {
        if i > 0 {
            shown.push('&');
        }
        let (name, value) = match item.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (item, None),
        };
        let known = SHOWN_PARAMETERS.contains(&form_decode(name).as_ref());
        match value {
            Some(value) if known => shown.push_str(&format!("{name}={value}")),
            Some(_) => shown.push_str(&format!("{name}=***")),
            None if known => shown.push_str(name),
            None => shown.push_str("***"),
        }
    }
}

fn form_decode(text: &str) -> Cow<'_, str> {
    match url::form_urlencoded::parse(text.as_bytes()).next() {
        Some((name, _)) => Cow::Owned(name.into_owned()),
        None => Cow::Borrowed(""),
    }
}

/// What a URL's query said, before deciding which kind of instance it describes.
#[derive(Default)]
struct Query {
    db: Option<u8>,
    master: Option<String>,
    nodes: Vec<(String, u16)>,
    sentinel_username: Option<String>,
    sentinel_password: Option<Secret>,
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
            "sentinelPassword" => q.sentinel_password = Some(Secret::from(value)),
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
            // A bare word could be a password pasted in the wrong place: not shown.
            _ if value.is_empty() => {
                return Err(config_error(format!(
                    "invalid Redis URL `{shown}`: a parameter without a value is not accepted (not shown, it may be a password)"
                )))
            }
            other => {
                return Err(config_error(format!(
                    "invalid Redis URL `{shown}`: unknown parameter `{other}`"
                )))
            }
        }
    }
    Ok(q)
}

/// Percent-decodes user information (RFC 3986: `+` stays a plus sign).
fn decode_text(text: &str, what: &str, shown: &str) -> Result<String, Error> {
    percent_decode_str(text)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| {
            config_error(format!(
                "invalid Redis URL `{shown}`: the {what} is not UTF-8 once percent-decoded"
            ))
        })
}

fn credentials(url: &url::Url, shown: &str) -> Result<(Option<String>, Option<Secret>), Error> {
    let user = match url.username() {
        "" => None,
        user => Some(decode_text(user, "user name", shown)?),
    };
    let password = match url.password() {
        None => None,
        Some(password) => Some(Secret::from(decode_text(password, "password", shown)?)),
    };
    Ok((user, password))
}

/// Percent-decodes a socket path; on unix any bytes make a path.
fn decode_path(path: &str, shown: &str) -> Result<PathBuf, Error> {
    let bytes: Vec<u8> = percent_decode_str(path).collect();
    #[cfg(unix)]
    {
        let _ = shown;
        use std::os::unix::ffi::OsStringExt;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(bytes).map(PathBuf::from).map_err(|_| {
            config_error(format!(
                "invalid Redis URL `{shown}`: the socket path is not UTF-8 once percent-decoded"
            ))
        })
    }
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

/// Parses and validates `raw` (see [`Instance::parse`]).
pub(crate) fn parse_url(raw: &str) -> Result<Instance, Error> {
    let instance = parse_unchecked(raw)?;
    instance.validate().map_err(|e| match e {
        Error::InvalidInput(redlock_core::InvalidInput::Config(m)) => {
            config_error(format!("invalid Redis URL `{}`: {m}", redact_url(raw)))
        }
        other => other,
    })?;
    Ok(instance)
}

fn parse_unchecked(raw: &str) -> Result<Instance, Error> {
    let shown = redact_url(raw);
    let url = url::Url::parse(raw)
        .map_err(|e| config_error(format!("invalid Redis URL `{shown}`: {e}")))?;
    let q = parse_query(&url, &shown)?;
    let (tls, sentinel_scheme, unix) = match url.scheme() {
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
    let (username, password) = credentials(&url, &shown)?;

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
            path: decode_path(path, &shown)?,
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
    use redlock_core::InvalidInput;

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
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert!(c.tls.is_none());
        let c = redis("redis://localhost");
        assert_eq!((c.port, c.db), (6379, 0));
        let c = redis("redis://:only-pass@127.0.0.1:7002?db=3");
        assert_eq!(c.username, None);
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("only-pass"));
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
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("password"));
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
        assert_eq!(s.sentinel_password.as_ref().map(Secret::expose), Some("sp"));
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

    fn exposed(secret: Option<&Secret>) -> Option<&str> {
        secret.map(Secret::expose)
    }

    #[test]
    fn user_information_and_paths_are_percent_decoded_not_form_decoded() {
        // (written in the URL, what the server must receive)
        let cases = [
            ("p+w", "p+w"),
            ("pa&ss", "pa&ss"),
            ("a=b", "a=b"),
            ("p%2Bw", "p+w"),
            ("p%20w", "p w"),
            ("%25", "%"),
            ("p%40ss", "p@ss"),
            ("p%3Ass", "p:ss"),
            ("p%2Fss", "p/ss"),
            ("p%3Fss", "p?ss"),
            ("p%23ss", "p#ss"),
            ("p:ss", "p:ss"),
            ("%C3%A9t%C3%A9", "\u{e9}t\u{e9}"),
            ("\u{e9}t\u{e9}", "\u{e9}t\u{e9}"),
        ];
        for (written, meant) in cases {
            let c = redis(&format!("redis://:{written}@h:1"));
            assert_eq!(exposed(c.password.as_ref()), Some(meant), "{written}");
            let c = redis(&format!("redis://us%2Ber:{written}@h:1"));
            assert_eq!(c.username.as_deref(), Some("us+er"));
            assert_eq!(exposed(c.password.as_ref()), Some(meant), "{written}");
        }
        assert_eq!(
            redis("redis://us+er:x@h").username.as_deref(),
            Some("us+er")
        );
        for (url, path) in [
            ("redis+unix:///path/to/a+b.sock", "/path/to/a+b.sock"),
            ("unix:///tmp/a%20b.sock?db=1", "/tmp/a b.sock"),
            ("unix:///tmp/a%26b.sock", "/tmp/a&b.sock"),
        ] {
            match Instance::parse(url).expect(url) {
                Instance::Unix(u) => assert_eq!(u.path, PathBuf::from(path), "{url}"),
                other => panic!("{other:?}"),
            }
        }
        // Query values are form-decoded, as in every other client: `+` is a space there.
        let s = sentinel("redis-sentinel://h?sentinelServiceName=m&sentinelPassword=a+b%2Bc");
        assert_eq!(exposed(s.sentinel_password.as_ref()), Some("a b+c"));
    }

    #[test]
    fn a_password_that_is_not_utf8_is_refused_without_showing_it() {
        let message = config_message(Instance::parse("redis://:hunter%FF@h:1").expect_err("bytes"));
        assert!(message.contains("password is not UTF-8"), "{message}");
        assert!(!message.contains("hunter"), "{message}");
    }

    #[test]
    fn redaction_hides_passwords_and_unknown_parameter_values_anywhere() {
        let cases = [
            (
                "redis-sentinel://h?sentinelServiceName=m&sentinelPassword=hunter2&bogus=1",
                "redis-sentinel://h?sentinelServiceName=m&sentinelPassword=***&bogus=***",
            ),
            ("redis://u:hunter2@h:1/0", "redis://u:***@h:1/0"),
            ("redis://hunter2@h:1/0", "redis://***@h:1/0"),
            ("redis://:pa#hunter2@h:1", "redis://:***@h:1"),
            ("redis://:pa/hunter2@h:1", "redis://:***@h:1"),
            ("redis://u:pa?hunter2@h:1", "redis://u:***@h:1"),
            ("redis://h:1/0?db=2#hunter2", "redis://h:1/0?db=2#***"),
            ("redis://h?hunter2", "redis://h?***"),
            (":hunter2@://h?x=1", "<not shown: no scheme://>"),
            ("u:hunter2@x://h", "<not shown: no scheme://>"),
            (
                "redis://h?sentinelPasword=hunter2",
                "redis://h?sentinelPasword=***",
            ),
            ("no scheme :hunter2@h", "<not shown: no scheme://>"),
            (
                "redis://h?@&sentinelPassword=hunter2",
                "redis://***@***&sentinelPassword=***",
            ),
            ("redis://h?x@y&db=1", "redis://***@***&db=1"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn the_sentinel_password_never_reaches_an_error_or_debug() {
        let url = "redis-sentinel://h?sentinelServiceName=m&sentinelPassword=hunter2&bogus=1";
        let message = config_message(Instance::parse(url).expect_err("bogus"));
        assert!(message.contains("`bogus`"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let ok =
            Instance::parse("redis-sentinel://h?sentinelServiceName=m&sentinelPassword=hunter2")
                .expect("valid");
        for text in [format!("{ok:?}"), format!("{:?}", Instance::from(url))] {
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn addresses_are_validated_at_parse() {
        for (url, needle) in [
            ("redis://h:0", "port 0"),
            (
                "redis-sentinel://h?sentinelServiceName=m&node=x:0",
                "port 0",
            ),
        ] {
            let message = config_message(Instance::parse(url).expect_err(url));
            assert!(message.contains(needle), "{url}: {message}");
        }
    }
}
