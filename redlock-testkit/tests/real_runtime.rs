//! The backend outside the context it needs: no tokio runtime, a runtime without timers, the
//! runtime of the connection shut down. Each is an error saying so, never a panic.

use std::time::Duration;

use redlock_core::{BackendErrorKind, Error, InstanceOutcome, LockBackend, LockManager};
use redlock_fred::RedisBackend;
use redlock_testkit::{require_redis, RedisServer};

const TTL: Duration = Duration::from_secs(10);

fn manager(server: &RedisServer) -> LockManager {
    redlock_fred::manager([server.url()])
        .retry_count(1)
        .build()
        .expect("valid")
}

/// The only instance's failure, which must be of kind `Other` and say `needle`.
fn assert_context_error(error: &Error, needle: &str) {
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    let report = &error.failure().expect("report").instances[0];
    match &report.outcome {
        InstanceOutcome::Failed(e) => {
            assert_eq!(e.kind(), BackendErrorKind::Other, "{e:?}");
            assert!(e.to_string().contains(needle), "`{needle}` not in: {e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn outside_any_tokio_runtime_is_an_error() {
    require_redis();
    let server = RedisServer::start();
    let manager = manager(&server);
    let error = futures::executor::block_on(manager.lock("r", TTL)).expect_err("no runtime");
    assert_context_error(&error, "outside a tokio runtime");
    let error = futures::executor::block_on(manager.connect()).expect_err("no runtime");
    assert_context_error(&error, "outside a tokio runtime");
    let backend = RedisBackend::new(server.url()).expect("valid");
    let error =
        futures::executor::block_on(backend.acquire(b"k", b"t", TTL)).expect_err("no runtime");
    assert!(error.to_string().contains("enable_all"), "{error}");
    assert_eq!(server.get("k"), None, "nothing was sent");
    futures::executor::block_on(manager.close()).expect("close never panics either");
}

#[test]
fn a_runtime_without_timers_is_an_error() {
    require_redis();
    let server = RedisServer::start();
    let manager = manager(&server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let error = runtime
        .block_on(manager.lock("r", TTL))
        .expect_err("no timers");
    assert_context_error(&error, "no timer driver");
    runtime
        .block_on(manager.close())
        .expect("close never panics either");
}

#[test]
fn a_shut_down_runtime_is_named_as_the_cause() {
    require_redis();
    let server = RedisServer::start();
    let manager = manager(&server);
    let first = tokio::runtime::Runtime::new().expect("runtime");
    first.block_on(async {
        let lock = manager.lock("r", TTL).await.expect("lock");
        lock.release().await.expect("release");
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().expect("runtime");
    let error = second
        .block_on(manager.lock("r", TTL))
        .expect_err("the connection went with the first runtime");
    assert_context_error(&error, "runtime it was started on shuts down");
    assert_eq!(server.get("r"), None);
}
