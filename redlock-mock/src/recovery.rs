//! Restart recovery under a majority restart: a seeded family and its checker.
//!
//! Each run: N instances (3 or 5), two to four holders each holding its own resource through
//! [`lock_auto`](redlock_core::LockManager::lock_auto) (a 10 s lease, renewed at 6 s), and one
//! rival. A majority of the instances crash and come back empty (no persistence) a few
//! milliseconds later, which breaks the assumption Redlock relies on; the clients' links
//! announce their reconnection a seeded delay after each instance is back
//! ([`WorldBuilder::reconnect_delay`](crate::WorldBuilder::reconnect_delay)). The rival tries
//! every resource once, at a seeded moment shortly before or after the reconnections.
//!
//! The checker ([`RestartRun::violations`]) judges what restart recovery promises:
//!
//! - **Told in time.** When the rival was granted a holder's resource, the holder was told
//!   `Lost` no later than the last instance's return + the longest reconnection delay + two
//!   per-instance timeouts (the re-check of a key is one round; a key found missing is set
//!   again in a second one, which a rival's key that arrived in between makes fail). That is
//!   hundreds of milliseconds, not the 6 s of the renewal schedule.
//! - **Re-asserted.** When the rival was not granted it and the holder was not told `Lost` by
//!   that bound, the holder's token is back on a quorum of instances at the bound: a later
//!   rival is refused, mutual exclusion stands again.
//!
//! A run with the managers' recovery off
//! ([`LockManagerBuilder::restart_recovery`](redlock_core::LockManagerBuilder::restart_recovery))
//! breaks both (proved by this crate's tests).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{select, Either};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use redlock_core::{LossReason, DEFAULT_INSTANCE_TIMEOUT};

use crate::net::Latency;
use crate::world::{derive, World};

/// The longest reconnection delay of the family.
pub const RECONNECT_MAX: Duration = Duration::from_millis(150);

/// How long each run lasts: past the holders' first renewal (6 s into the 10 s lease), so that
/// without recovery their loss is still seen, at the renewal.
const HORIZON: Duration = Duration::from_secs(8);

/// What happened to one holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderOutcome {
    /// The holder's client index (its resource is `r{client}`).
    pub client: usize,
    /// When it was told `Lost` (true time) and why; `None` if it held on to the end.
    pub lost: Option<(Duration, LossReason)>,
    /// When the rival was granted this holder's resource (true time), if it was.
    pub rival_granted_at: Option<Duration>,
    /// Instances holding the holder's token at the bound.
    pub holding_at_bound: usize,
}

/// One run of the family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartRun {
    /// The seed.
    pub seed: u64,
    /// Number of instances.
    pub instances: usize,
    /// The instances restarted (a majority).
    pub restarted: Vec<usize>,
    /// When the last of them was back up (true time).
    pub last_back: Duration,
    /// The checker's bound: `last_back` + [`RECONNECT_MAX`] + two per-instance timeouts.
    pub bound: Duration,
    /// Per holder.
    pub holders: Vec<HolderOutcome>,
}

impl RestartRun {
    /// The quorum of this run.
    #[must_use]
    pub fn quorum(&self) -> usize {
        self.instances / 2 + 1
    }

    /// What the run broke of restart recovery's promise (see the module documentation).
    #[must_use]
    pub fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        for h in &self.holders {
            let told_in_time = h.lost.is_some_and(|(at, _)| at <= self.bound);
            if told_in_time {
                continue;
            }
            let told = match h.lost {
                Some((at, reason)) => format!("told Lost ({reason}) at {at:?}"),
                None => "never told Lost".to_owned(),
            };
            if let Some(granted) = h.rival_granted_at {
                found.push(format!(
                    "seed {}: rival granted r{} at {granted:?}; the holder was {told}, not by the \
                     bound {:?} (last instance back at {:?})",
                    self.seed, h.client, self.bound, self.last_back
                ));
            } else if h.holding_at_bound < self.quorum() {
                found.push(format!(
                    "seed {}: r{} was {told}, yet only {} instances hold its token at the bound \
                     {:?} (quorum {}): not re-asserted",
                    self.seed,
                    h.client,
                    h.holding_at_bound,
                    self.bound,
                    self.quorum()
                ));
            }
        }
        found
    }
}

/// One run of the family for `seed`, with the managers' restart recovery on or off.
///
/// # Panics
/// When the world cannot be built or a holder cannot take its free resource (a bug in the
/// family, not a finding).
#[must_use]
pub fn restart_run(seed: u64, recovery: bool) -> RestartRun {
    let mut rng = StdRng::seed_from_u64(derive(seed, 0x5e57_a127));
    let instances = if rng.random_bool(0.5) { 3 } else { 5 };
    let quorum = instances / 2 + 1;
    let holders = rng.random_range(2..=4usize);
    let rival = holders;
    let world = World::builder()
        .seed(seed)
        .instances(instances)
        .clients(holders + 1)
        .latency(Latency::Uniform {
            min: Duration::from_micros(200),
            max: Duration::from_millis(3),
        })
        .reconnect_delay(Latency::Uniform {
            min: Duration::from_millis(5),
            max: RECONNECT_MAX,
        })
        .configure(move |b| b.restart_recovery(recovery))
        .build()
        .expect("a valid world");

    let restart_at = Duration::from_millis(rng.random_range(50..=150));
    let mut order: Vec<usize> = (0..instances).collect();
    order.shuffle(&mut rng);
    let k = rng.random_range(quorum..=instances);
    let mut restarted: Vec<usize> = order[..k].to_vec();
    restarted.sort_unstable();
    let downs: Vec<Duration> = restarted
        .iter()
        .map(|_| Duration::from_millis(rng.random_range(0..=30)))
        .collect();
    let last_back = restart_at + downs.iter().copied().max().unwrap_or_default();
    let bound = last_back + RECONNECT_MAX + DEFAULT_INSTANCE_TIMEOUT * 2;
    // Up to a little after the bound: late enough to find re-asserted keys, early enough to
    // take a key nobody re-asserted.
    let rival_at = restart_at
        + Duration::from_millis(rng.random_range(
            0..=u64::try_from((bound - restart_at).as_millis() + 50).unwrap_or(u64::MAX),
        ));
    let rival_tries = rng.random_bool(0.8);

    let tokens: Arc<Mutex<Vec<Option<Vec<u8>>>>> = Arc::new(Mutex::new(vec![None; holders]));
    let holding: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0; holders]));

    // The restarts.
    let nemesis = world.clone();
    let (to_restart, to_down) = (restarted.clone(), downs.clone());
    world
        .spawn(async move {
            nemesis.sleep(restart_at).await;
            for (&i, &down) in to_restart.iter().zip(&to_down) {
                nemesis.restart_after(i, down);
            }
        })
        .detach();

    // Who holds each token at the bound.
    let (observer, seen_tokens, seen) = (world.clone(), Arc::clone(&tokens), Arc::clone(&holding));
    world
        .spawn(async move {
            observer.sleep(bound).await;
            let tokens = seen_tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for (h, token) in tokens.iter().enumerate() {
                let Some(token) = token else { continue };
                let key = format!("r{h}");
                seen[h] = (0..observer.instance_count())
                    .filter(|&i| observer.instance(i).get(key.as_bytes()).as_ref() == Some(token))
                    .count();
            }
        })
        .detach();

    let mut tasks = Vec::new();
    for h in 0..holders {
        let (w, tokens) = (world.clone(), Arc::clone(&tokens));
        tasks.push(world.spawn_client(h, async move {
            let lock = w
                .client(h)
                .lock_auto(format!("r{h}"))
                .await
                .expect("a free resource");
            tokens.lock().unwrap_or_else(|e| e.into_inner())[h] = Some(lock.token().to_vec());
            let lost = match select(Box::pin(lock.lost()), w.sleep(HORIZON)).await {
                Either::Left((reason, _)) => Some((w.now(), reason)),
                Either::Right(_) => None,
            };
            // Held to the horizon, so the rival meets it all along.
            let now = w.now();
            if now < HORIZON {
                w.sleep(HORIZON - now).await;
            }
            drop(lock);
            lost
        }));
    }
    let w = world.clone();
    let rival_task = world.spawn_client(rival, async move {
        let mut granted = vec![None; holders];
        if !rival_tries {
            return granted;
        }
        w.sleep(rival_at).await;
        let mut kept = Vec::new();
        for (h, slot) in granted.iter_mut().enumerate() {
            if let Ok(lock) = w
                .client(rival)
                .try_lock(format!("r{h}"), Duration::from_secs(10))
                .await
            {
                *slot = Some(w.now());
                kept.push(lock);
            }
        }
        let now = w.now();
        if now < HORIZON {
            w.sleep(HORIZON - now).await;
        }
        drop(kept);
        granted
    });
    let (lost, granted) = world.run(futures::future::join(
        futures::future::join_all(tasks),
        rival_task,
    ));
    let holding = holding.lock().unwrap_or_else(|e| e.into_inner()).clone();
    RestartRun {
        seed,
        instances,
        restarted,
        last_back,
        bound,
        holders: (0..holders)
            .map(|h| HolderOutcome {
                client: h,
                lost: lost[h],
                rival_granted_at: granted[h],
                holding_at_bound: holding[h],
            })
            .collect(),
    }
}

/// The family over a range of seeds.
#[derive(Debug, Default, Clone)]
pub struct RestartSweep {
    /// Runs made.
    pub runs: u64,
    /// Holders in all runs.
    pub holders: u64,
    /// Holders whose resource the rival was granted.
    pub rival_grants: u64,
    /// Holders the rival was refused for, and that kept their lock (re-asserted).
    pub kept: u64,
    /// Holders told `Lost` although the rival was not granted their resource (a re-check that
    /// met the rival's short-lived key, or could not tell): early, never late.
    pub lost_without_rival: u64,
    /// For holders whose resource the rival was granted: time from the last instance's return
    /// to the holder being told `Lost`.
    pub loss_after_back: Vec<Duration>,
    /// Every violation, with its seed.
    pub violations: Vec<String>,
}

impl RestartSweep {
    fn add(&mut self, run: &RestartRun) {
        self.runs += 1;
        for h in &run.holders {
            self.holders += 1;
            match (h.rival_granted_at, h.lost) {
                (Some(_), Some((at, _))) => {
                    self.rival_grants += 1;
                    self.loss_after_back.push(at.saturating_sub(run.last_back));
                }
                (Some(_), None) => self.rival_grants += 1,
                (None, None) => self.kept += 1,
                (None, Some(_)) => self.lost_without_rival += 1,
            }
        }
        self.violations.extend(run.violations());
    }

    fn merge(&mut self, other: Self) {
        self.runs += other.runs;
        self.holders += other.holders;
        self.rival_grants += other.rival_grants;
        self.kept += other.kept;
        self.lost_without_rival += other.lost_without_rival;
        self.loss_after_back.extend(other.loss_after_back);
        self.violations.extend(other.violations);
    }

    /// The smallest, median and largest time from the last instance's return to a loss report.
    #[must_use]
    pub fn loss_distribution(&self) -> Option<(Duration, Duration, Duration)> {
        let mut d = self.loss_after_back.clone();
        d.sort_unstable();
        Some((*d.first()?, d[d.len() / 2], *d.last()?))
    }
}

impl fmt::Display for RestartSweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} runs, {} holders: {} rival grants, {} kept (re-asserted), {} lost without a \
             rival grant, {} violations",
            self.runs,
            self.holders,
            self.rival_grants,
            self.kept,
            self.lost_without_rival,
            self.violations.len()
        )?;
        if let Some((min, p50, max)) = self.loss_distribution() {
            write!(
                f,
                "; told Lost after the last instance was back: min {min:?} p50 {p50:?} max {max:?}"
            )?;
        }
        Ok(())
    }
}

/// Runs the family over `seeds` on `threads` OS threads.
#[must_use]
pub fn sweep_restarts(seeds: Range<u64>, recovery: bool, threads: usize) -> RestartSweep {
    let mut sweep = crate::sweep::par_seeds(
        seeds,
        threads,
        |seed| restart_run(seed, recovery),
        |acc: &mut RestartSweep, run| acc.add(&run),
        RestartSweep::merge,
    );
    // Threads finish in any order: sorted, the report is the same every time.
    sweep.violations.sort();
    sweep.loss_after_back.sort_unstable();
    sweep
}
