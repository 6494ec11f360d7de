//! Seeded scenario families and the sweep that runs them over seed ranges.
//!
//! One `u64` seed derives a whole run: the deployment (N, C, TTLs, timeouts), every client's
//! workload, every fault and every latency draw. A failing seed prints a one-line command that
//! replays exactly that run.

use std::fmt;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use redlock_core::BackendErrorKind;

#[cfg(test)]
mod broken;
mod queue;

use crate::check::{CheckReport, Violation, ViolationKind};
use crate::history::{Entry, History};
use crate::net::{Latency, NotifyStats};
use crate::world::{derive, World, WorldBuilder};

/// A family of seeded runs.
///
/// Every client's manager keeps the core's default of waking on release announcements, and the
/// simulated links carry them (see [`LinkBackend`](crate::LinkBackend)), so every family runs
/// the wake-on-release path under its faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Random deployments, workloads and faults, all within the Redlock assumptions (clock
    /// rates within the drift factor, crashed instances down longer than the largest TTL). No
    /// invariant may break.
    Standard,
    /// The standard family on one resource with at least two clients, the odd-numbered ones in
    /// fair mode (a random grace up to twice the instance timeout). No invariant may break.
    Fair,
    /// Scripted breaks of an assumption with random parameters: restart without delay, a
    /// majority of instance clocks beyond the drift factor, the Kleppmann clock jump. Every
    /// seed must produce an overlap, each followed by a reported loss.
    Adversarial,
    /// Tight contention within the Redlock assumptions: holders keep their lease to the last
    /// moment (or past it), rivals poll; clocks skewed close to what the drift factor covers.
    /// No invariant may break. This crate's unit tests run it against deliberately broken
    /// clients too, to prove that the checkers catch them.
    Contention,
    /// Several tasks per client on the same one or two resources through one manager, so they
    /// wait in its local queue: every way to acquire (`lock`, `try_lock`, `lock_opts` with each
    /// `Patience`, `with_lock`), waiters cancelled at random (their futures dropped), holders
    /// losing their locks to partitions, crashes, hung instances and pauses while others
    /// queue, and in some seeds one client's manager closed with tasks queued. After the
    /// faults, every task makes one last `UntilCancelled` call, judged by
    /// [`served`](crate::check::served). No invariant may break. This crate's unit tests run it
    /// against deliberately broken clients too.
    Queue,
    /// The standard family with every client's locks fenced and every instance persistent (AOF
    /// with `appendfsync always`): no invariant may break, the fencing checker's included.
    FencedStandard,
    /// The fair family with fenced locks on persistent instances: no invariant may break.
    FencedFair,
    /// The contention family with fenced locks on persistent instances: no invariant may break.
    FencedContention,
    /// The queue family (every way to acquire, cancellations, a close) with fenced locks on
    /// persistent instances: no invariant may break, liveness included.
    FencedQueue,
    /// Fenced grants around a restart of a majority of instances **without persistence**,
    /// delayed beyond the TTL (within the lock's assumptions, not the counters'): a holder takes
    /// and releases the resource one to three times; a majority of instances crash and restart
    /// empty after more than the TTL; a rival cut off from the other instances then takes it,
    /// from counters back at 0. Every seed must produce a fence regression, each with a crash
    /// between the two grants, and nothing else.
    FencedRestart,
    /// [`FencedRestart`](Self::FencedRestart) with persistent instances: the counters survive
    /// the restarts, and no invariant may break.
    FencedRestartPersistent,
    /// A family run against a deliberately broken client or backend (unit tests only): the
    /// contention family for the Redlock bugs, the queue family for `Bug::TokenPerManager` and
    /// `Bug::AcquireAlwaysRefused`.
    #[cfg(test)]
    Buggy(Bug),
}

/// A bug reintroduced on purpose, to prove a checker catches it (unit tests only).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// Drift factor 0 while instance clocks run up to 1 % fast: validity is not shortened for
    /// clock-rate differences.
    NoDriftCompensation,
    /// Release as `GET` then `DEL` of whatever the key holds, without checking the token: a late
    /// release deletes the next holder's key.
    ReleaseWithoutTokenCheck,
    /// Every lock of a manager sets one value (a process id as the lock value, see
    /// `broken::OneToken`): a second task of the same manager "acquires" a key its manager already
    /// holds, so two tasks of one manager hold the resource at once.
    TokenPerManager,
    /// Client 0's links answer every acquire as if the key were held (see
    /// `broken::RefuseAcquires`): its waiters are never served, though the resource is free.
    AcquireAlwaysRefused,
    /// Fenced acquires skip the raise-only write-back of the largest counter value (the
    /// issue's single round): two grants reaching different quorums can get the same fence.
    /// Run on the fenced standard family.
    NoFenceRaise,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// The family it was drawn from.
    pub family: Family,
    /// What was recorded.
    pub history: History,
    /// What the checkers found.
    pub report: CheckReport,
    /// Lock operations made (traced calls).
    pub ops: usize,
    /// Messages the network carried.
    pub messages: u64,
    /// Release-announcement traffic.
    pub notify: NotifyStats,
    /// Releases by fair-mode clients that a subscriber was registered for (each one makes that
    /// client yield its next acquire).
    pub fair_heard: u64,
}

impl SeedRun {
    /// The one-line command that replays this seed.
    #[must_use]
    pub fn reproduce(&self) -> String {
        reproduce(self.seed, self.family)
    }
}

/// The command line that replays `seed` of `family`.
#[must_use]
pub fn reproduce(seed: u64, family: Family) -> String {
    let test = match family {
        Family::Standard => "--test sweep -- standard_family_keeps_every_invariant",
        Family::Fair => "--test sweep -- fair_family_keeps_every_invariant",
        Family::Adversarial => "--test sweep -- adversarial_family_is_caught",
        Family::Contention => "--test sweep -- contention_family_keeps_every_invariant",
        Family::FencedStandard => "--test fencing -- fenced_standard_family_keeps_every_invariant",
        Family::FencedFair => "--test fencing -- fenced_fair_family_keeps_every_invariant",
        Family::FencedContention => {
            "--test fencing -- fenced_contention_family_keeps_every_invariant"
        }
        Family::FencedQueue => "--test fencing -- fenced_queue_family_keeps_every_invariant",
        Family::FencedRestart => {
            "--test fencing -- restart_without_persistence_breaks_fences_as_documented"
        }
        Family::FencedRestartPersistent => {
            "--test fencing -- restart_with_persistence_keeps_fences_growing"
        }
        #[cfg(test)]
        Family::Buggy(Bug::NoFenceRaise) => {
            "--lib -- sweep::tests::checker_catches_a_missing_fence_raise"
        }
        #[cfg(test)]
        Family::Buggy(Bug::NoDriftCompensation) => {
            "--lib -- sweep::tests::checker_catches_missing_drift_compensation"
        }
        #[cfg(test)]
        Family::Buggy(Bug::ReleaseWithoutTokenCheck) => {
            "--lib -- sweep::tests::checker_catches_release_without_token_check"
        }
        Family::Queue => "--test sweep -- queue_family_keeps_every_invariant",
        #[cfg(test)]
        Family::Buggy(Bug::TokenPerManager) => {
            "--lib -- sweep::tests::checker_catches_two_holders_in_one_manager"
        }
        #[cfg(test)]
        Family::Buggy(Bug::AcquireAlwaysRefused) => {
            "--lib -- sweep::tests::checker_catches_a_waiter_never_served"
        }
    };
    format!("REDLOCK_SIM_SEED={seed} cargo test -p redlock-mock {test} --nocapture")
}

impl fmt::Display for SeedRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} ({:?}): {} violation(s)",
            self.seed,
            self.family,
            self.report.violations.len()
        )?;
        for v in self.report.violations.iter().take(10) {
            writeln!(f, "  {v}")?;
        }
        writeln!(f, "reproduce: {}", self.reproduce())
    }
}

/// Runs one seed of `family`. Panics inside the simulation are caught and reported as
/// violations, never propagated.
#[must_use]
pub fn run_seed(family: Family, seed: u64) -> SeedRun {
    let world_slot: Arc<Mutex<Option<World>>> = Arc::default();
    let slot = Arc::clone(&world_slot);
    let outcome = catch_unwind(AssertUnwindSafe(move || match family {
        Family::Standard => standard(seed, false, &slot, |world| world).map(|()| None),
        Family::Fair => standard(seed, true, &slot, |world| world).map(|()| None),
        Family::Contention => contention(seed, &slot, |world| world).map(|()| None),
        Family::FencedStandard => standard(seed, false, &slot, fenced).map(|()| None),
        Family::FencedFair => standard(seed, true, &slot, fenced).map(|()| None),
        Family::FencedContention => contention(seed, &slot, fenced).map(|()| None),
        Family::FencedQueue => queue::queue(seed, &slot, fenced).map(Some),
        Family::FencedRestart => fenced_restart(seed, false, &slot).map(|()| None),
        Family::FencedRestartPersistent => fenced_restart(seed, true, &slot).map(|()| None),
        #[cfg(test)]
        Family::Buggy(bug @ Bug::NoFenceRaise) => {
            standard(seed, false, &slot, |world| bug.reintroduce(world)).map(|()| None)
        }
        Family::Queue => queue::queue(seed, &slot, |world| world).map(Some),
        #[cfg(test)]
        Family::Buggy(bug @ (Bug::TokenPerManager | Bug::AcquireAlwaysRefused)) => {
            queue::queue(seed, &slot, |world| bug.reintroduce(world)).map(Some)
        }
        #[cfg(test)]
        Family::Buggy(bug) => {
            contention(seed, &slot, |world| bug.reintroduce(world)).map(|()| None)
        }
        Family::Adversarial => adversarial(seed, &slot).map(|()| None),
    }));
    let world = world_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (mut history, messages, notify, fair_heard) = match &world {
        Some(w) => (
            w.history(),
            w.messages(),
            w.notify_stats(),
            (0..w.client_count())
                .filter(|&k| is_fair(family, k))
                .map(|k| w.heard_releases(k))
                .sum(),
        ),
        None => (History::default(), 0, NotifyStats::default(), 0),
    };
    let mut extra = Vec::new();
    match outcome {
        Ok(Ok(None)) => {}
        Ok(Ok(Some(live))) => {
            extra.extend(crate::check::served(&history, live.since, live.free_for));
        }
        Ok(Err(stalled)) => extra.push(Violation {
            kind: ViolationKind::Stalled,
            detail: stalled,
        }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_owned());
            let at = world.as_ref().map(World::now).unwrap_or_default();
            history.entries.push(Entry::Panic { at, message });
        }
    }
    let mut report = crate::check::check(&history);
    report.violations.extend(extra);
    SeedRun {
        seed,
        family,
        ops: history.op_count(),
        history,
        report,
        messages,
        notify,
        fair_heard,
    }
}

/// Whether client `k` runs in fair mode in `family`.
fn is_fair(family: Family, k: usize) -> bool {
    matches!(family, Family::Fair | Family::FencedFair) && k % 2 == 1
}

/// Totals of a sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepSummary {
    /// Seeds run.
    pub seeds: u64,
    /// Traced lock operations over all seeds.
    pub ops: u64,
    /// Network messages over all seeds.
    pub messages: u64,
    /// Release-announcement traffic over all seeds.
    pub notify: NotifyStats,
    /// Releases by fair-mode clients that a subscriber was registered for, over all seeds.
    pub fair_heard: u64,
    /// Seeds that produced at least one overlap.
    pub seeds_with_overlaps: u64,
    /// The runs that `keep` selected (typically: failures), in seed order.
    pub kept: Vec<SeedRun>,
}

impl SweepSummary {
    fn add_notify(&mut self, notify: NotifyStats, fair_heard: u64) {
        self.notify.subscriptions += notify.subscriptions;
        self.notify.heard += notify.heard;
        self.notify.announcements += notify.announcements;
        self.notify.ended += notify.ended;
        self.fair_heard += fair_heard;
    }
}

/// Runs `family` over `seeds` on `threads` OS threads (each seed is deterministic on its own,
/// so the split does not change any result), keeping the runs `keep` selects.
pub fn sweep(
    family: Family,
    seeds: Range<u64>,
    threads: usize,
    keep: impl Fn(&SeedRun) -> bool + Sync,
) -> SweepSummary {
    let mut summary = par_seeds(
        seeds,
        threads,
        |seed| run_seed(family, seed),
        |s: &mut SweepSummary, run| {
            s.seeds += 1;
            s.ops += run.ops as u64;
            s.messages += run.messages;
            s.add_notify(run.notify, run.fair_heard);
            s.seeds_with_overlaps += u64::from(!run.report.overlaps.is_empty());
            if keep(&run) {
                s.kept.push(run);
            }
        },
        |total, local| {
            total.seeds += local.seeds;
            total.ops += local.ops;
            total.messages += local.messages;
            total.add_notify(local.notify, local.fair_heard);
            total.seeds_with_overlaps += local.seeds_with_overlaps;
            total.kept.extend(local.kept);
        },
    );
    summary.kept.sort_by_key(|r| r.seed);
    summary
}

/// Runs `run` for every seed of `seeds` on `threads` OS threads (each seed is deterministic on
/// its own, so the split changes no result): each thread folds its runs into its own summary
/// with `fold`, and the threads' summaries are combined with `merge`.
pub(crate) fn par_seeds<R, S: Default + Send>(
    seeds: Range<u64>,
    threads: usize,
    run: impl Fn(u64) -> R + Sync,
    fold: impl Fn(&mut S, R) + Sync,
    merge: impl Fn(&mut S, S) + Sync,
) -> S {
    let next = AtomicU64::new(seeds.start);
    let total = Mutex::new(S::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut local = S::default();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    fold(&mut local, run(seed));
                }
                merge(&mut total.lock().unwrap_or_else(|e| e.into_inner()), local);
            });
        }
    });
    total.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Plays a fault script (time, order among simultaneous faults, action) on `world`'s clock in
/// a task of its own.
fn play(world: &World, mut script: Vec<(Duration, u64, Action)>) {
    script.sort_by_key(|(at, order, _)| (*at, *order));
    let nemesis = world.clone();
    world
        .spawn(async move {
            for (at, _, action) in script {
                let now = nemesis.now();
                if at > now {
                    nemesis.sleep(at - now).await;
                }
                action.apply(&nemesis);
            }
        })
        .detach();
}

/// The seed range to sweep: `REDLOCK_SIM_SEED=n` (one seed), else `REDLOCK_SIM_SEEDS=a..b`,
/// else `default`.
///
/// # Panics
/// When a variable is set but malformed (a typo must not silently sweep the default range).
#[must_use]
pub fn seeds_from_env(default: Range<u64>) -> Range<u64> {
    if let Ok(one) = std::env::var("REDLOCK_SIM_SEED") {
        let seed: u64 = one
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("REDLOCK_SIM_SEED={one:?} is not a u64"));
        return seed..seed.saturating_add(1);
    }
    if let Ok(range) = std::env::var("REDLOCK_SIM_SEEDS") {
        let parsed = range
            .split_once("..")
            .and_then(|(a, b)| Some(a.trim().parse::<u64>().ok()?..b.trim().parse::<u64>().ok()?));
        return parsed.unwrap_or_else(|| {
            panic!("REDLOCK_SIM_SEEDS={range:?} is not of the form start..end")
        });
    }
    default
}

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// The largest one-way latency drawn in the standard family, relative to the instance timeout,
/// is `timeout × 6 / 10`: most calls answer in time, and a slow link still times out sometimes.
///
/// `fair`: the [`Family::Fair`] variant. Its own choices come from a separate stream, so the
/// standard family's draws stay as they were.
///
/// `tamper` gets the world's builder last (fencing, or a bug put back).
fn standard(
    seed: u64,
    fair: bool,
    slot: &Mutex<Option<World>>,
    tamper: impl FnOnce(WorldBuilder) -> WorldBuilder,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(derive(seed, 0x5EED));
    let mut fair_rng = StdRng::seed_from_u64(derive(seed, 0xFA1));
    let n = rng.random_range(1..=7usize);
    let mut c = rng.random_range(1..=6usize);
    let mut resources = rng.random_range(1..=2usize);
    if fair {
        // Fairness is between rivals for one resource.
        c = c.max(2);
        resources = 1;
    }
    let ttl = ms(*[20u64, 50, 100, 250, 1000].choose(&mut rng).unwrap_or(&100));
    let timeout = ttl / rng.random_range(4..=12u32);
    let retry_count = rng.random_range(1..=4u32);
    let delay_min = ttl / 100 * rng.random_range(0..=5u32);
    let delay_max = delay_min + ttl / 100 * rng.random_range(0..=30u32);
    let slow = timeout * 6 / 10;
    let family = if fair { Family::Fair } else { Family::Standard };
    let grace = (timeout * 2).mul_f64(fair_rng.random::<f64>());
    // Clock rates within ±0.4 %: the ratio of any instance's rate to any client's stays
    // below 1.01, which the default drift factor covers.
    let (inst_ppm, client_ppm) = ((-4_000, 4_000), (-4_000, 4_000));
    let builder = World::builder()
        .seed(seed)
        .instances(n)
        .clients(c)
        .latency(Latency::Uniform {
            min: Duration::ZERO,
            max: slow / 3,
        })
        .configure(move |b| {
            b.retry_count(retry_count)
                .retry_delay(delay_min, delay_max)
                .instance_timeout(timeout)
        })
        .configure_client(move |k, b| if is_fair(family, k) { b.fair(grace) } else { b });
    let world = tamper(builder).build().map_err(|e| e.to_string())?;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(world.clone());
    for i in 0..n {
        world.set_instance_rate(i, rng.random_range(inst_ppm.0..=inst_ppm.1));
    }
    for k in 0..c {
        world.set_client_rate(k, rng.random_range(client_ppm.0..=client_ppm.1));
    }
    for k in 0..c {
        for i in 0..n {
            if rng.random_bool(0.15) {
                world.set_latency(
                    k,
                    i,
                    Latency::Uniform {
                        min: Duration::ZERO,
                        max: slow,
                    },
                );
            }
        }
    }
    let ops_per_client = rng.random_range(6..=24u32);
    // Down time of a crashed instance: longer than any lease in true time (TTL stretched by
    // the slowest client clock) plus the slowest message, so no live lock relied on its keys.
    let down_min = ttl * 21 / 20 + slow * 2 + ms(1);
    let horizon = ttl * ops_per_client / 2;
    let faults = rng.random_range(0..=8u32);
    let mut script: Vec<(Duration, u64, Action)> = Vec::new();
    for f in 0..u64::from(faults) {
        let at = horizon.mul_f64(rng.random::<f64>());
        let lasting = ttl.mul_f64(rng.random::<f64>() * 2.0);
        let (k, i) = (rng.random_range(0..c), rng.random_range(0..n));
        let (start, stop) = match rng.random_range(0..7u32) {
            0 => (Action::Partition(k, i), Some(Action::Heal(k, i))),
            1 => (Action::Hang(i), Some(Action::Resume(i))),
            2 => (
                Action::RestartAfter(i, down_min + ttl.mul_f64(rng.random::<f64>())),
                None,
            ),
            3 => (
                Action::LoseReplies(k, i, true),
                Some(Action::LoseReplies(k, i, false)),
            ),
            4 => (Action::Error(i, true), Some(Action::Error(i, false))),
            5 => (
                Action::Latency(k, i, timeout * 2),
                Some(Action::Latency(k, i, slow / 3)),
            ),
            _ => (Action::Pause(k, lasting), None),
        };
        script.push((at, 2 * f, start));
        if let Some(stop) = stop {
            script.push((at + lasting, 2 * f + 1, stop));
        }
    }
    play(&world, script);
    let mut handles = Vec::new();
    for k in 0..c {
        let wrng = StdRng::seed_from_u64(derive(seed, 100 + k as u64));
        let w = world.clone();
        handles.push(world.spawn_client(k, workload(w, k, wrng, ops_per_client, resources, ttl)));
    }
    world
        .try_run(futures::future::join_all(handles))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Partition(usize, usize),
    Heal(usize, usize),
    Hang(usize),
    Resume(usize),
    RestartAfter(usize, Duration),
    LoseReplies(usize, usize, bool),
    Error(usize, bool),
    Latency(usize, usize, Duration),
    Pause(usize, Duration),
}

impl Action {
    fn apply(self, w: &World) {
        match self {
            Self::Partition(k, i) => w.partition(k, i),
            Self::Heal(k, i) => w.heal(k, i),
            Self::Hang(i) => w.hang(i),
            Self::Resume(i) => w.resume(i),
            Self::RestartAfter(i, down) => {
                if w.status(i) == crate::net::ServerStatus::Up {
                    w.restart_after(i, down);
                }
            }
            Self::LoseReplies(k, i, on) => w.lose_replies(k, i, on),
            Self::Error(i, on) => {
                w.inject_error(
                    i,
                    on.then_some((BackendErrorKind::Server, "READONLY (injected)")),
                );
            }
            Self::Latency(k, i, max) => w.set_latency(
                k,
                i,
                Latency::Uniform {
                    min: Duration::ZERO,
                    max,
                },
            ),
            Self::Pause(k, d) => w.pause(k, d),
        }
    }
}

async fn workload(
    world: World,
    client: usize,
    mut rng: StdRng,
    ops: u32,
    resources: usize,
    ttl: Duration,
) {
    let traced = world.traced(client);
    let mut held = None;
    for _ in 0..ops {
        let pause = ttl.mul_f64(rng.random::<f64>() / 4.0);
        world.sleep(pause).await;
        match held.take() {
            None => {
                let resource = format!("r{}", rng.random_range(0..resources));
                if let Ok(lock) = traced.lock(resource.as_bytes(), ttl).await {
                    held = Some(lock);
                }
            }
            Some(lock) => match rng.random_range(0..100u32) {
                0..=34 => {
                    let _ = lock.extend().await;
                    held = Some(lock);
                }
                35..=54 => {
                    let _ = lock.check().await;
                    held = Some(lock);
                }
                55..=84 => {
                    let _ = lock.release().await;
                }
                85..=94 => {
                    // Outlive the lease sometimes, then carry on as if still holding it.
                    world.sleep(ttl.mul_f64(rng.random::<f64>() * 1.5)).await;
                    held = Some(lock);
                }
                _ => drop(lock),
            },
        }
    }
    if let Some(lock) = held {
        let _ = lock.release().await;
    }
}

/// Holders keep the lease to its last moment (sometimes past it, then release late), rivals
/// poll every 1 % of the TTL. Instances run 0.4–0.5 % fast and clients 0.4–0.5 % slow: a rate
/// ratio just under the 1 % the default drift factor covers, so only a broken client overlaps.
/// `tamper` gets the world's builder last (the unit tests break the clients with it).
fn contention(
    seed: u64,
    slot: &Mutex<Option<World>>,
    tamper: impl FnOnce(WorldBuilder) -> WorldBuilder,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(derive(seed, 0xC0DE));
    let n = rng.random_range(1..=7usize);
    let c = rng.random_range(2..=3usize);
    let ttl = ms(rng.random_range(500..=2_000u64));
    let builder = World::builder()
        .seed(seed)
        .instances(n)
        .clients(c)
        .latency(Latency::Uniform {
            min: Duration::ZERO,
            max: ms(1),
        })
        .configure(move |b| b.retry_count(1).instance_timeout(ms(10)));
    let world = tamper(builder).build().map_err(|e| e.to_string())?;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(world.clone());
    for i in 0..n {
        world.set_instance_rate(i, rng.random_range(4_000..=5_000));
    }
    for k in 0..c {
        world.set_client_rate(k, rng.random_range(-5_000..=-4_000));
    }
    let leases = rng.random_range(2..=3u32);
    let mut handles = Vec::new();
    for k in 0..c {
        let mut rng = StdRng::seed_from_u64(derive(seed, 200 + k as u64));
        let w = world.clone();
        handles.push(world.spawn_client(k, async move {
            let traced = w.traced(k);
            let clock = std::sync::Arc::clone(traced.manager().clock());
            for _ in 0..leases {
                let lock = loop {
                    if let Ok(lock) = traced.lock("r", ttl).await {
                        break lock;
                    }
                    w.sleep(ttl.mul_f64(rng.random::<f64>() / 50.0)).await;
                };
                match rng.random_range(0..10u32) {
                    0..=4 => {
                        // Use the lease to the end, and release late (the loss is reported).
                        clock.sleep(lock.remaining()).await;
                        w.sleep(ttl.mul_f64(rng.random::<f64>() / 10.0)).await;
                    }
                    5..=7 => {
                        clock.sleep(lock.remaining() / 2).await;
                        if lock.extend().await.is_ok() {
                            clock.sleep(lock.remaining()).await;
                        }
                    }
                    _ => w.sleep(ttl.mul_f64(rng.random::<f64>() / 2.0)).await,
                }
                let _ = lock.release().await;
            }
        }));
    }
    world
        .try_run(futures::future::join_all(handles))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// One scripted break of an assumption, with random N, TTL, subsets and timing.
fn adversarial(seed: u64, slot: &Mutex<Option<World>>) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(derive(seed, 0xADD));
    let kind = seed % 3;
    let n = if kind == 2 {
        rng.random_range(3..=7usize)
    } else {
        rng.random_range(1..=7usize)
    };
    let q = n / 2 + 1;
    let ttl = ms(rng.random_range(200..=2_000u64));
    let world = World::builder()
        .seed(seed)
        .instances(n)
        .clients(2)
        .latency(Latency::Uniform {
            min: Duration::ZERO,
            max: ms(1),
        })
        .configure(|b| b.retry_count(1).instance_timeout(ms(20)))
        .build()
        .map_err(|e| e.to_string())?;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(world.clone());
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let a = world.traced(0);
    let b = world.traced(1);
    let w = world.clone();
    let wait = ttl.mul_f64(rng.random::<f64>() / 4.0);
    let step = ttl / 100;
    let script = async move {
        match kind {
            0 => {
                // Restart without delay: A holds `held` instances, `q − (n − held)` of them
                // restart empty, and B wins a majority while A's lease runs.
                let held = rng.random_range(q..=n);
                for &i in &order[held..] {
                    w.partition(0, i);
                }
                let lock_a = a.lock("r", ttl).await.map_err(|e| e.to_string())?;
                w.sleep(wait).await;
                for &i in &order[..q - (n - held)] {
                    w.bounce(i);
                }
                let _lock_b = b.lock("r", ttl).await.map_err(|e| e.to_string())?;
                w.heal_all();
                followup(&w, &lock_a, &mut rng).await;
            }
            1 => {
                // A majority of instance clocks run 8–30 % fast: A's keys expire there before
                // A's deadline, and B, polling, wins them.
                let fast = rng.random_range(q..=n);
                for &i in &order[..fast] {
                    w.set_instance_rate(i, rng.random_range(80_000..=300_000));
                }
                let lock_a = a.lock("r", ttl).await.map_err(|e| e.to_string())?;
                w.sleep(ttl * 3 / 4).await;
                let _lock_b = loop {
                    if let Ok(l) = b.lock("r", ttl).await {
                        break l;
                    }
                    w.sleep(step).await;
                };
                followup(&w, &lock_a, &mut rng).await;
            }
            _ => {
                // Kleppmann: A holds exactly a quorum; the clocks of `2q − n` of its instances
                // jump past the TTL, and B wins them plus those A could not reach.
                for &i in &order[q..] {
                    w.partition(0, i);
                }
                let lock_a = a.lock("r", ttl).await.map_err(|e| e.to_string())?;
                w.sleep(wait).await;
                for &i in &order[..2 * q - n] {
                    w.jump_instance_clock(i, ttl + ms(1));
                }
                let _lock_b = b.lock("r", ttl).await.map_err(|e| e.to_string())?;
                w.heal_all();
                followup(&w, &lock_a, &mut rng).await;
            }
        }
        Ok::<(), String>(())
    };
    let handle = world.spawn_client(0, script);
    world.try_run(handle).map_err(|e| e.to_string())?
}

/// Fenced locks on persistent instances: what the fenced families run within the assumptions.
fn fenced(world: WorldBuilder) -> WorldBuilder {
    world.fenced(true).persistent(true)
}

/// See [`Family::FencedRestart`]; `persistent`: [`Family::FencedRestartPersistent`].
fn fenced_restart(seed: u64, persistent: bool, slot: &Mutex<Option<World>>) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(derive(seed, 0xFE2CE));
    let n = rng.random_range(3..=7usize);
    let q = n / 2 + 1;
    let ttl = ms(rng.random_range(200..=2_000u64));
    let world = World::builder()
        .seed(seed)
        .instances(n)
        .clients(2)
        .latency(Latency::Uniform {
            min: Duration::ZERO,
            max: ms(1),
        })
        .configure(|b| b.retry_count(1).instance_timeout(ms(20)))
        .fenced(true)
        .persistent(persistent)
        .build()
        .map_err(|e| e.to_string())?;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(world.clone());
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let a = world.traced(0);
    let b = world.traced(1);
    let w = world.clone();
    let grants = rng.random_range(1..=3u32);
    // Down for longer than the TTL: no live lock relied on the lost keys.
    let down = ttl + ms(rng.random_range(1..=500u64));
    let script = async move {
        for _ in 0..grants {
            let lock = a.lock("r", ttl).await.map_err(|e| e.to_string())?;
            w.sleep(ttl.mul_f64(rng.random::<f64>() / 4.0)).await;
            lock.release().await.map_err(|e| e.to_string())?;
        }
        for &i in &order[..q] {
            w.restart_after(i, down);
        }
        w.sleep(down + ms(1)).await;
        for &i in &order[q..] {
            w.partition(1, i);
        }
        let lock = b.lock("r", ttl).await.map_err(|e| e.to_string())?;
        lock.release().await.map_err(|e| e.to_string())?;
        w.heal_all();
        Ok::<(), String>(())
    };
    let handle = world.spawn_client(0, script);
    world.try_run(handle).map_err(|e| e.to_string())?
}

async fn followup(w: &World, lock: &crate::trace::TracedLock, rng: &mut StdRng) {
    w.sleep(ms(rng.random_range(0..=5))).await;
    if rng.random_bool(0.5) {
        let _ = lock.extend().await;
    } else {
        let _ = lock.check().await;
    }
}

#[cfg(test)]
mod tests;
