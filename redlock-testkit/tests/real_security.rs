//! TLS, ACL users and passwords against real servers; passwords never appear in `Debug`,
//! `Display` or errors.

use std::time::Duration;

use redlock_core::{Error, InvalidInput, LockBackend};
use redlock_fred::{Instance, RedisBackend, RedisConfig, Tls};
use redlock_testkit::{require_redis, RedisServer, ServerOptions};

const TTL: Duration = Duration::from_secs(10);
const SECRET: &str = "pw-7c1f-do-not-print";

/// Everything a user could print about an error: `Display` of the chain and `Debug`.
fn all_text(error: &dyn std::error::Error) -> String {
    let mut text = format!("{error:?}");
    let mut cause = Some(error);
    while let Some(e) = cause {
        text.push_str(&format!(" | {e}"));
        cause = e.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_certificates_by_default() {
    require_redis();
    let server = RedisServer::start_with(ServerOptions::new().tls());
    let port = server.tls_port().expect("tls port");

    // Trusting the test CA: works.
    let trusted = RedisConfig::new("127.0.0.1", port)
        .with_tls(Tls::new().with_ca_pem(server.tls_ca_pem().expect("ca")));
    let backend = RedisBackend::new(trusted).expect("backend");
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("TLS acquire"));
    assert_eq!(server.get("k"), Some(b"t".to_vec()));

    // The same URL with ssl_ca_certs= naming the CA file: works.
    let url = format!(
        "rediss://localhost:{port}/0?ssl_ca_certs={}",
        server.tls_ca_file().expect("ca file").display()
    );
    let backend = RedisBackend::new(url).expect("backend");
    assert!(backend.release(b"k", b"t").await.expect("TLS release"));

    // Default TLS (system roots): the test CA is unknown, so the handshake must fail.
    let backend = RedisBackend::new(format!("rediss://127.0.0.1:{port}")).expect("backend");
    let error = backend
        .acquire(b"k", b"t", TTL)
        .await
        .expect_err("untrusted certificate");
    assert_eq!(
        server.get("k"),
        None,
        "nothing was written over an unverified connection"
    );
    drop(error);

    // Only an explicit CERT_NONE turns verification off.
    let backend = RedisBackend::new(format!(
        "rediss://127.0.0.1:{port}/0?ssl_cert_reqs=CERT_NONE"
    ))
    .expect("backend");
    assert!(backend
        .acquire(b"k", b"t", TTL)
        .await
        .expect("unverified TLS"));

    // Plaintext to the TLS port is not silently accepted either.
    let backend = RedisBackend::new(("127.0.0.1", port)).expect("backend");
    assert!(backend.acquire(b"k2", b"t", TTL).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password() {
    require_redis();
    let server = RedisServer::start_with(ServerOptions::new().acl_user("locker", SECRET));
    let url = format!("redis://locker:{SECRET}@127.0.0.1:{}/0", server.port());
    let manager = redlock_fred::manager([url.clone()])
        .build()
        .expect("config");
    let lock = manager.lock("acl", TTL).await.expect("lock as ACL user");
    lock.release().await.expect("release");

    // Wrong password: a failed instance whose error does not echo any password.
    let wrong = RedisConfig::new("127.0.0.1", server.port()).with_auth("locker", "not-the-pw-9f2");
    let manager = redlock_fred::manager([wrong.clone()])
        .retry_count(1)
        .build()
        .expect("config");
    let error = manager.lock("acl", TTL).await.expect_err("AUTH refused");
    let text = all_text(&error);
    assert!(!text.contains("not-the-pw-9f2"), "{text}");
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");

    for text in [
        format!("{wrong:?}"),
        format!("{:?}", Instance::from(url.clone())),
        format!("{manager:?}"),
        format!("{:?}", RedisBackend::new(url.clone()).expect("backend")),
        format!("{:?}", redlock_fred::manager([url.clone()])),
    ] {
        assert!(!text.contains(SECRET), "{text}");
    }
}

#[test]
fn config_errors_never_show_the_password() {
    let bad = [
        format!("redis://user:{SECRET}@host:1/0?bogus=1"),
        format!("redis://:{SECRET}@host:1/notadb"),
        format!("rediss://:{SECRET}@host:1/0?ssl_cert_reqs=SOMETIMES"),
        format!("redis-sentinel://:{SECRET}@host:1/0"),
        format!("redis//:{SECRET}@host"),
    ];
    for url in bad {
        let error = RedisBackend::new(url.clone()).expect_err("invalid");
        assert!(
            matches!(error, Error::InvalidInput(InvalidInput::Config(_))),
            "{error:?}"
        );
        let text = all_text(&error);
        assert!(!text.contains(SECRET), "{url}: {text}");
        let error = redlock_fred::manager([url.clone()])
            .build()
            .expect_err("invalid");
        assert!(!all_text(&error).contains(SECRET));
    }
}

#[test]
fn duplicate_servers_are_refused_without_network() {
    let error = redlock_fred::manager([
        Instance::from(("localhost", 7001)),
        "redis://127.0.0.1:7001/3".into(),
    ])
    .build()
    .expect_err("same server twice");
    assert!(
        matches!(error, Error::InvalidInput(InvalidInput::DuplicateInstance(ref id)) if id == "127.0.0.1:7001"),
        "{error:?}"
    );
}

#[test]
fn a_fred_timeout_not_below_the_instance_timeout_is_refused_at_build() {
    // No server needed: the check happens before any connection.
    let backend = redlock_fred::RedisBackend::new("redis://127.0.0.1:1").expect("valid URL");
    let built = redlock_core::LockManager::builder(std::sync::Arc::new(redlock_fred::TokioClock))
        .instance(std::sync::Arc::new(backend))
        .instance_timeout(std::time::Duration::from_millis(50))
        .build();
    match built {
        Err(redlock_core::Error::InvalidInput(redlock_core::InvalidInput::Config(msg))) => {
            assert!(msg.contains("command timeout"), "{msg}");
            assert!(msg.contains("for_instance_timeout(50ms)"), "{msg}");
            assert!(!msg.contains("  "), "no runs of spaces: {msg}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn an_instance_timeout_too_short_for_fred_is_refused_by_the_redis_builder() {
    for timeout in [Duration::from_millis(1), Duration::from_micros(500)] {
        let error = redlock_fred::manager(["redis://127.0.0.1:1"])
            .instance_timeout(timeout)
            .build()
            .expect_err("too short");
        let text = error.to_string();
        assert!(text.contains("at least 2 ms"), "{text}");
        // Built through redlock_fred::manager: no advice to build through it.
        assert!(!text.contains("redlock_fred::manager"), "{text}");
    }
    redlock_fred::manager(["redis://127.0.0.1:1"])
        .instance_timeout(Duration::from_millis(2))
        .build()
        .expect("2 ms leaves fred 1 ms");
}
