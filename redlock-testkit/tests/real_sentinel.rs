//! Sentinel against real processes: discovery, failover while a lock is held, all sentinels
//! down, authentication to sentinels and master.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redlock_core::{Error, InstanceOutcome, LockBackend};
use redlock_fred::{RedisBackend, Sentinel};
use redlock_testkit::{require_redis, wait_until, GroupOptions, RedisServer, SentinelGroup};

const TTL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_while_a_lock_is_held_extend_and_release_reach_the_new_master() {
    require_redis();
    let group = SentinelGroup::start();
    // One instance, so every Ok below can only come from the Sentinel-managed master.
    let manager = redlock_fred::manager([group.instance()])
        .build()
        .expect("valid config");
    let lock = manager
        .lock("failover", TTL)
        .await
        .expect("lock via sentinel");
    let old_master = group.master().port();
    assert_eq!(group.master().get("failover"), Some(lock.token().to_vec()));
    // The key must be on the replica before it is promoted (Redlock cannot survive a failover
    // that loses the key; that is the documented limit, not what this test is about).
    // (WAIT would not do: it counts acknowledgements of the *calling* connection's writes.)
    let token = lock.token().to_vec();
    wait_until(
        Duration::from_secs(10),
        "the key to reach the replica",
        || group.replica().get("failover").as_ref() == Some(&token),
    );

    let new_master = group.failover();
    assert_ne!(new_master, old_master);
    let promoted = group.master();
    assert_eq!(promoted.port(), new_master);

    // The first call may meet the demoted master (READONLY) or a closed connection; the backend
    // then asks the sentinels again. Poll until the extend lands.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match lock.extend_for(Duration::from_secs(60)).await {
            Ok(()) => break,
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                let state: Vec<_> = group
                    .servers
                    .iter()
                    .map(|s| (s.port(), s.role(), s.get("failover"), s.pttl("failover")))
                    .collect();
                for s in &group.servers {
                    eprintln!("=== log of {}:\n{}", s.port(), s.log());
                }
                panic!("extend after failover: {e:?}; servers: {state:?}, old master {old_master}")
            }
        }
    }
    assert_eq!(promoted.get("failover"), Some(lock.token().to_vec()));
    assert!(
        promoted.pttl("failover") > 30_000,
        "extended on the new master"
    );
    lock.release().await.expect("release on the new master");
    assert_eq!(promoted.get("failover"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_sentinels_down_is_one_failed_instance_not_a_hang() {
    require_redis();
    let mut group = SentinelGroup::start();
    let plain: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    group.kill_sentinels();
    let manager = redlock_fred::manager([
        redlock_fred::Instance::from(plain[0].url()),
        plain[1].url().into(),
        group.instance().into(),
    ])
    .build()
    .expect("valid config");
    let started = Instant::now();
    let lock = manager
        .lock("no-sentinels", TTL)
        .await
        .expect("2 of 3 is a quorum");
    lock.release().await.expect("release on 2 of 3");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // With only the Sentinel instance, the error comes back within the instance timeout.
    let lonely = redlock_fred::manager([group.instance()])
        .retry_count(1)
        .build()
        .expect("valid config");
    let started = Instant::now();
    let error = lonely
        .lock("no-sentinels", TTL)
        .await
        .expect_err("no sentinel answers");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let failure = error.failure().expect("report");
    assert!(matches!(
        failure.instances[0].outcome,
        InstanceOutcome::Failed(_) | InstanceOutcome::TimedOut
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_on_sentinels_and_master() {
    require_redis();
    let group = SentinelGroup::start_with(
        GroupOptions::new()
            .master_name("guarded")
            .master_password("master-pw")
            .sentinel_password("sentinel-pw"),
    );
    let backend = RedisBackend::new(group.instance().with_db(1)).expect("backend");
    assert!(backend.acquire(b"k", b"t", TTL).await.expect("acquire"));
    assert!(backend.release(b"k", b"t").await.expect("release"));

    // fred's URL form with separate sentinel credentials.
    let url = format!(
        "redis-sentinel://:master-pw@127.0.0.1:{}/1?sentinelServiceName=guarded&sentinelPassword=sentinel-pw",
        group.sentinels[0].port()
    );
    let backend = RedisBackend::new(url).expect("backend");
    assert!(backend
        .acquire(b"k2", b"t", TTL)
        .await
        .expect("acquire via URL"));
    assert!(backend.release(b"k2", b"t").await.expect("release"));

    // A wrong sentinel password is an error from that instance, never a hang.
    let mut wrong = group.instance();
    wrong.sentinel_password = Some("wrong".into());
    let backend = Arc::new(RedisBackend::new(wrong).expect("backend"));
    let started = Instant::now();
    let result = backend.acquire(b"k3", b"t", TTL).await;
    assert!(result.is_err(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let text = format!(
        "{:?} {}",
        result,
        result
            .as_ref()
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default()
    );
    assert!(
        !text.contains("master-pw") && !text.contains("wrong"),
        "{text}"
    );
    let _ = Sentinel::from_url(&group.url(1)).expect("aioredlock URL parses");
    backend.close().await.expect("close");
}
