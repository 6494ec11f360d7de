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

/// The promise of `subscribe` (the `ReleaseNotify` contract, rule 2): a release made after it
/// returned is announced to the subscription. The subscriber connection's link is stalled
/// while it subscribes (the command connection keeps flowing: `subscribe` also registers the
/// listener through it), so the server cannot have the SUBSCRIBE yet; a release is then made
/// on another connection. A `subscribe` that returned by then claimed a subscription the server did not
/// have (fred answers a SUBSCRIBE once it is written): that release must still be heard, and
/// it was not. Under load the same race made the conformance rule
/// `a_subscription_hears_every_later_release` fail now and then.
async fn subscribe_returns_once_active(
    through: &dyn redlock_core::LockBackend,
    direct: &dyn redlock_core::LockBackend,
    proxy: &redlock_testkit::Proxy,
) {
    use futures::StreamExt;
    const TTL: Duration = Duration::from_secs(30);
    let notify = through.release_notify().expect("announces");
    let direct_notify = direct.release_notify().expect("announces");
    // Connects the command connection, then the subscriber (made on first use): the
    // connections the warm-up subscription opened are the subscriber's.
    let _ = through.inspect(b"warm-up").await.expect("inspect");
    let commands = proxy.connection_ids();
    let _warm = notify.subscribe(b"warm-up").await.expect("subscribe");
    let subscriber: Vec<u64> = proxy
        .connection_ids()
        .into_iter()
        .filter(|id| !commands.contains(id))
        .collect();
    assert!(!subscriber.is_empty(), "a subscriber connection of its own");
    assert!(direct
        .acquire(b"sub-race", b"tok", TTL)
        .await
        .expect("acquire"));

    proxy.stall_connections(&subscriber);
    let mut subscribing = notify.subscribe(b"sub-race");
    // How long we look, not a measurement: a subscribe that does not wait for the server
    // returns within a round trip on the command connection (fred answers the SUBSCRIBE once
    // it is written); one that waits cannot return while its link is stalled, however long.
    let returned = tokio::time::timeout(Duration::from_secs(1), &mut subscribing)
        .await
        .ok();
    let released_while_subscribing = direct_notify
        .release_and_notify(b"sub-race", b"tok")
        .await
        .expect("release");
    proxy.resume();
    let mut stream = if let Some(Ok(stream)) = returned {
        // subscribe claimed an active subscription before the release: it must hear it.
        assert_eq!(
            released_while_subscribing,
            (true, true),
            "subscribe returned before the server had the subscription"
        );
        stream
    } else {
        // Still waiting, or failed by its own timeout (which claims nothing): once the link
        // flows, a subscription must hear the next release.
        drop(subscribing);
        let stream = tokio::time::timeout(Duration::from_secs(10), notify.subscribe(b"sub-race"))
            .await
            .expect("subscribe returns once the link flows")
            .expect("subscribe");
        assert!(direct
            .acquire(b"sub-race", b"tok", TTL)
            .await
            .expect("acquire"));
        assert_eq!(
            direct_notify
                .release_and_notify(b"sub-race", b"tok")
                .await
                .expect("release"),
            (true, true),
            "a release after subscribe returned is heard"
        );
        stream
    };
    // A bound on the test: only a lost announcement could take this long.
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("announced")
        .expect("stream open");
    through.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fred_subscribe_returns_once_the_server_has_the_subscription() {
    require_redis();
    let server = RedisServer::start();
    let proxy = redlock_testkit::Proxy::start(server.port());
    let through = redlock_fred::RedisBackend::new(("127.0.0.1", proxy.port())).expect("valid");
    let direct = redlock_fred::RedisBackend::new(("127.0.0.1", server.port())).expect("valid");
    subscribe_returns_once_active(&through, &direct, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_subscribe_returns_once_the_server_has_the_subscription() {
    require_redis();
    let server = RedisServer::start();
    let proxy = redlock_testkit::Proxy::start(server.port());
    let through = redlock_redis::RedisBackend::new(&proxy.url()).expect("valid");
    let direct = redlock_redis::RedisBackend::new(&server.url()).expect("valid");
    subscribe_returns_once_active(&through, &direct, &proxy).await;
}

/// `PUBLISH` calls the server has run (scripts' calls included), from `INFO commandstats`.
fn publishes(server: &RedisServer) -> u64 {
    let Reply::Bulk(Some(info)) = server.cmd(&["INFO", "commandstats"]) else {
        panic!("unexpected INFO reply");
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .map_or(0, |rest| {
            rest.split(',')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("calls")
        })
}

/// What an uncontended cycle costs the servers: with nobody waiting, a release announces
/// nothing (wake-ups are for registered listeners); once a waiter subscribed, releases of
/// that key are announced, on every backend, whichever backend releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_are_announced_only_to_registered_listeners() {
    require_redis();
    const TTL: Duration = Duration::from_secs(30);
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let fred = redlock_fred::manager(urls.clone()).build().expect("config");
    let redis_rs = redlock_redis::manager(urls.clone())
        .build()
        .expect("config");
    for i in 0..10 {
        for key in [format!("quiet-{i}"), format!("quiet-{i}\u{0}\u{7f}")] {
            fred.lock(&key, TTL)
                .await
                .expect("free")
                .release()
                .await
                .expect("release");
            redis_rs
                .lock(&key, TTL)
                .await
                .expect("free")
                .release()
                .await
                .expect("release");
        }
    }
    // Releases that are still on their way to the last instance (unlock returns at a quorum).
    let servers_ref = &servers;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "every release done", || {
            servers_ref
                .iter()
                .all(|s| s.cmd(&["DBSIZE"]) == Reply::Int(0))
        });
    });
    assert!(
        servers.iter().all(|s| publishes(s) == 0),
        "an uncontended release published"
    );

    // A waiter that listens for announcements (no hand-off queue), on a key whose name needs
    // every kind of byte in its channel: each release must reach it, whoever releases.
    let key = "held-\u{0}\u{7f}-ü";
    for (releaser, waiter_on_fred) in [
        (&fred, true),
        (&fred, false),
        (&redis_rs, true),
        (&redis_rs, false),
    ] {
        // The two backends' builders are different types with the same settings.
        macro_rules! announce_only {
            ($builder:expr) => {
                $builder
                    .hand_off(false)
                    .retry_count(2)
                    .retry_delay(Duration::from_secs(60), Duration::from_secs(60))
                    .build()
                    .expect("config")
            };
        }
        let lock = releaser.lock(key, TTL).await.expect("free");
        let waiter = if waiter_on_fred {
            announce_only!(redlock_fred::manager(urls.clone()))
        } else {
            announce_only!(redlock_redis::manager(urls.clone()))
        };
        let waiting =
            tokio::spawn(async move { waiter.lock(key, TTL).await.map(|l| l.token().to_vec()) });
        tokio::task::block_in_place(|| {
            wait_until(Duration::from_secs(10), "the waiter to subscribe", || {
                servers_ref.iter().all(|s| listeners(s, key) >= 1)
            });
        });
        lock.release().await.expect("release");
        // A bound on the test: polling alone would take 60 s.
        let token = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("woken by the release")
            .expect("task")
            .expect("acquired after the release");
        // The waiter's manager is gone with its task; its lock expires or is released here.
        for s in &servers {
            if s.get(key).as_deref() == Some(token.as_slice()) {
                s.cmd(&["DEL", key]);
            }
        }
    }
    assert!(servers.iter().all(|s| publishes(s) >= 1));
}
