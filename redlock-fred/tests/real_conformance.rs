//! The core's backend conformance suite against real Redis: over TCP, a unix socket, TLS, an
//! ACL user, and a Sentinel-managed master.

use redlock_core::conformance;
use redlock_fred::harness::{RedisServer, SentinelGroup, ServerOptions};
use redlock_fred::{Instance, RedisBackend, RedisConfig, Tls, TokioClock, UnixSocket};

async fn run(instance: impl Into<Instance>, namespace: &[u8]) {
    let backend = RedisBackend::new(instance).expect("valid instance");
    conformance::run_all(&backend, &TokioClock, namespace).await;
    redlock_core::LockBackend::close(&backend)
        .await
        .expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tcp_and_unix_socket() {
    let server = RedisServer::start();
    run(("127.0.0.1", server.port()), b"tcp:").await;
    run(server.url(), b"url:").await;
    run(UnixSocket::new(server.unix_socket()).with_db(3), b"unix:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tls_with_acl_user() {
    let server =
        RedisServer::start_with(ServerOptions::new().tls().acl_user("locker", "s3cret-pw"));
    let tls = Tls::new().with_ca_pem(server.tls_ca_pem().expect("ca"));
    let config = RedisConfig::new("127.0.0.1", server.tls_port().expect("tls port"))
        .with_auth("locker", "s3cret-pw")
        .with_tls(tls);
    run(config, b"tls:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_sentinel() {
    let group = SentinelGroup::start();
    run(group.instance().with_db(2), b"sentinel:").await;
}
