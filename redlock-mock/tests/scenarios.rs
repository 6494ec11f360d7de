//! The SIM scenarios of FAULTS.md, one test each, on the simulated world.

use std::time::Duration;

use redlock_core::{BackendErrorKind, Error, LossReason};
use redlock_mock::{Latency, Outcome, World};

const TTL: Duration = Duration::from_secs(1);

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn world(n: usize, c: usize, seed: u64) -> World {
    World::builder()
        .seed(seed)
        .instances(n)
        .clients(c)
        .latency(Latency::Fixed(ms(1)))
        .configure(|b| b.instance_timeout(ms(20)).retry_count(1))
        .build()
        .expect("valid world")
}

fn holders(world: &World, resource: &[u8], token: &[u8]) -> usize {
    (0..world.instance_count())
        .filter(|&i| world.instance(i).get(resource).as_deref() == Some(token))
        .count()
}

/// N = 4 and each client reaches its two instances first: both see a 2–2 split.
fn split_vote(seed: u64, delay: (Duration, Duration)) -> (bool, bool) {
    let world = World::builder()
        .seed(seed)
        .instances(4)
        .clients(2)
        .configure(move |b| {
            b.instance_timeout(ms(20))
                .retry_count(5)
                .retry_delay(delay.0, delay.1)
        })
        .build()
        .expect("valid world");
    for i in 0..4 {
        let (near, far) = if i < 2 { (0, 1) } else { (1, 0) };
        world.set_latency(near, i, Latency::Fixed(ms(1)));
        world.set_latency(far, i, Latency::Fixed(ms(3)));
    }
    let a = world.spawn_client(0, {
        let t = world.traced(0);
        async move { t.lock("r", TTL).await.is_ok() }
    });
    let b = world.spawn_client(1, {
        let t = world.traced(1);
        async move { t.lock("r", TTL).await.is_ok() }
    });
    let (a, b) = world.run(futures::future::join(a, b));
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
    (a, b)
}

#[test]
fn split_vote_with_a_fixed_delay_livelocks() {
    // Identical delays keep the two clients in lock-step: every one of the 5 attempts splits
    // 2–2, and both give up. This is why the retry delay is random.
    assert_eq!(split_vote(1, (ms(50), ms(50))), (false, false));
}

#[test]
fn split_vote_with_jitter_resolves() {
    for seed in 0..20 {
        let (a, b) = split_vote(seed, (ms(0), ms(100)));
        assert!(a || b, "seed {seed}: the split vote never resolved");
    }
}

#[test]
fn pause_during_acquisition_expires_validity_and_spares_the_rival() {
    let world = world(5, 2, 7);
    world.set_latency_all(Latency::Fixed(ms(5)));
    let a = world.spawn_client(0, {
        let t = world.traced(0);
        async move { t.lock("r", TTL).await.map(|_| ()) }
    });
    let w = world.clone();
    let rival = world.spawn_client(1, async move {
        // Requests of client 0 are in flight: freeze it for twice the TTL.
        w.sleep(ms(2)).await;
        w.pause(0, TTL * 2);
        w.sleep(TTL + ms(20)).await;
        let lock = w
            .traced(1)
            .lock("r", TTL * 3)
            .await
            .expect("A's keys expired");
        let token = lock.lock().token().to_vec();
        (lock, token)
    });
    let (result, (lock_b, token_b)) = world.run(futures::future::join(a, rival));
    assert!(
        matches!(result, Err(Error::ValidityExpired(_))),
        "{result:?}"
    );
    assert_eq!(
        holders(&world, b"r", &token_b),
        5,
        "A's cleanup deleted B's keys"
    );
    let w = world.clone();
    world.run(world.spawn_client(1, async move {
        lock_b.check().await.expect("B still holds the lock");
        drop(w);
    }));
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

#[test]
fn pause_after_acquisition_reports_the_loss() {
    let world = world(5, 2, 8);
    let w = world.clone();
    let out = world.run(world.spawn_client(0, async move {
        let lock = w.traced(0).lock("r", TTL).await.expect("free lock");
        w.pause(0, TTL * 2);
        w.sleep(ms(1)).await;
        // Resumed two TTLs later.
        (lock.remaining(), lock.extend().await, lock.release().await)
    }));
    let (remaining, extend, release) = out;
    assert_eq!(remaining, Duration::ZERO);
    assert!(matches!(extend, Err(Error::Lost(ref l)) if l.reason == LossReason::Expired));
    assert!(
        matches!(release, Err(Error::Lost(_)) | Err(Error::Released)),
        "{release:?}"
    );
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

#[test]
fn overlapping_partition_views_never_give_two_holders() {
    // N = 5: client 0 sees {0, 1, 2}, client 1 sees {2, 3, 4}.
    let world = world(5, 2, 9);
    for i in [3, 4] {
        world.partition(0, i);
    }
    for i in [0, 1] {
        world.partition(1, i);
    }
    let mut tasks = Vec::new();
    for c in 0..2 {
        let w = world.clone();
        tasks.push(world.spawn_client(c, async move {
            let t = w.traced(c);
            let mut wins = 0;
            for round in 0..40u64 {
                if let Ok(lock) = t.lock("r", ms(200)).await {
                    wins += 1;
                    w.sleep(ms(20 + round % 7)).await;
                    let _ = lock.release().await;
                }
                w.sleep(ms(3 + (round * 7 + c as u64 * 5) % 11)).await;
            }
            wins
        }));
    }
    let wins = world.run(futures::future::join_all(tasks));
    assert!(
        wins.iter().all(|&w| w > 0),
        "both clients should win sometimes: {wins:?}"
    );
    let report = world.check();
    assert!(report.is_clean(), "{:?}", report.violations);
}

/// Client 0 holds exactly {0, 1, 2}; instance 0 then crashes; client 1 polls.
fn restart_scenario(down: Option<Duration>) -> redlock_mock::CheckReport {
    let world = world(5, 2, 10);
    for i in [3, 4] {
        world.partition(0, i);
    }
    let w = world.clone();
    // The extend's outcome is judged by the checker, from the history.
    let _ = world.run(world.spawn_client(0, async move {
        let a = w.traced(0).lock("r", TTL).await.expect("quorum of 3");
        match down {
            Some(d) => w.restart_after(0, d),
            None => w.bounce(0),
        }
        let b = w.traced(1);
        let lock_b = loop {
            if let Ok(l) = b.lock("r", TTL).await {
                break l;
            }
            w.sleep(ms(10)).await;
        };
        w.heal_all();
        let extend = a.extend().await;
        drop(lock_b);
        extend
    }));
    world.check()
}

#[test]
fn delayed_restart_keeps_safety() {
    let report = restart_scenario(Some(TTL + ms(50)));
    assert!(report.is_clean(), "{:?}", report.violations);
}

#[test]
fn restart_right_after_grant_is_flagged_and_the_loss_reported() {
    let report = restart_scenario(None);
    assert!(
        !report.overlaps.is_empty(),
        "the checker must flag the overlap"
    );
    assert!(report.every_overlap_reported(), "{:?}", report.followups);
    assert_eq!(report.beyond_overlaps().count(), 0);
}

/// Client 0 holds the lock for its whole lease; client 1 polls every millisecond.
fn clock_scenario(skew: impl FnOnce(&World)) -> redlock_mock::CheckReport {
    let world = world(5, 2, 11);
    skew(&world);
    let w = world.clone();
    world.run(world.spawn_client(0, async move {
        let a = w.traced(0).lock("r", TTL).await.expect("free lock");
        let b = w.traced(1);
        let lock_b = loop {
            if let Ok(l) = b.lock("r", TTL).await {
                break l;
            }
            w.sleep(ms(1)).await;
        };
        let _ = a.check().await;
        drop(lock_b);
    }));
    world.check()
}

#[test]
fn instance_clocks_one_percent_fast_keep_safety() {
    let report = clock_scenario(|w| (0..5).for_each(|i| w.set_instance_rate(i, 10_000)));
    assert!(report.is_clean(), "{:?}", report.violations);
}

#[test]
fn a_majority_of_clocks_five_percent_fast_is_flagged() {
    let report = clock_scenario(|w| (0..3).for_each(|i| w.set_instance_rate(i, 50_000)));
    assert!(!report.overlaps.is_empty());
    assert!(report.every_overlap_reported(), "{:?}", report.followups);
    assert_eq!(report.beyond_overlaps().count(), 0);
}

#[test]
fn a_clock_jump_is_flagged() {
    // Kleppmann's scenario: A holds {0, 1, 2}, instance 2's clock jumps past the TTL, B wins
    // {2, 3, 4}.
    let world = world(5, 2, 12);
    for i in [3, 4] {
        world.partition(0, i);
    }
    let w = world.clone();
    world.run(world.spawn_client(0, async move {
        let a = w.traced(0).lock("r", TTL).await.expect("quorum of 3");
        w.jump_instance_clock(2, TTL);
        let b = w.traced(1).lock("r", TTL).await.expect("B wins 2, 3, 4");
        w.heal_all();
        assert!(matches!(a.extend().await, Err(Error::Lost(_))));
        drop(b);
    }));
    let report = world.check();
    assert!(!report.overlaps.is_empty());
    assert!(report.every_overlap_reported(), "{:?}", report.followups);
}

#[test]
fn ambiguous_writes_leave_nothing_behind() {
    let world = world(5, 1, 13);
    for i in 0..3 {
        world.lose_replies(0, i, true);
    }
    let w = world.clone();
    let result =
        world.run(world.spawn_client(
            0,
            async move { w.traced(0).lock("r", TTL).await.map(|_| ()) },
        ));
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    for i in 0..5 {
        assert_eq!(
            world.instance(i).get(b"r"),
            None,
            "instance {i} kept the key"
        );
    }
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

#[test]
fn injected_error_replies_count_as_failures() {
    let world = world(5, 1, 14);
    world.inject_error(0, Some((BackendErrorKind::Server, "READONLY")));
    world.inject_error(1, Some((BackendErrorKind::Server, "OOM")));
    let w = world.clone();
    let ok = world.run(world.spawn_client(0, async move {
        let lock = w.traced(0).lock("r", TTL).await.expect("3 of 5 answer");
        lock.release().await
    }));
    assert!(ok.is_ok(), "{ok:?}");
    world.inject_error(2, Some((BackendErrorKind::Server, "OOM")));
    let w = world.clone();
    let err =
        world.run(world.spawn_client(
            0,
            async move { w.traced(0).lock("r", TTL).await.map(|_| ()) },
        ));
    assert!(matches!(err, Err(Error::Unavailable(_))), "{err:?}");
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

#[test]
fn client_partitioned_from_a_minority_still_locks() {
    let world = world(5, 1, 15);
    world.partition(0, 3);
    world.partition(0, 4);
    let w = world.clone();
    let out = world.run(world.spawn_client(0, async move {
        let lock = w.traced(0).lock("r", TTL).await?;
        lock.extend().await?;
        lock.release().await
    }));
    assert!(out.is_ok(), "{out:?}");
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

#[test]
fn client_partitioned_from_everything_fails_within_its_bound() {
    let world = World::builder()
        .seed(16)
        .instances(5)
        .configure(|b| b.instance_timeout(ms(20)).retry_count(3))
        .build()
        .expect("valid world");
    world.isolate(0);
    let w = world.clone();
    let start = world.now();
    let result =
        world.run(world.spawn_client(
            0,
            async move { w.traced(0).lock("r", TTL).await.map(|_| ()) },
        ));
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    // retry_count × (2 × instance_timeout + retry_delay_max) = 3 × (40 + 300) ms.
    assert!(world.now() - start <= ms(3 * 340));
    for i in 0..5 {
        assert!(world.instance(i).is_empty());
    }
    let report = world.check();
    assert!(report.is_clean(), "{:?}", report.violations);
    let op = report_ops(&world);
    assert_eq!(op, vec![Outcome::Unavailable]);
}

#[test]
fn a_hung_minority_costs_about_one_instance_timeout() {
    let world = world(5, 1, 17);
    world.hang(4);
    world.set_latency(0, 3, Latency::Fixed(ms(30)));
    let w = world.clone();
    let start = world.now();
    let ok = world.run(world.spawn_client(0, async move {
        let lock = w.traced(0).lock("r", TTL).await?;
        let taken = w.now();
        lock.release().await?;
        Ok::<_, Error>(taken)
    }));
    let taken = ok.expect("3 of 5 answer");
    // The quorum answers in one round trip; nobody waits for the hung instance.
    assert!(taken - start <= ms(2));
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

#[test]
fn a_crashed_majority_fails_clearly_within_its_bound() {
    let world = world(5, 1, 18);
    for i in 0..3 {
        world.crash(i);
    }
    let w = world.clone();
    let start = world.now();
    let result =
        world.run(world.spawn_client(
            0,
            async move { w.traced(0).lock("r", TTL).await.map(|_| ()) },
        ));
    match result {
        Err(Error::Unavailable(failure)) => assert_eq!(failure.unreachable().count(), 3),
        other => panic!("{other:?}"),
    }
    assert!(world.now() - start <= ms(20 * 2 + 300));
    assert!(world.check().is_clean(), "{:?}", world.check().violations);
}

fn report_ops(world: &World) -> Vec<Outcome> {
    world
        .history()
        .ops()
        .filter(|op| op.op != redlock_mock::OpKind::Drop)
        .map(|op| op.outcome)
        .collect()
}
