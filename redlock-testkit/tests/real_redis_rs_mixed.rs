//! The two Redis backends side by side on the same servers: a manager on redlock-fred and one on
//! redlock-redis (redis-rs) keep mutual exclusion on one resource, and a release through either
//! backend is announced to subscribers of the other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redlock_core::{LockBackend, LockManager};
use redlock_testkit::{require_redis, RedisServer};

const TASKS_PER_MANAGER: u64 = 4;
const CYCLES: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fred_and_redis_rs_managers_exclude_each_other() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    // Contention is the point: keep retrying with short jitter until it is our turn.
    let fred = redlock_fred::manager(urls.iter().map(String::as_str))
        .retry_count(10_000)
        .retry_delay(Duration::from_millis(0), Duration::from_millis(3))
        .instance_timeout(Duration::from_millis(500))
        .build()
        .expect("config");
    let redis_rs = redlock_redis::manager(&urls)
        .retry_count(10_000)
        .retry_delay(Duration::from_millis(0), Duration::from_millis(3))
        .instance_timeout(Duration::from_millis(500))
        .build()
        .expect("config");
    let counter = Arc::new(AtomicU64::new(0));
    let holders = Arc::new(AtomicU64::new(0));
    let managers: [LockManager; 2] = [fred, redis_rs];
    let tasks: Vec<_> = managers
        .iter()
        .flat_map(|m| (0..TASKS_PER_MANAGER).map(move |_| m.clone()))
        .map(|manager| {
            let counter = Arc::clone(&counter);
            let holders = Arc::clone(&holders);
            tokio::spawn(async move {
                for _ in 0..CYCLES {
                    let lock = manager
                        .lock("shared", Duration::from_secs(5))
                        .await
                        .expect("acquire eventually");
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    // Read, yield, write back: loses updates without the lock.
                    let seen = counter.load(Ordering::Relaxed);
                    tokio::task::yield_now().await;
                    counter.store(seen + 1, Ordering::Relaxed);
                    holders.fetch_sub(1, Ordering::SeqCst);
                    lock.release().await.expect("release");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(
        counter.load(Ordering::SeqCst),
        2 * TASKS_PER_MANAGER * CYCLES
    );
    for s in &servers {
        assert_eq!(s.get("shared"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_are_announced_across_backends() {
    require_redis();
    let server = RedisServer::start();
    let fred = redlock_fred::RedisBackend::new(server.url()).expect("valid");
    let redis_rs = redlock_redis::RedisBackend::new(&server.url()).expect("valid");
    let pairs: [(&dyn LockBackend, &dyn LockBackend); 2] = [(&fred, &redis_rs), (&redis_rs, &fred)];
    for (releaser, listener) in pairs {
        let key = format!("k-{}", std::ptr::addr_of!(*releaser).cast::<u8>() as usize);
        let mut stream = listener
            .release_notify()
            .expect("announces")
            .subscribe(key.as_bytes())
            .await
            .expect("subscribe");
        assert!(releaser
            .acquire(key.as_bytes(), b"tok", Duration::from_secs(10))
            .await
            .expect("acquire"));
        // The scripts are the same on both sides, so the other backend's locks are its own.
        assert!(!listener
            .acquire(key.as_bytes(), b"other", Duration::from_secs(10))
            .await
            .expect("refused"));
        let (released, heard) = releaser
            .release_notify()
            .expect("announces")
            .release_and_notify(key.as_bytes(), b"tok")
            .await
            .expect("release");
        assert!(released, "{key}");
        assert!(
            heard,
            "{releaser:?} released {key}: the subscription of {listener:?} heard nothing"
        );
        assert_eq!(stream.next().await, Some(()));
    }
    fred.close().await.expect("close");
    redis_rs.close().await.expect("close");
}
