//! One row: K tasks on R resources in this process, each doing lock → yield → unlock with a 1 s
//! lease until the row's end, every waiter still waiting then dropped at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redlock_lease::{LockManager, LockOptions, Patience, DEFAULT_FAIR_GRACE};

use crate::common::{rslock, url, Flavour, Floor};
use crate::stats::{memory_kib, reset_peak, Histogram, Leftovers, Servers};

/// The lease of every acquisition (issue 10's setting).
pub const LEASE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `lock_opts(.., Patience::UntilCancelled)` on a manager with the defaults.
    Lock,
    /// The same with fair mode on (the default grace).
    Fair,
    /// [`Mode::Lock`] on the redis-rs backend (`redlock-redis`).
    LockRs,
    /// [`Mode::Fair`] on the redis-rs backend.
    FairRs,
    /// The peer: rslock (redis-rs) with its defaults, each task looping on
    /// `acquire_no_guard` (rslock's own wait-until-acquired: attempts with a uniform 0-200 ms
    /// pause after each failed one), then `unlock`.
    Rslock,
    /// Raw fred: `SET NX PX` on every server at once, a quorum wins; otherwise give back what
    /// was set and retry at once. Released with the compare-and-delete script.
    Raw,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::Lock,
        Mode::Fair,
        Mode::LockRs,
        Mode::FairRs,
        Mode::Rslock,
        Mode::Raw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Lock => "lock",
            Mode::Fair => "fair",
            Mode::LockRs => "lock-rs",
            Mode::FairRs => "fair-rs",
            Mode::Rslock => "rslock",
            Mode::Raw => "raw-fred",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// A client whose leftovers are a finding about it, not a failure of this library.
    pub fn is_baseline(self) -> bool {
        matches!(self, Mode::Rslock | Mode::Raw)
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub mode: Mode,
    pub tasks: usize,
    pub resources: usize,
    pub span: Duration,
    /// Key prefix, distinct per row (and per process of a multi-process row).
    pub tag: String,
}

pub struct Outcome {
    pub acquisitions: u64,
    pub span: Duration,
    pub latency: Histogram,
    pub min_per_task: u64,
    pub served: usize,
    pub errors: u64,
    pub first_error: Option<String>,
    pub rss_start_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_after_kib: u64,
    /// Commands the servers executed during the row (all clients of the servers).
    pub commands: u64,
    pub left: Leftovers,
}

impl Outcome {
    pub fn per_sec(&self) -> f64 {
        self.acquisitions as f64 / self.span.as_secs_f64()
    }
}

enum Client {
    Manager(LockManager),
    Rslock(rslock::LockManager),
    Raw(Floor),
}

#[derive(Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

/// Runs `spec` against the servers on `ports`; with `start_at` (milliseconds since the Unix
/// epoch) the tasks start then, so that several processes start together.
/// With `before_check`, called once this process's tasks have ended and before it looks at
/// what is left (a multi-process row waits there for every process to end).
pub fn run(
    spec: &Spec,
    ports: &[u16],
    start_at: Option<u64>,
    before_check: Option<&(dyn Fn() + Sync)>,
) -> Outcome {
    reset_peak();
    let (rss_start_kib, _) = memory_kib();
    let mut servers = Servers::connect(ports);
    let runtime = Flavour::MultiThread.runtime();
    let result = runtime.block_on(async {
        let client = match spec.mode {
            Mode::Lock | Mode::Fair | Mode::LockRs | Mode::FairRs => {
                let urls = ports.iter().map(|&p| url(p));
                let fair = matches!(spec.mode, Mode::Fair | Mode::FairRs);
                // The two backends' builders are distinct types with the same settings: one
                // body for both keeps the rows' managers alike but for the backend.
                macro_rules! build {
                    ($builder:expr) => {{
                        let builder = $builder;
                        if fair {
                            builder.fair(DEFAULT_FAIR_GRACE)
                        } else {
                            builder
                        }
                        .build()
                    }};
                }
                let manager = if matches!(spec.mode, Mode::LockRs | Mode::FairRs) {
                    build!(redlock_redis::manager(urls))
                } else {
                    build!(redlock_lease::fred::manager(urls))
                }
                .expect("valid configuration");
                // Connections up and scripts loaded before the clock starts.
                let warm = manager
                    .lock(format!("{}:warm", spec.tag), LEASE)
                    .await
                    .expect("warm-up lock");
                warm.release().await.expect("warm-up release");
                Arc::new(Client::Manager(manager))
            }
            Mode::Rslock => {
                let manager = rslock(ports);
                // Connections up before the clock starts, as for the managers above.
                let warm = manager
                    .lock(format!("{}:warm", spec.tag).as_bytes(), LEASE)
                    .await
                    .expect("warm-up lock");
                manager.unlock(&warm).await;
                Arc::new(Client::Rslock(manager))
            }
            Mode::Raw => Arc::new(Client::Raw(Floor::connect(ports).await)),
        };
        if let Some(at) = start_at {
            sleep_until_unix_ms(at).await;
        }
        let commands_before = tokio::task::block_in_place(|| servers.commands());
        let latency = Arc::new(Histogram::new());
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new((0..spec.tasks).map(|_| AtomicU64::new(0)).collect());
        let errors = Arc::new(Mutex::new(Errors::default()));
        let start = Instant::now();
        let end = tokio::time::Instant::now() + spec.span;
        let handles: Vec<_> = (0..spec.tasks)
            .map(|t| {
                let name = format!("{}:{}", spec.tag, t % spec.resources);
                let token = format!("{}:t{t}", spec.tag);
                let (client, latency, counts, errors) = (
                    Arc::clone(&client),
                    Arc::clone(&latency),
                    Arc::clone(&counts),
                    Arc::clone(&errors),
                );
                tokio::spawn(async move {
                    let count = || counts[t].fetch_add(1, Ordering::Relaxed);
                    match &*client {
                        Client::Manager(m) => {
                            lock_loop(m, &name, end, &latency, count, &errors).await;
                        }
                        Client::Rslock(m) => rslock_loop(m, &name, end, &latency, count).await,
                        Client::Raw(f) => raw_loop(f, &name, &token, end, &latency, count).await,
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
        let span = start.elapsed();
        let (_, rss_peak_kib) = memory_kib();
        // Looked at before the client closes: closing drops the subscriber connections (and
        // their channels) and would hide what a live client leaves behind. With several
        // processes, each looks once every one has ended (the keys of one still finishing its
        // last critical section are not left behind).
        let commands_after = tokio::task::block_in_place(|| servers.commands());
        if let Some(sync) = before_check {
            tokio::task::block_in_place(sync);
        }
        let left = tokio::task::block_in_place(|| {
            let commands = commands_after - commands_before;
            (
                commands,
                servers.leftovers(Duration::from_millis(500), Duration::from_secs(6)),
            )
        });
        match &*client {
            Client::Manager(m) => drop(m.close().await),
            // rslock has no close: its connections end with the runtime.
            Client::Rslock(_) => {}
            Client::Raw(f) => f.quit().await,
        }
        let counts: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let errors = std::mem::take(&mut *errors.lock().unwrap());
        let latency = Arc::try_unwrap(latency).unwrap_or_else(|_| panic!("tasks ended"));
        (span, latency, counts, errors, rss_peak_kib, left)
    });
    drop(runtime);
    let (span, latency, counts, errors, rss_peak_kib, (commands, left)) = result;
    let (rss_after_kib, _) = memory_kib();
    Outcome {
        acquisitions: counts.iter().sum(),
        span,
        latency,
        min_per_task: counts.iter().copied().min().unwrap_or(0),
        served: counts.iter().filter(|&&c| c > 0).count(),
        errors: errors.count,
        first_error: errors.first,
        rss_start_kib,
        rss_peak_kib,
        rss_after_kib,
        commands,
        left,
    }
}

async fn lock_loop(
    manager: &LockManager,
    name: &str,
    end: tokio::time::Instant,
    latency: &Histogram,
    count: impl Fn() -> u64,
    errors: &Mutex<Errors>,
) {
    let options = LockOptions::new(LEASE).patience(Patience::UntilCancelled);
    while tokio::time::Instant::now() < end {
        let asked = Instant::now();
        // The run's end drops every waiter at once, as a shutdown would.
        let Ok(got) = tokio::time::timeout_at(end, manager.lock_opts(name, options)).await else {
            return;
        };
        match got {
            Ok(lock) => {
                latency.record(asked.elapsed());
                count();
                tokio::task::yield_now().await;
                if let Err(e) = lock.release().await {
                    note(errors, &e);
                }
            }
            Err(e) => note(errors, &e),
        }
    }
}

fn note(errors: &Mutex<Errors>, e: &redlock_lease::Error) {
    let mut errors = errors.lock().unwrap();
    errors.count += 1;
    if errors.first.is_none() {
        errors.first = Some(e.to_string());
    }
}

async fn rslock_loop(
    manager: &rslock::LockManager,
    name: &str,
    end: tokio::time::Instant,
    latency: &Histogram,
    count: impl Fn() -> u64,
) {
    while tokio::time::Instant::now() < end {
        let asked = Instant::now();
        // The run's end drops every waiter at once, as for the managers.
        let acquire = manager.acquire_no_guard(name.as_bytes(), LEASE);
        let Ok(got) = tokio::time::timeout_at(end, acquire).await else {
            return;
        };
        // Its only error is a TTL too large, which 1 s is not.
        let lock = got.expect("rslock acquire");
        latency.record(asked.elapsed());
        count();
        tokio::task::yield_now().await;
        // Best effort by rslock's design: it reports no unlock failure.
        manager.unlock(&lock).await;
    }
}

async fn raw_loop(
    floor: &Floor,
    name: &str,
    token: &str,
    end: tokio::time::Instant,
    latency: &Histogram,
    count: impl Fn() -> u64,
) {
    let quorum = floor.len() / 2 + 1;
    while tokio::time::Instant::now() < end {
        let asked = Instant::now();
        loop {
            if tokio::time::Instant::now() >= end {
                return;
            }
            let got = floor.acquire(name, token, LEASE).await;
            if got >= quorum {
                break;
            }
            if got > 0 {
                floor.release(name, token).await;
            }
        }
        latency.record(asked.elapsed());
        count();
        tokio::task::yield_now().await;
        floor.release(name, token).await;
    }
}

async fn sleep_until_unix_ms(at: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await;
}
