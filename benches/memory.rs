//! Memory on real `redis-server` processes (N = 3, multi-thread runtime): resident memory and
//! live heap over 1 000 000 lock + unlock cycles (must stay flat), next to the raw-fred floor
//! doing the same, and the cost of each held lock with 100 000 locks held at once.
//!
//! ```text
//! cargo bench --bench memory                        # full run
//! REDLOCK_BENCH_QUICK=1 cargo bench --bench memory  # smoke run
//! ```
//!
//! Resident memory is `VmRSS` from `/proc/self/status`; live heap is what a counting global
//! allocator sees allocated and not yet freed (RSS also holds freed pages the allocator keeps).

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only delegates to `System`.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    backends, header, manager, manager_rs, ports, print_failures, quick, rslock, rss_kib,
    start_servers, warm_up, Failures, Flavour, Floor, Subject,
};
use redlock_lease::Lock;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards its arguments unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 3;
const TASKS: u64 = 64;
/// Long enough that no held lock expires while 100 000 are taken and measured.
const HOLD_TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
struct Sample {
    cycles: u64,
    rss_kib: u64,
    live: u64,
}

fn sample(cycles: u64) -> Sample {
    Sample {
        cycles,
        rss_kib: rss_kib(),
        live: LIVE_BYTES.load(Ordering::Relaxed),
    }
}

/// `total` cycles over `TASKS` tasks on distinct resources, sampling memory every `every`.
async fn soak(subject: &Arc<Subject>, tag: &str, total: u64, every: u64) -> Soak {
    let done = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(vec![sample(0)]));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    let per_task = total / TASKS;
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let subject = Arc::clone(subject);
            let done = Arc::clone(&done);
            let samples = Arc::clone(&samples);
            let failures = Arc::clone(&failures);
            let prefix = format!("{tag}:{t}");
            tokio::spawn(async move {
                for i in 0..per_task {
                    if let Err(e) = subject.cycle(&format!("{prefix}:{i}"), t, i).await {
                        failures.lock().unwrap().add(e);
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_multiple_of(every) {
                        samples.lock().unwrap().push(sample(n));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("soak task");
    }
    let elapsed = start.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let samples = Arc::try_unwrap(samples)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default();
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    Soak {
        failures,
        allocs_per_cycle: allocations as f64 / (per_task * TASKS) as f64,
        samples,
        elapsed,
    }
}

struct Soak {
    failures: Failures,
    samples: Vec<Sample>,
    elapsed: Duration,
    allocs_per_cycle: f64,
}

struct Held {
    locks: u64,
    rss_before: u64,
    rss_after: u64,
    live_before: u64,
    live_after: u64,
    allocations: u64,
}

/// Takes `count` locks at once (over `TASKS` tasks) and measures them while all are held.
async fn held_locks(manager: &redlock_lease::LockManager, tag: &str, count: u64) -> Held {
    let rss_before = rss_kib();
    let live_before = LIVE_BYTES.load(Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let per_task = count / TASKS + u64::from(t < count % TASKS);
            let manager = manager.clone();
            let prefix = format!("{tag}:{t}");
            tokio::spawn(async move {
                let mut held = Vec::with_capacity(per_task as usize);
                for i in 0..per_task {
                    let key = format!("{prefix}:{i}");
                    // A failure (a round out of time on a loaded machine) leaves one lock fewer;
                    // the count of locks actually held is what the figures are divided by.
                    if let Ok(lock) = manager.lock(&key, HOLD_TTL).await {
                        held.push(lock);
                    }
                }
                held
            })
        })
        .collect();
    let mut locks: Vec<Vec<Lock>> = Vec::new();
    for h in handles {
        locks.push(h.await.expect("holder task"));
    }
    let held = Held {
        locks: locks.iter().map(|batch| batch.len() as u64).sum(),
        rss_before,
        rss_after: rss_kib(),
        live_before,
        live_after: LIVE_BYTES.load(Ordering::Relaxed),
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations,
    };

    let releases: Vec<_> = locks
        .into_iter()
        .map(|batch| {
            tokio::spawn(async move {
                for lock in batch {
                    drop(lock.release().await);
                }
            })
        })
        .collect();
    for r in releases {
        r.await.expect("release task");
    }
    held
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_soak(name: &str, soak: &Soak) {
    let samples = &soak.samples;
    let cycles = samples.last().map_or(0, |s| s.cycles);
    // The first sample after warm-up is the baseline: buffers and maps reach their working size
    // in the first few thousand cycles.
    let first = samples.get(1).copied().unwrap_or(samples[0]);
    let last = *samples.last().expect("samples");
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_live = samples.iter().map(|s| s.live).max().unwrap_or(0);
    println!(
        "{name:<8} {cycles:>9} {:>8.0} {:>7.1} {:>9.1} {:>9.1} {:>9.1} {:>+9.1} {:>10.2} {:>10.2} {:>10.2}",
        cycles as f64 / soak.elapsed.as_secs_f64(),
        soak.allocs_per_cycle,
        mib(first.rss_kib),
        mib(last.rss_kib),
        mib(max_rss),
        mib(last.rss_kib) - mib(first.rss_kib),
        first.live as f64 / 1048576.0,
        last.live as f64 / 1048576.0,
        max_live as f64 / 1048576.0,
    );
}

fn main() {
    let quick = quick();
    let (cycles, every, held, census_cycles) = if quick {
        (2_048, 512, 1_024, 256)
    } else {
        (1_000_000, 50_000, 100_000, 32_000)
    };
    header(
        "memory bench: N = 3 real redis-server processes, multi-thread runtime, 64 tasks",
        quick,
    );
    let servers = start_servers(N);
    let ports = ports(&servers);
    let runtime = Flavour::MultiThread.runtime();
    let (census, floor_soak, redlock_soak, held) = runtime.block_on(async {
        let floor = Arc::new(Subject::Floor(Floor::connect(&ports).await));
        let redlock = Arc::new(Subject::Redlock(manager(&ports, true)));
        let Subject::Floor(raw) = &*floor else {
            unreachable!()
        };
        let subjects = [
            ("floor", Arc::clone(&floor)),
            ("floor-lua", Arc::new(Subject::FloorLua(raw.clone()))),
            ("backends", Arc::new(Subject::Backends(backends(&ports)))),
            ("redlock", Arc::clone(&redlock)),
            (
                "redlock-nowake",
                Arc::new(Subject::Redlock(manager(&ports, false))),
            ),
        ];
        let mut census = Vec::new();
        for (name, subject) in &subjects {
            warm_up(subject, &format!("warm:{name}"), 100).await;
            let run = soak(subject, &format!("census:{name}"), census_cycles, u64::MAX).await;
            census.push((*name, run));
        }
        let floor_soak = soak(&floor, "soak:floor", cycles, every).await;
        let redlock_soak = soak(&redlock, "soak:redlock", cycles, every).await;
        let Subject::Redlock(manager) = &*redlock else {
            unreachable!()
        };
        let held = held_locks(manager, "held", held).await;
        (census, floor_soak, redlock_soak, held)
    });
    drop(runtime);

    println!();
    println!(
        "heap allocations per lock + unlock cycle ({census_cycles} cycles over {TASKS} tasks; \
         floor-lua = the floor acquiring with the backend's script; backends = the fred \
         backends without the manager)"
    );
    for (name, run) in &census {
        println!("  {name:<15} {:>7.1}", run.allocs_per_cycle);
    }

    println!();
    println!(
        "soak: {cycles} lock + unlock cycles over {TASKS} tasks, sampled every {every}; first = \
         sample at {every} cycles"
    );
    println!(
        "{:<8} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "subject",
        "cycles",
        "cycles/s",
        "allocs",
        "RSS first",
        "RSS last",
        "RSS max",
        "last-1st",
        "heap first",
        "heap last",
        "heap max"
    );
    println!(
        "{:>34} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "/cycle", "(MiB)", "(MiB)", "(MiB)", "(MiB)", "(MiB)", "(MiB)", "(MiB)"
    );
    print_soak("floor", &floor_soak);
    print_soak("redlock", &redlock_soak);
    print_failures([
        ("floor".to_owned(), &floor_soak.failures),
        ("redlock".to_owned(), &redlock_soak.failures),
    ]);
    println!("RSS every {every} cycles, redlock (MiB):");
    let trail: Vec<String> = redlock_soak
        .samples
        .iter()
        .map(|s| format!("{:.1}", mib(s.rss_kib)))
        .collect();
    println!("  {}", trail.join(" "));
    println!("target: flat over the million cycles");

    println!();
    println!(
        "held: {} locks held at once (lease {HOLD_TTL:?})",
        held.locks
    );
    let rss = (held.rss_after.saturating_sub(held.rss_before)) as f64 * 1024.0 / held.locks as f64;
    let live = held.live_after.saturating_sub(held.live_before) as f64 / held.locks as f64;
    println!(
        "  RSS {:.1} -> {:.1} MiB: {rss:.0} bytes per held lock",
        mib(held.rss_before),
        mib(held.rss_after)
    );
    println!(
        "  live heap +{:.1} MiB: {live:.0} bytes per held lock ({:.1} allocations per lock \
         taken, including transient ones)",
        (held.live_after.saturating_sub(held.live_before)) as f64 / 1048576.0,
        held.allocations as f64 / held.locks as f64
    );
    future_sizes(&ports);
}

/// The size of what a caller awaits, moved with every `await` layer above it and kept in the
/// caller's task for the whole call (BENCHMARKS.md run 17: a wrapper that doubled it cost 5-10 %
/// of conc N = 3 on one thread).
fn future_sizes(ports: &[u16]) {
    fn returned<A, Fut, F: FnOnce(A) -> Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }
    let runtime = Flavour::CurrentThread.runtime();
    let _guard = runtime.enter();
    let fred = manager(ports, true);
    let redis_rs = manager_rs(ports, true);
    let peer = rslock(ports);
    println!();
    println!("futures (bytes; not polled, nothing is sent):");
    for (name, m) in [("redlock", &fred), ("redlock-rs", &redis_rs)] {
        println!(
            "  {name:<11} lock {:>5}  release {:>5}  extend {:>5}",
            std::mem::size_of_val(&m.lock("size", HOLD_TTL)),
            returned(|l: &Lock| l.release()),
            returned(|l: &Lock| l.extend()),
        );
    }
    println!(
        "  {:<11} lock {:>5}  unlock  {:>5}",
        "rslock",
        std::mem::size_of_val(&peer.lock(b"size", HOLD_TTL)),
        returned(|(p, l): (&rslock::LockManager, &rslock::Lock)| p.unlock(l)),
    );
}
