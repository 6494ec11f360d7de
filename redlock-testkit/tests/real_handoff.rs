//! Hand-offs on real servers: a refused waiter queues on every instance, and a release hands the
//! key to the first live waiter and tells it alone.
//!
//! Every waiter here polls only every 60 s: within the tests' bounds a hand-off is its only way
//! in, so a lost or misdirected one fails the test instead of merely slowing it.

use std::time::Duration;

use redlock_core::{Error, LockManager};
use redlock_testkit::{require_redis, wait_until, RedisServer, Reply};

const TTL: Duration = Duration::from_secs(30);

/// A bound on a test step, not a measurement: only a lost hand-off could take this long.
const BOUND: Duration = Duration::from_secs(20);

fn queue_key(key: &str) -> Vec<u8> {
    redlock_core::queue_keys(key.as_bytes()).0
}

fn waiters_key(key: &str) -> Vec<u8> {
    redlock_core::queue_keys(key.as_bytes()).1
}

/// How many waiters are queued for `key` on `server`.
fn queued(server: &RedisServer, key: &str) -> i64 {
    match server.cmd(&[&b"LLEN"[..], &queue_key(key)]) {
        Reply::Int(n) => n,
        other => panic!("unexpected LLEN reply {other:?}"),
    }
}

/// How many waiters hold a live place for `key` on `server` (their table entries; a list entry
/// whose waiter left stays until a release reaches it and skips it).
fn places(server: &RedisServer, key: &str) -> i64 {
    match server.cmd(&[&b"HLEN"[..], &waiters_key(key)]) {
        Reply::Int(n) => n,
        other => panic!("unexpected HLEN reply {other:?}"),
    }
}

fn waits_long(urls: &[String]) -> LockManager {
    redlock_fred::manager(urls.iter().cloned())
        .retry_count(2)
        .retry_delay(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .expect("config")
}

/// Waits (blocking this worker thread) until `n` waiters are queued for `key` on every server.
fn until_queued(servers: &[RedisServer], key: &str, n: i64) {
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "the waiters to queue", || {
            servers.iter().all(|s| queued(s, key) == n)
        });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_are_served_in_the_order_they_queued() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = redlock_fred::manager(urls.clone()).build().expect("config");
    let lock = holder.lock("fifo", TTL).await.expect("free lock");
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..4 {
        let manager = waits_long(&urls);
        let order = order_tx.clone();
        waiters.push(tokio::spawn(async move {
            let lock = manager
                .lock("fifo", TTL)
                .await
                .expect("served by a hand-off");
            order.send(i).expect("order");
            // Hold a moment so a rival that ignored the queue would show up out of order.
            tokio::time::sleep(Duration::from_millis(20)).await;
            lock.release().await.expect("release");
            manager.close().await.expect("close");
        }));
        // The next waiter starts only once this one holds its place everywhere.
        until_queued(&servers, "fifo", i + 1);
    }
    lock.release().await.expect("release");
    let mut served = Vec::new();
    for _ in 0..4 {
        let next = tokio::time::timeout(BOUND, order_rx.recv())
            .await
            .expect("each waiter served long before its 60 s retry delay");
        served.push(next.expect("a waiter"));
    }
    assert_eq!(served, [0, 1, 2, 3], "hand-offs follow the queue");
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    holder.close().await.expect("close");
    // Nothing is left behind: the lock keys go with the last release, the queues with it or
    // by their expiry.
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "every key to go", || {
            servers.iter().all(|s| {
                s.get("fifo").is_none()
                    && s.cmd(&[&b"EXISTS"[..], &queue_key("fifo"), &waiters_key("fifo")])
                        == Reply::Int(0)
            })
        });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_waiter_passes_its_turn_on() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = redlock_fred::manager(urls.clone()).build().expect("config");
    let lock = holder.lock("pass", TTL).await.expect("free lock");
    // Both waiters in one manager would share its local queue: two managers, as two processes.
    let first = waits_long(&urls);
    let second = waits_long(&urls);
    let gone = tokio::spawn(async move { first.lock("pass", TTL).await.map(|_| ()) });
    until_queued(&servers, "pass", 1);
    let next = tokio::spawn(async move {
        let got = second.lock("pass", TTL).await;
        (got, second)
    });
    until_queued(&servers, "pass", 2);
    // The first waiter's call goes away while it holds the head of every queue.
    gone.abort();
    assert!(gone.await.is_err_and(|e| e.is_cancelled()));
    lock.release().await.expect("release");
    let (got, second) = tokio::time::timeout(BOUND, next)
        .await
        .expect("the hand-off to the dropped call passed on at once, not after 60 s")
        .expect("task");
    let lock = got.expect("the second waiter got its turn");
    lock.release().await.expect("release");
    second.close().await.expect("close");
    holder.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_nobody_listens_for_is_skipped() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = redlock_fred::manager(urls.clone()).build().expect("config");
    let lock = holder.lock("dead", TTL).await.expect("free lock");
    let waiter = waits_long(&urls);
    let next = tokio::spawn(async move {
        let got = waiter.lock("dead", TTL).await;
        (got, waiter)
    });
    until_queued(&servers, "dead", 1);
    // A process that died while queued: its place is still live, but nobody is subscribed to
    // its channel any more. It is put at the head of every queue.
    for server in &servers {
        let entry = format!("{} 30000 redlock:handoff:dead", u64::MAX / 2);
        server.cmd(&[
            &b"HSET"[..],
            &waiters_key("dead"),
            b"ghost",
            entry.as_bytes(),
        ]);
        server.cmd(&[&b"LPUSH"[..], &queue_key("dead"), b"ghost"]);
    }
    lock.release().await.expect("release");
    let (got, waiter) = tokio::time::timeout(BOUND, next)
        .await
        .expect("the dead waiter was skipped, not handed the key")
        .expect("task");
    let lock = got.expect("the live waiter got its turn");
    for server in &servers {
        assert_ne!(server.get("dead").as_deref(), Some(&b"ghost"[..]));
    }
    lock.release().await.expect("release");
    waiter.close().await.expect("close");
    holder.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_is_not_taken_back_by_its_releaser_while_a_waiter_is_queued() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let releaser = redlock_fred::manager(urls.clone())
        .retry_count(1)
        .build()
        .expect("config");
    let lock = releaser.lock("turn", TTL).await.expect("free lock");
    let waiter = waits_long(&urls);
    let next = tokio::spawn(async move {
        let got = waiter.lock("turn", TTL).await;
        (got, waiter)
    });
    until_queued(&servers, "turn", 1);
    lock.release().await.expect("release");
    // Asking again at once, as a busy worker would: the key is reserved for the waiter.
    match releaser.lock("turn", TTL).await {
        Err(Error::Contended(_)) => {}
        other => panic!("the releaser took its release back: {other:?}"),
    }
    let (got, waiter) = tokio::time::timeout(BOUND, next)
        .await
        .expect("the waiter was handed the lock")
        .expect("task");
    got.expect("the waiter's turn")
        .release()
        .await
        .expect("release");
    waiter.close().await.expect("close");
    releaser.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_attempt_call_makes_one_attempt_and_leaves_no_place() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = redlock_fred::manager(urls.clone()).build().expect("config");
    let lock = holder.lock("once", TTL).await.expect("free lock");
    let caller = redlock_fred::manager(urls)
        .retry_count(1)
        .build()
        .expect("config");
    // The first call meets the key fresh; the second after a refusal, when this manager
    // queues from the first attempt.
    for call in 0..2 {
        match caller.lock("once", TTL).await {
            Err(Error::Contended(failure)) => {
                assert_eq!(
                    failure.attempts, 1,
                    "call {call}: one attempt, not one more queued"
                );
            }
            other => panic!("call {call}: {other:?}"),
        }
        for server in &servers {
            assert_eq!(places(server, "once"), 0, "call {call} left a place behind");
        }
    }
    lock.release().await.expect("release");
    caller.close().await.expect("close");
    holder.close().await.expect("close");
}

/// How many scripts `server` has run so far (`EVALSHA` and `EVAL` calls).
fn scripts_run(server: &RedisServer) -> u64 {
    let Reply::Bulk(Some(info)) = server.cmd(&["INFO", "commandstats"]) else {
        panic!("INFO commandstats")
    };
    let info = String::from_utf8(info).expect("INFO is text");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .map(|l| {
            let calls = l.split("calls=").nth(1).expect("calls=");
            calls[..calls.find(',').expect("a field after calls")]
                .parse::<u64>()
                .expect("a count")
        })
        .sum()
}

/// A manager from either backend's builder (the two share no trait) that polls only every 60 s
/// and waits up to 1 s per instance.
macro_rules! patient {
    ($builder:expr) => {
        $builder
            .retry_count(2)
            .retry_delay(Duration::from_secs(60), Duration::from_secs(60))
            .instance_timeout(Duration::from_secs(1))
            .build()
            .expect("config")
    };
}

/// The waiter, a manager that `make` builds on the servers' URLs (either backend, polling
/// every 60 s), takes the key from a quorum of hand-offs: no script of its own after the
/// release (the release is each server's only one), and each key handed over for the waiter's
/// whole TTL, not a short reserve, so that the lease counted from its queueing round stands on
/// them.
async fn a_quorum_of_hand_offs_is_the_acquisition_with(
    make: impl FnOnce(&[String]) -> LockManager,
) {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = redlock_fred::manager(urls.clone()).build().expect("config");
    // Loads the scripts into the servers' caches, so that each runs as one `EVALSHA`.
    holder
        .lock("warm", TTL)
        .await
        .expect("free lock")
        .release()
        .await
        .expect("release");
    let lock = holder.lock("handed", TTL).await.expect("free lock");
    // The lock returns at a quorum: its last acquire may land later, and the waiter, finding
    // that key free, would not queue there. This test wants it queued everywhere.
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "the holder's last acquire", || {
            servers
                .iter()
                .all(|s| s.get("handed").as_deref() == Some(lock.token()))
        });
    });
    let waiter = make(&urls);
    // Connects the waiter's command connections before it queues (its subscriber connections
    // are made by its first listen, which the 1 s instance timeout below leaves time for: a
    // listen that outlasts it on a cold, loaded machine leaves the call unqueued).
    waiter
        .lock("warm", TTL)
        .await
        .expect("free lock")
        .release()
        .await
        .expect("release");
    let next = tokio::spawn(async move {
        let got = waiter.lock("handed", TTL).await;
        (got, waiter)
    });
    until_queued(&servers, "handed", 1);
    let before: Vec<u64> = servers.iter().map(scripts_run).collect();
    lock.release().await.expect("release");
    let (got, waiter) = tokio::time::timeout(BOUND, next)
        .await
        .expect("handed the lock")
        .expect("task");
    let lock = got.expect("the waiter's turn");
    let token = lock.token().to_vec();
    // Every release lands (the holder's last one after its quorum) and hands over.
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(5), "every key handed over", || {
            servers
                .iter()
                .all(|s| s.get("handed").as_deref() == Some(token.as_slice()))
        });
    });
    let after: Vec<u64> = servers.iter().map(scripts_run).collect();
    let ran: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        ran,
        [1, 1, 1],
        "the holder's release alone, no attempt by the waiter"
    );
    for s in &servers {
        let left = s.pttl("handed");
        assert!(
            left > 20_000,
            "handed over for the TTL (30 s), not a reserve: {left} ms"
        );
    }
    assert!(
        lock.remaining() <= TTL,
        "a lease measured from the queueing round"
    );
    assert!(lock.check().await.is_ok(), "held on the instances");
    lock.release().await.expect("release");
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(5), "the key to go", || {
            servers.iter().all(|s| s.get("handed").is_none())
        });
    });
    waiter.close().await.expect("close");
    holder.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quorum_of_hand_offs_is_the_acquisition_on_fred() {
    require_redis();
    a_quorum_of_hand_offs_is_the_acquisition_with(|urls| {
        patient!(redlock_fred::manager(urls.iter().cloned()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quorum_of_hand_offs_is_the_acquisition_on_redis_rs() {
    require_redis();
    a_quorum_of_hand_offs_is_the_acquisition_with(|urls| patient!(redlock_redis::manager(urls)))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pass_on_never_releases_a_claimed_key() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let holder = redlock_fred::manager(urls.clone()).build().expect("config");
    let lock = holder.lock("claimed", TTL).await.expect("free lock");
    // A short lease, handed over after 65 % of it: too late to take the hand-offs as the
    // acquisition (the lease would be due for renewal), so the waiter makes an attempt, which
    // claims the keys.
    let short = Duration::from_secs(2);
    let waiter = waits_long(&urls);
    let next = tokio::spawn(async move {
        let got = waiter.lock("claimed", short).await;
        (got, waiter)
    });
    until_queued(&servers, "claimed", 1);
    tokio::time::sleep(short * 65 / 100).await;
    lock.release().await.expect("release");
    let (got, waiter) = tokio::time::timeout(BOUND, next)
        .await
        .expect("handed the lock")
        .expect("task");
    let lock = got.expect("the waiter's turn");
    let token = lock.token().to_vec();
    // Claimed: the waiter's acquire cleared the table's record of a reservation for its token
    // (field ""). A quorum at least; an instance whose release came after the waiter's attempt
    // there holds an unclaimed reservation, which a pass-on rightly hands on.
    let claimed = |s: &RedisServer| {
        s.get("claimed").as_deref() == Some(token.as_slice())
            && s.cmd(&[&b"HGET"[..], &waiters_key("claimed"), b""])
                != Reply::Bulk(Some(token.clone()))
    };
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(5),
            "the key claimed on a quorum",
            || servers.iter().filter(|s| claimed(s)).count() >= 2,
        );
    });
    // What a backend runs when a hand-off message for this token finds no call waiting for it,
    // as when the message arrives (on the pub/sub connection) after the acquire it led to.
    for server in servers.iter().filter(|s| claimed(s)) {
        let reply = server.cmd(&[
            &b"EVAL"[..],
            redlock_core::redis_lua::RELEASE_HAND_OFF.as_bytes(),
            b"1",
            b"claimed",
            &token,
            b"1",
        ]);
        assert_eq!(reply, Reply::Int(0), "a pass-on released a claimed key");
        assert_eq!(server.get("claimed").as_deref(), Some(token.as_slice()));
    }
    assert!(lock.check().await.is_ok(), "still held");
    lock.release().await.expect("release");
    waiter.close().await.expect("close");
    holder.close().await.expect("close");
}
