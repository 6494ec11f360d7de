//! Every poll of a scoped job, recorded, and the checker of the scoped form's promise: with
//! [`OnLoss::Cancel`](redlock_core::OnLoss::Cancel), the job is never polled at or after its
//! lease's deadline, nor at or after a rival was granted the same resource.
//!
//! # Which deadline
//!
//! A poll is past the deadline when the job's [`LockWatch::remaining`] reads zero at that poll,
//! read on the holder's own clock at the very instant of the poll (before the job runs), or
//! when an earlier poll of the same job already read zero.
//!
//! - The reading is the deadline the manager itself holds, moved by every renewal that
//!   succeeded: the renewals of the scoped form are internal to it and cannot be seen from
//!   outside, so rebuilding the deadline from the first reading plus what renewals added would
//!   only repeat the manager's bookkeeping with less information. It is zero once the holder's
//!   clock reached the deadline, and also once the lock was marked lost or released: a poll
//!   then is wrong whatever the reason.
//! - It is exact, not sampled: every poll is a moment the job can write, and each is judged
//!   on its own.
//! - Once a lease lapsed it stays lapsed. A renewal that succeeds after the deadline (a round
//!   not cut at the deadline can do that) moves the deadline forward again, but the lock was
//!   not held in between, so every later poll of that job counts too.
//!
//! The second check does not trust the manager at all: a rival's grant is a traced
//! [`lock`](crate::TracedClient::lock) of the same resource that returned `Ok`, at the true time
//! it returned, no earlier than the job's first poll; every poll at or after it is a violation.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use redlock_core::{Clock, LockWatch};

use crate::check::{Violation, ViolationKind};
use crate::history::{History, OpKind, OpRecord, Outcome};
use crate::world::World;

/// One poll of a wrapped job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollRecord {
    /// Which job of the log (in the order [`PollLog::wrap`] was called).
    pub job: usize,
    /// True time of the poll.
    pub at: Duration,
    /// The holder's clock at the poll.
    pub local: Duration,
    /// [`LockWatch::remaining`] at the poll, read before the job ran.
    pub remaining: Duration,
    /// While validity is left: the true time at which the holder's clock reaches the deadline,
    /// if its rate does not change (for reports: how far past its deadline a job ran).
    pub deadline: Option<Duration>,
}

/// Records every poll of the jobs it [`wrap`](Self::wrap)s, for client `c` of a [`World`].
/// Cheap to clone; clones share the record.
///
/// ```
/// use std::time::Duration;
/// use redlock_mock::{PollLog, World};
///
/// let world = World::builder().seed(1).instances(3).build()?;
/// let log = PollLog::new(&world, 0);
/// let (w, job_log) = (world.clone(), log.clone());
/// let out = world.run(world.spawn_client(0, async move {
///     let job_world = w.clone();
///     w.client(0)
///         .with_lock("job", |watch| {
///             job_log.wrap(watch, async move {
///                 for _ in 0..10 {
///                     job_world.sleep(Duration::from_millis(2)).await; // one write per wake
///                 }
///             })
///         })
///         .await
/// }));
/// assert!(out.is_ok());
/// let report = log.check();
/// assert_eq!(report.polls, 11); // the first poll, then one per sleep
/// assert!(report.is_clean(), "{report}");
/// # Ok::<(), redlock_core::Error>(())
/// ```
#[derive(Clone)]
pub struct PollLog {
    world: World,
    client: usize,
    state: Arc<Mutex<LogState>>,
}

#[derive(Debug, Default)]
struct LogState {
    /// The resource of each job.
    jobs: Vec<Vec<u8>>,
    polls: Vec<PollRecord>,
}

impl fmt::Debug for PollLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("PollLog")
            .field("client", &self.client)
            .field("jobs", &state.jobs.len())
            .field("polls", &state.polls.len())
            .finish()
    }
}

impl PollLog {
    /// An empty log for jobs run by client `c` of `world` (its clock is the holder's clock).
    ///
    /// # Panics
    /// When `c` is not a client of `world` (a bug in the scenario, as for every [`World`]
    /// index).
    #[must_use]
    pub fn new(world: &World, c: usize) -> Self {
        // Fails here rather than at the first poll.
        let _ = world.client_clock(c);
        Self {
            world: world.clone(),
            client: c,
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        // Every update pushes whole records.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wraps `work`, the job of a scoped lock whose watch is `watch`: every poll of the
    /// returned future is recorded, then `work` is polled. Use it inside the closure given to
    /// [`with_lock`](redlock_core::LockManager::with_lock) or
    /// [`with_lock_opts`](redlock_core::LockManager::with_lock_opts).
    pub fn wrap<F: Future>(&self, watch: LockWatch, work: F) -> Polled<F> {
        let job = {
            let mut state = self.state();
            state.jobs.push(watch.resource().to_vec());
            state.jobs.len() - 1
        };
        Polled {
            log: self.clone(),
            job,
            watch,
            work: Box::pin(work),
        }
    }

    fn record(&self, job: usize, watch: &LockWatch) {
        let clock = self.world.client_clock(self.client);
        let local = clock.now();
        let remaining = watch.remaining();
        let record = PollRecord {
            job,
            at: self.world.now(),
            local,
            remaining,
            deadline: (!remaining.is_zero()).then(|| clock.to_true(local + remaining)),
        };
        self.state().polls.push(record);
    }

    /// Every poll recorded so far, in order.
    #[must_use]
    pub fn polls(&self) -> Vec<PollRecord> {
        self.state().polls.clone()
    }

    /// The client whose jobs this log records.
    #[must_use]
    pub fn client(&self) -> usize {
        self.client
    }

    /// Judges every recorded poll against the job's deadline and against the rivals' grants
    /// in the world's history so far (see the [module documentation](self)).
    #[must_use]
    pub fn check(&self) -> PollReport {
        let history = self.world.history();
        let state = self.state();
        check_polls(self.client, &state.jobs, &state.polls, &history)
    }
}

/// A job whose polls are recorded in a [`PollLog`]. Made by [`PollLog::wrap`].
pub struct Polled<F> {
    log: PollLog,
    job: usize,
    watch: LockWatch,
    work: Pin<Box<F>>,
}

impl<F> fmt::Debug for Polled<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Polled")
            .field("client", &self.log.client)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Polled<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.log.record(self.job, &self.watch);
        self.work.as_mut().poll(cx)
    }
}

/// What [`PollLog::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Jobs wrapped.
    pub jobs: usize,
    /// Polls recorded.
    pub polls: usize,
    /// Polls at or after their job's deadline.
    pub past_deadline: usize,
    /// Polls at or after a rival's grant of their job's resource.
    pub after_rival_grant: usize,
    /// The longest a job was polled past its deadline, in true time: from the deadline (as its
    /// last poll with validity left predicted it) to its last poll.
    pub overrun: Duration,
    /// One violation per job and kind, with the first offending poll.
    pub violations: Vec<Violation>,
}

impl PollReport {
    /// Whether no job was polled past its deadline or after a rival's grant.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for PollReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} job(s), {} poll(s): {} at or after the deadline (up to {:?} past it), {} at or \
             after a rival's grant",
            self.jobs, self.polls, self.past_deadline, self.overrun, self.after_rival_grant
        )?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

fn ns(d: Duration) -> u128 {
    d.as_nanos()
}

/// The rivals' grants of `resource` from `since` on: traced acquisitions that returned `Ok`.
fn grants<'a>(
    history: &'a History,
    resource: &'a [u8],
    since: Duration,
) -> impl Iterator<Item = &'a OpRecord> {
    history.ops().filter(move |op| {
        op.op == OpKind::Lock
            && op.outcome == Outcome::Ok
            && op.resource == resource
            && op.end >= since
    })
}

fn check_polls(
    client: usize,
    jobs: &[Vec<u8>],
    polls: &[PollRecord],
    history: &History,
) -> PollReport {
    let mut report = PollReport {
        jobs: jobs.len(),
        polls: polls.len(),
        ..PollReport::default()
    };
    for (job, resource) in jobs.iter().enumerate() {
        let mine: Vec<&PollRecord> = polls.iter().filter(|p| p.job == job).collect();
        let Some(first) = mine.first() else {
            continue;
        };
        let name = String::from_utf8_lossy(resource);
        if let Some(lapse) = mine.iter().position(|p| p.remaining.is_zero()) {
            let late = &mine[lapse..];
            let deadline = mine[..lapse]
                .last()
                .and_then(|p| p.deadline)
                .unwrap_or(late[0].at);
            let last = late[late.len() - 1].at;
            report.past_deadline += late.len();
            report.overrun = report.overrun.max(last.saturating_sub(deadline));
            report.violations.push(Violation {
                kind: ViolationKind::PolledPastDeadline,
                detail: format!(
                    "c{client} job {job} on {name:?}: {} of {} poll(s) at or after its deadline \
                     ({} true); first at {} (its clock {}, remaining 0), last at {}, {:?} past \
                     it",
                    late.len(),
                    mine.len(),
                    ns(deadline),
                    ns(late[0].at),
                    ns(late[0].local),
                    ns(last),
                    last.saturating_sub(deadline),
                ),
            });
        }
        let rival = grants(history, resource, first.at).min_by_key(|op| op.end);
        if let Some(rival) = rival {
            let after: Vec<&&PollRecord> = mine.iter().filter(|p| p.at >= rival.end).collect();
            if let (Some(a), Some(z)) = (after.first(), after.last()) {
                report.after_rival_grant += after.len();
                report.violations.push(Violation {
                    kind: ViolationKind::PolledAfterRivalGrant,
                    detail: format!(
                        "c{client} job {job} on {name:?}: {} poll(s) at or after c{} was granted \
                         it (lock #{}) at {}; first at {} (remaining {:?}), last at {}",
                        after.len(),
                        rival.client,
                        rival.lock,
                        ns(rival.end),
                        ns(a.at),
                        a.remaining,
                        ns(z.at),
                    ),
                });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(job: usize, at_ms: u64, remaining_ms: u64) -> PollRecord {
        let at = Duration::from_millis(at_ms);
        let remaining = Duration::from_millis(remaining_ms);
        PollRecord {
            job,
            at,
            local: at,
            remaining,
            deadline: (remaining_ms > 0).then_some(at + remaining),
        }
    }

    fn grant(client: usize, resource: &str, end_ms: u64) -> crate::history::Entry {
        let end = Duration::from_millis(end_ms);
        crate::history::Entry::Op(OpRecord {
            client,
            op: OpKind::Lock,
            resource: resource.as_bytes().to_vec(),
            lock: 9,
            start: end,
            end,
            local_elapsed: Duration::ZERO,
            bound: Duration::ZERO,
            patience: None,
            outcome: Outcome::Ok,
            holds_until: Some(end + Duration::from_secs(1)),
            paused: false,
            leftovers: Vec::new(),
            fence: None,
        })
    }

    #[test]
    fn a_job_that_stops_in_time_is_clean() {
        let polls = [poll(0, 0, 100), poll(0, 50, 50), poll(0, 99, 1)];
        let history = History {
            entries: vec![grant(1, "r", 100)],
        };
        let report = check_polls(0, &[b"r".to_vec()], &polls, &history);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.polls, 3);
    }

    #[test]
    fn a_poll_at_the_deadline_and_every_later_one_count() {
        // The third poll reads zero; the fourth follows a renewal that came too late.
        let polls = [
            poll(0, 0, 100),
            poll(0, 60, 40),
            poll(0, 100, 0),
            poll(0, 130, 170),
        ];
        let report = check_polls(0, &[b"r".to_vec()], &polls, &History::default());
        assert_eq!(report.past_deadline, 2);
        assert_eq!(report.overrun, Duration::from_millis(30));
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].kind, ViolationKind::PolledPastDeadline);
    }

    #[test]
    fn polls_at_or_after_a_rivals_grant_count_even_with_validity_left() {
        let polls = [poll(0, 0, 100), poll(0, 40, 60), poll(0, 50, 50)];
        let history = History {
            entries: vec![grant(1, "r", 40), grant(1, "other", 10)],
        };
        let report = check_polls(0, &[b"r".to_vec()], &polls, &history);
        assert_eq!(report.after_rival_grant, 2);
        assert_eq!(report.past_deadline, 0);
        assert_eq!(
            report.violations[0].kind,
            ViolationKind::PolledAfterRivalGrant
        );
    }

    #[test]
    fn a_grant_before_the_job_started_is_not_a_rival() {
        // Job 1 started after the rival's grant at 40 ms (the rival had released by then).
        let polls = [
            poll(0, 0, 100),
            poll(0, 30, 70),
            poll(1, 60, 100),
            poll(1, 70, 90),
        ];
        let history = History {
            entries: vec![grant(1, "r", 40)],
        };
        let report = check_polls(0, &[b"r".to_vec(), b"r".to_vec()], &polls, &history);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.jobs, 2);
    }
}
