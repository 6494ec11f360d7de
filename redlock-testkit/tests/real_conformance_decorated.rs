//! The conformance suite against a real `redis-server` through `FaultyBackend` with its faults
//! off: the decorator passes through everything the fred backend offers (release announcements
//! over pub/sub included). The plain runs are in `real_conformance.rs`.

use std::sync::Arc;

use redlock_core::{conformance, LockBackend};
use redlock_fred::{RedisBackend, TokioClock};
use redlock_mock::FaultyBackend;
use redlock_testkit::{RedisServer, ServerFixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_backend_over_redis_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let redis = RedisBackend::new(("127.0.0.1", server.port())).expect("valid instance");
    let backend = FaultyBackend::new(redis, Arc::new(TokioClock));
    let fixture = ServerFixture::new(&server, 0);
    conformance::run_all(&backend, &TokioClock, &fixture, b"faulty:").await;
    assert!(backend.faults().calls() > 0);
    backend.close().await.expect("close");
}
