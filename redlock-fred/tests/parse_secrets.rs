//! `Instance::parse` on any input: it never panics, and a secret placed anywhere in a URL never
//! shows in an error, a `Debug` or a `Display` string. Pure parsing: no server, no runtime.

use proptest::prelude::*;
use redlock_fred::{Instance, RedisBackend};

/// Everything a user could print about a parse or build: `Display` of the error chain, `Debug`
/// of the error, of the instance (parsed or not) and of the backend.
fn all_text(url: &str) -> String {
    let mut text = format!("{:?}", Instance::from(url));
    match Instance::parse(url) {
        Ok(instance) => text.push_str(&format!(" | {instance:?}")),
        Err(e) => text.push_str(&chain(&e)),
    }
    match RedisBackend::new(url) {
        Ok(backend) => text.push_str(&format!(" | {backend:?}")),
        Err(e) => text.push_str(&chain(&e)),
    }
    if let Err(e) = redlock_fred::manager([url]).build() {
        text.push_str(&chain(&e));
    }
    text
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = format!(" | {error:?}");
    let mut cause = Some(error);
    while let Some(e) = cause {
        text.push_str(&format!(" | {e}"));
        cause = e.source();
    }
    text
}

/// The spellings of `secret` that would give it away: as given, percent-encoded, form-encoded.
fn spellings(secret: &str) -> Vec<String> {
    let percent: String =
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    vec![secret.to_owned(), percent, form]
}

fn assert_hidden(url: &str, secret: &str) {
    let text = all_text(url);
    for spelling in spellings(secret) {
        assert!(
            !text.contains(&spelling),
            "`{url}` shows the secret `{spelling}`: {text}"
        );
    }
}

/// Secrets where URLs put them (a password, a `sentinelPassword`), and where a mistake puts
/// them (an unknown parameter, a fragment, unescaped delimiters, a malformed URL). A user name
/// is not a secret: `redis://name@host` shows `name` in the parsed configuration.
#[test]
fn a_corpus_of_urls_with_secrets_in_them() {
    const S: &str = "hunter2";
    let corpus = [
        "redis://:hunter2@h:1/0",
        "redis://u:hunter2@h:1/0?bogus=1",
        "redis://:hunter2@h:1/notadb",
        "redis://:hunter2@h:0",
        "redis://:hunter2@:1/0",
        "redis://:hunter2@h:99999",
        "redis://:hun%74er2@h:1/0?x=y",
        "redis://:pa#hunter2@h:1",
        "redis://:pa/hunter2@h:1",
        "redis://:pa?hunter2@h:1",
        "redis://:p@hunter2@h:1",
        "redis://:hunter2@h:1/0#frag",
        "redis://h:1/0#hunter2",
        "redis://h:1/0?hunter2",
        "redis://h:1/0?password=hunter2",
        "redis://h:1/0?sentinelPassword=hunter2",
        "redis-sentinel://h?sentinelServiceName=m&sentinelPassword=hunter2&bogus=1",
        "redis-sentinel://h?sentinelPassword=hunter2&sentinelServiceName=m&node=x",
        "redis-sentinel://h?sentinelPassword=hunter2",
        "redis-sentinel://:hunter2@h?sentinelServiceName=m&node=h2:0",
        "redis-sentinel://h?sentinelServiceName=m&sentinelPasword=hunter2",
        "rediss://:hunter2@h:1/0?ssl_cert_reqs=SOMETIMES",
        "rediss://:hunter2@h:1/0?ssl_ca_certs=/nonexistent/ca.pem",
        "redis+unix://:hunter2@/tmp/r.sock?db=x",
        "redis+unix://:hunter2@host/",
        "unix://:hunter2@/tmp/r.sock?master=m",
        "http://:hunter2@h:1/0",
        "redis//:hunter2@host",
        "redis:hunter2@host",
        "hunter2",
        ":hunter2@h",
        "redis://:hunter%FF2@h",
        "redis://[::1:hunter2@h",
        "redis://u:hunter2@[::1]:1/0?db=1&db=2",
    ];
    for url in corpus {
        assert_hidden(url, S);
    }
}

/// A secret with markers no other generated part contains (no other part has an upper-case
/// `Q`), so finding it in the output can only mean it leaked.
fn secret() -> impl Strategy<Value = String> {
    "\\PC{0,12}".prop_map(|body| format!("Qz{body}zQ"))
}

fn junk() -> impl Strategy<Value = String> {
    "[^Q]{0,8}"
}

fn scheme() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "redis://",
        "rediss://",
        "redis-sentinel://",
        "rediss-sentinel://",
        "redis+unix://",
        "unix://",
        "http://",
        "redis:/",
        "",
    ])
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("127.0.0.1".to_owned()),
        Just("[::1]".to_owned()),
        "[a-z][a-z0-9.-]{0,10}",
        Just(String::new()),
        junk(),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(":0".to_owned()),
        (1u32..70_000).prop_map(|p| format!(":{p}")),
        junk().prop_map(|j| format!(":{j}")),
    ]
}

fn param() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("db=1".to_owned()),
        Just("db=x".to_owned()),
        Just("master=m".to_owned()),
        Just("sentinelServiceName=m".to_owned()),
        Just("node=h:2".to_owned()),
        Just("node=h:0".to_owned()),
        Just("ssl_cert_reqs=CERT_NONE".to_owned()),
        Just("bogus=1".to_owned()),
        junk(),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Place {
    PasswordEncoded,
    PasswordRaw,
    UserAndPasswordEncoded,
    SentinelPasswordEncoded,
    SentinelPasswordRaw,
    Both,
}

fn place() -> impl Strategy<Value = Place> {
    prop::sample::select(vec![
        Place::PasswordEncoded,
        Place::PasswordRaw,
        Place::UserAndPasswordEncoded,
        Place::SentinelPasswordEncoded,
        Place::SentinelPasswordRaw,
        Place::Both,
    ])
}

fn percent(secret: &str) -> String {
    percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn form(secret: &str) -> String {
    url::form_urlencoded::byte_serialize(secret.as_bytes()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_string_parses_or_fails_without_panicking(text in any::<String>()) {
        let _ = all_text(&text);
    }

    #[test]
    fn any_url_shaped_string_parses_or_fails_without_panicking(
        scheme in scheme(),
        userinfo in junk(),
        host in host(),
        port in port(),
        path in junk(),
        params in prop::collection::vec(param(), 0..4),
    ) {
        let url = format!("{scheme}{userinfo}@{host}{port}/{path}?{}", params.join("&"));
        let _ = all_text(&url);
    }

    #[test]
    fn a_secret_anywhere_in_a_url_never_shows(
        secret in secret(),
        place in place(),
        scheme in scheme(),
        host in host(),
        port in port(),
        path in prop_oneof![Just(String::new()), Just("/1".to_owned()), junk().prop_map(|j| format!("/{j}"))],
        before in prop::collection::vec(param(), 0..3),
        after in prop::collection::vec(param(), 0..3),
    ) {
        let userinfo = match place {
            Place::PasswordEncoded | Place::Both => format!(":{}@", percent(&secret)),
            Place::PasswordRaw => format!(":{secret}@"),
            Place::UserAndPasswordEncoded => format!("user:{}@", percent(&secret)),
            Place::SentinelPasswordEncoded | Place::SentinelPasswordRaw => String::new(),
        };
        let mut params = before;
        match place {
            Place::SentinelPasswordEncoded | Place::Both => {
                params.push(format!("sentinelPassword={}", form(&secret)));
            }
            Place::SentinelPasswordRaw => params.push(format!("sentinelPassword={secret}")),
            _ => {}
        }
        params.extend(after);
        let url = format!("{scheme}{userinfo}{host}{port}{path}?{}", params.join("&"));
        assert_hidden(&url, &secret);
    }
}
