//! Wake-on-release over Redis pub/sub, on real servers.

use std::time::Duration;

use redlock_testkit::{require_redis, wait_until, RedisServer, Reply};

/// Local subscribers of the release channel of `key` on `server` (PUBSUB NUMSUB).
fn listeners(server: &RedisServer, key: &str) -> i64 {
    let channel = format!(
        "redlock:released:{}",
        key.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    );
    match server.cmd(&["PUBSUB", "NUMSUB", &channel]).items() {
        [_, Reply::Int(n)] => *n,
        other => panic!("unexpected PUBSUB NUMSUB reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_by_the_release_not_by_its_delay() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = redlock_fred::manager(urls.clone()).build().expect("config");
    // Polling alone would only try again after 60 s: the wake-up is the only way in.
    let waiter = redlock_fred::manager(urls)
        // Announcements, not hand-offs (those are `real_handoff`'s): the waiter subscribes to
        // the key's channel.
        .hand_off(false)
        .retry_count(2)
        .retry_delay(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .expect("config");

    let lock = holder
        .lock("wake-me", Duration::from_secs(30))
        .await
        .expect("free lock");
    let waiting = tokio::spawn(async move {
        let got = waiter.lock("wake-me", Duration::from_secs(30)).await;
        (got, waiter)
    });
    // The waiter's first attempt is refused; then it subscribes on every instance.
    let servers_ref = &servers;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "the waiter to subscribe", || {
            servers_ref.iter().all(|s| listeners(s, "wake-me") >= 1)
        });
    });
    lock.release().await.expect("release");

    // A bound on the test, not a measurement: only a lost wake-up could take this long.
    let (got, waiter) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken long before the 60 s retry delay")
        .expect("task");
    // Keep the handle: dropping it would release the lock in the background.
    let lock = got.expect("acquired after the release");
    let token = lock.token().to_vec();
    // The lock returns once a quorum answered; the last acquire is on its way.
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "the key on every server", || {
            servers_ref
                .iter()
                .all(|s| s.get("wake-me").as_deref() == Some(&token[..]))
        });
    });
    // Subscriptions end with the call that made them.
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(10),
            "the subscriptions to be dropped",
            || servers_ref.iter().all(|s| listeners(s, "wake-me") == 0),
        );
    });
    lock.release().await.expect("release");
    waiter.close().await.expect("close");
    holder.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_mode_hands_the_lock_to_the_waiter() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let releaser = redlock_fred::manager(urls.clone())
        .hand_off(false)
        .fair(Duration::from_millis(500))
        .retry_count(1)
        .build()
        .expect("config");
    let waiter = redlock_fred::manager(urls)
        // Announcements, not hand-offs (those are `real_handoff`'s): the waiter subscribes to
        // the key's channel.
        .hand_off(false)
        .retry_count(2)
        .retry_delay(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .expect("config");
    let lock = releaser
        .lock("turns", Duration::from_secs(30))
        .await
        .expect("free lock");
    let waiting = tokio::spawn(async move { waiter.lock("turns", Duration::from_secs(30)).await });
    let servers_ref = &servers;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "the waiter to subscribe", || {
            servers_ref.iter().all(|s| listeners(s, "turns") >= 1)
        });
    });
    lock.release().await.expect("release");
    // Asking again at once: fair mode steps aside for the waiter that heard the release, so
    // this single attempt meets the waiter's lock.
    let again = releaser.lock("turns", Duration::from_secs(30)).await;
    assert!(
        matches!(again, Err(redlock_core::Error::Contended(_))),
        "{again:?}"
    );
    let theirs = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken")
        .expect("task")
        .expect("the waiter got its turn");
    theirs.release().await.expect("release");
}
