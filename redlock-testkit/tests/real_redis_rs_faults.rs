//! The redis-rs backend (`redlock-redis`) under real faults: servers killed, restarted and
//! stalled behind a proxy (no ghost key after the manager gave up, reconnection after a
//! restart), and every kind of failure a person can act on.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redlock_core::{
    BackendError, BackendErrorKind, Error, InstanceOutcome, LockBackend, LockManager, QueuePlace,
    ReleaseNotify,
};
use redlock_redis::{ConnectionOptions, RedisBackend, TokioClock, TokioSpawner};
use redlock_testkit::{require_redis, Proxy, RedisServer, Reply, ServerOptions};

const TTL: Duration = Duration::from_secs(10);

fn servers(n: usize) -> Vec<RedisServer> {
    require_redis();
    (0..n).map(|_| RedisServer::start()).collect()
}

/// A manager with one attempt per lock, on backends of its own (returned too).
fn manager_on(urls: &[String], timeout: Duration) -> (LockManager, Vec<Arc<RedisBackend>>) {
    let options = ConnectionOptions::new().for_instance_timeout(timeout);
    let backends: Vec<Arc<RedisBackend>> = urls
        .iter()
        .map(|u| Arc::new(RedisBackend::with_options(u, &options).expect("backend")))
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
    (manager, backends)
}

/// Calls `f` until it returns `Ok`, for at most `timeout`.
async fn eventually<T, E: std::fmt::Debug, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("still failing: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until `backend` answers a command: on one pipelined connection, whatever was written
/// before that command has then reached the server too.
async fn answers(backend: &RedisBackend) {
    eventually(Duration::from_secs(10), || backend.inspect(b"probe")).await;
}

fn assert_says(error: &BackendError, kind: BackendErrorKind, needle: &str) {
    assert_eq!(error.kind(), kind, "{error:?}");
    let shown = error.to_string();
    assert!(shown.contains(needle), "`{needle}` not in: {shown}");
}

fn failures(error: &Error) -> Vec<Option<BackendErrorKind>> {
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
async fn minority_killed_still_locks_extends_and_releases() {
    let mut servers = servers(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let (manager, _) = manager_on(&urls, Duration::from_millis(100));
    manager.connect().await.expect("all up");
    servers[2].kill();
    let lock = manager.lock("minority", TTL).await.expect("2 of 3");
    assert_eq!(servers[0].get("minority"), Some(lock.token().to_vec()));
    assert_eq!(servers[1].get("minority"), Some(lock.token().to_vec()));
    lock.extend().await.expect("extend on 2 of 3");
    lock.release().await.expect("release on 2 of 3");
    assert_eq!(servers[0].get("minority"), None);
    assert_eq!(servers[1].get("minority"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ghost_lock_after_a_failed_acquire_against_dead_servers() {
    let mut servers = servers(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let (manager, backends) = manager_on(&urls, Duration::from_millis(100));
    manager.connect().await.expect("all up");
    servers[0].kill();
    servers[1].kill();
    let error = manager.lock("ghost", TTL).await.expect_err("no quorum");
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    // Refused, or (on a loaded machine) not reconnected within the command timeout.
    assert!(
        failures(&error)[..2].iter().all(|k| matches!(
            k,
            Some(BackendErrorKind::Connection | BackendErrorKind::Timeout)
        )),
        "{error:?}"
    );
    servers[0].restart(false);
    servers[1].restart(false);
    for backend in &backends {
        answers(backend).await;
    }
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(s.get("ghost"), None, "server {i} got a ghost lock key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_links_leave_no_ghost_key_after_the_manager_gave_up() {
    let servers = servers(3);
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.port())).collect();
    let urls: Vec<String> = proxies.iter().map(Proxy::url).collect();
    let (manager, backends) = manager_on(&urls, Duration::from_millis(100));
    manager.connect().await.expect("all up");
    manager
        .lock("warm-up", TTL)
        .await
        .expect("all up")
        .release()
        .await
        .expect("release");
    proxies[0].stall();
    proxies[1].stall();
    let error = manager.lock("stalled", TTL).await.expect_err("no quorum");
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    // The round stopped waiting for them at the instance timeout (the backend leaves a call a
    // round polls to the round's timer).
    let outcomes: Vec<&InstanceOutcome> = error
        .failure()
        .expect("a per-instance report")
        .instances
        .iter()
        .map(|r| &r.outcome)
        .collect();
    assert!(
        outcomes[..2]
            .iter()
            .all(|o| matches!(o, InstanceOutcome::TimedOut)),
        "{error:?}"
    );
    // Long after the manager gave up, the held bytes flow again: the acquire and the clean-up
    // release after it must arrive together (both or neither), never the acquire alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxies[0].resume();
    proxies[1].resume();
    for backend in &backends {
        answers(backend).await;
    }
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(s.get("stalled"), None, "server {i} got a ghost lock key");
    }
    // And the links serve locks again.
    let lock = manager.lock("after", TTL).await.expect("all answer");
    lock.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_client_kill_are_followed_by_a_new_connection() {
    let mut servers = servers(1);
    let backend = RedisBackend::new(&servers[0].url()).expect("valid");
    assert!(backend.acquire(b"a", b"t", TTL).await.expect("acquire"));
    servers[0].restart(false);
    // The first call after the restart may find the old connection broken; a later one
    // reconnects. Nothing sent before the restart is sent again.
    assert!(eventually(Duration::from_secs(5), || backend.acquire(b"b", b"t", TTL)).await);
    assert_eq!(
        servers[0].get("a"),
        None,
        "restarted empty, nothing replayed"
    );
    assert_eq!(servers[0].get("b"), Some(b"t".to_vec()));
    assert!(servers[0].client_kill() >= 1, "our connection was open");
    assert!(eventually(Duration::from_secs(5), || backend.release(b"b", b"t")).await);
    assert_eq!(servers[0].get("b"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_off_listeners_follow_a_new_subscriber_connection() {
    let servers = servers(1);
    let backend = RedisBackend::new(&servers[0].url()).expect("valid");
    let handoff = backend.handoff().expect("hands off");
    let place = QueuePlace {
        stay: TTL,
        reserve: TTL,
    };
    let mut before = handoff.listen(b"w-1").await.expect("listen");
    // The subscriber connection (CLIENT KILL TYPE normal spares pub/sub clients).
    assert_eq!(
        servers[0].cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Reply::Int(1),
        "our subscriber connection was open"
    );
    // Its listeners end their streams like subscriptions do: nothing would reach them.
    let ended = tokio::time::timeout(Duration::from_secs(5), before.next()).await;
    assert_eq!(ended.expect("the stream ends"), None);
    // The next listen makes a new connection and subscribes the hand-off channel on it before
    // it returns: a hand-off right after is heard.
    let mut after = eventually(Duration::from_secs(5), || handoff.listen(b"w-2")).await;
    assert!(backend
        .acquire(b"k", b"holder", TTL)
        .await
        .expect("acquire"));
    assert!(!handoff
        .acquire_or_queue(b"k", b"w-2", TTL, place)
        .await
        .expect("queued"));
    assert_eq!(
        handoff
            .release_and_hand_off(b"k", b"holder", false)
            .await
            .expect("release"),
        (true, true),
        "handed to the waiter listening on the new connection"
    );
    let told = tokio::time::timeout(Duration::from_secs(5), after.next()).await;
    assert_eq!(told.expect("told in time"), Some(()));
    assert_eq!(servers[0].get("k"), Some(b"w-2".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_password_is_auth_and_never_shown() {
    require_redis();
    let server = RedisServer::start_with(ServerOptions::new().password("right-pw-4e1"));
    let wrong = format!("redis://:wrong-pw-93c@127.0.0.1:{}", server.port());
    let backend = RedisBackend::new(&wrong).expect("valid");
    assert!(!format!("{backend:?}").contains("wrong-pw-93c"));
    let error = backend.connect().await.expect_err("AUTH refused");
    assert_eq!(error.kind(), BackendErrorKind::Auth, "{error:?}");
    assert!(!format!("{error} {error:?}").contains("wrong-pw-93c"));

    let manager = redlock_redis::manager([wrong.as_str()])
        // A command timeout (1.8 s) longer than the connection timeout (1 s): the first lock
        // call waits for the connection attempt and hears why it failed.
        .instance_timeout(Duration::from_secs(2))
        .retry_count(1)
        .build()
        .expect("valid");
    let error = manager.lock("k", TTL).await.expect_err("AUTH refused");
    assert_eq!(
        failures(&error),
        [Some(BackendErrorKind::Auth)],
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("wrong-pw-93c"));

    let missing = RedisBackend::new(&server.url()).expect("valid");
    let error = missing.connect().await.expect_err("NOAUTH");
    assert_says(&error, BackendErrorKind::Auth, "NOAUTH");

    let right = format!("redis://:right-pw-4e1@127.0.0.1:{}", server.port());
    let backend = RedisBackend::new(&right).expect("valid");
    backend.connect().await.expect("accepted");
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_and_silent_servers_say_so() {
    require_redis();
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    // Calls wait for a connection attempt as long as it may take.
    let patient = ConnectionOptions::new().with_command_timeout(Duration::from_secs(2));
    let url = format!("redis://127.0.0.1:{port}");
    let backend = RedisBackend::with_options(&url, &patient).expect("valid");
    let error = backend.connect().await.expect_err("refused");
    assert_eq!(error.kind(), BackendErrorKind::Connection, "{error:?}");
    // Within the backoff the last failure is reported at once; after it, a new attempt fails
    // the same way.
    let error = backend.acquire(b"k", b"t", TTL).await.expect_err("refused");
    assert_eq!(error.kind(), BackendErrorKind::Connection, "{error:?}");

    let server = RedisServer::start();
    let backend = RedisBackend::new(&server.url()).expect("valid");
    backend.connect().await.expect("connects");
    server.pause();
    let error = backend
        .acquire(b"k", b"t", TTL)
        .await
        .expect_err("no reply");
    server.resume();
    assert_says(&error, BackendErrorKind::Timeout, "no reply within");

    // SIGSTOP before connecting: the handshake gets no answer.
    server.pause();
    let options = ConnectionOptions::new().with_connection_timeout(Duration::from_millis(300));
    let fresh = RedisBackend::with_options(&server.url(), &options).expect("valid");
    let error = fresh.connect().await.expect_err("no handshake");
    server.resume();
    assert_eq!(error.kind(), BackendErrorKind::Connection, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_touch_no_redis_and_manager_checks_timeouts() {
    for url in ["http://h:1", "redis://u:pw-5f2@h:1/x", "no scheme", ""] {
        let error = RedisBackend::new(url).expect_err(url);
        assert!(!error.to_string().contains("pw-5f2"), "{error}");
    }
    // A backend whose command timeout is not below the manager's instance timeout is refused
    // when the manager is built: it could write a request after the manager gave up.
    let slow = ConnectionOptions::new().with_command_timeout(Duration::from_millis(200));
    let backend = RedisBackend::with_options("redis://127.0.0.1:1", &slow).expect("valid");
    let error = LockManager::builder(Arc::new(TokioClock))
        .instance(Arc::new(backend))
        .instance_timeout(Duration::from_millis(100))
        .build()
        .expect_err("refused");
    assert!(error.to_string().contains("command timeout"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_backend_refuses_calls() {
    let servers = servers(1);
    let backend = RedisBackend::new(&servers[0].url()).expect("valid");
    backend.connect().await.expect("connects");
    let mut stream = backend.subscribe(b"k").await.expect("subscribe");
    backend.close().await.expect("close");
    let error = backend.acquire(b"k", b"t", TTL).await.expect_err("closed");
    assert_eq!(error.kind(), BackendErrorKind::Closed, "{error:?}");
    // The subscription's connection is gone with it.
    assert_eq!(stream.next().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_polled_once_arrives_and_in_order_even_while_connecting() {
    let servers = servers(1);
    // Not connected yet: both requests wait for the connection the first one starts (a long
    // command timeout, so that neither runs out while a loaded machine connects).
    let patient = ConnectionOptions::new().with_command_timeout(Duration::from_secs(5));
    let backend = RedisBackend::with_options(&servers[0].url(), &patient).expect("valid");
    let mut acquire = Box::pin(backend.acquire(b"k", b"t", TTL));
    // On a loaded machine the connection can be made, and the reply be back, on the runtime's
    // other thread before this one poll ends (seen in CI): then it must say the key was set,
    // and the release below must still find it.
    if let std::task::Poll::Ready(done) = futures::poll!(acquire.as_mut()) {
        assert!(done.expect("acquire"), "k was free");
    }
    // Dropped after one poll, as the manager drops the calls it no longer waits for.
    drop(acquire);
    // Made after the acquire, so it must reach the server after it.
    assert!(
        backend.release(b"k", b"t").await.expect("release"),
        "the release found the acquire's key"
    );
    assert_eq!(servers[0].get("k"), None);

    // Connected: an acquire dropped after one poll still sets its key. (On a busy machine the
    // reply can be back within that one poll: then it must say the key was set.)
    let mut acquire = Box::pin(backend.acquire(b"k2", b"t", TTL));
    if let std::task::Poll::Ready(done) = futures::poll!(acquire.as_mut()) {
        assert!(done.expect("acquire"), "k2 was free");
    }
    drop(acquire);
    answers(&backend).await;
    assert_eq!(servers[0].get("k2"), Some(b"t".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_runs_again_after_a_script_flush() {
    // A flushed script cache answers the cached digest with NOSCRIPT: the call sends the script
    // itself and succeeds; no NOSCRIPT reaches the caller. Each script once, right after a flush.
    let servers = servers(1);
    let backend = RedisBackend::new(&servers[0].url()).expect("backend");
    let place = QueuePlace {
        stay: Duration::from_secs(5),
        reserve: Duration::from_secs(1),
    };
    // Cache every script first, so the calls below go as EVALSHA.
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
    assert!(backend.extend(b"k", b"t", TTL).await.expect("extend"));
    assert!(backend.inspect(b"k").await.expect("inspect").is_some());
    assert!(backend.release(b"k", b"t").await.expect("release"));
    let notify = backend.release_notify().expect("announces");
    let handoff = backend.handoff().expect("hands off");
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
    assert!(notify.release_and_notify(b"k", b"t").await.expect("r").0);
    assert!(handoff
        .acquire_or_queue(b"k", b"t", TTL, place)
        .await
        .expect("queue"));
    assert!(
        handoff
            .release_and_hand_off(b"k", b"t", true)
            .await
            .expect("hand off")
            .0
    );

    servers[0].script_flush();
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
    servers[0].script_flush();
    assert!(backend.extend(b"k", b"t", TTL).await.expect("extend"));
    servers[0].script_flush();
    assert!(backend.inspect(b"k").await.expect("inspect").is_some());
    servers[0].script_flush();
    assert!(notify.release_and_notify(b"k", b"t").await.expect("r").0);
    assert_eq!(servers[0].get("k"), None);
    servers[0].script_flush();
    assert!(handoff
        .acquire_or_queue(b"k", b"t", TTL, place)
        .await
        .expect("queue"));
    servers[0].script_flush();
    assert!(
        handoff
            .release_and_hand_off(b"k", b"t", true)
            .await
            .expect("hand off")
            .0
    );
    assert_eq!(servers[0].get("k"), None);
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
    servers[0].script_flush();
    assert!(backend.release(b"k", b"t").await.expect("release"));
    assert_eq!(servers[0].get("k"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_left_behind_at_a_quorum_end_by_their_deadline_on_a_stalled_instance() {
    // Locks and unlocks return at a quorum while the third instance is stalled: each cycle
    // leaves its calls to that instance running in the background. A call a round polled has
    // no timer of its own (the round bounds it), so once the round stopped waiting, only its
    // deadline ends it: all of them must be gone shortly after it, the instance still stalled.
    // They run in long-lived tasks (one per connection, one per manager), which end with what
    // owns them: `close` waits for the background releases, and once the manager is dropped
    // every task it started must end, the calls left behind included.
    let servers = servers(3);
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.port())).collect();
    let urls: Vec<String> = proxies.iter().map(Proxy::url).collect();
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    // With a spawner, as `redlock_redis::manager` builds it: unlock returns at a quorum.
    let options = ConnectionOptions::new().for_instance_timeout(Duration::from_millis(100));
    let manager = LockManager::builder(Arc::new(TokioClock))
        .instances(urls.iter().map(|u| {
            Arc::new(RedisBackend::with_options(u, &options).expect("backend"))
                as Arc<dyn LockBackend>
        }))
        .instance_timeout(Duration::from_millis(100))
        .spawner(Arc::new(TokioSpawner))
        .build()
        .expect("valid config");
    manager.connect().await.expect("all up");
    manager
        .lock("warm-up", TTL)
        .await
        .expect("all up")
        .release()
        .await
        .expect("release");
    proxies[2].stall();
    for i in 0..20 {
        let lock = manager
            .lock(format!("left-{i}"), TTL)
            .await
            .expect("2 of 3 answer");
        lock.release().await.expect("released on 2 of 3");
    }
    let during = metrics.num_alive_tasks();
    assert!(
        during > before,
        "nothing runs in the background ({before} -> {during})"
    );
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), manager.close())
        .await
        .expect("the background releases end by their deadline, the instance stalled")
        .expect("first close");
    drop(manager);
    while metrics.num_alive_tasks() > before {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{} background tasks still running {:?} after the last cycle and the manager's \
             drop, the instance stalled",
            metrics.num_alive_tasks() - before,
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxies[2].resume();
}
