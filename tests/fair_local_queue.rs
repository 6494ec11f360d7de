//! Fair mode with a local queue, on virtual time: when a release was heard by a rival manager,
//! the releaser's manager steps aside for its grace before *every* attempt of its queued tasks,
//! not only before a task's first one. Otherwise the next local waiter (already past its first
//! attempt, woken at once by the local release) takes the lock straight back while the rival
//! that heard the release is trying, and one manager with two tasks starves a manager with one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ms;
use redlock_lease::{
    Clock, Error, LockBackend, LockManager, LockOptions, Patience, SeededRandom, DEFAULT_FAIR_GRACE,
};
use redlock_mock::{MemoryBackend, Simulation};

const TTL: Duration = Duration::from_secs(10);

/// Manager 0 runs two tasks, manager 1 one; every task loops lock → hold `hold` → release for
/// `span` of virtual time. Returns which manager got each critical section, in order.
fn two_managers(seed: u64, hold: Duration, span: Duration) -> Vec<usize> {
    let sim = Simulation::new();
    let clock: Arc<dyn Clock> = sim.clock_arc();
    let instances: Vec<Arc<dyn LockBackend>> = MemoryBackend::cluster(3, &clock);
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let managers: Vec<LockManager> = (0..2u64)
        .map(|m| {
            LockManager::builder(Arc::clone(&clock))
                .instances(instances.iter().cloned())
                .random(Arc::new(SeededRandom::new(seed * 10 + m)))
                .fair(DEFAULT_FAIR_GRACE)
                .build()
                .expect("config")
        })
        .collect();
    for (m, tasks) in [(0usize, 2), (1, 1)] {
        for _ in 0..tasks {
            let manager = managers[m].clone();
            let (clock, log, stop) = (Arc::clone(&clock), Arc::clone(&log), Arc::clone(&stop));
            sim.spawn(async move {
                let options = LockOptions::new(TTL).patience(Patience::UntilCancelled);
                while !stop.load(Ordering::SeqCst) {
                    match manager.lock_opts("shared", options).await {
                        Ok(lock) => {
                            clock.sleep(hold).await;
                            log.lock().unwrap().push(m);
                            lock.release().await.expect("release");
                        }
                        Err(Error::Closed) => return,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
            .detach();
        }
    }
    let c = Arc::clone(&clock);
    let stop_at = Arc::clone(&stop);
    sim.run(async move {
        c.sleep(span).await;
        stop_at.store(true, Ordering::SeqCst);
        c.sleep(Duration::from_secs(1)).await;
    });
    let log = log.lock().unwrap().clone();
    log
}

fn shares(log: &[usize]) -> (usize, usize, usize) {
    let one = log.iter().filter(|&&m| m == 1).count();
    let mut longest = 0;
    let mut run = 0;
    for (i, m) in log.iter().enumerate() {
        run = if i > 0 && log[i - 1] == *m {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
    }
    (log.len(), one, longest)
}

#[test]
fn a_manager_with_two_tasks_does_not_starve_a_rival_in_fair_mode() {
    for seed in 1..=5 {
        for hold in [ms(10), ms(30)] {
            let log = two_managers(seed, hold, Duration::from_secs(4));
            let (total, rival, longest) = shares(&log);
            println!(
                "seed {seed}, hold {hold:?}: rival {rival} of {total}, longest streak {longest}"
            );
            assert!(
                total >= 40,
                "seed {seed}, hold {hold:?}: only {total} critical sections"
            );
            // Fair mode alternates between managers: the rival, one manager among two, gets
            // close to half (its one task is as eager as the other manager's two).
            assert!(
                rival * 10 >= total * 4,
                "seed {seed}, hold {hold:?}: rival {rival} of {total}"
            );
            assert!(longest <= 2, "seed {seed}, hold {hold:?}: streak {longest}");
        }
    }
}
