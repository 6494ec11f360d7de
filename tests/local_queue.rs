//! One contender per resource per manager, on virtual time: the tasks of one manager that want
//! the same resource queue locally in arrival order, only the head sends anything, a cancelled
//! waiter leaves without disturbing the others, and `try_lock` / `lock_opts` keep their bounds.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ms, Cluster, Recorder};
use redlock_lease::{Error, LockManager, LockOptions, Patience};

const TTL: Duration = Duration::from_secs(10);

fn recorded(c: &Cluster, seed: u64) -> (LockManager, common::CallLog) {
    let (backends, log) = Recorder::wrap(&c.backends, &c.clock);
    let manager = LockManager::builder(Arc::clone(&c.clock))
        .instances(backends)
        .random(Arc::new(redlock_lease::SeededRandom::new(seed)))
        .spawner(c.sim.spawner())
        .build()
        .expect("config");
    (manager, log)
}

fn count(log: &common::CallLog, op: &str) -> usize {
    log.lock().unwrap().iter().filter(|c| c.op == op).count()
}

/// `k` tasks of one manager queue for "res" behind a holder that keeps it for 100 ms; each
/// holds it for 10 ms in turn. Returns the order they got it in, and the manager's call log.
fn queue_of(k: usize) -> (Vec<usize>, common::CallLog, Cluster) {
    let c = Cluster::new(3);
    let (manager, log) = recorded(&c, 1);
    let order = Arc::new(Mutex::new(Vec::new()));
    let first = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let mut handles = Vec::new();
    for i in 0..k {
        let (manager, order, clock) = (manager.clone(), Arc::clone(&order), Arc::clone(&c.clock));
        handles.push(c.sim.spawn(async move {
            // Arrive one after another.
            clock.sleep(ms(1 + i as u64)).await;
            let options = LockOptions::new(TTL).patience(Patience::UntilCancelled);
            let lock = manager.lock_opts("res", options).await.expect("served");
            order.lock().unwrap().push(i);
            clock.sleep(ms(10)).await;
            lock.release().await.expect("release");
        }));
    }
    let clock = Arc::clone(&c.clock);
    c.sim.run(async move {
        clock.sleep(ms(100)).await;
        first.release().await.expect("release");
        for h in handles {
            h.await;
        }
    });
    let order = order.lock().unwrap().clone();
    (order, log, c)
}

#[test]
fn waiters_of_one_manager_are_served_in_arrival_order() {
    let (order, _, c) = queue_of(8);
    assert_eq!(order, (0..8).collect::<Vec<_>>());
    assert_eq!(c.with_key(b"res"), 0, "nothing left behind");
}

#[test]
fn the_work_per_release_does_not_grow_with_the_waiters() {
    // Every acquisition costs the same number of acquire calls whether 4 or 40 tasks wait: only
    // the head of the queue makes rounds, and a local release hands the key on directly.
    let (_, small, _) = queue_of(4);
    let (_, large, _) = queue_of(40);
    let per_lock = |log: &common::CallLog, k: usize| count(log, "acquire") as f64 / (k + 1) as f64;
    let (a, b) = (per_lock(&small, 4), per_lock(&large, 40));
    assert!(
        b <= a * 1.1,
        "acquire calls per acquisition: {a} with 4 waiters, {b} with 40"
    );
    assert!(
        b <= 3.0 * 1.5,
        "about one round of 3 per acquisition, got {b}"
    );
    let subscriptions = count(&large, "subscribe");
    assert!(
        subscriptions <= 3 * 2,
        "{subscriptions} subscriptions for 40 waiters"
    );
}

#[test]
fn a_cancelled_waiter_leaves_without_disturbing_the_others() {
    let c = Cluster::new(3);
    let (manager, _) = recorded(&c, 2);
    let held = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..3u64 {
        let (manager, order, clock) = (manager.clone(), Arc::clone(&order), Arc::clone(&c.clock));
        handles.push(c.sim.spawn(async move {
            clock.sleep(ms(1 + i)).await;
            let options = LockOptions::new(TTL).patience(Patience::UntilCancelled);
            let acquire = manager.lock_opts("res", options);
            // The middle waiter gives up after 50 ms: its future is dropped while queued.
            let limit = if i == 1 { ms(50) } else { ms(60_000) };
            futures::pin_mut!(acquire);
            match futures::future::select(acquire, clock.sleep(limit)).await {
                futures::future::Either::Left((lock, _)) => {
                    order.lock().unwrap().push(i);
                    lock.expect("served").release().await.expect("release");
                }
                futures::future::Either::Right(_) => order.lock().unwrap().push(100 + i),
            }
        }));
    }
    let clock = Arc::clone(&c.clock);
    c.sim.run(async move {
        clock.sleep(ms(200)).await;
        held.release().await.expect("release");
        for h in handles {
            h.await;
        }
    });
    assert_eq!(*order.lock().unwrap(), vec![101, 0, 2]);
}

#[test]
fn try_lock_by_a_thousand_tasks_at_once_grants_exactly_one() {
    let c = Cluster::new(3);
    // A round takes 2 ms: all thousand calls arrive while the first one's round is out.
    c.set_latency(ms(2));
    let (manager, log) = recorded(&c, 3);
    let start = c.now();
    let results = c.sim.run(futures::future::join_all(
        (0..1_000).map(|_| manager.try_lock("hot", TTL)),
    ));
    let elapsed = c.now() - start;
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1);
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, Error::Contended(_)), "{e:?}");
        }
    }
    assert!(
        elapsed <= manager.config().instance_timeout() * 2,
        "all answered within one round: {elapsed:?}"
    );
    assert_eq!(count(&log, "acquire"), 3, "the losers sent nothing");
    drop(results);
    // The winner was dropped with the results: released in the background, within one round.
    let clock = Arc::clone(&c.clock);
    let start = c.now();
    c.sim.run(async {
        while c.with_key(b"hot") > 0 && c.now() - start < manager.config().instance_timeout() {
            clock.sleep(ms(1)).await;
        }
    });
    assert_eq!(c.with_key(b"hot"), 0, "no key left behind");
}

#[test]
fn try_lock_across_managers_is_refused_by_the_servers() {
    let c = Cluster::new(3);
    let a = c.manager(4);
    let b = c.manager(5);
    let held = c.sim.run(a.try_lock("job", TTL)).expect("free");
    let err = c.sim.run(b.try_lock("job", TTL)).expect_err("held by a");
    assert!(matches!(err, Error::Contended(_)), "{err:?}");
    assert_eq!(common::failure(&err).attempts, 1, "asked the servers once");
    // A local holder alone does not stop try_lock from asking: its lease may have run out.
    let err = c
        .sim
        .run(a.try_lock("job", TTL))
        .expect_err("held by a itself");
    assert_eq!(common::failure(&err).attempts, 1);
    c.sim.run(held.release()).expect("release");
    let _again = c.sim.run(b.try_lock("job", TTL)).expect("free again");
}

#[test]
fn patience_for_returns_within_its_bound_while_the_resource_stays_held() {
    let c = Cluster::new(3);
    let holder = c.manager(6);
    let _held = c.sim.run(holder.lock("res", TTL)).expect("lock");
    let waiter = c.manager(7);
    let timeout = waiter.config().instance_timeout();
    for wait in [ms(0), ms(1), ms(250), ms(2_000)] {
        let start = c.now();
        let options = LockOptions::new(TTL).patience(Patience::For(wait));
        let err = c
            .sim
            .run(waiter.lock_opts("res", options))
            .expect_err("held");
        assert!(matches!(err, Error::Contended(_)), "{err:?}");
        let took = c.now() - start;
        assert!(took <= wait + timeout * 2, "{wait:?}: took {took:?}");
        assert!(took >= wait, "{wait:?}: gave up early, after {took:?}");
    }
}

#[test]
fn a_queued_waiter_gives_up_within_the_lock_bound() {
    // A local holder keeps the key far longer than a waiter's patience: the waiter returns
    // Contended within the documented bound of `lock`, having sent nothing while queued.
    let c = Cluster::new(3);
    let (manager, log) = recorded(&c, 8);
    let config = manager.config().clone();
    let bound = (config.instance_timeout() * 2 + config.retry_delay().1) * config.retry_count();
    let acquiring = manager.lock("res", TTL);
    let queued = manager.lock("res", TTL);
    let clock = Arc::clone(&c.clock);
    let start = c.now();
    let (held, err) = c.sim.run(async move {
        let (held, err) = futures::future::join(acquiring, async {
            clock.sleep(ms(1)).await;
            queued.await
        })
        .await;
        (held, err)
    });
    let _held = held.expect("the first one holds it");
    let err = err.expect_err("the second one queued, then gave up");
    assert!(matches!(err, Error::Contended(_)), "{err:?}");
    assert!(
        c.now() - start <= bound + ms(1),
        "took {:?}",
        c.now() - start
    );
    assert!(count(&log, "acquire") <= 3 * (config.retry_count() as usize + 1));
}

#[test]
fn a_saturated_instance_gets_no_more_than_the_in_flight_limit() {
    // Every call takes 60 ms; a round may wait 100 ms. With at most 4 calls in flight per
    // instance, 10 acquires of distinct resources at once: 4 go out and win, 4 more go out when
    // those answer and time out, and the last 2 are never sent at all.
    let c = Cluster::new(3);
    c.set_latency(ms(60));
    let (backends, log) = Recorder::wrap(&c.backends, &c.clock);
    let manager = LockManager::builder(Arc::clone(&c.clock))
        .instances(backends)
        .random(Arc::new(redlock_lease::SeededRandom::new(9)))
        .retry_count(1)
        .max_in_flight(4)
        .build()
        .expect("config");
    let results = c.sim.run(futures::future::join_all(
        (0..10).map(|i| manager.lock(format!("r{i}"), TTL)),
    ));
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    let saturated = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .flat_map(|e| &common::failure(e).instances)
        .filter(|i| matches!(i.outcome, redlock_lease::InstanceOutcome::Saturated))
        .count();
    assert_eq!(saturated, 2 * 3, "two calls per instance never went out");
    let first_wave = log
        .lock()
        .unwrap()
        .iter()
        .filter(|call| call.op == "acquire" && call.at < ms(60))
        .count();
    assert_eq!(first_wave, 4 * 3, "at most 4 in flight per instance");
    assert_eq!(
        count(&log, "acquire"),
        8 * 3,
        "the last two were never sent"
    );
}
