//! Restart recovery under a majority restart (see `redlock_mock::recovery`): over 1 000 seeds,
//! every holder whose resource a rival took is told `Lost` within the last instance's return +
//! the reconnection delay + the re-check's rounds, and every other holder has its key back on
//! a quorum by then. With the managers' recovery off, the checker catches both.

use redlock_mock::recovery::{restart_run, sweep_restarts};

const THREADS: usize = 2;

#[test]
fn a_majority_restart_is_reported_within_reconnect_time_plus_the_recheck() {
    let sweep = sweep_restarts(0..1_000, true, THREADS);
    println!("recovery on: {sweep}");
    assert!(sweep.violations.is_empty(), "{:#?}", sweep.violations);
    // The family exercised both branches of the promise.
    assert!(sweep.rival_grants >= 100, "{sweep}");
    assert!(sweep.kept >= 100, "{sweep}");
}

#[test]
fn without_recovery_the_checker_sees_late_losses_and_keys_not_reasserted() {
    let sweep = sweep_restarts(0..200, false, THREADS);
    println!("recovery off: {sweep}");
    let late = sweep
        .violations
        .iter()
        .filter(|v| v.contains("rival granted"))
        .count();
    let bare = sweep
        .violations
        .iter()
        .filter(|v| v.contains("not re-asserted"))
        .count();
    assert!(late > 0, "{sweep}");
    assert!(bare > 0, "{sweep}");
    // Without the hook the loss waits for the renewal, 6 s into the 10 s lease.
    let (_, _, max) = sweep.loss_distribution().expect("some rival grants");
    assert!(max > std::time::Duration::from_secs(5), "{sweep}");
}

#[test]
fn a_run_is_deterministic_per_seed() {
    for seed in [0, 7, 123, 999] {
        assert_eq!(
            restart_run(seed, true),
            restart_run(seed, true),
            "seed {seed}"
        );
    }
}

mod scenarios {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::future::{select, Either};
    use redlock_core::{Error, LossReason};
    use redlock_mock::{Latency, World};

    const RECONNECT: Duration = Duration::from_millis(20);
    const ROUND: Duration = Duration::from_millis(100);

    fn world(recovery: bool) -> World {
        World::builder()
            .seed(3)
            .instances(3)
            .clients(2)
            .latency(Latency::Fixed(Duration::from_millis(1)))
            .reconnect_delay(Latency::Fixed(RECONNECT))
            .configure(move |b| b.restart_recovery(recovery))
            .build()
            .expect("a valid world")
    }

    /// What the scoped call returned and when, the job's polls after the rival's grant, and
    /// when (and why) a watcher of a second lock heard its loss.
    type Outcome = (
        Result<(), Error>,
        Duration,
        usize,
        Option<(Duration, LossReason)>,
    );

    /// Instances 0 and 1 restart empty at 100 ms; the rival takes "job" (and "other") at
    /// 101 ms.
    fn majority_restart_under_with_lock(recovery: bool) -> Outcome {
        let world = world(recovery);
        let rival_granted: Arc<Mutex<Option<Duration>>> = Arc::default();
        let polls_after_rival = Arc::new(Mutex::new(0usize));
        let (w, granted, polls) = (
            world.clone(),
            Arc::clone(&rival_granted),
            Arc::clone(&polls_after_rival),
        );
        let holder = world.spawn_client(0, async move {
            let watched = w
                .client(0)
                .lock("other", Duration::from_secs(10))
                .await
                .expect("free");
            let (ww, watcher) = (w.clone(), watched.watch());
            let heard = w.spawn(async move {
                let horizon = ww.sleep(Duration::from_secs(3));
                match select(Box::pin(watcher.lost()), horizon).await {
                    Either::Left((reason, _)) => Some((ww.now(), reason)),
                    Either::Right(_) => None,
                }
            });
            let job_world = w.clone();
            let result = w
                .client(0)
                .with_lock("job", |_watch| async move {
                    // One write per millisecond, for 3 s: past every bound, short of renewal.
                    for _ in 0..3_000 {
                        if granted.lock().unwrap().is_some() {
                            *polls.lock().unwrap() += 1;
                        }
                        job_world.sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
            let at = w.now();
            (result, at, heard.await, watched)
        });
        let (nemesis, granted) = (world.clone(), Arc::clone(&rival_granted));
        let rival = world.spawn_client(1, async move {
            nemesis.sleep(Duration::from_millis(100)).await;
            nemesis.bounce(0);
            nemesis.bounce(1);
            nemesis.sleep(Duration::from_millis(1)).await;
            let job = nemesis
                .client(1)
                .try_lock("job", Duration::from_secs(10))
                .await;
            let other = nemesis
                .client(1)
                .try_lock("other", Duration::from_secs(10))
                .await;
            *granted.lock().unwrap() = Some(nemesis.now());
            nemesis.sleep(Duration::from_secs(4)).await;
            (job.is_ok(), other.is_ok())
        });
        let ((result, at, heard, _watched), (job, other)) =
            world.run(futures::future::join(holder, rival));
        assert!(
            job && other,
            "the rival took both keys on the restarted majority"
        );
        let polls = *polls_after_rival.lock().unwrap();
        (result, at, polls, heard)
    }

    #[test]
    fn with_lock_and_watchers_hear_the_loss_one_reconnection_and_a_round_after_the_restart() {
        let (result, at, polls, heard) = majority_restart_under_with_lock(true);
        let bound = Duration::from_millis(100) + RECONNECT + ROUND;
        match result {
            Err(Error::Lost(loss)) => assert_eq!(loss.reason, LossReason::InstancesLost),
            other => panic!("the scoped job was not stopped by the loss: {other:?}"),
        }
        assert!(at <= bound, "with_lock returned at {at:?}, bound {bound:?}");
        // Polled in the window between the restart and the reconnection only: one write per
        // millisecond for at most the reconnection delay and a round trip.
        assert!(polls <= 25, "{polls} polls after the rival's grant");
        let (heard_at, reason) = heard.expect("the watcher heard the loss");
        assert_eq!(reason, LossReason::InstancesLost);
        assert!(heard_at <= bound, "watcher woken at {heard_at:?}");
    }

    #[test]
    fn without_recovery_the_scoped_job_runs_on_after_the_rival_entered() {
        let (result, at, polls, heard) = majority_restart_under_with_lock(false);
        // Nothing tells the holder before its renewal at 6 s: the job ran to its end, and only
        // the release after it found the lock gone.
        match result {
            Err(Error::Lost(loss)) => assert_eq!(loss.reason, LossReason::NotHeld),
            other => panic!("{other:?}"),
        }
        assert!(at >= Duration::from_secs(3), "{at:?}");
        assert!(polls > 2_000, "{polls}");
        assert!(heard.is_none());
    }

    #[test]
    fn a_reasserted_key_lives_no_longer_than_the_validity_left() {
        let world = world(true);
        let w = world.clone();
        let (remaining, ttl, checked) = world.run(world.spawn_client(0, async move {
            let lock = w
                .client(0)
                .lock("job", Duration::from_secs(10))
                .await
                .expect("free");
            w.sleep(Duration::from_secs(2)).await;
            // A minority restart: the lock stands, the key is set again on instance 0.
            w.bounce(0);
            w.sleep(RECONNECT + ROUND).await;
            let state = |i: usize| {
                w.instance(i)
                    .inspect_now(b"job")
                    .expect("no error")
                    .expect("held")
            };
            let (reasserted, kept) = (state(0), state(1));
            assert_eq!(reasserted.value, lock.token(), "our token, set again");
            let remaining = lock.remaining();
            let checked = lock.check().await;
            (remaining, (reasserted.ttl, kept.ttl), checked)
        }));
        let (ttl, kept) = (ttl.0.expect("an expiry"), ttl.1.expect("an expiry"));
        // The validity left when the re-check sent it, counted from its arrival: at most the
        // one-way delay (1 ms) past the lock's deadline, and before the grant's own keys.
        assert!(
            ttl <= remaining + Duration::from_millis(1),
            "the key lives {ttl:?}, the lock has {remaining:?} left"
        );
        assert!(ttl < kept, "{ttl:?} vs the granted key's {kept:?}");
        assert!(
            remaining > Duration::from_secs(7),
            "still held: {remaining:?}"
        );
        assert!(checked.is_ok(), "{checked:?}");
    }

    #[test]
    fn a_release_during_the_recheck_leaves_no_key_behind() {
        let world = World::builder()
            .seed(5)
            .instances(3)
            .clients(1)
            .latency(Latency::Fixed(Duration::from_millis(5)))
            .reconnect_delay(Latency::Fixed(RECONNECT))
            .build()
            .expect("a valid world");
        let w = world.clone();
        let released = world.run(world.spawn_client(0, async move {
            let lock = w
                .client(0)
                .lock("job", Duration::from_secs(10))
                .await
                .expect("free");
            // The release round waits for slow instances 1 and 2 long after instance 0 answered.
            w.set_latency(0, 1, Latency::Fixed(Duration::from_millis(30)));
            w.set_latency(0, 2, Latency::Fixed(Duration::from_millis(30)));
            w.bounce(0);
            // The re-check's read goes out at 20 ms and is answered at 30 ms: release in
            // between, so its delete reaches instance 0 before a re-assert could, and the
            // round is still open when the re-assert is answered.
            w.sleep(RECONNECT + Duration::from_millis(5)).await;
            let released = lock.release().await;
            w.sleep(Duration::from_secs(1)).await;
            released
        }));
        assert!(released.is_ok(), "{released:?}");
        for i in 0..3 {
            assert_eq!(
                world.instance(i).get(b"job"),
                None,
                "instance {i} kept the key"
            );
        }
    }
}
