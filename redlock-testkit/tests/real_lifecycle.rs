//! The lock lifecycle on tokio against real servers: auto-extension, dropped guards, shutdown,
//! and many failed or cancelled attempts.

use std::time::{Duration, Instant};

use redlock_core::Error;
use redlock_testkit::{require_redis, RedisServer, Reply};

fn servers(n: usize) -> Vec<RedisServer> {
    require_redis();
    (0..n).map(|_| RedisServer::start()).collect()
}

/// Waits (without blocking the runtime's only thread) until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_extended_lock_outlives_its_lease_while_a_rival_is_refused() {
    let servers = servers(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    // A 600 ms lease, renewed every 360 ms: 3 s is five lease lengths.
    let holder = redlock_fred::manager(urls.clone())
        .internal_lock_timeout(Duration::from_millis(600))
        .build()
        .expect("config");
    let rival = redlock_fred::manager(urls)
        .retry_count(1)
        .build()
        .expect("config");
    let lock = holder.lock_auto("auto").await.expect("free lock");
    // The lock returns at a quorum; its last acquire may land later, and a rival's attempt that
    // found that key free first would keep it from landing there (the lock is then held on a
    // quorum only, and renewals never create a key). The checks below want it everywhere.
    let token = lock.token().to_vec();
    until("the grant on every server", || {
        servers
            .iter()
            .all(|s| s.get("auto").as_deref() == Some(&token[..]))
    })
    .await;
    let start = Instant::now();
    let mut refusals = 0;
    while start.elapsed() < Duration::from_secs(3) {
        match rival.lock("auto", Duration::from_secs(5)).await {
            Err(Error::Contended(_)) => refusals += 1,
            other => panic!("the rival got {other:?} while the lock was kept alive"),
        }
        assert!(lock.is_valid());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refusals >= 10, "{refusals}");
    // The server-side TTL never exceeds one lease: the lock is held by renewals, not by a long
    // TTL.
    for s in &servers {
        let pttl = s.pttl("auto");
        assert!(pttl > 0 && pttl <= 600, "pttl {pttl}");
    }
    lock.release().await.expect("release");
    let theirs = rival
        .lock("auto", Duration::from_secs(5))
        .await
        .expect("free after release");
    theirs.release().await.expect("release");
    holder.close().await.expect("close");
    rival.close().await.expect("close");
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_a_guard_in_a_current_thread_runtime_releases_in_the_background() {
    let servers = servers(3);
    let manager = redlock_fred::manager(servers.iter().map(RedisServer::url))
        .build()
        .expect("config");
    let lock = manager
        .lock("dropped", Duration::from_secs(30))
        .await
        .expect("free lock");
    let token = lock.token().to_vec();
    until("the grant on every server", || {
        servers
            .iter()
            .all(|s| s.get("dropped").as_deref() == Some(&token[..]))
    })
    .await;
    // Must neither block this single thread nor panic; the release runs as a spawned task.
    drop(lock);
    until("the background release", || {
        servers.iter().all(|s| s.get("dropped").is_none())
    })
    .await;
    assert!(manager.active_locks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_every_held_lock_on_the_servers() {
    let servers = servers(3);
    let manager = redlock_fred::manager(servers.iter().map(RedisServer::url))
        .build()
        .expect("config");
    let a = manager
        .lock("close-a", Duration::from_secs(30))
        .await
        .expect("a");
    let b = manager.lock_auto("close-b").await.expect("b");
    let report = manager.close().await.expect("first close");
    assert_eq!(report.released, 2);
    assert!(report.failed.is_empty() && report.backend_errors.is_empty());
    for s in &servers {
        assert_eq!(s.get("close-a"), None);
        assert_eq!(s.get("close-b"), None);
    }
    assert!(matches!(a.extend().await, Err(Error::Closed)));
    assert!(matches!(b.release().await, Err(Error::Closed)));
    assert!(matches!(
        manager.lock("close-c", Duration::from_secs(1)).await,
        Err(Error::Closed)
    ));
}

fn connected_clients(server: &RedisServer) -> u64 {
    let info = server
        .cmd(&["INFO", "clients"])
        .as_text()
        .expect("INFO is text");
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("connected_clients")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_failed_and_cancelled_attempts_exhaust_nothing() {
    let servers = servers(3);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = redlock_fred::manager(urls.clone()).build().expect("config");
    let contender = redlock_fred::manager(urls)
        .retry_count(1)
        .wake_on_release(false)
        .build()
        .expect("config");
    let held = holder
        .lock("busy", Duration::from_secs(60))
        .await
        .expect("free");
    // Both managers connect lazily, on their first call: count once the contender is connected
    // everywhere (the harness's own admin connection, the holder's, the contender's).
    assert!(contender.is_locked("busy").await.expect("answers"));
    until("the contender's connections", || {
        servers.iter().all(|s| connected_clients(s) == 3)
    })
    .await;
    let before: Vec<u64> = servers.iter().map(connected_clients).collect();
    for i in 0..2_000u32 {
        // Half refused outright, half abandoned midway (the future is dropped after one poll).
        if i % 2 == 0 {
            assert!(matches!(
                contender.lock("busy", Duration::from_secs(5)).await,
                Err(Error::Contended(_))
            ));
        } else {
            // A 60 s TTL: within this test only the background cleanup can remove the keys.
            let attempt = contender.lock(format!("free-{i}"), Duration::from_secs(60));
            drop(futures::FutureExt::now_or_never(attempt));
        }
    }
    let after: Vec<u64> = servers.iter().map(connected_clients).collect();
    assert_eq!(before, after, "no connection was leaked or added");
    // Still fully usable.
    let lock = contender
        .lock("afterwards", Duration::from_secs(5))
        .await
        .expect("works after the storm");
    lock.release().await.expect("release");
    held.release().await.expect("release");
    // Abandoned acquires are released in the background (the tokio spawner).
    until("the background cleanup of abandoned attempts", || {
        servers.iter().all(|s| {
            let reply = s.cmd(&["KEYS", "free-*"]);
            matches!(&reply, Reply::Array(Some(keys)) if keys.is_empty())
        })
    })
    .await;
}
