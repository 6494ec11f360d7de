//! What the queue family found, reduced to one scripted run each: an acquire whose cleanup
//! outlasts its last window keeps its bound, and acquires in progress (at the head of the local
//! queue or behind it) when their manager is closed end with `Closed` within one attempt,
//! granting nothing.

use std::time::Duration;

use futures::future::join_all;
use redlock_core::{Error, LockOptions, Patience};
use redlock_mock::{Latency, OpKind, Outcome, World};

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

const TIMEOUT: Duration = Duration::from_millis(10);

fn world(clients: usize, latency: Duration) -> World {
    World::builder()
        .seed(7)
        .instances(3)
        .clients(clients)
        .latency(Latency::Fixed(latency))
        .configure(|b| {
            b.instance_timeout(TIMEOUT)
                .retry_count(3)
                .retry_delay(ms(1), ms(1))
        })
        .build()
        .expect("valid world")
}

fn key_holders(world: &World, key: &[u8]) -> usize {
    (0..world.instance_count())
        .filter(|&i| world.instance(i).get(key).is_some())
        .count()
}

/// Each attempt is undecided until the instance timeout (one instance refuses, one hangs),
/// and so is its cleanup (the hung one never answers): a window of 1 ms ends long before the
/// cleanup does. The first attempt ends at 10 ms, its cleanup at 20 ms, past the last moment
/// to start an attempt (15 ms): `For(15 ms)` must give up then, not make a second attempt
/// that returns at 40 ms, past 15 ms and two instance timeouts.
#[test]
fn an_attempt_never_starts_after_the_last_moment_to_start_one() {
    let world = world(1, Duration::ZERO);
    world
        .instance(0)
        .acquire_now(b"r", b"someone-else", ms(60_000))
        .expect("set a rival's key");
    world.hang(2);
    let traced = world.traced(0);
    let patience = Patience::For(ms(15));
    let options = LockOptions::new(ms(1_000)).patience(patience);
    let result =
        world.run(world.spawn_client(
            0,
            async move { traced.lock_opts("r", options).await.map(drop) },
        ));
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    let op = world
        .history()
        .ops()
        .find(|op| op.op == OpKind::Lock)
        .cloned()
        .expect("traced");
    assert_eq!(op.patience, Some(patience));
    assert_eq!(op.bound, ms(15) + TIMEOUT * 2);
    assert!(
        op.local_elapsed <= op.bound,
        "took {:?}, bound {:?}",
        op.local_elapsed,
        op.bound
    );
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

/// Two tasks of client 0 wait for a resource client 1 holds (one at the head of the local
/// queue making rounds, one queued behind it); client 0 is closed at 50 ms and client 1
/// releases at 500 ms. Both waiters end with `Closed` within one attempt of the close, neither
/// is granted the lock after it, and later calls fail with `Closed` at once.
#[test]
fn waiters_in_progress_at_a_close_end_with_closed_within_one_attempt() {
    let world = world(2, ms(1));
    let holder = world.traced(1);
    let w = world.clone();
    let held = world.spawn_client(1, async move {
        let lock = holder.lock("r", ms(10_000)).await.expect("free");
        w.sleep(ms(500)).await;
        lock.release().await
    });
    let waiters: Vec<_> = (0..2u64)
        .map(|i| {
            let (traced, w) = (world.traced(0), world.clone());
            world.spawn_client(0, async move {
                w.sleep(ms(5 + i)).await;
                let options = LockOptions::new(ms(1_000)).patience(Patience::UntilCancelled);
                traced.lock_opts("r", options).await.map(drop)
            })
        })
        .collect();
    let (traced, w) = (world.traced(0), world.clone());
    let close = world.spawn_client(0, async move {
        w.sleep(ms(50)).await;
        traced.close().await.map(drop)?;
        traced.lock("r", ms(1_000)).await.map(drop)
    });
    let (released, results, after) =
        world.run(async move { futures::join!(held, join_all(waiters), close) });
    assert!(released.is_ok(), "{released:?}");
    for r in &results {
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    }
    assert!(matches!(after, Err(Error::Closed)), "{after:?}");
    let history = world.history();
    let close_op = history
        .ops()
        .find(|op| op.op == OpKind::Close)
        .expect("traced close");
    let ends: Vec<Duration> = history
        .ops()
        .filter(|op| op.client == 0 && op.op == OpKind::Lock && op.start < close_op.start)
        .map(|op| op.end)
        .collect();
    assert_eq!(ends.len(), 2);
    for end in ends {
        assert!(
            end <= close_op.start + close_op.bound,
            "ended {:?} after the close",
            end - close_op.start
        );
    }
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

/// The close comes while the only attempt is on the wire (3 ms each way): the attempt wins
/// every instance, yet the call reports `Closed` and releases what it won, so no key outlives
/// the call.
#[test]
fn a_round_won_during_the_close_is_given_back() {
    let world = world(1, ms(3));
    let (traced, w) = (world.traced(0), world.clone());
    let waiter = world.spawn_client(0, async move {
        let options = LockOptions::new(ms(60_000)).patience(Patience::UntilCancelled);
        let result = traced.lock_opts("r", options).await.map(drop);
        // Long enough for the release to land; far shorter than the TTL.
        w.sleep(ms(20)).await;
        result
    });
    let (traced, w) = (world.traced(0), world.clone());
    let close = world.spawn_client(0, async move {
        w.sleep(ms(2)).await;
        traced.close().await.map(drop)
    });
    // The acquires land at 3 ms; their replies reach the client at 6 ms.
    let w = world.clone();
    let landed = world.spawn(async move {
        w.sleep(ms(5)).await;
        key_holders(&w, b"r")
    });
    let (result, closed, landed) = world.run(async move { futures::join!(waiter, close, landed) });
    assert_eq!(landed, 3, "the round won every instance");
    assert!(closed.is_ok(), "{closed:?}");
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert_eq!(key_holders(&world, b"r"), 0, "the won round was released");
    let outcomes: Vec<Outcome> = world
        .history()
        .ops()
        .filter(|op| op.op == OpKind::Lock)
        .map(|op| op.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::Closed]);
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}
