//! From a URL or a redis-rs `ConnectionInfo` to what a backend connects to, and its id.

use std::net::IpAddr;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use redlock_core::{Error, InvalidInput};

pub(crate) fn config_error(message: impl Into<String>) -> Error {
    Error::InvalidInput(InvalidInput::Config(message.into()))
}

/// The scheme of `url`, if it starts with one (RFC 3986: a letter, then letters, digits, `+`,
/// `-`, `.`), lowercased. Only this part of a URL ever appears in an error.
fn scheme(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then(|| scheme.to_ascii_lowercase())
}

/// Parses a `redis://`, `rediss://` (feature `tls`), `redis+unix://` or `unix://` URL.
///
/// Error messages name the scheme and what is wrong, never the rest of the URL (which may hold a
/// password).
pub(crate) fn parse_url(url: &str) -> Result<ConnectionInfo, Error> {
    let Some(scheme) = scheme(url) else {
        return Err(config_error(
            "not a Redis URL: expected redis://[user:password@]host[:port][/db], rediss://..., redis+unix:///path or unix:///path (the URL is not shown: it may hold a password)",
        ));
    };
    match scheme.as_str() {
        "redis" | "redis+unix" | "unix" | "valkey" | "valkey+unix" => {}
        "rediss" | "valkeys" => {
            if cfg!(not(feature = "tls")) {
                return Err(config_error(format!(
                    "{scheme}:// needs TLS, and redlock-redis was built without its `tls` feature: enable it (a TLS URL is never connected to in plaintext)"
                )));
            }
        }
        other => {
            return Err(config_error(format!(
                "unsupported URL scheme {other}://: redlock-redis takes redis://, rediss://, redis+unix:// and unix:// (Sentinel is served by redlock-fred)"
            )))
        }
    }
    let info = url.into_connection_info().map_err(|e| {
        // redis-rs's parse errors are fixed texts (no part of the URL).
        config_error(format!("invalid {scheme}:// URL: {e}"))
    })?;
    validate(info)
}

/// Refuses what cannot be connected to.
pub(crate) fn validate(info: ConnectionInfo) -> Result<ConnectionInfo, Error> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            if host.is_empty() {
                return Err(config_error("empty host name"));
            }
            if *port == 0 {
                return Err(config_error(format!("{host}: port 0")));
            }
        }
        ConnectionAddr::Unix(path) => {
            if path.as_os_str().is_empty() {
                return Err(config_error("empty unix socket path"));
            }
        }
        // `ConnectionAddr` is non-exhaustive.
        #[allow(unreachable_patterns)]
        _ => return Err(config_error("unsupported kind of address")),
    }
    #[cfg(not(feature = "tls"))]
    if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(config_error(
            "a TLS address needs redlock-redis's `tls` feature (a TLS address is never connected to in plaintext)",
        ));
    }
    let db = info.redis_settings().db();
    if db < 0 {
        return Err(config_error(format!("database {db}: must be 0 or more")));
    }
    Ok(info)
}

/// The failure-domain id: `host:port` with `localhost` and IP literals canonicalized (the same
/// ids as redlock-fred's, so a manager mixing both backends still refuses one server listed
/// twice), or `unix:` and the socket path.
pub(crate) fn id_of(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            tcp_id(host, *port)
        }
        ConnectionAddr::Unix(path) => format!("unix:{}", path.display()),
        #[allow(unreachable_patterns)]
        _ => "unknown".to_owned(),
    }
}

fn tcp_id(host: &str, port: u16) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_ids_credentials_and_db() {
        let info = parse_url("redis://app:s%3Acret@LocalHost:7001/3").expect("valid");
        assert_eq!(id_of(&info), "127.0.0.1:7001");
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(info.redis_settings().password(), Some("s:cret"));
        let unix = parse_url("redis+unix:///tmp/r.sock?db=2").expect("valid");
        assert_eq!(id_of(&unix), "unix:/tmp/r.sock");
        assert_eq!(
            id_of(&parse_url("redis://[::ffff:127.0.0.1]:9").expect("v")),
            "127.0.0.1:9"
        );
        assert_eq!(id_of(&parse_url("redis://[::1]:9").expect("v")), "[::1]:9");
    }

    #[test]
    fn bad_urls_are_refused_without_showing_them() {
        for url in [
            "hunter2",
            "http://u:hunter2@h:1",
            ":hunter2@://h",
            "redis://u:hunter2@h:1/notadb",
            "redis://u:hunter2@h:0",
            "redis://u:hunter2@h:1/-1",
            "redis://u:hunter2@:1",
            "redis://u:hunter2@0.0.0.0:1",
            "redis://u:hunter2@h:99999",
        ] {
            let error = parse_url(url).expect_err(url);
            let text = format!("{error} {error:?}");
            assert!(!text.contains("hunter2"), "{url}: {text}");
            assert!(
                matches!(error, Error::InvalidInput(InvalidInput::Config(_))),
                "{url}"
            );
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_refused_clearly() {
        let error = parse_url("rediss://:hunter2@h:1").expect_err("no tls");
        let text = error.to_string();
        assert!(text.contains("`tls` feature"), "{text}");
        assert!(!text.contains("hunter2"));
    }
}
