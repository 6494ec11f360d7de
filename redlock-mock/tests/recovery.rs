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
