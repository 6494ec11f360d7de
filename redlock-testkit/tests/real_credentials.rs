//! Credentials and socket paths with every reserved URL character, from the URL to the server's
//! `AUTH` (requirepass and ACL users) on real servers; and fred clients configured by the
//! application (`RedisBackend::from_client`, `from_config`).

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use redlock_core::{BackendErrorKind, Error, InvalidInput, LockBackend, LockManager};
use redlock_fred::fred::clients::Client;
use redlock_fred::fred::interfaces::ClientLike;
use redlock_fred::fred::types::config::{
    Config as FredConfig, ConnectionConfig, PerformanceConfig, ReconnectPolicy, ServerConfig,
};
use redlock_fred::{ConnectionOptions, RedisBackend, TokioClock};
use redlock_testkit::{require_redis, RedisServer, ServerOptions};

const TTL: Duration = Duration::from_secs(10);

/// Every character with a meaning in a URL (and `%`), a space, and non-ASCII text.
const PASSWORDS: [&str; 12] = [
    "p+w",
    "pa&ss",
    "a=b",
    "100%",
    "p@ss",
    "p:ss",
    "p/ss",
    "p?ss",
    "p#ss",
    "p ss",
    "pässwörd€",
    "+&=%@:/?# é",
];

/// Passwords a URL can also carry unescaped (the others would change the URL's structure).
const RAW_OK: [&str; 8] = [
    "p+w",
    "pa&ss",
    "a=b",
    "100%",
    "p@ss",
    "p:ss",
    "p ss",
    "pässwörd€",
];

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

async fn serves(url: &str) {
    let backend = RedisBackend::new(url).expect("valid URL");
    backend
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
    assert!(backend.release(b"k", b"t").await.expect("release"));
    backend.close().await.expect("close");
}

async fn refused(url: &str) {
    let backend = RedisBackend::new(url).expect("valid URL");
    let error = backend.connect().await.expect_err(url);
    assert_eq!(error.kind(), BackendErrorKind::Auth, "{url}: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_with_every_reserved_character() {
    require_redis();
    for password in PASSWORDS {
        let server = RedisServer::start_with(ServerOptions::new().password(password));
        let port = server.port();
        serves(&format!("redis://:{}@127.0.0.1:{port}/1", encode(password))).await;
        if RAW_OK.contains(&password) {
            serves(&format!("redis://:{password}@127.0.0.1:{port}")).await;
        }
    }
    // The server tells the right password from the one form-decoding made of it.
    let server = RedisServer::start_with(ServerOptions::new().password("p+w"));
    refused(&format!("redis://:p%20w@127.0.0.1:{}", server.port())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_with_every_reserved_character() {
    require_redis();
    let server = RedisServer::start();
    for (i, password) in PASSWORDS.iter().enumerate() {
        // ACL user names cannot hold spaces; every other character is fair.
        let user = format!("u{i}{}", password.replace(' ', "_"));
        let rule = format!(">{password}");
        server.cmd(&["ACL", "SETUSER", &user, "on", &rule, "~*", "&*", "+@all"]);
        let url = format!(
            "redis://{}:{}@127.0.0.1:{}",
            encode(&user),
            encode(password),
            server.port()
        );
        serves(&url).await;
        refused(&format!(
            "redis://{}:wrong@127.0.0.1:{}",
            encode(&user),
            server.port()
        ))
        .await;
    }
    // The issue's own example: a user with `+`, unescaped.
    server.cmd(&["ACL", "SETUSER", "us+er", "on", ">pw", "~*", "&*", "+@all"]);
    serves(&format!("redis://us+er:pw@127.0.0.1:{}", server.port())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_paths_with_reserved_characters() {
    require_redis();
    let server = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("redlock-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for name in ["a+b.sock", "a b&c=d%e?f#g é.sock"] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(server.unix_socket(), &link).expect("symlink");
        let dir_text = dir.to_str().expect("an ASCII temp dir");
        serves(&format!("redis+unix://{dir_text}/{}?db=2", encode(name))).await;
        if name == "a+b.sock" {
            serves(&format!("redis+unix://{dir_text}/{name}")).await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn settings(attempts: u32, timeout: Duration) -> (PerformanceConfig, ConnectionConfig) {
    (
        PerformanceConfig {
            default_command_timeout: timeout,
            ..PerformanceConfig::default()
        },
        ConnectionConfig {
            max_command_attempts: attempts,
            ..ConnectionConfig::default()
        },
    )
}

fn config_message(error: Error) -> String {
    match error {
        Error::InvalidInput(InvalidInput::Config(m)) => m,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_configured_fred_client() {
    require_redis();
    let server = RedisServer::start();
    let config = FredConfig::from_url(&server.url()).expect("fred URL");

    let (perf, connection) = settings(1, Duration::from_millis(90));
    let client = Client::new(
        config.clone(),
        Some(perf),
        Some(connection),
        Some(ReconnectPolicy::default()),
    );
    let backend = RedisBackend::from_client(client).expect("meets the requirements");
    let manager = LockManager::builder(Arc::new(TokioClock))
        .instance(Arc::new(backend))
        .build()
        .expect("valid");
    manager
        .lock("app", TTL)
        .await
        .expect("lock")
        .release()
        .await
        .expect("release");

    // Already connected by the application: used as it is, and left open by close.
    let (perf, connection) = settings(1, Duration::from_millis(90));
    let client = Client::new(config.clone(), Some(perf), Some(connection), None);
    let _task = client.init().await.expect("connects");
    let backend = RedisBackend::from_client(client.clone()).expect("valid");
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
    backend.close().await.expect("close");
    assert!(client.is_connected(), "the application's client stays open");
    let _: () = client.quit().await.expect("quit");

    // What the backend cannot work with is refused by name.
    let (perf, connection) = settings(3, Duration::from_millis(90));
    let resends = Client::new(config.clone(), Some(perf), Some(connection), None);
    let message = config_message(RedisBackend::from_client(resends).expect_err("re-sends"));
    assert!(message.contains("max_command_attempts"), "{message}");
    let (perf, connection) = settings(1, Duration::ZERO);
    let untimed = Client::new(config.clone(), Some(perf), Some(connection), None);
    let message = config_message(RedisBackend::from_client(untimed).expect_err("no timeout"));
    assert!(message.contains("no command timeout"), "{message}");
    let cluster = FredConfig {
        server: ServerConfig::new_clustered(vec![("127.0.0.1", server.port())]),
        ..FredConfig::default()
    };
    let message = config_message(
        RedisBackend::from_config(cluster, &ConnectionOptions::new()).expect_err("cluster"),
    );
    assert!(message.contains("Redis Cluster"), "{message}");
    let empty = FredConfig {
        server: ServerConfig::new_centralized("", 0),
        ..FredConfig::default()
    };
    let message = config_message(
        RedisBackend::from_config(empty, &ConnectionOptions::new()).expect_err("no host"),
    );
    assert!(message.contains("host is empty"), "{message}");

    // A fred Config with this crate's connection settings.
    let backend = RedisBackend::from_config(config, &ConnectionOptions::new()).expect("valid");
    backend.connect().await.expect("connects");
    assert!(backend.inspect(b"k").await.expect("inspect").is_some());
}
