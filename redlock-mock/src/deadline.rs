//! Seeded families for the scoped form's promise: a holder under
//! [`with_lock`](redlock_core::LockManager::with_lock) whose renewals stall never has its job
//! polled at or after its deadline, and never after a rival's grant.
//!
//! One `u64` seed derives a whole run. Client 0 (the holder) runs one job under
//! `with_lock_opts` ([`OnLoss::Cancel`]) with a lease of 200 ms–2 s (the default 10 s on one
//! seed in a hundred); the job wakes every 1–5 ms and writes once per wake, for far longer than
//! one lease, and every poll of it is recorded by a [`PollLog`]. Client 1 (the rival) retries
//! the same resource through a [`TracedClient`](crate::TracedClient) from around the time the
//! renewals start to stall: blindly, a tenth of a lease apart on average, and also at the very
//! moment the holder's keys are gone from a quorum of the instances (read from their stores: the
//! rival is the adversary, and strikes when a real rival polling without pause could first
//! win). Once granted, it holds the lock for a quarter of a lease. N is 3 or 5,
//! the instance timeout 10–100 ms. At a random time after the job starts, the renewals stall:
//! see [`Stall`]. A failing seed prints the command that replays it.

use std::fmt;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::oneshot;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use redlock_core::{AutoExtend, Clock, KeyState, OnLoss};

use crate::check::{CheckReport, Violation, ViolationKind};
use crate::history::{Entry, History};
use crate::net::{Latency, ServerStatus};
use crate::polls::{PollLog, PollReport};
use crate::world::{derive, World};

const HOLDER: usize = 0;
const RIVAL: usize = 1;
const RESOURCE: &str = "job";

/// What makes the holder's renewals stall, from a random time after its job started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stall {
    /// The holder is cut off from a majority of the instances (or all), for good. The rival
    /// reaches every instance.
    Partition,
    /// A majority of the instances (or all) hang, swallowing every request, for one to two
    /// leases, then answer again; the rival waits for them too.
    Hang,
    /// The holder's links to a majority (or all) become slow: one-way latency of 0.15–3 instance
    /// timeouts, so renewal rounds time out or finish late, next to a remaining lease that may
    /// be shorter than the instance timeout itself.
    SlowLinks,
    /// Every instance clock runs fast by up to 1 % (what the default drift factor allows) from
    /// the start, with one of the three stalls above.
    FastClocks,
}

impl Stall {
    /// Every family.
    pub const ALL: [Self; 4] = [
        Self::Partition,
        Self::Hang,
        Self::SlowLinks,
        Self::FastClocks,
    ];

    /// The test that sweeps this family with the guard on.
    #[must_use]
    pub fn test_name(self) -> &'static str {
        match self {
            Self::Partition => "partition_never_polls_the_job_past_its_deadline",
            Self::Hang => "hang_never_polls_the_job_past_its_deadline",
            Self::SlowLinks => "slow_links_never_poll_the_job_past_its_deadline",
            Self::FastClocks => "fast_clocks_never_poll_the_job_past_its_deadline",
        }
    }
}

/// Whether the holder's manager keeps the scoped form's deadline guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum Guard {
    /// The manager as shipped.
    #[default]
    On,
    /// Built without the guard, to prove the checker catches a job polled past its deadline
    /// (this crate's unit tests).
    #[cfg(test)]
    Off,
}

/// The command line that replays `seed` of `stall`.
#[must_use]
pub fn reproduce(stall: Stall, seed: u64) -> String {
    reproduce_guarded(stall, Guard::On, seed)
}

/// The command line that replays `seed` of `stall` with `guard`.
fn reproduce_guarded(stall: Stall, guard: Guard, seed: u64) -> String {
    let test = match guard {
        Guard::On => format!("--test deadline -- {}", stall.test_name()),
        #[cfg(test)]
        Guard::Off => {
            "--lib -- deadline::tests::checker_catches_the_job_polled_past_its_deadline".to_owned()
        }
    };
    format!("REDLOCK_SIM_SEED={seed} cargo test -p redlock-mock {test} --nocapture")
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct StallRun {
    /// The seed.
    pub seed: u64,
    /// The family.
    pub stall: Stall,
    guard: Guard,
    /// Instances.
    pub instances: usize,
    /// The holder's lease.
    pub lease: Duration,
    /// The instance timeout.
    pub instance_timeout: Duration,
    /// The writes the holder's job made (one per wake).
    pub writes: u64,
    /// Whether the scoped call returned `Ok` (the job ran to its end) rather than an error.
    pub completed: bool,
    /// The poll checker's verdict.
    pub polls: PollReport,
    /// The history checkers' verdict over the rival's traced calls, plus a stall or a panic of
    /// the simulation.
    pub check: CheckReport,
    /// What was recorded.
    pub history: History,
}

impl StallRun {
    /// Whether no check failed.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.polls.is_clean() && self.check.is_clean()
    }

    /// The one-line command that replays this seed.
    #[must_use]
    pub fn reproduce(&self) -> String {
        reproduce_guarded(self.stall, self.guard, self.seed)
    }
}

impl fmt::Display for StallRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} ({:?}, guard {:?}, N = {}, lease {:?}, instance timeout {:?}): {} write(s); \
             {}",
            self.seed,
            self.stall,
            self.guard,
            self.instances,
            self.lease,
            self.instance_timeout,
            self.writes,
            self.polls
        )?;
        for v in self.check.violations.iter().take(10) {
            writeln!(f, "  {v}")?;
        }
        writeln!(f, "reproduce: {}", self.reproduce())
    }
}

/// What a run leaves behind for its report, filled in as soon as it exists (a panic may come
/// later).
#[derive(Default)]
struct Slot {
    world: Option<World>,
    log: Option<PollLog>,
    instances: usize,
    lease: Duration,
    instance_timeout: Duration,
    writes: Arc<AtomicU64>,
    completed: bool,
}

/// Runs one seed. Panics inside the simulation are caught and reported as violations, never
/// propagated.
#[must_use]
pub fn run_seed(stall: Stall, seed: u64) -> StallRun {
    run_seed_guarded(stall, Guard::On, seed)
}

fn run_seed_guarded(stall: Stall, guard: Guard, seed: u64) -> StallRun {
    let slot = Mutex::new(Slot::default());
    let outcome = catch_unwind(AssertUnwindSafe(|| scenario(stall, guard, seed, &slot)));
    let slot = slot.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut history = slot.world.as_ref().map(World::history).unwrap_or_default();
    let mut extra = Vec::new();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => extra.push(Violation {
            kind: ViolationKind::Stalled,
            detail: error,
        }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_owned());
            let at = slot.world.as_ref().map(World::now).unwrap_or_default();
            history.entries.push(Entry::Panic { at, message });
        }
    }
    let mut check = crate::check::check(&history);
    check.violations.extend(extra);
    StallRun {
        seed,
        stall,
        guard,
        instances: slot.instances,
        lease: slot.lease,
        instance_timeout: slot.instance_timeout,
        writes: slot.writes.load(Ordering::Relaxed),
        completed: slot.completed,
        polls: slot.log.as_ref().map(PollLog::check).unwrap_or_default(),
        check,
        history,
    }
}

/// Totals of a sweep.
#[derive(Debug, Clone, Default)]
pub struct StallSummary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds whose job ran to its end (the stall did not cost the lock).
    pub completed: u64,
    /// Seeds with a poll at or after the deadline.
    pub seeds_past_deadline: u64,
    /// Seeds with a poll at or after a rival's grant.
    pub seeds_after_rival_grant: u64,
    /// Seeds with any violation (the two above, or a history check).
    pub seeds_violating: u64,
    /// Polls over all seeds.
    pub polls: u64,
    /// Polls at or after the deadline, over all seeds.
    pub polls_past_deadline: u64,
    /// Polls at or after a rival's grant, over all seeds.
    pub polls_after_rival_grant: u64,
    /// The longest a job was polled past its deadline, over all seeds.
    pub max_overrun: Duration,
    /// The runs `keep` selected, in seed order.
    pub kept: Vec<StallRun>,
}

impl StallSummary {
    fn add(&mut self, run: &StallRun) {
        self.seeds += 1;
        self.completed += u64::from(run.completed);
        self.seeds_past_deadline += u64::from(run.polls.past_deadline > 0);
        self.seeds_after_rival_grant += u64::from(run.polls.after_rival_grant > 0);
        self.seeds_violating += u64::from(!run.is_clean());
        self.polls += run.polls.polls as u64;
        self.polls_past_deadline += run.polls.past_deadline as u64;
        self.polls_after_rival_grant += run.polls.after_rival_grant as u64;
        self.max_overrun = self.max_overrun.max(run.polls.overrun);
    }

    fn merge(&mut self, other: Self) {
        self.seeds += other.seeds;
        self.completed += other.completed;
        self.seeds_past_deadline += other.seeds_past_deadline;
        self.seeds_after_rival_grant += other.seeds_after_rival_grant;
        self.seeds_violating += other.seeds_violating;
        self.polls += other.polls;
        self.polls_past_deadline += other.polls_past_deadline;
        self.polls_after_rival_grant += other.polls_after_rival_grant;
        self.max_overrun = self.max_overrun.max(other.max_overrun);
        self.kept.extend(other.kept);
    }
}

impl fmt::Display for StallSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seeds ({} ran to the end): {} violating, {} with polls past the deadline, {} \
             with polls after a rival's grant; {} polls, {} past the deadline (up to {:?}), {} \
             after a rival's grant",
            self.seeds,
            self.completed,
            self.seeds_violating,
            self.seeds_past_deadline,
            self.seeds_after_rival_grant,
            self.polls,
            self.polls_past_deadline,
            self.max_overrun,
            self.polls_after_rival_grant
        )
    }
}

/// Runs `stall` over `seeds` on `threads` OS threads (each seed is deterministic on its own, so
/// the split changes no result), keeping the runs `keep` selects.
pub fn sweep(
    stall: Stall,
    seeds: Range<u64>,
    threads: usize,
    keep: impl Fn(&StallRun) -> bool + Sync,
) -> StallSummary {
    sweep_guarded(stall, Guard::On, seeds, threads, keep)
}

fn sweep_guarded(
    stall: Stall,
    guard: Guard,
    seeds: Range<u64>,
    threads: usize,
    keep: impl Fn(&StallRun) -> bool + Sync,
) -> StallSummary {
    let mut total = crate::sweep::par_seeds(
        seeds,
        threads,
        |seed| run_seed_guarded(stall, guard, seed),
        |s: &mut StallSummary, run| {
            s.add(&run);
            if keep(&run) {
                s.kept.push(run);
            }
        },
        StallSummary::merge,
    );
    total.kept.sort_by_key(|r| r.seed);
    total
}

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// How the renewals stall, with its drawn parameters.
#[derive(Debug, Clone)]
enum Fault {
    Partition(Vec<usize>),
    Hang(Vec<usize>, Duration),
    Slow(Vec<usize>, Latency),
}

impl Fault {
    async fn apply(self, w: &World) {
        match self {
            Self::Partition(cut) => {
                for i in cut {
                    w.partition(HOLDER, i);
                }
            }
            Self::Hang(cut, lasting) => {
                for &i in &cut {
                    w.hang(i);
                }
                w.sleep(lasting).await;
                for i in cut {
                    w.resume(i);
                }
            }
            Self::Slow(cut, latency) => {
                for i in cut {
                    w.set_latency(HOLDER, i, latency);
                }
            }
        }
    }
}

/// The true time at which `key` is gone (expired or absent) from a quorum of the instances
/// that are up, or `None` when fewer than a quorum are up. Read from the instances' stores
/// directly: the rival is the test's adversary, and strikes at the worst moment for the holder.
fn quorum_free_at(w: &World, key: &[u8], quorum: usize) -> Option<Duration> {
    let now = w.now();
    let mut free: Vec<Duration> = (0..w.instance_count())
        .filter(|&i| w.status(i) == ServerStatus::Up)
        .map(|i| match w.instance(i).inspect_now(key) {
            Ok(Some(KeyState { ttl: Some(ttl), .. })) => {
                let clock = w.instance_clock(i);
                clock.to_true(clock.now() + ttl)
            }
            Ok(Some(KeyState { ttl: None, .. })) => Duration::MAX,
            Ok(None) | Err(_) => now,
        })
        .collect();
    free.sort_unstable();
    free.get(quorum.checked_sub(1)?).copied()
}

fn scenario(stall: Stall, guard: Guard, seed: u64, slot: &Mutex<Slot>) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(derive(seed, 0x5CA1_AB1E));
    let n = if rng.random_bool(0.5) { 3 } else { 5 };
    let quorum = n / 2 + 1;
    // Log-uniform, so short leases (cheap to run, and where the instance timeout is large next
    // to what is left of a lease) are as common as long ones; the measured case, the default
    // lease, on a few seeds.
    let lease = (seed % 100 != 7).then(|| ms((200.0 * 10f64.powf(rng.random::<f64>())) as u64));
    let timeout = ms(*[10u64, 25, 50, 100].choose(&mut rng).unwrap_or(&100));
    let (cause, fast) = match stall {
        Stall::FastClocks => (
            *[Stall::Partition, Stall::Hang, Stall::SlowLinks]
                .choose(&mut rng)
                .unwrap_or(&Stall::Partition),
            true,
        ),
        other => (other, false),
    };
    let builder = World::builder()
        .seed(seed)
        .instances(n)
        .clients(2)
        .latency(Latency::Uniform {
            min: Duration::ZERO,
            max: ms(1),
        })
        .configure(move |b| b.instance_timeout(timeout))
        // The rival paces its own retries.
        .configure_client(|k, b| if k == RIVAL { b.retry_count(1) } else { b });
    let builder = match guard {
        Guard::On => builder,
        #[cfg(test)]
        Guard::Off => builder.without_deadline_guard(),
    };
    let world = builder.build().map_err(|e| e.to_string())?;
    let ttl = lease.unwrap_or_else(|| world.client(HOLDER).config().internal_lock_timeout());
    let log = PollLog::new(&world, HOLDER);
    let writes = Arc::new(AtomicU64::new(0));
    {
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        s.world = Some(world.clone());
        s.log = Some(log.clone());
        s.instances = n;
        s.lease = ttl;
        s.instance_timeout = timeout;
        s.writes = Arc::clone(&writes);
    }
    if fast {
        for i in 0..n {
            world.set_instance_rate(i, rng.random_range(0..=10_000));
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let cut = order[..rng.random_range(quorum..=n)].to_vec();
    let fault = match cause {
        Stall::Hang => Fault::Hang(cut, ttl.mul_f64(1.0 + rng.random::<f64>())),
        Stall::SlowLinks => {
            let max = timeout.mul_f64(rng.random_range(0.3..3.0));
            Fault::Slow(cut, Latency::Uniform { min: max / 2, max })
        }
        Stall::Partition | Stall::FastClocks => Fault::Partition(cut),
    };
    // From the job's start: the stall (before or after the first renewal), the rival's first
    // attempt (up to a tenth of a lease before the stall), and the job's own end, long after
    // the lease would have run out.
    let fault_at = ttl.mul_f64(rng.random::<f64>());
    let rival_at = fault_at.saturating_sub(ttl.mul_f64(rng.random::<f64>() / 10.0));
    let work_for = fault_at + ttl * 2;
    let rival_for = fault_at + ttl * 3;

    let (fault_tx, fault_rx) = oneshot::channel::<()>();
    let (rival_tx, rival_rx) = oneshot::channel::<()>();
    let nemesis = world.clone();
    world
        .spawn(async move {
            if fault_rx.await.is_ok() {
                nemesis.sleep(fault_at).await;
                fault.apply(&nemesis).await;
            }
        })
        .detach();

    let w = world.clone();
    let mut job_rng = StdRng::seed_from_u64(derive(seed, 0x10B));
    let holder = world.spawn_client(HOLDER, async move {
        let options = AutoExtend::default().with_on_loss(OnLoss::Cancel);
        let options = match lease {
            Some(lease) => options.with_lease(lease),
            None => options,
        };
        let job_world = w.clone();
        let result = w
            .client(HOLDER)
            .with_lock_opts(RESOURCE, options, |watch| {
                // Both were just created; a failed send means the receiver's task ended.
                let _ = fault_tx.send(());
                let _ = rival_tx.send(());
                log.wrap(watch, async move {
                    let start = job_world.now();
                    while job_world.now().saturating_sub(start) < work_for {
                        let nap = Duration::from_micros(job_rng.random_range(1_000..=5_000));
                        job_world.sleep(nap).await;
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .await;
        w.note(format!("holder's scoped call returned {result:?}"));
        result.is_ok()
    });

    let w = world.clone();
    let mut rival_rng = StdRng::seed_from_u64(derive(seed, 0x41));
    let rival = world.spawn_client(RIVAL, async move {
        if rival_rx.await.is_err() {
            return;
        }
        let start = w.now();
        w.sleep(rival_at).await;
        let traced = w.traced(RIVAL);
        let mut key = traced.manager().config().key_prefix().to_vec();
        key.extend_from_slice(RESOURCE.as_bytes());
        while w.now().saturating_sub(start) < rival_for {
            if let Ok(lock) = traced.lock(RESOURCE, ttl).await {
                w.sleep(ttl / 4).await;
                let _ = lock.release().await;
                return;
            }
            // Blind retries a tenth of a lease apart on average, and one at the very moment a
            // rival polling without pause could first win.
            let blind = ms(1) + ttl.mul_f64(rival_rng.random::<f64>() / 5.0);
            let now = w.now();
            let pause = match quorum_free_at(&w, &key, quorum) {
                Some(free) if free > now => blind.min(free - now),
                Some(_) => Duration::from_micros(rival_rng.random_range(1_000..=3_000)),
                None => blind,
            };
            w.sleep(pause).await;
        }
    });

    let (completed, ()) = world
        .try_run(futures::future::join(holder, rival))
        .map_err(|e| e.to_string())?;
    slot.lock().unwrap_or_else(|e| e.into_inner()).completed = completed;
    Ok(())
}

#[cfg(test)]
mod tests;
