//! The stampede row: many tasks call `try_lock` on one key at the same instant.

use std::sync::Arc;
use std::time::Duration;

use redlock_lease::{Error, LockManager};
use tokio::sync::Barrier;

use crate::common::{url, Flavour};
use crate::row::LEASE;
use crate::stats::{Leftovers, Servers};

pub struct TryLock {
    pub tasks: usize,
    pub managers: usize,
    pub won: usize,
    pub contended: usize,
    pub other: usize,
    /// The longest call that got `Contended`.
    pub slowest_refusal: Duration,
    pub left: Leftovers,
}

/// `tasks` tasks spread over `managers` managers (as many processes would be) call `try_lock`
/// on one key once each, released by a barrier; the winner holds until every call returned.
pub fn run(tasks: usize, managers: usize, ports: &[u16], tag: &str) -> TryLock {
    let manager_count = managers;
    let mut servers = Servers::connect(ports);
    let runtime = Flavour::MultiThread.runtime();
    runtime.block_on(async {
        let managers: Vec<LockManager> = (0..managers)
            .map(|_| {
                redlock_lease::fred::manager(ports.iter().map(|&p| url(p)))
                    .build()
                    .expect("valid configuration")
            })
            .collect();
        for m in &managers {
            let warm = m.lock(format!("{tag}:warm"), LEASE).await.expect("warm-up");
            warm.release().await.expect("warm-up release");
        }
        let key = format!("{tag}:hot");
        let barrier = Arc::new(Barrier::new(tasks));
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (manager, key, barrier) = (
                    managers[t % managers.len()].clone(),
                    key.clone(),
                    Arc::clone(&barrier),
                );
                tokio::spawn(async move {
                    barrier.wait().await;
                    let asked = std::time::Instant::now();
                    let got = manager.try_lock(&key, Duration::from_secs(30)).await;
                    (got, asked.elapsed())
                })
            })
            .collect();
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.expect("task"));
        }
        let (mut won, mut contended, mut other) = (0, 0, 0);
        let mut slowest_refusal = Duration::ZERO;
        let mut winners = Vec::new();
        for (got, took) in results {
            match got {
                Ok(lock) => {
                    won += 1;
                    winners.push(lock);
                }
                Err(Error::Contended(_)) => {
                    contended += 1;
                    slowest_refusal = slowest_refusal.max(took);
                }
                Err(_) => other += 1,
            }
        }
        for lock in winners {
            lock.release().await.expect("release");
        }
        let left = tokio::task::block_in_place(|| {
            servers.leftovers(Duration::from_millis(500), Duration::from_secs(6))
        });
        for m in managers {
            drop(m.close().await);
        }
        TryLock {
            tasks,
            managers: manager_count,
            won,
            contended,
            other,
            slowest_refusal,
            left,
        }
    })
}
