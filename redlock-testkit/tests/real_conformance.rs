//! The core's backend conformance suite against real Redis: over TCP, a unix socket, TLS, an
//! ACL user, and a Sentinel-managed master; plain and through `Arc<dyn LockBackend>`.

use std::sync::Arc;

use redlock_core::{conformance, LockBackend};
use redlock_fred::{Instance, RedisBackend, RedisConfig, Tls, TokioClock, UnixSocket};
use redlock_testkit::{RedisServer, SentinelGroup, ServerFixture, ServerOptions};

async fn run(instance: impl Into<Instance>, fixture: ServerFixture<'_>, namespace: &[u8]) {
    let backend = RedisBackend::new(instance).expect("valid instance");
    conformance::run_all(&backend, &TokioClock, &fixture, namespace).await;
    backend.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tcp_and_unix_socket() {
    let server = RedisServer::start();
    run(
        ("127.0.0.1", server.port()),
        ServerFixture::new(&server, 0),
        b"tcp:",
    )
    .await;
    run(server.url(), ServerFixture::new(&server, 0), b"url:").await;
    run(
        UnixSocket::new(server.unix_socket()).with_db(3),
        ServerFixture::new(&server, 3),
        b"unix:",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_arc_dyn_backend() {
    let server = RedisServer::start();
    let backend: Arc<dyn LockBackend> =
        Arc::new(RedisBackend::new(("127.0.0.1", server.port())).expect("valid instance"));
    // The manager's own form, and a pointer over it: what a generic decorator would wrap.
    let wrapped: Arc<dyn LockBackend> = Arc::new(Arc::clone(&backend));
    let fixture = ServerFixture::new(&server, 0);
    conformance::run_all(wrapped.as_ref(), &TokioClock, &fixture, b"arc:").await;
    wrapped.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tls_with_acl_user() {
    let server =
        RedisServer::start_with(ServerOptions::new().tls().acl_user("locker", "s3cret-pw"));
    let tls = Tls::new().with_ca_pem(server.tls_ca_pem().expect("ca"));
    let config = RedisConfig::new("127.0.0.1", server.tls_port().expect("tls port"))
        .with_auth("locker", "s3cret-pw")
        .with_tls(tls);
    run(config, ServerFixture::new(&server, 0), b"tls:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_sentinel() {
    let group = SentinelGroup::start();
    run(
        group.instance().with_db(2),
        ServerFixture::new(group.master(), 2),
        b"sentinel:",
    )
    .await;
}
