//! Real `redis-server` processes (N = 3 and N = 5), both tokio runtime flavours. (a) and (b):
//! two tasks on one resource, each holding the lock 20 ms and asking again, each with a manager
//! of its own, as two processes would. (c): eight workers on one resource with a 1 ms hold, next
//! to a raw-fred floor and the peer rslock.
//!
//! ```text
//! cargo bench --bench handoff                        # full run
//! REDLOCK_BENCH_QUICK=1 cargo bench --bench handoff  # smoke run
//! ```
//!
//! (a) Wake gap: from the holder's `release()` returning to the waiter's `lock()` returning.
//! The releaser asks again only once the waiter has the lock, so every handoff is uncontested
//! and the gap is the time the waiter needs to learn of the release and take the lock. Measured
//! with wake-on-release on (the default) and off (jittered 100–300 ms polling, what other Redlock
//! clients do). The floor is one raw `SET NX PX` round to all N: a waiter cannot take a lock in
//! less, however it learns of the release.
//!
//! (b) Fairness: both tasks ask again right after releasing. Share of critical sections per
//! task, longest streak of one task, and throughput, for polling, wake-on-release (unfair) and
//! fair mode.
//!
//! (c) Contention (`contend`): see `handoff/contend.rs`. Critical sections per second, client
//! CPU per critical section, give-ups, the smallest worker's share of the mean, and the 1 ms hold
//! as measured inside the critical section. `REDLOCK_CONTEND_HOLD=thread` makes the hold a 1 ms
//! `std::thread::sleep` on a blocking thread instead of a tokio sleep (see `contend::Hold`).
//!
//! `REDLOCK_BENCH_ONLY` names the parts to run (`wake-gap`, `fairness`, `contend`) and, for
//! `contend`, the subjects (`floor`, `rslock`, `redlock`), e.g.
//! `REDLOCK_BENCH_ONLY=contend,redlock`; with `REDLOCK_BENCH_N`, `REDLOCK_BENCH_FLAVOUR`,
//! `REDLOCK_BENCH_ROUNDS` and `REDLOCK_BENCH_SECTIONS` (a cap on the critical sections of a round)
//! it pins a run to a fixed amount of work for a profile.

mod common;
#[path = "handoff/contend.rs"]
mod contend;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    env_count, floor_token, header, instance_counts, ms, ports, quantile, quick, selected,
    start_servers, url, Flavour, Floor, TTL,
};
use redlock_lease::{Error, Lock, LockManager};

const HOLD: Duration = Duration::from_millis(20);

fn manager(ports: &[u16], wake: bool, fair: bool) -> LockManager {
    let mut builder = redlock_lease::fred::manager(ports.iter().map(|&p| url(p)))
        // The bench counts handoffs, not give-ups: a waiter keeps waiting however long it takes.
        .retry_count(1_000)
        .wake_on_release(wake);
    if fair {
        builder = builder.fair(redlock_lease::DEFAULT_FAIR_GRACE);
    }
    builder.build().expect("valid configuration")
}

/// Lock or unlock calls that failed other than by contention (a round out of time on a loaded
/// machine, say): counted and printed, not fatal, and the call is made again.
static FAILURES: AtomicU64 = AtomicU64::new(0);

async fn lock(manager: &LockManager, resource: &str) -> Lock {
    loop {
        match manager.lock(resource, TTL).await {
            Ok(lock) => return lock,
            Err(Error::Contended(_)) => {}
            Err(Error::Closed | Error::InvalidInput(_)) => panic!("lock {resource}: unusable"),
            Err(_) => {
                FAILURES.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn unlock(lock: Lock) {
    if lock.release().await.is_err() {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}

/// One acquisition: when its `lock()` returned, and when its `release()` was called and returned.
#[derive(Clone, Copy)]
struct Handoff {
    acquired: Instant,
    release: Option<(Instant, Instant)>,
}

struct Gaps {
    /// From the holder's `release()` returning to the waiter's `lock()` returning.
    gaps: Vec<Duration>,
    /// From the holder calling `release()` to the waiter's `lock()` returning: the release round
    /// and the wake-up together, never negative.
    from_call: Vec<Duration>,
    /// Handoffs where the waiter had the lock before the release call returned (it waits for
    /// every instance, the waiter only for a quorum): counted as a zero gap.
    early: usize,
}

/// (a): alternating, uncontested handoffs until `max` acquisitions or `budget` has passed.
async fn wake_gaps(
    ports: &[u16],
    resource: &str,
    wake: bool,
    max: usize,
    budget: Duration,
) -> Gaps {
    let times: Arc<Mutex<Vec<Handoff>>> = Arc::default();
    let turns = Arc::new(tokio::sync::watch::channel(0usize).0);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..2usize)
        .map(|me| {
            let manager = manager(ports, wake, false);
            let times = Arc::clone(&times);
            let turns = Arc::clone(&turns);
            let stop = Arc::clone(&stop);
            let resource = resource.to_owned();
            tokio::spawn(async move {
                let mut rx = turns.subscribe();
                // Task 1 first asks once task 0 holds the lock, so it starts as a waiter.
                let mut ask_after = me;
                loop {
                    let stopping = rx
                        .wait_for(|acquired| *acquired >= ask_after || stop.load(Ordering::SeqCst))
                        .await
                        .map(|_| stop.load(Ordering::SeqCst))
                        .unwrap_or(true);
                    if stopping {
                        break;
                    }
                    let held = lock(&manager, &resource).await;
                    let index = {
                        let mut times = times.lock().unwrap();
                        times.push(Handoff {
                            acquired: Instant::now(),
                            release: None,
                        });
                        times.len() - 1
                    };
                    turns.send_modify(|acquired| *acquired += 1);
                    tokio::time::sleep(HOLD).await;
                    let called = Instant::now();
                    unlock(held).await;
                    times.lock().unwrap()[index].release = Some((called, Instant::now()));
                    if index + 1 >= max || start.elapsed() >= budget {
                        stop.store(true, Ordering::SeqCst);
                        turns.send_modify(|_| {});
                        break;
                    }
                    // Ask again only once the other task has the lock: it then waits uncontested.
                    ask_after = index + 2;
                }
                drop(manager.close().await);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("handoff task");
    }
    let times = times.lock().unwrap();
    let mut out = Gaps {
        gaps: Vec::new(),
        from_call: Vec::new(),
        early: 0,
    };
    // The first handoffs also pay for connecting and subscribing.
    for pair in times.windows(2).skip(2) {
        let Some((called, released)) = pair[0].release else {
            continue;
        };
        let acquired = pair[1].acquired;
        if acquired < released {
            out.early += 1;
        }
        out.gaps.push(acquired.saturating_duration_since(released));
        out.from_call
            .push(acquired.saturating_duration_since(called));
    }
    out
}

struct Fairness {
    counts: [u64; 2],
    streak: u64,
    per_sec: f64,
}

/// (b): both tasks ask again right after releasing, for `span`.
async fn fairness(
    ports: &[u16],
    resource: &str,
    wake: bool,
    fair: bool,
    span: Duration,
) -> Fairness {
    let log: Arc<Mutex<Vec<usize>>> = Arc::default();
    let start = Instant::now();
    let tasks: Vec<_> = (0..2usize)
        .map(|me| {
            let manager = manager(ports, wake, fair);
            let log = Arc::clone(&log);
            let resource = resource.to_owned();
            tokio::spawn(async move {
                while start.elapsed() < span {
                    let held = lock(&manager, &resource).await;
                    tokio::time::sleep(HOLD).await;
                    log.lock().unwrap().push(me);
                    unlock(held).await;
                }
                drop(manager.close().await);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("fairness task");
    }
    let elapsed = start.elapsed();
    let log = log.lock().unwrap();
    let mut counts = [0u64; 2];
    let (mut streak, mut run, mut last) = (0u64, 0u64, usize::MAX);
    for &task in log.iter() {
        counts[task] += 1;
        run = if task == last { run + 1 } else { 1 };
        last = task;
        streak = streak.max(run);
    }
    Fairness {
        counts,
        streak,
        per_sec: log.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// p50 of one raw `SET NX PX` round to all N: the least any waiter needs once it knows.
async fn floor_round(ports: &[u16], tag: &str, samples: u64) -> Duration {
    let floor = Floor::connect(ports).await;
    let mut times = Vec::new();
    for i in 0..samples {
        let key = format!("{tag}:floor:{i}");
        let token = floor_token(0, i);
        let start = Instant::now();
        floor.acquire(&key, &token, TTL).await;
        times.push(start.elapsed());
        floor.release(&key, &token).await;
    }
    floor.quit().await;
    quantile(&times, 0.5)
}

struct Plan {
    gap_max: usize,
    gap_budget: Duration,
    span: Duration,
    floor_samples: u64,
    contend: contend::Plan,
}

fn main() {
    let quick = quick();
    let plan = if quick {
        Plan {
            gap_max: 8,
            gap_budget: Duration::from_secs(3),
            span: Duration::from_millis(400),
            floor_samples: 20,
            contend: contend::Plan {
                rounds: 1,
                span: Duration::from_millis(150),
                max_sections: 0,
                hold: contend::Hold::Timer,
            },
        }
    } else {
        Plan {
            gap_max: 400,
            gap_budget: Duration::from_secs(10),
            span: Duration::from_secs(5),
            floor_samples: 1000,
            contend: contend::Plan {
                rounds: 3,
                span: Duration::from_secs(2),
                max_sections: 0,
                hold: contend::Hold::Timer,
            },
        }
    };
    let contend_plan = contend::Plan {
        rounds: env_count("REDLOCK_BENCH_ROUNDS", plan.contend.rounds as u64) as usize,
        span: Duration::from_millis(env_count(
            "REDLOCK_BENCH_CONTEND_MS",
            plan.contend.span.as_millis() as u64,
        )),
        max_sections: env_count("REDLOCK_BENCH_SECTIONS", 0),
        hold: contend::Hold::from_env(plan.contend.hold),
    };
    let contend_subjects = contend::SUBJECTS.map(selected);
    header(
        "handoff bench: two tasks on one resource, each holding it 20 ms (a, b); eight workers on \
         one resource, each holding it 1 ms (c); real redis-server processes",
        quick,
    );
    let mut gap_rows = Vec::new();
    let mut fair_rows = Vec::new();
    let mut contend_rows = Vec::new();
    for n in instance_counts(&[3, 5]) {
        let servers = start_servers(n);
        let ports = ports(&servers);
        for flavour in Flavour::selected() {
            let runtime = flavour.runtime();
            let tag = format!("{n}:{}", flavour.name());
            runtime.block_on(async {
                if selected("wake-gap") {
                    let floor = floor_round(&ports, &tag, plan.floor_samples).await;
                    for (mode, wake) in [("wake-on-release", true), ("polling 100-300 ms", false)] {
                        let resource = format!("{tag}:gap:{mode}");
                        let gaps =
                            wake_gaps(&ports, &resource, wake, plan.gap_max, plan.gap_budget).await;
                        gap_rows.push((n, flavour, mode, gaps, floor));
                    }
                }
                if selected("fairness") {
                    for (mode, wake, fair) in [
                        ("polling", false, false),
                        ("wake, unfair", true, false),
                        ("wake, fair", true, true),
                    ] {
                        let resource = format!("{tag}:fair:{mode}");
                        let f = fairness(&ports, &resource, wake, fair, plan.span).await;
                        fair_rows.push((n, flavour, mode, f));
                    }
                }
                if selected("contend") && contend_subjects.contains(&true) {
                    let rounds =
                        contend::measure(&ports, &tag, contend_plan, &contend_subjects).await;
                    contend_rows.push((n, flavour, rounds));
                }
            });
        }
    }

    if !gap_rows.is_empty() {
        println!();
        println!(
            "(a) wake gap: release() returned -> the waiting task's lock() returned, uncontested; \
         floor = p50 of one raw SET NX round to all N"
        );
        println!(
            "{:>2} {:<15} {:<19} {:>7} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9}",
            "N",
            "runtime",
            "mode",
            "samples",
            "p50 ms",
            "p99 ms",
            "max ms",
            "early",
            "call p50",
            "call p99",
            "floor ms"
        );
        for (n, flavour, mode, g, floor) in &gap_rows {
            println!(
            "{n:>2} {:<15} {mode:<19} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>9.2} {:>9.2} {:>9.3}",
            flavour.name(),
            g.gaps.len(),
            ms(quantile(&g.gaps, 0.5)),
            ms(quantile(&g.gaps, 0.99)),
            ms(quantile(&g.gaps, 1.0)),
            g.early,
            ms(quantile(&g.from_call, 0.5)),
            ms(quantile(&g.from_call, 0.99)),
            ms(*floor),
        );
        }
        println!("targets: wake-on-release p50 <= 2 ms, p99 <= 10 ms");
        println!(
        "early = the waiter had the lock before release() returned (it waits for every instance, \
         the waiter for a quorum), counted as 0; call p50/p99 = the same gap measured from the \
         release() call instead, which includes the release round itself"
    );
    }
    if !fair_rows.is_empty() {
        println!();
        println!(
            "(b) fairness: both tasks ask again right after releasing, {:?} per row",
            plan.span
        );
        println!(
            "{:>2} {:<15} {:<13} {:>9} {:>8} {:>8} {:>7} {:>13}",
            "N", "runtime", "mode", "sections", "task 0", "task 1", "streak", "sections/s"
        );
        for (n, flavour, mode, f) in &fair_rows {
            let total = (f.counts[0] + f.counts[1]).max(1) as f64;
            let unfair = fair_rows
                .iter()
                .find(|(n2, fl2, m2, _)| n2 == n && fl2 == flavour && *m2 == "wake, unfair")
                .map(|r| r.3.per_sec)
                .unwrap_or(f64::NAN);
            let ratio = if *mode == "wake, fair" {
                format!(" ({:.2}x unfair)", f.per_sec / unfair)
            } else {
                String::new()
            };
            println!(
                "{n:>2} {:<15} {mode:<13} {:>9} {:>7.1}% {:>7.1}% {:>7} {:>13.1}{ratio}",
                flavour.name(),
                f.counts[0] + f.counts[1],
                f.counts[0] as f64 / total * 100.0,
                f.counts[1] as f64 / total * 100.0,
                f.streak,
                f.per_sec,
            );
        }
    }
    if !contend_rows.is_empty() {
        println!();
        println!(
            "(c) contend: {} workers on one resource, each holding it {:?} and asking again at \
             once, each with a client of its own; {} rounds of {:?}{} per subject, alternated; \
             sections/s and CPU (user + sys, whole process) per critical section = median of \
             rounds; give-ups = lock() calls that returned \"held by another\" and were made \
             again; min share = the smallest worker's sections / the mean, pooled over rounds; \
             hold = the {:?} wait measured inside the critical section, {}; gap = from the \
             end of one hold to the start of the next, the client's own hand-over time",
            contend::WORKERS,
            contend::HOLD,
            contend_plan.rounds,
            contend_plan.span,
            if contend_plan.max_sections > 0 {
                format!(" or {} sections", contend_plan.max_sections)
            } else {
                String::new()
            },
            contend::HOLD,
            contend_plan.hold.describe(),
        );
        println!(
            "floor = raw fred SET NX to all N, on refusal compare-and-delete to all N and a retry \
             after a uniform 0-2 ms delay; rslock = rslock (redis-rs) defaults: 3 attempts, 0-200 \
             ms between; redlock = defaults, wake-on-release on"
        );
        contend::print_header();
        for (n, flavour, rounds) in &contend_rows {
            contend::print_rows(*n, *flavour, rounds);
        }
        println!(
            "targets (issue 12): redlock sections/s at least 1.00x rslock with 0 give-ups, CPU per \
             section at most 1.50x rslock, min share at least 80%; overlaps must be 0"
        );
    }
    let failures = FAILURES.load(Ordering::Relaxed);
    if failures > 0 {
        println!(
            "lock or unlock calls that failed (and were retried or left to expire): {failures}"
        );
    }
    println!(
        "targets: fair mode gives each task >= 40% of the sections at >= 0.90x the unfair \
         throughput (a task holding 20 ms back to back caps throughput near 50/s)"
    );
}
