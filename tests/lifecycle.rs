//! Auto-extension, the scoped form, loss notification, guards, cancellation and shutdown, on
//! virtual time.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ms, Cluster};
use futures::future::{select, Either};
use futures::FutureExt;
use redlock_lease::{AutoExtend, Clock, Error, LossReason, OnLoss};

const LEASE: Duration = Duration::from_secs(10);

/// Lets spawned tasks run: one millisecond of virtual time, so every ready task is polled first.
fn settle(c: &Cluster) {
    let clock = Arc::clone(&c.clock);
    c.sim.run(async move { clock.sleep(ms(1)).await });
}

#[test]
fn scoped_lock_renews_at_sixty_percent_and_releases_on_success() {
    let c = Cluster::new(5);
    let manager = c.builder(1).spawner(c.sim.spawner()).build().unwrap();
    let clock = Arc::clone(&c.clock);
    let (out, token) = c
        .sim
        .run(manager.with_lock("job", |watch| async move {
            // 35 s of work on a 10 s lease: renewals at 6, 12, 18, 24 and 30 s.
            clock.sleep(Duration::from_secs(35)).await;
            assert!(watch.is_valid());
            (42, watch.token().to_vec())
        }))
        .unwrap();
    assert_eq!(out, 42);
    // 5 acquires + 5 × 5 renewals + 5 releases.
    assert_eq!(c.calls(), 5 + 25 + 5);
    assert_eq!(c.keys_holding(&token), 0);
    // No watchdog timer is left behind.
    assert_eq!(c.sim.clock().next_deadline(), None);
}

#[test]
fn renewal_cap_lets_the_lock_run_out_and_stops_the_work() {
    let c = Cluster::new(3);
    let manager = c.manager(2);
    let clock = Arc::clone(&c.clock);
    let finished = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let started = c.now();
    let result = c.sim.run(manager.with_lock_opts(
        "job",
        AutoExtend::default().with_max_renewals(2),
        |_| async move {
            clock.sleep(Duration::from_secs(60)).await;
            done.store(true, Ordering::SeqCst);
        },
    ));
    assert!(
        matches!(&result, Err(Error::Lost(l)) if l.reason == LossReason::Expired),
        "{result:?}"
    );
    assert!(!finished.load(Ordering::SeqCst), "the work must be stopped");
    // Two renewals (at 6 s and 12 s), then the lease granted at 12 s runs out at 12 + 9.898 s.
    assert_eq!(c.now() - started, ms(12_000 + 9_898));
    assert_eq!(c.calls(), 3 + 2 * 3 + 3);
}

#[test]
fn losing_a_majority_stops_the_work_with_a_lost_error() {
    let c = Cluster::new(5);
    let manager = c.manager(3);
    let clock = Arc::clone(&c.clock);
    let faults = c.faults.clone();
    let reached_end = Arc::new(AtomicBool::new(false));
    let end = Arc::clone(&reached_end);
    let result = c.sim.run(manager.with_lock("job", |watch| async move {
        clock.sleep(Duration::from_secs(3)).await;
        for f in &faults[..3] {
            f.set_down(true);
        }
        // The work keeps going; the renewal loop is what notices.
        let _ = watch.lost().await;
        clock.sleep(Duration::from_secs(100)).await;
        end.store(true, Ordering::SeqCst);
    }));
    assert!(matches!(result, Err(Error::Lost(_))), "{result:?}");
    assert!(!reached_end.load(Ordering::SeqCst));
    // The renewals at 6 s fail; retries continue until the deadline 9.898 s, never past it.
    assert!(c.now() <= ms(9_898) + ms(300), "{:?}", c.now());
    assert!(c.now() >= ms(9_898), "{:?}", c.now());
}

#[test]
fn keep_running_lets_the_work_observe_the_loss() {
    let c = Cluster::new(3);
    let manager = c.manager(4);
    let memories = c.memories.clone();
    let clock = Arc::clone(&c.clock);
    let result = c.sim.run(manager.with_lock_opts(
        "job",
        AutoExtend::default().with_on_loss(OnLoss::KeepRunning),
        |watch| async move {
            clock.sleep(Duration::from_secs(1)).await;
            // Every instance forgets the key (restart without persistence): the renewal at 6 s
            // finds a quorum not holding our token.
            memories.iter().for_each(|m| m.flush());
            let reason = watch.lost().await;
            (reason, watch.is_valid())
        },
    ));
    assert_eq!(result.unwrap(), (LossReason::NotHeld, false));
    assert_eq!(c.now(), ms(6_000));
}

#[test]
fn scoped_lock_is_released_when_the_work_panics_and_the_panic_resumes() {
    let c = Cluster::new(3);
    let manager = c.manager(5);
    let token = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&token);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.sim.run(manager.with_lock("job", |watch| async move {
            *seen.lock().unwrap() = watch.token().to_vec();
            panic!("work failed");
        }))
    }));
    assert!(caught.is_err(), "the panic must reach the caller");
    let token = token.lock().unwrap().clone();
    assert!(!token.is_empty());
    assert_eq!(c.keys_holding(&token), 0, "released despite the panic");
}

#[test]
fn scoped_lock_returns_the_works_error_value_and_releases() {
    let c = Cluster::new(3);
    let manager = c.manager(6);
    let out: Result<Result<(), String>, Error> = c
        .sim
        .run(manager.with_lock("job", |_| async { Err("bad input".to_owned()) }));
    assert_eq!(out.unwrap(), Err("bad input".to_owned()));
    assert!(c.memories.iter().all(|m| m.is_empty()));
}

#[test]
fn contended_scoped_lock_never_runs_the_work() {
    let c = Cluster::new(3);
    let holder = c.manager(7);
    let rival = c.manager(8);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let held = c.sim.run(holder.lock("job", LEASE)).unwrap();
    let result = c
        .sim
        .run(rival.with_lock("job", |_| async move { flag.store(true, Ordering::SeqCst) }));
    assert!(matches!(result, Err(Error::Contended(_))), "{result:?}");
    assert!(!ran.load(Ordering::SeqCst));
    c.sim.run(held.release()).unwrap();
}

#[test]
fn lock_auto_keeps_a_rival_out_for_several_leases_then_stops_on_release() {
    let c = Cluster::new(3);
    let manager = c.builder(9).spawner(c.sim.spawner()).build().unwrap();
    let rival = c.builder(10).retry_count(1).build().unwrap();
    let lock = c.sim.run(manager.lock_auto("job")).unwrap();
    let clock = Arc::clone(&c.clock);
    c.sim.run(async {
        for _ in 0..8 {
            clock.sleep(Duration::from_secs(4)).await;
            assert!(lock.is_valid());
            assert!(matches!(
                rival.lock("job", LEASE).await,
                Err(Error::Contended(_))
            ));
        }
    });
    c.sim.run(lock.release()).unwrap();
    settle(&c);
    assert_eq!(c.sim.clock().next_deadline(), None, "watchdog stopped");
}

#[test]
fn lock_auto_without_a_spawner_is_refused_before_any_call() {
    let c = Cluster::new(3);
    let manager = c.manager(11);
    let result = c.sim.run(manager.lock_auto("job"));
    assert!(matches!(result, Err(Error::InvalidInput(_))), "{result:?}");
    assert_eq!(c.calls(), 0);
}

#[test]
fn lost_fires_at_the_deadline_without_renewal() {
    let c = Cluster::new(3);
    let manager = c.manager(12);
    let lock = c.sim.run(manager.lock("job", LEASE)).unwrap();
    let reason = c.sim.run(lock.lost());
    assert_eq!(reason, LossReason::Expired);
    assert_eq!(c.now(), ms(9_898));
    assert!(matches!(c.sim.run(lock.extend()), Err(Error::Lost(_))));
}

#[test]
fn lost_fires_when_a_check_finds_the_key_gone() {
    let c = Cluster::new(3);
    let manager = c.manager(13);
    let lock = c.sim.run(manager.lock("job", LEASE)).unwrap();
    c.memories.iter().for_each(|m| m.flush());
    let reason = c.sim.run(async {
        match select(lock.lost().boxed(), lock.check().boxed()).await {
            Either::Left((reason, _)) => reason,
            Either::Right((checked, lost)) => {
                assert!(checked.is_err());
                lost.await
            }
        }
    });
    assert_eq!(reason, LossReason::NotHeld);
    assert_eq!(
        c.now(),
        Duration::ZERO,
        "noticed at once, not at the deadline"
    );
}

#[test]
fn dropped_guard_releases_in_the_background_with_a_spawner() {
    let c = Cluster::new(3);
    let manager = c.builder(14).spawner(c.sim.spawner()).build().unwrap();
    let lock = c.sim.run(manager.lock("job", LEASE)).unwrap();
    let token = lock.token().to_vec();
    drop(lock);
    assert_eq!(c.keys_holding(&token), 3, "drop itself does no I/O");
    settle(&c);
    assert_eq!(c.keys_holding(&token), 0);
    assert!(manager.active_locks().is_empty());
}

#[test]
fn dropped_guard_without_a_spawner_expires_by_its_ttl() {
    let c = Cluster::new(3);
    let manager = c.manager(15);
    let lock = c.sim.run(manager.lock("job", LEASE)).unwrap();
    let token = lock.token().to_vec();
    drop(lock);
    settle(&c);
    assert_eq!(c.keys_holding(&token), 3);
    c.sim.clock().advance(LEASE);
    assert_eq!(c.keys_holding(&token), 0);
}

#[test]
fn acquire_dropped_at_every_point_leaves_no_keys_with_a_spawner() {
    // Each instance answers after 10 ms; cut the acquire at every millisecond of its life.
    for cut in 0..=25u64 {
        let c = Cluster::new(5);
        for f in &c.faults {
            f.set_latency(ms(10));
        }
        let manager = c.builder(16).spawner(c.sim.spawner()).build().unwrap();
        let clock = Arc::clone(&c.clock);
        let finished = c.sim.run(async {
            let acquire = manager.lock("job", LEASE).boxed();
            match select(acquire, clock.sleep(ms(cut))).await {
                Either::Left((lock, _)) => Some(lock.unwrap()),
                Either::Right(_) => None,
            }
        });
        if let Some(lock) = finished {
            c.sim.run(lock.release()).unwrap();
        }
        // Let the background cleanup (and any request still in flight) finish.
        let clock = Arc::clone(&c.clock);
        c.sim.run(async move { clock.sleep(ms(100)).await });
        let left: usize = c.memories.iter().map(|m| m.len()).sum();
        assert_eq!(left, 0, "cut at {cut} ms left keys behind");
    }
}

#[test]
fn close_releases_held_locks_stops_watchdogs_and_reports_failures() {
    let c = Cluster::new(5);
    let manager = c.builder(18).spawner(c.sim.spawner()).build().unwrap();
    let a = c.sim.run(manager.lock_auto("a")).unwrap();
    let b = c.sim.run(manager.lock("b", LEASE)).unwrap();
    c.faults[4].set_down(true);
    let report = c.sim.run(manager.close()).unwrap();
    assert_eq!(report.released, 2);
    assert!(report.failed.is_empty());
    // Every reachable instance is clean; the unreachable one keeps its keys until the TTL.
    assert!(c.memories[..4].iter().all(|m| m.is_empty()));
    assert!(matches!(c.sim.run(a.extend()), Err(Error::Closed)));
    assert!(matches!(c.sim.run(b.release()), Err(Error::Closed)));
    assert!(matches!(
        c.sim.run(manager.lock("c", LEASE)),
        Err(Error::Closed)
    ));
    assert!(matches!(c.sim.run(manager.close()), Err(Error::Closed)));
    settle(&c);
    assert_eq!(c.sim.clock().next_deadline(), None, "no watchdog left");
}

#[test]
fn close_with_a_majority_down_lists_the_locks_it_could_not_release() {
    let c = Cluster::new(3);
    let manager = c.manager(19);
    let _held = c.sim.run(manager.lock("a", LEASE)).unwrap();
    c.faults[0].set_down(true);
    c.faults[1].set_down(true);
    let report = c.sim.run(manager.close()).unwrap();
    assert_eq!(report.released, 0);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, b"a");
    assert!(matches!(report.failed[0].1, Error::Unavailable(_)));
}

#[test]
fn renewal_count_is_exact_across_many_leases() {
    let c = Cluster::new(3);
    let manager = c.manager(20);
    let renewals = Arc::new(AtomicU32::new(0));
    let clock = Arc::clone(&c.clock);
    let faults = c.faults.clone();
    let count = Arc::clone(&renewals);
    c.sim
        .run(manager.with_lock_opts(
            "job",
            AutoExtend::default().with_lease(ms(1_000)),
            |_| async move {
                let before: u64 = faults.iter().map(|f| f.calls()).sum();
                clock.sleep(ms(10_000)).await;
                let after: u64 = faults.iter().map(|f| f.calls()).sum();
                count.store(((after - before) / 3) as u32, Ordering::SeqCst);
            },
        ))
        .unwrap();
    // A 1 s lease renewed every 600 ms over 10 s: at 0.6, 1.2, ... 9.6 s.
    assert_eq!(renewals.load(Ordering::SeqCst), 16);
}

#[test]
fn a_client_paused_past_its_lease_loses_the_scoped_lock_and_its_work_stops() {
    use redlock_mock::World;
    let world = World::builder()
        .seed(7)
        .instances(5)
        .clients(2)
        .build()
        .unwrap();
    let wrote_after_pause = Arc::new(AtomicBool::new(false));
    let w = world.clone();
    let flag = Arc::clone(&wrote_after_pause);
    let holder = world.spawn_client(0, async move {
        let clock = w.clock();
        let manager = w.client(0).clone();
        manager
            .with_lock("job", |_| async move {
                clock.sleep(Duration::from_secs(1)).await;
                // A GC pause or SIGSTOP of the whole process, 2.5 leases long.
                w.pause(0, Duration::from_secs(25));
                clock.sleep(Duration::from_secs(29)).await;
                flag.store(true, Ordering::SeqCst);
            })
            .await
    });
    // The rival asks while the holder is frozen, after its lease ran out.
    let w = world.clone();
    let rival = world.spawn_client(1, async move {
        w.sleep(Duration::from_secs(12)).await;
        let lock = w.client(1).lock("job", LEASE).await.expect("lease ran out");
        lock.release().await.expect("release")
    });
    world.run(rival);
    let result = world.run(holder);
    assert!(
        matches!(&result, Err(Error::Lost(l)) if l.reason == LossReason::Expired),
        "{result:?}"
    );
    assert!(
        !wrote_after_pause.load(Ordering::SeqCst),
        "the work must be stopped when the loss is noticed"
    );
    let report = world.check();
    assert!(report.is_clean(), "{:?}", report.violations);
}

#[test]
fn release_dropped_at_every_point_leaves_a_releasable_handle() {
    for cut in 0..=12u64 {
        let c = Cluster::new(5);
        let manager = c.manager(30);
        let lock = c.sim.run(manager.lock("job", LEASE)).unwrap();
        for (i, f) in c.faults.iter().enumerate() {
            f.set_latency(ms(2 + 2 * i as u64));
        }
        let clock = Arc::clone(&c.clock);
        let finished = c.sim.run(async {
            match select(lock.release().boxed(), clock.sleep(ms(cut))).await {
                Either::Left((result, _)) => Some(result),
                Either::Right(_) => None,
            }
        });
        match finished {
            Some(result) => result.unwrap(),
            // Interrupted: whatever landed, a second release finishes the job (or reports
            // that the deletes already happened).
            None => match c.sim.run(lock.release()) {
                Ok(()) | Err(Error::Lost(_)) => {}
                Err(e) => panic!("cut at {cut} ms: {e}"),
            },
        }
        settle(&c);
        assert!(
            c.memories.iter().all(|m| m.is_empty()),
            "cut at {cut} ms left keys"
        );
        assert!(matches!(c.sim.run(lock.release()), Err(Error::Released)));
    }
}

#[test]
fn a_restart_that_hands_the_lock_to_a_rival_is_reported_at_the_next_renewal() {
    use redlock_mock::World;
    // Redlock's assumption broken on purpose: a majority restarts empty at once, so a rival can
    // win while the holder's lease still runs. The scoped form cannot prevent the overlap; it
    // must notice it at the next renewal and stop the work.
    let world = World::builder()
        .seed(11)
        .instances(5)
        .clients(2)
        .build()
        .unwrap();
    let w = world.clone();
    let holder = world.spawn_client(0, async move {
        let manager = w.client(0).clone();
        let clock = w.clock();
        manager
            .with_lock("job", |watch| async move {
                clock.sleep(Duration::from_secs(60)).await;
                watch.is_valid()
            })
            .await
    });
    let w = world.clone();
    let rival = world.spawn_client(1, async move {
        w.sleep(Duration::from_secs(1)).await;
        for i in 0..3 {
            w.restart(i);
        }
        let lock = w
            .client(1)
            .lock("job", LEASE)
            .await
            .expect("won the empty majority");
        (w.now(), lock)
    });
    let (won_at, rival_lock) = world.run(rival);
    assert_eq!(won_at, ms(1_000), "the rival won at once: an overlap");
    let result = world.run(holder);
    assert!(
        matches!(&result, Err(Error::Lost(l)) if l.reason == LossReason::NotHeld),
        "{result:?}"
    );
    // Noticed at the first renewal (60 % of the 10 s lease), not at the deadline.
    assert_eq!(world.now(), ms(6_000));
    world.run(rival_lock.release()).unwrap();
}

#[test]
fn close_stops_scoped_work_before_its_lock_is_released() {
    // Every call takes 20 ms, so the close's release round is still out when the job would
    // next run: the job must already be stopped, and its watch must already say invalid.
    let c = Cluster::new(3);
    let manager = c.builder(19).spawner(c.sim.spawner()).build().unwrap();
    let clock = Arc::clone(&c.clock);
    let polls_after_close = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, flag, m) = (
        Arc::clone(&polls_after_close),
        Arc::clone(&closing),
        manager.clone(),
    );
    let job = c.sim.spawn(async move {
        m.with_lock("job", move |watch| async move {
            loop {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert!(!watch.is_valid(), "valid after the close began");
                }
                clock.sleep(ms(1)).await;
            }
        })
        .await
    });
    let clock = Arc::clone(&c.clock);
    let result = c.sim.run(async {
        clock.sleep(ms(50)).await;
        c.set_latency(ms(20));
        closing.store(true, std::sync::atomic::Ordering::SeqCst);
        manager.close().await.expect("close");
        job.await
    });
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert_eq!(
        polls_after_close.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}
