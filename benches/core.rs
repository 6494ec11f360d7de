//! The algorithm alone, on in-memory instances: nanoseconds and heap allocations per
//! lock + unlock cycle, next to a floor that calls the same instances directly (one acquire and
//! one release per instance, no quorum logic, no timers, no handle) in the same process.
//!
//! ```text
//! cargo bench --bench core            # N = 3 and N = 5, 200 000 cycles each
//! ```

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only delegates to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use redlock_lease::mock::{MemoryBackend, VirtualClock};
use redlock_lease::{Clock, LockManager};

/// Counts allocations so the bench can report them per cycle.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards its arguments unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CYCLES: u64 = 20_000;
const TTL: Duration = Duration::from_secs(10);

struct Measure {
    ns_per_cycle: f64,
    allocs_per_cycle: f64,
}

fn measure(mut cycle: impl FnMut()) -> Measure {
    for _ in 0..CYCLES / 10 {
        cycle();
    }
    let allocs = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..CYCLES {
        cycle();
    }
    let elapsed = start.elapsed();
    Measure {
        ns_per_cycle: elapsed.as_nanos() as f64 / CYCLES as f64,
        allocs_per_cycle: (ALLOCATIONS.load(Ordering::Relaxed) - allocs) as f64 / CYCLES as f64,
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries with no `--bench` flag: keep that quick.
    let smoke = !std::env::args().any(|a| a == "--bench");
    println!("core bench: lock + unlock cycles on in-memory instances ({CYCLES} cycles)");
    println!(
        "{:>3} {:>14} {:>14} {:>14} {:>14} {:>8}",
        "N", "floor ns", "redlock ns", "floor allocs", "redlock allocs", "ratio"
    );
    for n in [3usize, 5] {
        let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new());
        let backends = MemoryBackend::cluster(n, &clock);
        let manager = LockManager::builder(Arc::clone(&clock))
            .instances(backends.iter().cloned())
            .build()
            .expect("valid configuration");
        if smoke {
            block_on(async {
                let lock = manager.lock("bench", TTL).await.expect("free lock");
                lock.release().await.expect("held lock");
            });
            println!("{n:>3} smoke run ok (pass --bench for figures)");
            continue;
        }
        let floor = measure(|| {
            block_on(async {
                for b in &backends {
                    black_box(
                        b.acquire(b"bench", b"0123456789abcdef0123456789abcdef", TTL)
                            .await,
                    )
                    .expect("in-memory acquire");
                }
                for b in &backends {
                    black_box(
                        b.release(b"bench", b"0123456789abcdef0123456789abcdef")
                            .await,
                    )
                    .expect("in-memory release");
                }
            })
        });
        let redlock = measure(|| {
            block_on(async {
                let lock = manager.lock("bench", TTL).await.expect("free lock");
                lock.release().await.expect("held lock");
            })
        });
        println!(
            "{n:>3} {:>14.0} {:>14.0} {:>14.1} {:>14.1} {:>7.2}x",
            floor.ns_per_cycle,
            redlock.ns_per_cycle,
            floor.allocs_per_cycle,
            redlock.allocs_per_cycle,
            redlock.ns_per_cycle / floor.ns_per_cycle
        );
    }
}
