//! Simulation speed: simulated lock operations and seeds per wall-clock second for the standard,
//! fair, contention and queue sweeps.
//!
//! ```text
//! cargo bench -p redlock-mock --bench sim                       # seeds 0..2000
//! REDLOCK_SIM_SEEDS=0..20000 cargo bench -p redlock-mock --bench sim
//! ```

use std::time::Instant;

use redlock_mock::sweep::{seeds_from_env, sweep, Family};

fn main() {
    // `cargo bench` passes `--bench`; plain `cargo test --benches` passes nothing and expects a
    // quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let seeds = seeds_from_env(if quick { 0..50 } else { 0..2_000 });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (family, label) in [
        (Family::Standard, "standard"),
        (Family::Fair, "fair"),
        (Family::Contention, "contention"),
        (Family::Queue, "queue"),
    ] {
        for threads in [1, cores] {
            let start = Instant::now();
            let summary = sweep(family, seeds.clone(), threads, |r| !r.report.is_clean());
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{label:>10} sweep, {threads} thread(s): {} seeds in {secs:.2} s = {:.0} seeds/s, \
                 {:.0} simulated lock ops/s, {:.0} messages/s ({} violations)",
                summary.seeds,
                summary.seeds as f64 / secs,
                summary.ops as f64 / secs,
                summary.messages as f64 / secs,
                summary.kept.len()
            );
        }
    }
}
