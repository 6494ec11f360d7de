//! (c) Contention: eight workers on one resource, each holding it 1 ms and asking again at once,
//! each with a client of its own (as eight processes would). Subjects, alternated round by round:
//! `floor` (raw fred: `SET NX` to all N, on a refusal the compare-and-delete to all N and a
//! retry after a uniform 0-2 ms delay; it never gives up), `redlock` (the manager with its
//! defaults, wake-on-release on) and `rslock` (rslock on redis-rs with its defaults). A worker
//! whose `lock()` gives up calls it again; the give-ups are counted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    cpu_times, floor_token, manager, manager_rs, median, quantile, ratio, rslock, Flavour, Floor,
    TTL,
};
use redlock_lease::{Error, Lock, LockManager};

pub const WORKERS: usize = 8;
pub const HOLD: Duration = Duration::from_millis(1);

/// In the order rows are printed; the ratios are taken to `floor` and `rslock`.
pub const SUBJECTS: [&str; 4] = ["floor", "rslock", "redlock", "redlock-rs"];

/// How long a round runs, and at most how many critical sections it takes in all (0: no cap;
/// a cap pins a profile to a fixed amount of work).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rounds: usize,
    pub span: Duration,
    pub max_sections: u64,
    pub hold: Hold,
}

/// What the critical section waits on for its 1 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `tokio::time::sleep`: the runtime's timer, whose wheel counts whole milliseconds. The
    /// sleep's end moves with the wake-ups of the runtime during it (tokio parks for
    /// `deadline - floor(now)` whole ticks), so other tasks' I/O in the hold stretches it (the
    /// `timer` bench measures by how much).
    Timer,
    /// `std::thread::sleep` on a blocking thread: 1 ms of outside work (a call to another
    /// service) whose end does not depend on the runtime's ticks.
    Thread,
}

impl Hold {
    /// `REDLOCK_CONTEND_HOLD` (`timer` or `thread`), or `default` when it is not set.
    pub fn from_env(default: Self) -> Self {
        match std::env::var("REDLOCK_CONTEND_HOLD").as_deref() {
            Ok("thread") => Hold::Thread,
            Ok("timer") => Hold::Timer,
            Err(_) => default,
            Ok(other) => panic!("REDLOCK_CONTEND_HOLD: timer or thread, not {other}"),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Hold::Timer => {
                "a tokio sleep (its timer counts whole milliseconds, counted afresh at each \
                 wake-up of the runtime, so a wake-up d into the sleep can push its end back by up \
                 to d: cargo bench --bench timer; REDLOCK_CONTEND_HOLD=thread for a hold free of \
                 that)"
            }
            Hold::Thread => {
                "a std::thread::sleep on a blocking thread (REDLOCK_CONTEND_HOLD=thread): outside \
                 work, free of the runtime timer's whole-millisecond ticks"
            }
        }
    }

    async fn run(self) {
        match self {
            Hold::Timer => tokio::time::sleep(HOLD).await,
            Hold::Thread => tokio::task::spawn_blocking(|| std::thread::sleep(HOLD))
                .await
                .expect("hold thread"),
        }
    }
}

/// One worker's client.
enum Client {
    Floor(Floor),
    Redlock(LockManager),
    Rslock(rslock::LockManager),
}

enum Held {
    Floor(String),
    Redlock(Lock),
    Rslock(rslock::Lock),
}

/// What one worker counted in a round.
#[derive(Debug, Default)]
struct Tally {
    sections: u64,
    /// `lock()` calls that returned "held by another" and were made again.
    give_ups: u64,
    /// Lock or unlock calls that failed otherwise (a round out of time on a loaded machine).
    failures: u64,
    /// How long the 1 ms hold took, measured inside the critical section.
    holds: Vec<Duration>,
    /// From the end of the previous holder's hold to the start of this one's: the client's
    /// hand-over, free of the hold's timer granularity.
    gaps: Vec<Duration>,
}

impl Client {
    async fn connect(subject: &str, ports: &[u16]) -> Self {
        match subject {
            "floor" => Client::Floor(Floor::connect(ports).await),
            "redlock" => Client::Redlock(manager(ports, true)),
            "redlock-rs" => Client::Redlock(manager_rs(ports, true)),
            "rslock" => Client::Rslock(rslock(ports)),
            other => unreachable!("no contend subject {other}"),
        }
    }

    /// Takes the lock on `resource`, however many calls that needs.
    async fn acquire(
        &self,
        resource: &str,
        worker: u64,
        attempt: &mut u64,
        tally: &mut Tally,
    ) -> Held {
        loop {
            *attempt += 1;
            match self {
                Client::Floor(floor) => {
                    let token = floor_token(worker, *attempt);
                    if floor.acquire(resource, &token, TTL).await > floor.len() / 2 {
                        return Held::Floor(token);
                    }
                    // A partial grant would block everyone until the lease ends.
                    floor.release(resource, &token).await;
                    let jitter = splitmix(worker << 40 ^ *attempt) % 2_001;
                    tokio::time::sleep(Duration::from_micros(jitter)).await;
                }
                Client::Redlock(manager) => match manager.lock(resource, TTL).await {
                    Ok(lock) => return Held::Redlock(lock),
                    Err(Error::Contended(_)) => tally.give_ups += 1,
                    Err(Error::Closed | Error::InvalidInput(_)) => {
                        panic!("lock {resource}: unusable")
                    }
                    Err(_) => tally.failures += 1,
                },
                Client::Rslock(manager) => match manager.lock(resource.as_bytes(), TTL).await {
                    Ok(lock) => return Held::Rslock(lock),
                    Err(rslock::LockError::Unavailable) => tally.give_ups += 1,
                    Err(_) => tally.failures += 1,
                },
            }
        }
    }

    async fn release(&self, resource: &str, held: Held, tally: &mut Tally) {
        match (self, held) {
            (Client::Floor(floor), Held::Floor(token)) => {
                if floor.release(resource, &token).await <= floor.len() / 2 {
                    tally.failures += 1;
                }
            }
            (Client::Redlock(_), Held::Redlock(lock)) => {
                if lock.release().await.is_err() {
                    tally.failures += 1;
                }
            }
            // Best effort by rslock's design: it reports no unlock failure.
            (Client::Rslock(manager), Held::Rslock(lock)) => manager.unlock(&lock).await,
            _ => unreachable!("a lock is released by the client that took it"),
        }
    }

    async fn close(&self) {
        match self {
            Client::Floor(floor) => floor.quit().await,
            Client::Redlock(manager) => drop(manager.close().await),
            Client::Rslock(_) => {}
        }
    }
}

/// A well-mixed 64-bit value from `x` (splitmix64): the floor's retry jitter, without a
/// dependency.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One subject's round.
#[derive(Debug)]
pub struct Round {
    elapsed: Duration,
    cpu: Duration,
    /// The system part of `cpu`.
    sys: Duration,
    per_worker: Vec<u64>,
    give_ups: u64,
    failures: u64,
    holds: Vec<Duration>,
    gaps: Vec<Duration>,
    /// Sections entered while another worker was inside: must stay 0.
    overlaps: u64,
}

impl Round {
    fn sections(&self) -> u64 {
        self.per_worker.iter().sum()
    }

    fn per_sec(&self) -> f64 {
        self.sections() as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_per_section(&self) -> Duration {
        self.cpu.div_f64(self.sections().max(1) as f64)
    }

    fn sys_percent(&self) -> f64 {
        self.sys.as_secs_f64() / self.cpu.as_secs_f64().max(f64::MIN_POSITIVE) * 100.0
    }
}

async fn round(clients: &[Arc<Client>], resource: &str, plan: Plan) -> Round {
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicU64::new(0));
    let taken = Arc::new(AtomicU64::new(0));
    let holds: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let gaps: Arc<Mutex<Vec<Duration>>> = Arc::default();
    // When the last hold ended, in ns since `start` (0: none yet this round).
    let left_at = Arc::new(AtomicU64::new(0));
    let (user, sys) = cpu_times();
    let start = Instant::now();
    let deadline = start + plan.span;
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(worker, client)| {
            let client = Arc::clone(client);
            let (inside, overlaps, taken, holds, gaps, left_at) = (
                Arc::clone(&inside),
                Arc::clone(&overlaps),
                Arc::clone(&taken),
                Arc::clone(&holds),
                Arc::clone(&gaps),
                Arc::clone(&left_at),
            );
            let resource = resource.to_owned();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut attempt = 0;
                let worker = worker as u64;
                while Instant::now() < deadline
                    && (plan.max_sections == 0 || taken.load(Ordering::Relaxed) < plan.max_sections)
                {
                    // A worker still waiting at the deadline stops waiting: the round's rate is
                    // taken over its span, not over the slowest waiter's tail.
                    let acquire = client.acquire(&resource, worker, &mut attempt, &mut tally);
                    let Ok(held) = tokio::time::timeout_at(deadline.into(), acquire).await else {
                        break;
                    };
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::Relaxed);
                    }
                    let entered = Instant::now();
                    let previous = left_at.load(Ordering::SeqCst);
                    if previous != 0 {
                        let now = entered.duration_since(start).as_nanos() as u64;
                        tally
                            .gaps
                            .push(Duration::from_nanos(now.saturating_sub(previous)));
                    }
                    plan.hold.run().await;
                    tally.holds.push(entered.elapsed());
                    left_at.store(start.elapsed().as_nanos() as u64, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    tally.sections += 1;
                    taken.fetch_add(1, Ordering::Relaxed);
                    client.release(&resource, held, &mut tally).await;
                }
                holds.lock().unwrap().append(&mut tally.holds);
                gaps.lock().unwrap().append(&mut tally.gaps);
                tally
            })
        })
        .collect();
    let mut per_worker = Vec::new();
    let (mut give_ups, mut failures) = (0, 0);
    for t in tasks {
        let tally = t.await.expect("contend worker");
        per_worker.push(tally.sections);
        give_ups += tally.give_ups;
        failures += tally.failures;
    }
    let elapsed = start.elapsed();
    let (user_after, sys_after) = cpu_times();
    let holds = std::mem::take(&mut *holds.lock().unwrap());
    let gaps = std::mem::take(&mut *gaps.lock().unwrap());
    Round {
        elapsed,
        cpu: (user_after + sys_after).saturating_sub(user + sys),
        sys: sys_after.saturating_sub(sys),
        per_worker,
        give_ups,
        failures,
        holds,
        gaps,
        overlaps: overlaps.load(Ordering::Relaxed),
    }
}

/// Every selected subject's rounds on one set of servers and one runtime, alternated round by
/// round; no rounds for a subject left out.
pub async fn measure(
    ports: &[u16],
    tag: &str,
    plan: Plan,
    selected: &[bool; SUBJECTS.len()],
) -> [Vec<Round>; SUBJECTS.len()] {
    let mut clients: [Vec<Arc<Client>>; SUBJECTS.len()] = Default::default();
    for (s, name) in SUBJECTS.iter().enumerate().filter(|(s, _)| selected[*s]) {
        for worker in 0..WORKERS {
            let client = Client::connect(name, ports).await;
            // Connects lazily made connections (and subscriptions) before anything is timed.
            let mut tally = Tally::default();
            let resource = format!("{tag}:contend:warm:{name}:{worker}");
            let held = client
                .acquire(&resource, worker as u64, &mut 0, &mut tally)
                .await;
            client.release(&resource, held, &mut tally).await;
            clients[s].push(Arc::new(client));
        }
    }
    let mut rounds: [Vec<Round>; SUBJECTS.len()] = Default::default();
    for r in 0..plan.rounds {
        for (s, name) in SUBJECTS.iter().enumerate().filter(|(s, _)| selected[*s]) {
            let resource = format!("{tag}:contend:{name}:{r}");
            rounds[s].push(round(&clients[s], &resource, plan).await);
        }
    }
    for client in clients.iter().flatten() {
        client.close().await;
    }
    rounds
}

pub fn print_header() {
    println!(
        "{:>2} {:<15} {:<8} {:>8} {:>10} {:>8} {:>8} {:>7} {:>5} {:>8} {:>8} {:>7} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "N",
        "runtime",
        "subject",
        "sections",
        "sections/s",
        "vs floor",
        "vs rslock",
        "CPU us",
        "sys",
        "vs floor",
        "vs rslock",
        "give-ups",
        "min share",
        "hold p50",
        "hold p99",
        "gap p50",
        "gap p99",
        "overlaps"
    );
}

pub fn print_rows(n: usize, flavour: Flavour, rounds: &[Vec<Round>; SUBJECTS.len()]) {
    let rate_of = |rs: &[Round]| median(&mut rs.iter().map(Round::per_sec).collect::<Vec<_>>());
    let cpu_of = |rs: &[Round]| {
        median(
            &mut rs
                .iter()
                .map(|r| r.cpu_per_section().as_secs_f64() * 1e6)
                .collect::<Vec<_>>(),
        )
    };
    let (floor_rate, floor_cpu) = (rate_of(&rounds[0]), cpu_of(&rounds[0]));
    let (peer_rate, peer_cpu) = (rate_of(&rounds[1]), cpu_of(&rounds[1]));
    for (s, name) in SUBJECTS
        .iter()
        .enumerate()
        .filter(|(s, _)| !rounds[*s].is_empty())
    {
        let rs = &rounds[s];
        let (rate, cpu) = (rate_of(rs), cpu_of(rs));
        let sys = median(&mut rs.iter().map(Round::sys_percent).collect::<Vec<_>>());
        let mut per_worker = [0u64; WORKERS];
        for r in rs {
            for (w, c) in r.per_worker.iter().enumerate() {
                per_worker[w] += c;
            }
        }
        let total: u64 = per_worker.iter().sum();
        let mean = total as f64 / WORKERS as f64;
        let min_share = per_worker.iter().copied().min().unwrap_or(0) as f64 / mean.max(1.0);
        let holds: Vec<Duration> = rs.iter().flat_map(|r| r.holds.iter().copied()).collect();
        let gaps: Vec<Duration> = rs.iter().flat_map(|r| r.gaps.iter().copied()).collect();
        println!(
            "{n:>2} {:<15} {name:<8} {total:>8} {rate:>10.0} {:>8} {:>8} {cpu:>7.1} {sys:>4.0}% {:>8} {:>8} {:>8} {:>8.0}% {:>9.3} {:>9.3} {:>8.3} {:>8.3} {:>8}",
            flavour.name(),
            ratio(rate, floor_rate),
            ratio(rate, peer_rate),
            ratio(cpu, floor_cpu),
            ratio(cpu, peer_cpu),
            rs.iter().map(|r| r.give_ups).sum::<u64>(),
            min_share * 100.0,
            quantile(&holds, 0.5).as_secs_f64() * 1e3,
            quantile(&holds, 0.99).as_secs_f64() * 1e3,
            quantile(&gaps, 0.5).as_secs_f64() * 1e3,
            quantile(&gaps, 0.99).as_secs_f64() * 1e3,
            rs.iter().map(|r| r.overlaps).sum::<u64>(),
        );
        let failures: u64 = rs.iter().map(|r| r.failures).sum();
        if failures > 0 {
            println!(
                "   {name}: lock or unlock calls that failed other than by contention: {failures}"
            );
        }
    }
}
