//! The checker is proven when it catches the bug put back on purpose: the scoped form without
//! its deadline guard. A unit test, because that manager must not be reachable from outside.

use super::{sweep_guarded, Guard, Stall};
use crate::sweep::seeds_from_env;

fn single_seed() -> bool {
    std::env::var_os("REDLOCK_SIM_SEED").is_some()
}

/// With the guard off, a substantial share of the seeds of at least one family poll the job past
/// its deadline, and of at least one family after the rival's grant.
#[test]
fn checker_catches_the_job_polled_past_its_deadline() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let seeds = seeds_from_env(0..100);
    let (mut past_deadline, mut after_grant) = (0.0f64, 0.0f64);
    for stall in Stall::ALL {
        let summary = sweep_guarded(stall, Guard::Off, seeds.clone(), threads, |r| {
            !r.polls.is_clean()
        });
        eprintln!("{stall:?} family, guard off: {summary}");
        if let Some(caught) = summary.kept.first() {
            eprintln!("{caught}");
            assert!(caught
                .to_string()
                .contains(&format!("REDLOCK_SIM_SEED={}", caught.seed)));
            assert!(
                caught.reproduce().contains("--lib"),
                "{}",
                caught.reproduce()
            );
        }
        let share = |n: u64| n as f64 / summary.seeds as f64;
        past_deadline = past_deadline.max(share(summary.seeds_past_deadline));
        after_grant = after_grant.max(share(summary.seeds_after_rival_grant));
    }
    let (floor_deadline, floor_grant) = if single_seed() {
        (1.0, 0.0)
    } else {
        (0.5, 0.2)
    };
    assert!(
        past_deadline >= floor_deadline,
        "with the guard off, at most {:.0} % of the seeds of any family polled past the deadline",
        past_deadline * 100.0
    );
    assert!(
        after_grant >= floor_grant,
        "with the guard off, at most {:.0} % of the seeds of any family polled after a rival's \
         grant",
        after_grant * 100.0
    );
}
