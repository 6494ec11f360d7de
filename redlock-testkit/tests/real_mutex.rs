//! Mutual exclusion on real servers: 8 tasks × 200 acquire / hold / release cycles on one
//! resource over 3 instances, counting with a deliberately unsynchronized read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redlock_testkit::{require_redis, wait_until, RedisServer};

const TASKS: u64 = 8;
const CYCLES: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_two_hundred_cycles_count_exactly() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let manager = redlock_fred::manager(servers.iter().map(RedisServer::url))
        // Contention is the point here: keep retrying (with short jitter) until it is our turn.
        .retry_count(10_000)
        .retry_delay(Duration::from_millis(0), Duration::from_millis(3))
        .instance_timeout(Duration::from_millis(500))
        .build()
        .expect("config");
    let counter = Arc::new(AtomicU64::new(0));
    let holders = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let manager = manager.clone();
            let counter = Arc::clone(&counter);
            let holders = Arc::clone(&holders);
            tokio::spawn(async move {
                for _ in 0..CYCLES {
                    let lock = manager
                        .lock("counter", Duration::from_secs(5))
                        .await
                        .expect("acquire eventually");
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    // Read, yield to the scheduler, write back: loses updates without the lock.
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
    assert_eq!(counter.load(Ordering::SeqCst), TASKS * CYCLES);
    // The last release returned at a quorum; its last delete is on its way.
    wait_until(Duration::from_secs(5), "every key to go", || {
        servers.iter().all(|s| s.get("counter").is_none())
    });
}
