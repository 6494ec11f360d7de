//! The seeded sweeps: the standard and fair families keep every invariant, with release
//! announcements travelling over the faulty links; the adversarial family proves the checkers
//! can fail (so do the reintroduced bugs of the `sweep` module's unit tests).
//!
//! `REDLOCK_SIM_SEEDS=start..end` (or `REDLOCK_SIM_SEED=n`) sweeps any range instead of the
//! default, for long runs:
//! `REDLOCK_SIM_SEEDS=0..1000000 cargo test --release -p redlock-mock --test sweep`.

use redlock_mock::sweep::{
    reproduce, run_seed, seeds_from_env, sweep, Family, SeedRun, SweepSummary,
};

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn fail(runs: &[SeedRun]) -> ! {
    if std::env::var_os("REDLOCK_SIM_SEED").is_some() {
        eprintln!("{}", runs[0].history.render());
    }
    for run in runs.iter().take(5) {
        eprintln!("{run}");
    }
    panic!(
        "{} seed(s) broke an invariant; first: {}",
        runs.len(),
        runs[0].reproduce()
    );
}

fn print(label: &str, summary: &SweepSummary) {
    let n = summary.notify;
    eprintln!(
        "{label} family: {} seeds, {} lock operations, {} messages; {} subscriptions, {} \
         releases heard ({} by fair clients), {} announcements delivered, {} subscriptions \
         ended by a crash",
        summary.seeds,
        summary.ops,
        summary.messages,
        n.subscriptions,
        n.heard,
        summary.fair_heard,
        n.announcements,
        n.ended
    );
}

/// Whether a sweep over the default range went through the announcement paths at all: a sweep
/// that never did would keep its invariants without testing them. A single replayed seed need
/// not.
fn default_range() -> bool {
    std::env::var_os("REDLOCK_SIM_SEED").is_none()
        && std::env::var_os("REDLOCK_SIM_SEEDS").is_none()
}

#[test]
fn standard_family_keeps_every_invariant() {
    let seeds = seeds_from_env(0..2_000);
    let summary = sweep(Family::Standard, seeds.clone(), threads(), |r| {
        !r.report.is_clean()
    });
    print("standard", &summary);
    if !summary.kept.is_empty() {
        fail(&summary.kept);
    }
    assert_eq!(summary.seeds, seeds.end - seeds.start);
    if default_range() {
        let n = summary.notify;
        assert!(
            n.subscriptions > 0 && n.heard > 0 && n.announcements > 0,
            "{n:?}"
        );
        assert!(n.ended > 0, "no crash met a live subscription: {n:?}");
    }
}

#[test]
fn fair_family_keeps_every_invariant() {
    let seeds = seeds_from_env(0..600);
    let summary = sweep(Family::Fair, seeds.clone(), threads(), |r| {
        !r.report.is_clean()
    });
    print("fair", &summary);
    if !summary.kept.is_empty() {
        fail(&summary.kept);
    }
    assert_eq!(summary.seeds, seeds.end - seeds.start);
    if default_range() {
        assert!(summary.fair_heard > 0, "no fair client ever yielded");
    }
}

#[test]
fn adversarial_family_is_caught() {
    let seeds = seeds_from_env(0..300);
    let summary = sweep(Family::Adversarial, seeds.clone(), threads(), |r| {
        r.report.overlaps.is_empty()
            || !r.report.every_overlap_reported()
            || r.report.beyond_overlaps().next().is_some()
    });
    eprintln!(
        "adversarial family: {} seeds, {} with overlaps",
        summary.seeds, summary.seeds_with_overlaps
    );
    if !summary.kept.is_empty() {
        fail(&summary.kept);
    }
    assert_eq!(summary.seeds_with_overlaps, seeds.end - seeds.start);
}

#[test]
fn contention_family_keeps_every_invariant() {
    let seeds = seeds_from_env(0..60);
    let summary = sweep(Family::Contention, seeds, threads(), |r| {
        !r.report.is_clean()
    });
    eprintln!(
        "contention family: {} seeds, {} lock operations",
        summary.seeds, summary.ops
    );
    if !summary.kept.is_empty() {
        fail(&summary.kept);
    }
}

#[test]
fn same_seed_same_history_byte_for_byte() {
    for seed in seeds_from_env(0..40) {
        for family in [Family::Standard, Family::Fair, Family::Adversarial] {
            let a = run_seed(family, seed).history.render();
            let b = run_seed(family, seed).history.render();
            assert_eq!(
                a,
                b,
                "seed {seed} ({family:?}) is not deterministic: {}",
                reproduce(seed, family)
            );
            assert!(!a.is_empty());
        }
    }
}
