//! The lease deadline as a hard boundary, on virtual time: the scoped work is never polled after
//! its deadline (renewal stuck, or the whole process paused), `is_valid() == false` is final, and
//! renewals and loss reports keep to the lease's own deadline (rehydrated and high-drift locks).
//!
//! Each promise is checked by recording every poll of the work; each scenario also runs with the
//! testing-only `without_deadline_guard()` (the old scoped form) to show the check can fail.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{ms, Cluster};
use redlock_lease::{AutoExtend, Clock, Error, LockWatch, LossReason};

/// One poll of the work: when, and what its watch said.
#[derive(Debug, Clone, Copy)]
struct PollRecord {
    at: Duration,
    valid: bool,
}

/// Records every poll of the future it wraps, before polling it.
struct Recorded<F> {
    inner: Pin<Box<F>>,
    clock: Arc<dyn Clock>,
    watch: LockWatch,
    log: Arc<Mutex<Vec<PollRecord>>>,
}

impl<F: Future> Future for Recorded<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let record = PollRecord {
            at: self.clock.now(),
            valid: self.watch.is_valid(),
        };
        self.log.lock().unwrap().push(record);
        self.inner.as_mut().poll(cx)
    }
}

/// A job that "writes" every `step` for as long as it is polled, and would run for `total`.
fn job(
    clock: Arc<dyn Clock>,
    watch: LockWatch,
    log: Arc<Mutex<Vec<PollRecord>>>,
    step: Duration,
    total: Duration,
) -> Recorded<impl Future<Output = ()>> {
    let sleeper = Arc::clone(&clock);
    let inner = Box::pin(async move {
        let mut done = Duration::ZERO;
        while done < total {
            sleeper.sleep(step).await;
            done += step;
        }
    });
    Recorded {
        inner,
        clock,
        watch,
        log,
    }
}

/// The lock's deadline as the work saw it at its first poll (no renewal succeeds afterwards in
/// these scenarios, so it is the deadline throughout).
fn deadline_at_first_poll(log: &[PollRecord], first_remaining: Duration) -> Duration {
    log[0].at + first_remaining
}

struct Outcome {
    result: Result<(), Error>,
    log: Vec<PollRecord>,
    deadline: Duration,
}

/// Runs one job under `with_lock` (1 s lease, 3 instances) that writes every `step`; `at_start`
/// runs when the job starts (to inject a fault), `before` when the cluster is built.
fn scoped_job(
    seed: u64,
    guarded: bool,
    step: Duration,
    before: impl FnOnce(&Cluster),
    at_start: impl FnOnce(&Cluster) + Send + 'static,
) -> Outcome {
    let c = Arc::new(Cluster::new(3));
    let mut builder = c.builder(seed);
    if !guarded {
        builder = builder.without_deadline_guard();
    }
    let manager = builder.build().expect("config");
    before(&c);
    let log = Arc::new(Mutex::new(Vec::new()));
    let first_remaining = Arc::new(Mutex::new(None));
    let (clock, cluster) = (Arc::clone(&c.clock), Arc::clone(&c));
    let (log2, first2) = (Arc::clone(&log), Arc::clone(&first_remaining));
    let result = c.sim.run(manager.with_lock_opts(
        "job",
        AutoExtend::default().with_lease(ms(1_000)),
        move |watch| {
            *first2.lock().unwrap() = Some(watch.remaining());
            at_start(&cluster);
            job(clock, watch, log2, step, ms(60_000))
        },
    ));
    let log = log.lock().unwrap().clone();
    let deadline = deadline_at_first_poll(&log, first_remaining.lock().unwrap().expect("ran"));
    Outcome {
        result,
        log,
        deadline,
    }
}

/// Right after the work starts, the holder's calls to 2 of 3 instances hang (requests and
/// replies stuck), so every renewal round stays open until it is cut.
fn renewal_stuck(guarded: bool) -> Outcome {
    scoped_job(
        7,
        guarded,
        ms(1),
        |_| {},
        |c| {
            c.faults[1].set_hang(true);
            c.faults[2].set_hang(true);
        },
    )
}

fn polls_at_or_after(log: &[PollRecord], deadline: Duration) -> usize {
    log.iter().filter(|p| p.at >= deadline).count()
}

#[test]
fn a_stuck_renewal_never_lets_the_work_run_past_the_deadline() {
    let out = renewal_stuck(true);
    let err = out.result.expect_err("the lock cannot be renewed");
    assert!(
        matches!(&err, Error::Lost(l) if l.reason == LossReason::Expired),
        "{err:?}"
    );
    assert_eq!(
        polls_at_or_after(&out.log, out.deadline),
        0,
        "{:?}",
        out.log.last()
    );
    assert!(
        out.log.iter().all(|p| p.valid),
        "polled after is_valid() said false"
    );
    // The work ran right up to its deadline: the boundary is the deadline, not a cautious
    // early stop.
    let last = out.log.last().expect("polled").at;
    assert!(
        out.deadline - last <= ms(1),
        "last poll {last:?}, deadline {:?}",
        out.deadline
    );
}

#[test]
fn without_the_guard_the_stuck_renewal_lets_the_work_run_past_the_deadline() {
    // The old scoped form: the renewal round started just before the deadline stays open for a
    // whole instance timeout, and the work goes on meanwhile. This is what the check above
    // catches.
    let out = renewal_stuck(false);
    assert!(out.result.is_err());
    let late = polls_at_or_after(&out.log, out.deadline);
    assert!(late > 0, "the old behaviour polls after the deadline");
    assert!(out.log.iter().any(|p| !p.valid));
}

/// 300 ms into the work the whole process stops for 2.5 leases (every timer of the process is
/// due at once when it resumes), while the work waits on a 50 ms step.
fn paused(guarded: bool) -> Outcome {
    scoped_job(
        8,
        guarded,
        ms(50),
        |c| {
            // A task of the same process that freezes it: advancing the clock inside a poll
            // means no other task ran for that long.
            let (pauser, virtual_clock) = (Arc::clone(&c.clock), c.sim.clock());
            c.sim
                .spawn(async move {
                    pauser.sleep(ms(300)).await;
                    virtual_clock.advance(ms(2_500));
                })
                .detach();
        },
        |_| {},
    )
}

#[test]
fn after_a_pause_past_the_deadline_the_work_is_not_polled_again() {
    let out = paused(true);
    let err = out.result.expect_err("the lease ran out during the pause");
    assert!(
        matches!(&err, Error::Lost(l) if l.reason == LossReason::Expired),
        "{err:?}"
    );
    assert_eq!(
        polls_at_or_after(&out.log, out.deadline),
        0,
        "{:?}",
        out.log
    );
}

#[test]
fn without_the_guard_the_work_moves_first_after_a_pause() {
    let out = paused(false);
    assert!(out.result.is_err());
    assert!(
        polls_at_or_after(&out.log, out.deadline) > 0,
        "the old select polled the work before the renewal noticed: {:?}",
        out.log
    );
}

#[test]
fn a_rehydrated_lock_renews_before_its_deadline() {
    let c = Cluster::new(3);
    let owner = c.manager(1);
    let lock = c.sim.run(owner.lock("res", ms(10_000))).expect("lock");
    // 8 s later the instances grant 2 s more; the handle's extends use the 10 s internal lease.
    c.advance(ms(8_000));
    let other = c.manager(2);
    let again = c
        .sim
        .run(other.get_lock("res", lock.token()))
        .expect("rehydrate");
    let deadline = c.now() + again.remaining();
    assert!(again.remaining() < ms(2_000));
    let clock = Arc::clone(&c.clock);
    c.sim.run(async {
        let renew = again.keep_alive();
        let observe = clock.sleep(ms(3_000));
        futures::pin_mut!(renew, observe);
        futures::future::select(renew, observe).await;
    });
    assert!(c.now() > deadline);
    assert!(again.is_valid(), "renewed before {deadline:?}");
    assert!(again.remaining() > ms(6_000), "on the 10 s lease now");
    assert_eq!(c.holding(b"res", lock.token()), 3);
}

#[test]
fn a_high_drift_lock_is_renewed_in_time_and_its_loss_reported_at_the_deadline() {
    // drift 0.5: a 10 s lease is valid for 4 998 ms, before 60 % of it (6 s) has passed.
    let c = Cluster::new(3);
    let manager = c.builder(3).drift_factor(0.5).build().expect("config");
    let lock = c.sim.run(manager.lock("res", ms(10_000))).expect("lock");
    assert_eq!(lock.validity(), ms(4_998));
    let deadline = c.now() + lock.remaining();
    // Fault-free: kept alive across several leases.
    let clock = Arc::clone(&c.clock);
    c.sim.run(async {
        let renew = lock.keep_alive();
        let observe = clock.sleep(ms(12_000));
        futures::pin_mut!(renew, observe);
        futures::future::select(renew, observe).await;
    });
    assert!(lock.is_valid(), "renewed before every deadline");
    // Now every renewal hangs: the loss is reported exactly at the deadline.
    let deadline2 = c.now() + lock.remaining();
    assert!(deadline2 > deadline);
    for f in &c.faults {
        f.set_hang(true);
    }
    let err = c.sim.run(lock.keep_alive()).expect_err("cannot renew");
    assert!(
        matches!(&err, Error::Lost(l) if l.reason == LossReason::Expired),
        "{err:?}"
    );
    assert_eq!(c.now(), deadline2, "reported at the deadline, not later");
    assert_eq!(c.sim.run(lock.lost()), LossReason::Expired);
}

#[test]
fn lost_completes_at_the_deadline_while_a_renewal_round_hangs() {
    let c = Cluster::new(3);
    let manager = c
        .builder(4)
        .spawner(c.sim.spawner())
        .build()
        .expect("config");
    let lock = c
        .sim
        .run(manager.lock_auto_with("res", AutoExtend::default().with_lease(ms(1_000))))
        .expect("lock");
    let deadline = c.now() + lock.remaining();
    c.faults[0].set_hang(true);
    c.faults[1].set_hang(true);
    assert_eq!(c.sim.run(lock.lost()), LossReason::Expired);
    assert_eq!(c.now(), deadline);
    assert!(!lock.is_valid());
}
