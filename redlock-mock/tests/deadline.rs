//! The scoped form's promise under stalled renewals: the job of `with_lock` is never polled at
//! or after its deadline, nor after a rival's grant (see `redlock_mock::deadline`). The proof
//! that the checker catches a job polled past its deadline (the guard turned off) is a unit test
//! of the `deadline` module.
//!
//! `REDLOCK_SIM_SEEDS=start..end` (or `REDLOCK_SIM_SEED=n`) sweeps any range instead of the
//! default, for long runs:
//! `REDLOCK_SIM_SEEDS=0..100000 cargo test --release -p redlock-mock --test deadline`.

use std::time::Duration;

use redlock_core::{AutoExtend, Error, OnLoss};
use redlock_mock::check::ViolationKind;
use redlock_mock::deadline::{run_seed, sweep, Stall, StallRun, StallSummary};
use redlock_mock::sweep::seeds_from_env;
use redlock_mock::{Latency, PollLog, World};

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn single_seed() -> bool {
    std::env::var_os("REDLOCK_SIM_SEED").is_some()
}

fn fail(runs: &[StallRun]) -> ! {
    if single_seed() {
        eprintln!("{}", runs[0].history.render());
    }
    for run in runs.iter().take(5) {
        eprintln!("{run}");
    }
    panic!(
        "{} seed(s) broke the promise; first: {}",
        runs.len(),
        runs[0].reproduce()
    );
}

fn report(stall: Stall, summary: &StallSummary) {
    eprintln!("{stall:?} family: {summary}");
}

/// The guarded family: every seed clean.
fn keeps_the_promise(stall: Stall) {
    let seeds = seeds_from_env(0..1_000);
    let summary = sweep(stall, seeds.clone(), threads(), |r| !r.is_clean());
    report(stall, &summary);
    if !summary.kept.is_empty() {
        fail(&summary.kept);
    }
    assert_eq!(summary.seeds, seeds.end - seeds.start);
    if !single_seed() {
        // A family whose stalls never cost the lock would pass without testing anything.
        assert!(
            summary.completed < summary.seeds / 2,
            "most jobs ran to their end: the renewals did not stall"
        );
    }
}

#[test]
fn partition_never_polls_the_job_past_its_deadline() {
    keeps_the_promise(Stall::Partition);
}

#[test]
fn hang_never_polls_the_job_past_its_deadline() {
    keeps_the_promise(Stall::Hang);
}

#[test]
fn slow_links_never_poll_the_job_past_its_deadline() {
    keeps_the_promise(Stall::SlowLinks);
}

#[test]
fn fast_clocks_never_poll_the_job_past_its_deadline() {
    keeps_the_promise(Stall::FastClocks);
}

#[test]
fn same_seed_same_run() {
    for seed in seeds_from_env(0..20) {
        for stall in Stall::ALL {
            let a = run_seed(stall, seed);
            let b = run_seed(stall, seed);
            assert_eq!(a.history.render(), b.history.render(), "{}", a.reproduce());
            assert_eq!(a.polls, b.polls, "{}", a.reproduce());
            assert_eq!(a.writes, b.writes, "{}", a.reproduce());
        }
    }
}

/// Client 0 runs a job under the scoped form, isolated from every instance a little after it
/// starts; client 1 polls for the lock. `on_loss` decides whether the job is stopped.
fn isolated_holder(on_loss: OnLoss) -> (Result<u64, Error>, redlock_mock::PollReport) {
    let world = World::builder()
        .seed(3)
        .instances(3)
        .clients(2)
        .latency(Latency::Fixed(ms(1)))
        .configure(|b| b.instance_timeout(ms(20)).retry_count(1))
        .build()
        .expect("valid world");
    let log = PollLog::new(&world, 0);
    let ttl = ms(500);
    let (w, job_log) = (world.clone(), log.clone());
    let holder = world.spawn_client(0, async move {
        let options = AutoExtend::default().with_lease(ttl).with_on_loss(on_loss);
        let job_world = w.clone();
        let nemesis = w.clone();
        w.client(0)
            .with_lock_opts("job", options, |watch| {
                w.spawn(async move {
                    nemesis.sleep(ms(50)).await;
                    nemesis.isolate(0);
                })
                .detach();
                job_log.wrap(watch, async move {
                    let mut writes = 0;
                    for _ in 0..600 {
                        job_world.sleep(ms(2)).await;
                        writes += 1;
                    }
                    writes
                })
            })
            .await
    });
    let w = world.clone();
    let rival = world.spawn_client(1, async move {
        let traced = w.traced(1);
        loop {
            if let Ok(lock) = traced.lock("job", ttl).await {
                let _ = lock.release().await;
                return;
            }
            w.sleep(ms(3)).await;
        }
    });
    let (result, ()) = world.run(futures::future::join(holder, rival));
    (result, log.check())
}

/// `OnLoss::KeepRunning` lets the job run past the deadline on purpose: the checker, which
/// holds the job to `OnLoss::Cancel`'s promise, must report both kinds of violation.
#[test]
fn checker_reports_a_job_kept_running_past_its_deadline() {
    let (result, report) = isolated_holder(OnLoss::KeepRunning);
    assert_eq!(result.ok(), Some(600));
    let kinds: Vec<ViolationKind> = report.violations.iter().map(|v| v.kind).collect();
    assert_eq!(
        kinds,
        [
            ViolationKind::PolledPastDeadline,
            ViolationKind::PolledAfterRivalGrant
        ],
        "{report}"
    );
    // 600 writes of 2 ms each outlast the 500 ms lease by far.
    assert!(report.past_deadline > 100, "{report}");
    assert!(report.after_rival_grant > 0, "{report}");
}

/// The same job with `OnLoss::Cancel`: stopped with `Error::Lost`, never polled past its
/// deadline.
#[test]
fn an_isolated_holder_is_stopped_by_its_deadline() {
    let (result, report) = isolated_holder(OnLoss::Cancel);
    assert!(matches!(result, Err(Error::Lost(_))), "{result:?}");
    assert!(report.polls > 100, "{report}");
    assert!(report.is_clean(), "{report}");
}
