//! The core's backend conformance suite against real Redis for the redis-rs backend
//! (`redlock-redis`): over TCP, a unix socket with a database, an ACL user with a password, and
//! through `Arc<dyn LockBackend>`.

use std::sync::Arc;

use redlock_core::{conformance, LockBackend};
use redlock_redis::{ConnectionOptions, RedisBackend, TokioClock};
use redlock_testkit::{RedisServer, ServerFixture, ServerOptions};

async fn run(url: &str, fixture: ServerFixture<'_>, namespace: &[u8]) {
    let backend = RedisBackend::new(url).expect("valid URL");
    // Connected first (within the 1 s connection timeout), as `LockManager::connect` does: a
    // first call on a cold backend also has to connect within its 90 ms command timeout, which
    // a loaded machine can miss (the TLS handshake most of all).
    backend.connect().await.expect("connects");
    conformance::run_all(&backend, &TokioClock, &fixture, namespace).await;
    backend.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tcp_and_unix_socket() {
    let server = RedisServer::start();
    run(&server.url(), ServerFixture::new(&server, 0), b"tcp:").await;
    let socket = format!("redis+unix://{}?db=3", server.unix_socket().display());
    run(&socket, ServerFixture::new(&server, 3), b"unix:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_acl_user_and_database() {
    let server = RedisServer::start_with(ServerOptions::new().acl_user("locker", "s3cret-pw"));
    let url = format!("redis://locker:s3cret-pw@127.0.0.1:{}/2", server.port());
    run(&url, ServerFixture::new(&server, 2), b"acl:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_arc_dyn_backend() {
    let server = RedisServer::start();
    let backend: Arc<dyn LockBackend> =
        Arc::new(RedisBackend::new(&server.url()).expect("valid URL"));
    backend.connect().await.expect("connects");
    let wrapped: Arc<dyn LockBackend> = Arc::new(Arc::clone(&backend));
    let fixture = ServerFixture::new(&server, 0);
    conformance::run_all(wrapped.as_ref(), &TokioClock, &fixture, b"arc:").await;
    wrapped.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tls_with_acl_user() {
    let server =
        RedisServer::start_with(ServerOptions::new().tls().acl_user("locker", "s3cret-pw"));
    let url = format!(
        "rediss://locker:s3cret-pw@127.0.0.1:{}",
        server.tls_port().expect("tls port")
    );
    let client = redlock_redis::redis::Client::build_with_tls(
        url.as_str(),
        redlock_redis::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(server.tls_ca_pem().expect("ca")),
        },
    )
    .expect("client");
    let backend = RedisBackend::from_client(client, &ConnectionOptions::default()).expect("valid");
    backend.connect().await.expect("connects");
    let fixture = ServerFixture::new(&server, 0);
    conformance::run_all(&backend, &TokioClock, &fixture, b"tls:").await;
    backend.close().await.expect("close");

    // Without our CA the server's certificate is refused: never a silent plaintext fallback.
    let unverified = RedisBackend::new(&url).expect("valid");
    let error = unverified.connect().await.expect_err("unknown CA");
    assert_eq!(
        error.kind(),
        redlock_core::BackendErrorKind::Connection,
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("s3cret-pw"));
}
