//! The local-queue family: several tasks of each client want the same few resources through one
//! manager, so they wait in the manager's local queue, under faults, cancellations and a close.
//!
//! Each task mixes every way to acquire (`lock`, `try_lock`, `lock_opts` with each
//! [`Patience`], `with_lock`), holds what it gets for a while (extends, checks, outlives its
//! lease, releases or drops it), and sometimes gives up a call it is waiting on: the call races
//! a timer of the task's own and its future is dropped when the timer wins, which is how a
//! queued waiter is cancelled. `UntilCancelled` calls are always raced so. Meanwhile a nemesis
//! partitions links, crashes and restarts instances (down longer than the TTL), hangs them,
//! loses replies and pauses clients, so holders lose their locks while others queue behind
//! them; and in some seeds one client's manager is closed at a random moment, with tasks
//! queued.
//!
//! Once every fault is over, each task makes one last `UntilCancelled` call (the drain): with
//! the deployment healthy, every waiter must be served unless its resource stays busy, which
//! [`served`](crate::check::served) judges from the holders' windows.

use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::{select, BoxFuture, Either};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use redlock_core::{AutoExtend, LockOptions, Patience};

use super::{ms, Action};
use crate::net::Latency;
use crate::trace::TracedLock;
use crate::world::{derive, World, WorldBuilder};

/// What the liveness checker needs to know about a run: from when the deployment is healthy,
/// and how long a free resource may go unnoticed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Liveness {
    pub(super) since: Duration,
    pub(super) free_for: Duration,
}

/// The settings every task of a run shares.
#[derive(Debug, Clone, Copy)]
struct Plan {
    ttl: Duration,
    ops: u32,
    resources: usize,
    /// When the drain starts: every fault is over.
    quiet_at: Duration,
    /// How long a drain call waits before its task gives up on it.
    drain_limit: Duration,
}

/// Client `k` runs in fair mode.
fn fair_client(fair: bool, k: usize) -> bool {
    fair && k % 2 == 1
}

/// `tamper` gets the world's builder last (the unit tests break the clients with it).
pub(super) fn queue(
    seed: u64,
    slot: &Mutex<Option<World>>,
    tamper: impl FnOnce(WorldBuilder) -> WorldBuilder,
) -> Result<Liveness, String> {
    let mut rng = StdRng::seed_from_u64(derive(seed, 0x0051_0CA1));
    let n = rng.random_range(1..=5usize);
    let c = rng.random_range(1..=3usize);
    let resources = rng.random_range(1..=2usize);
    let ttl = ms(*[50u64, 100, 250, 1000].choose(&mut rng).unwrap_or(&100));
    let timeout = ttl / rng.random_range(4..=12u32);
    let retry_count = rng.random_range(1..=4u32);
    let delay_min = ttl / 100 * rng.random_range(0..=5u32);
    let delay_max = delay_min + ttl / 100 * rng.random_range(0..=30u32);
    let slow = timeout * 6 / 10;
    let fair = rng.random_bool(0.3);
    let grace = (timeout * 2).mul_f64(rng.random::<f64>());
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
                .internal_lock_timeout(ttl)
        })
        .configure_client(move |k, b| {
            if fair_client(fair, k) {
                b.fair(grace)
            } else {
                b
            }
        });
    let world = tamper(builder).build().map_err(|e| e.to_string())?;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(world.clone());
    // Clock rates within ±0.4 %, as in the standard family: within the drift factor.
    for i in 0..n {
        world.set_instance_rate(i, rng.random_range(-4_000..=4_000));
    }
    for k in 0..c {
        world.set_client_rate(k, rng.random_range(-4_000..=4_000));
    }
    let ops = rng.random_range(3..=6u32);
    let horizon = ttl * ops;
    // Down time of a crashed instance: longer than any lease in true time plus the slowest
    // message, so no live lock relied on its keys.
    let down_min = ttl * 21 / 20 + slow * 2 + ms(1);
    let mut script: Vec<(Duration, u64, Action)> = Vec::new();
    let mut quiet_at = Duration::ZERO;
    let mut pauses = Duration::ZERO;
    for f in 0..u64::from(rng.random_range(0..=5u32)) {
        let at = horizon.mul_f64(rng.random::<f64>());
        let lasting = ttl.mul_f64(rng.random::<f64>() * 2.0);
        let (k, i) = (rng.random_range(0..c), rng.random_range(0..n));
        let (start, stop) = match rng.random_range(0..6u32) {
            0 => (Action::Partition(k, i), Some(Action::Heal(k, i))),
            1 => (Action::Hang(i), Some(Action::Resume(i))),
            2 => {
                let down = down_min + ttl.mul_f64(rng.random::<f64>());
                quiet_at = quiet_at.max(at + down);
                (Action::RestartAfter(i, down), None)
            }
            3 => (
                Action::LoseReplies(k, i, true),
                Some(Action::LoseReplies(k, i, false)),
            ),
            4 => (
                Action::Latency(k, i, timeout * 2),
                Some(Action::Latency(k, i, slow / 3)),
            ),
            _ => {
                pauses += lasting;
                (Action::Pause(k, lasting), None)
            }
        };
        quiet_at = quiet_at.max(at + lasting);
        script.push((at, 2 * f, start));
        if let Some(stop) = stop {
            script.push((at + lasting, 2 * f + 1, stop));
        }
    }
    super::play(&world, script);
    // The close of one client's manager, while its tasks are busy.
    if rng.random_bool(0.3) {
        let k = rng.random_range(0..c);
        let at = horizon.mul_f64(rng.random::<f64>());
        let w = world.clone();
        world
            .spawn_client(k, async move {
                w.sleep(at).await;
                let _ = w.traced(k).close().await;
            })
            .detach();
    }
    // Keys set before the deployment became healthy expire within a TTL (stretched by the
    // fastest clock ratio) plus a message.
    let settle = ttl * 11 / 10 + slow;
    let attempt = delay_max + timeout * 2 + grace + slow;
    // A window that ends without a release leaves keys until they expire (within the drift
    // allowance and a message); then the waiter needs a retry window, the fair grace and an
    // attempt, and a few more when rival clients split the votes.
    let free_for = ttl / 5 + ms(2) + attempt * 4;
    let tasks = rng.random_range(2..=4usize);
    let drain_limit = settle + free_for * 3 + (ttl / 5 + attempt) * (c * tasks) as u32;
    let plan = Plan {
        ttl,
        ops,
        resources,
        quiet_at,
        drain_limit,
    };
    let mut handles = Vec::new();
    for k in 0..c {
        for t in 0..tasks {
            let trng = StdRng::seed_from_u64(derive(seed, 1_000 + (k * 16 + t) as u64));
            handles.push(world.spawn_client(k, task(world.clone(), k, trng, plan)));
        }
    }
    // Every call of a task is bounded, or raced against a timer: a run still going long after
    // its last task should have finished has a call that hangs.
    let lock_bound = (timeout * 2 + delay_max) * retry_count + grace;
    let per_op = ttl * 5 + lock_bound + timeout * 6;
    let limit = (quiet_at.max(per_op * ops) + pauses + drain_limit + ttl) * 2;
    let all = futures::future::join_all(handles);
    match world.try_run(race(all, world.sleep(limit))) {
        Ok(Some(_)) => Ok(Liveness {
            since: quiet_at + settle,
            free_for,
        }),
        Ok(None) => Err(format!(
            "hung: tasks still running at {limit:?}, long after every call should have ended"
        )),
        Err(stalled) => Err(stalled.to_string()),
    }
}

/// `call`, unless `timer` fires first: then `call` is dropped (cancelled) and `None` returned.
async fn race<T>(call: impl Future<Output = T>, timer: BoxFuture<'static, ()>) -> Option<T> {
    match select(pin!(call), timer).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

fn resource(rng: &mut StdRng, plan: &Plan) -> String {
    format!("r{}", rng.random_range(0..plan.resources))
}

async fn task(w: World, k: usize, mut rng: StdRng, plan: Plan) {
    let traced = w.traced(k);
    let ttl = plan.ttl;
    for _ in 0..plan.ops {
        w.sleep(ttl.mul_f64(rng.random::<f64>() / 4.0)).await;
        let resource = resource(&mut rng, &plan);
        let kind = rng.random_range(0..7u32);
        // A waiter that gives up on its own: its future is dropped, queued or not.
        let cancel = (kind == 5 || rng.random_bool(0.2))
            .then(|| w.sleep(ttl.mul_f64(rng.random::<f64>() * 2.0)));
        if kind == 6 {
            let hold = ttl.mul_f64(rng.random::<f64>() * 1.5);
            let job_world = w.clone();
            let scoped = traced.with_lock_opts(
                &resource,
                AutoExtend::default().with_lease(ttl),
                |_watch| async move {
                    // Polled often enough to see every renewal before the old deadline.
                    let mut left = hold;
                    while !left.is_zero() {
                        let step = left.min(ttl / 8);
                        job_world.sleep(step).await;
                        left -= step;
                    }
                },
            );
            let _ = match cancel {
                Some(timer) => race(scoped, timer).await,
                None => Some(scoped.await),
            };
            continue;
        }
        let patience = match kind {
            2 => Some(Patience::Attempts(rng.random_range(1..=3))),
            3 => Some(Patience::NoWait),
            4 => Some(Patience::For(ttl.mul_f64(rng.random::<f64>()))),
            5 => Some(Patience::UntilCancelled),
            _ => None,
        };
        let call = async {
            match (kind, patience) {
                (0, _) => traced.lock(&resource, ttl).await,
                (1, _) => traced.try_lock(&resource, ttl).await,
                (_, Some(p)) => {
                    let options = LockOptions::new(ttl).patience(p);
                    traced.lock_opts(&resource, options).await
                }
                (_, None) => traced.lock_opts(&resource, LockOptions::new(ttl)).await,
            }
        };
        let result = match cancel {
            Some(timer) => race(call, timer).await,
            None => Some(call.await),
        };
        if let Some(Ok(lock)) = result {
            hold(&w, &mut rng, lock, ttl).await;
        }
    }
    // The drain: the deployment is healthy from now on, and this waiter must be served unless
    // its resource stays busy.
    let now = w.now();
    if plan.quiet_at > now {
        w.sleep(plan.quiet_at - now).await;
    }
    let resource = resource(&mut rng, &plan);
    let options = LockOptions::new(ttl).patience(Patience::UntilCancelled);
    let call = traced.lock_opts(&resource, options);
    if let Some(Ok(lock)) = race(call, w.sleep(plan.drain_limit)).await {
        w.sleep(ttl.mul_f64(rng.random::<f64>() / 10.0)).await;
        let _ = lock.release().await;
    }
}

/// Uses a lock for a while, as a job would, then lets it go.
async fn hold(w: &World, rng: &mut StdRng, lock: TracedLock, ttl: Duration) {
    match rng.random_range(0..100u32) {
        0..=29 => {
            w.sleep(ttl.mul_f64(rng.random::<f64>() / 2.0)).await;
            let _ = lock.release().await;
        }
        30..=49 => {
            w.sleep(ttl.mul_f64(rng.random::<f64>() / 3.0)).await;
            let _ = lock.extend().await;
            w.sleep(ttl.mul_f64(rng.random::<f64>() / 3.0)).await;
            let _ = lock.release().await;
        }
        50..=59 => {
            let _ = lock.check().await;
            w.sleep(ttl.mul_f64(rng.random::<f64>() / 4.0)).await;
            let _ = lock.release().await;
        }
        60..=74 => {
            // Outlive the lease sometimes, then release late (the loss is reported).
            w.sleep(ttl.mul_f64(rng.random::<f64>() * 1.5)).await;
            let _ = lock.release().await;
        }
        75..=89 => {
            w.sleep(ttl.mul_f64(rng.random::<f64>() / 2.0)).await;
            drop(lock);
        }
        _ => {
            let _ = lock.release().await;
        }
    }
}
