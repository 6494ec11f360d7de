//! The REAL instance-fault scenarios of FAULTS.md, each against its own redis-server processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redlock_core::{BackendErrorKind, Error, InstanceOutcome, Lock, LockBackend, LockManager};
use redlock_fred::{ConnectionOptions, RedisBackend, TokioClock};
use redlock_testkit::{require_redis, wait_until, RedisServer, ServerOptions};

const TTL: Duration = Duration::from_secs(10);

fn servers(n: usize) -> Vec<RedisServer> {
    require_redis();
    (0..n).map(|_| RedisServer::start()).collect()
}

fn manager(servers: &[RedisServer]) -> LockManager {
    redlock_fred::manager(servers.iter().map(RedisServer::url))
        .retry_delay(Duration::from_millis(10), Duration::from_millis(30))
        .build()
        .expect("valid config")
}

/// Polls `f` until it returns `Ok`, for at most `timeout` (a reconnect takes a few backoff
/// steps); returns the last error otherwise.
async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Locks `key` and waits until every server holds it: `lock` returns once a quorum granted it,
/// and the last grant is still on its way (it must arrive: every call is sent before the round
/// can be decided, and a script is sent with EVAL until the server is known to cache it).
async fn lock_everywhere(manager: &LockManager, servers: &[RedisServer], key: &str) -> Lock {
    let lock = manager
        .lock(key, Duration::from_secs(30))
        .await
        .expect("lock");
    let token = lock.token().to_vec();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !servers
        .iter()
        .all(|s| s.get(key).as_deref() == Some(token.as_slice()))
    {
        assert!(
            Instant::now() < deadline,
            "the grant of {key} never reached every server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lock
}

async fn warm_up(manager: &LockManager) {
    let lock = manager.lock("warm-up", TTL).await.expect("all up");
    lock.release().await.expect("release");
}

fn failed_kinds(error: &Error) -> Vec<Option<BackendErrorKind>> {
    error
        .failure()
        .expect("a per-instance report")
        .instances
        .iter()
        .map(|r| match &r.outcome {
            InstanceOutcome::Failed(e) => Some(e.kind()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_killed_still_locks() {
    let mut servers = servers(3);
    let manager = manager(&servers);
    servers[2].kill();
    let lock = manager
        .lock("minority", TTL)
        .await
        .expect("2 of 3 is a quorum");
    assert!(lock.is_valid());
    assert_eq!(servers[0].get("minority"), Some(lock.token().to_vec()));
    assert_eq!(servers[1].get("minority"), Some(lock.token().to_vec()));
    lock.extend().await.expect("extend on 2 of 3");
    lock.release().await.expect("release on 2 of 3");
    assert_eq!(servers[0].get("minority"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_killed_is_a_bounded_unavailable_error() {
    let mut servers = servers(3);
    let manager = manager(&servers);
    servers[1].kill();
    servers[2].kill();
    let started = Instant::now();
    let error = manager
        .lock("majority", TTL)
        .await
        .expect_err("1 of 3 is no quorum");
    let elapsed = started.elapsed();
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    // retry_count × (2 × instance timeout + max delay) = 3 × 230 ms; allow generous slack for a
    // loaded machine, but far below any connection timeout or TTL.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(error.failure().map(|f| f.attempts), Some(3));
    assert_eq!(error.failure().map(|f| f.unreachable().count()), Some(2));
    // The one live server was cleaned up after each failed attempt.
    assert_eq!(servers[0].get("majority"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_instance_costs_about_one_instance_timeout() {
    let servers = servers(3);
    let manager = redlock_fred::manager(servers.iter().map(RedisServer::url))
        .connection_timeout(Duration::from_secs(5))
        .build()
        .expect("valid config");
    // Connect everything first, so the stopped server holds an open, silent connection.
    manager
        .lock("warm-up", TTL)
        .await
        .expect("all up")
        .release()
        .await
        .expect("release");
    servers[0].pause();
    let started = Instant::now();
    let lock = manager.lock("stopped", TTL).await.expect("2 of 3 answer");
    lock.release().await.expect("release on 2 of 3");
    let elapsed = started.elapsed();
    servers[0].resume();
    // Lock and release each wait at most one instance timeout (100 ms) for the silent server;
    // a connection timeout (5 s) must not be involved.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // After SIGCONT the server answers again and holds no key of ours.
    let lock = eventually(Duration::from_secs(5), || manager.lock("after-stop", TTL))
        .await
        .expect("locks again");
    lock.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_instance_does_not_stall_the_quorum() {
    let servers = servers(3);
    let manager = manager(&servers);
    manager
        .lock("warm-up", TTL)
        .await
        .expect("all up")
        .release()
        .await
        .expect("release");
    let sleeping = servers[1].debug_sleep(Duration::from_millis(800));
    let started = Instant::now();
    let lock = manager.lock("sleepy", TTL).await.expect("2 of 3 answer");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    sleeping.join().expect("sleep ends");
    lock.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_between_acquire_and_extend_or_release() {
    let servers = servers(3);
    let manager = manager(&servers);
    let lock = manager.lock("flushed", TTL).await.expect("lock");
    servers.iter().for_each(RedisServer::script_flush);
    lock.extend()
        .await
        .expect("extend after SCRIPT FLUSH: no NOSCRIPT reaches the user");
    servers.iter().for_each(RedisServer::script_flush);
    lock.release().await.expect("release after SCRIPT FLUSH");
    // The release returned at a quorum; the last delete is on its way.
    wait_until(Duration::from_secs(5), "every key to go", || {
        servers.iter().all(|s| s.get("flushed").is_none())
    });
    // Each backend call on its own too (acquire / inspect right after a flush).
    let backend = RedisBackend::new(servers[0].url()).expect("backend");
    servers[0].script_flush();
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
    servers[0].script_flush();
    assert!(backend.inspect(b"k").await.expect("inspect").is_some());
    servers[0].script_flush();
    assert!(backend.release(b"k", b"t").await.expect("release"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_resets_connections_and_the_lock_recovers() {
    let servers = servers(3);
    let manager = manager(&servers);
    // Connect every instance first (a release waits for all of them): on a cold start the
    // lock may return on a bare quorum before the last connection is even up.
    warm_up(&manager).await;
    let lock = lock_everywhere(&manager, &servers, "reset").await;
    for s in &servers {
        assert!(
            s.client_kill() >= 1,
            "our connection was open and got killed"
        );
    }
    // fred reconnects; a command caught by the reset fails (fred sends each command once)
    // and is tried again here.
    eventually(Duration::from_secs(5), || lock.extend())
        .await
        .expect("extend after reconnect");
    for s in &servers {
        assert_eq!(s.get("reset"), Some(lock.token().to_vec()));
        assert!(s.pttl("reset") > 20_000, "extended to 30 s");
    }
    lock.release().await.expect("release");
    // The release returned at a quorum; the last delete is on its way.
    wait_until(Duration::from_secs(5), "every key to go", || {
        servers.iter().all(|s| s.get("reset").is_none())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_and_without_persistence() {
    require_redis();
    let mut servers: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::start_with(ServerOptions::new().persistence()))
        .collect();
    // Restart recovery would set the lost key again on reconnection (real_restart.rs shows
    // it): off, to see what extend alone does.
    let manager = redlock_fred::manager(servers.iter().map(RedisServer::url))
        .retry_delay(Duration::from_millis(10), Duration::from_millis(30))
        .into_core()
        .expect("valid config")
        .restart_recovery(false)
        .build()
        .expect("valid config");
    // Connect every instance first (a release waits for all of them): on a cold start the
    // lock may return on a bare quorum before the last connection is even up.
    warm_up(&manager).await;
    let lock = lock_everywhere(&manager, &servers, "restarted").await;

    servers[0].restart(true);
    assert_eq!(
        servers[0].get("restarted"),
        Some(lock.token().to_vec()),
        "AOF kept the key"
    );
    eventually(Duration::from_secs(5), || lock.extend())
        .await
        .expect("extend after restart");

    servers[1].restart(false);
    assert_eq!(servers[1].get("restarted"), None, "restarted empty");
    // 2 of 3 still hold the token; extending must not re-create the lost key.
    eventually(Duration::from_secs(5), || lock.extend())
        .await
        .expect("extend on the two that kept it");
    assert_eq!(
        servers[1].get("restarted"),
        None,
        "extend never re-creates a key"
    );
    lock.release().await.expect("release");
    // The release returned at a quorum; the last delete is on its way.
    wait_until(Duration::from_secs(5), "every key to go", || {
        servers.iter().all(|s| s.get("restarted").is_none())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ghost_lock_after_a_failed_acquire_against_dead_servers() {
    let mut servers = servers(3);
    let timeout = Duration::from_millis(100);
    let options = ConnectionOptions::new().for_instance_timeout(timeout);
    let backends: Vec<Arc<RedisBackend>> = servers
        .iter()
        .map(|s| Arc::new(RedisBackend::with_options(s.url(), &options).expect("backend")))
        .collect();
    let manager = LockManager::builder(Arc::new(TokioClock))
        .instances(
            backends
                .iter()
                .map(|b| Arc::clone(b) as Arc<dyn LockBackend>),
        )
        .instance_timeout(timeout)
        .retry_count(1)
        .build()
        .expect("valid config");
    // Connected before the warm-up: its one attempt must not race the connections.
    manager.connect().await.expect("every server connects");
    manager
        .lock("warm-up", TTL)
        .await
        .expect("all up")
        .release()
        .await
        .expect("release");
    servers[0].kill();
    servers[1].kill();
    let error = manager.lock("ghost", TTL).await.expect_err("no quorum");
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    servers[0].restart(false);
    servers[1].restart(false);
    // One pipelined connection per server: once a later command has been answered by a
    // restarted server, anything queued before it was written too (or dropped by fred's own
    // timeout, as it must be).
    for backend in &backends[..2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while backend.inspect(b"probe").await.is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not reconnect",
                backend.id()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(s.get("ghost"), None, "server {i} got a ghost lock key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_holding_a_list_is_wrongtype_and_left_alone() {
    let servers = servers(3);
    for s in &servers {
        s.cmd(&["RPUSH", "app-data", "a", "b"]);
    }
    let manager = manager(&servers);
    let error = manager
        .lock("app-data", TTL)
        .await
        .expect_err("the key is not ours");
    // Every instance that was awaited reports WRONGTYPE (the round may stop once the outcome is
    // decided, leaving one not awaited).
    let kinds = failed_kinds(&error);
    let wrong = kinds
        .iter()
        .filter(|k| **k == Some(BackendErrorKind::WrongType))
        .count();
    assert!(wrong >= 2, "{error:?}");
    assert_eq!(
        kinds.iter().filter(|k| k.is_some()).count(),
        wrong,
        "{error:?}"
    );
    assert!(
        manager.is_locked("app-data").await.is_err(),
        "inspect reports WRONGTYPE too"
    );
    for s in &servers {
        assert_eq!(s.cmd(&["LLEN", "app-data"]), redlock_testkit::Reply::Int(2));
    }
    let backend = RedisBackend::new(servers[0].url()).expect("backend");
    for result in [
        backend.acquire(b"app-data", b"t", TTL).await,
        backend.extend(b"app-data", b"t", TTL).await,
        backend.release(b"app-data", b"t").await,
    ] {
        let e = result.expect_err("WRONGTYPE");
        assert_eq!(e.kind(), BackendErrorKind::WrongType, "{e}");
    }
}
