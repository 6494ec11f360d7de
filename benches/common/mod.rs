//! Shared by the Redis bench binaries: real servers, the raw-fred floor, runtimes, statistics and
//! process measurements.

// Each bench binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::bytes_utils::Str;
use fred::clients::Client;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::{
    Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, Server, ServerConfig, TcpConfig,
};
use fred::types::{ClusterHash, CustomCommand, Expiration, SetOptions, Value};
use futures::future::join_all;
use redlock_lease::fred::{ConnectionOptions, RedisBackend};
use redlock_lease::{LockBackend, LockManager, DEFAULT_INSTANCE_TIMEOUT};
use redlock_testkit::RedisServer;

/// aioredlock's default lease.
pub const TTL: Duration = Duration::from_secs(10);

/// `cargo test --benches` runs bench binaries without `--bench`; CI can also force it.
pub fn quick() -> bool {
    std::env::var_os("REDLOCK_BENCH_QUICK").is_some_and(|v| v != "0")
        || !std::env::args().any(|a| a == "--bench")
}

/// `REDLOCK_BENCH_ONLY=redlock,floor` runs only those subjects (or sections of a bench), e.g. to
/// profile one under callgrind; all by default.
pub fn selected(subject: &str) -> bool {
    std::env::var("REDLOCK_BENCH_ONLY")
        .map(|only| only.split(',').any(|s| s.trim() == subject))
        .unwrap_or(true)
}

/// A count from the environment (`REDLOCK_BENCH_CYCLES`, ...), to pin a run to a fixed amount of
/// work for an instruction-count profile; `default` when unset or not a number.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The per-instance timeout of the floor, the backends and the managers:
/// `REDLOCK_BENCH_INSTANCE_TIMEOUT_MS` raises it for a run under valgrind, where everything is
/// some 50 times slower and the default would time rounds out; the default otherwise. (rslock's
/// 500 ms response timeout cannot be set through its `LockManager::new`.)
pub fn instance_timeout() -> Duration {
    std::env::var("REDLOCK_BENCH_INSTANCE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(DEFAULT_INSTANCE_TIMEOUT, Duration::from_millis)
}

/// The instance counts to run: `REDLOCK_BENCH_N=3` restricts a run to one; 3 and 5 by default.
pub fn instance_counts(all: &[usize]) -> Vec<usize> {
    match std::env::var("REDLOCK_BENCH_N") {
        Ok(v) => all
            .iter()
            .copied()
            .filter(|n| v.split(',').any(|s| s.trim() == n.to_string()))
            .collect(),
        Err(_) => all.to_vec(),
    }
}

/// The tokio runtime flavours both sides are run on: on 2 cores the flavour alone moves a
/// pipelined client by more than any algorithmic difference, so ratios are only taken within one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    MultiThread,
    CurrentThread,
}

impl Flavour {
    pub const ALL: [Flavour; 2] = [Flavour::MultiThread, Flavour::CurrentThread];

    /// The flavours to run: `REDLOCK_BENCH_FLAVOUR=current-thread` restricts a run to one.
    pub fn selected() -> Vec<Flavour> {
        match std::env::var("REDLOCK_BENCH_FLAVOUR") {
            Ok(v) => Self::ALL
                .into_iter()
                .filter(|f| v.split(',').any(|s| s.trim() == f.name()))
                .collect(),
            Err(_) => Self::ALL.to_vec(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavour::MultiThread => "multi-thread",
            Flavour::CurrentThread => "current-thread",
        }
    }

    pub fn runtime(self) -> tokio::runtime::Runtime {
        let mut builder = match self {
            Flavour::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            Flavour::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        };
        builder.enable_all().build().expect("tokio runtime")
    }
}

pub fn start_servers(n: usize) -> Vec<RedisServer> {
    redlock_testkit::require_redis();
    (0..n).map(|_| RedisServer::start()).collect()
}

pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

pub fn ports(servers: &[RedisServer]) -> Vec<u16> {
    servers.iter().map(RedisServer::port).collect()
}

/// A manager over `ports` as an application would build it, with wake-on-release on or off.
/// Must be called inside the runtime that will drive it (connections are made lazily there).
pub fn manager(ports: &[u16], wake: bool) -> LockManager {
    redlock_lease::fred::manager(ports.iter().map(|&p| url(p)))
        .instance_timeout(instance_timeout())
        .wake_on_release(wake)
        .build()
        .expect("valid configuration")
}

/// [`manager`] with wake-on-release on and fenced locks (two more rounds per lock).
pub fn fenced_manager(ports: &[u16]) -> LockManager {
    redlock_lease::fred::manager(ports.iter().map(|&p| url(p)))
        .instance_timeout(instance_timeout())
        .fenced(true)
        .build()
        .expect("valid configuration")
}

/// The same manager on the redis-rs backend (`redlock-redis`), with the same settings.
pub fn manager_rs(ports: &[u16], wake: bool) -> LockManager {
    redlock_redis::manager(ports.iter().map(|&p| url(p)))
        .instance_timeout(instance_timeout())
        .wake_on_release(wake)
        .build()
        .expect("valid configuration")
}

/// The fred backends a manager over `ports` would have, to call them without the algorithm.
pub fn backends(ports: &[u16]) -> Vec<Arc<RedisBackend>> {
    let options = ConnectionOptions::default().for_instance_timeout(instance_timeout());
    ports
        .iter()
        .map(|&p| Arc::new(RedisBackend::with_options(url(p), &options).expect("valid instance")))
        .collect()
}

/// An rslock manager over `ports` with rslock's defaults (3 attempts, each failed one followed by
/// a uniform 0-200 ms delay; redis-rs multiplexed connections with a 500 ms response timeout and
/// Nagle on). Connections are made lazily, inside the runtime of the first call.
pub fn rslock(ports: &[u16]) -> rslock::LockManager {
    rslock::LockManager::new(ports.iter().map(|&p| url(p)).collect())
}

/// The standard compare-and-delete every Redlock client sends on release.
const FLOOR_RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// The fred backend's acquire script, verbatim (`redlock-fred/src/scripts.rs`): Redlock clients
/// that must be idempotent under fred's re-sends cannot use a bare `SET NX`. Sent raw by the
/// `floor-lua` subject to separate the cost of running a script on the server from the
/// backend's and the core's own costs. Keep in step with the backend.
const BACKEND_ACQUIRE: &str = r"#!lua
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' and v.err then return -1 end
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

/// What any Redlock client must at least do per cycle, with no algorithm around it: `SET key
/// token NX PX ttl` on every instance at once, then the compare-and-delete script on every
/// instance at once. One fred client per instance with the backend's settings (auto-pipelined,
/// the same command timeout, TCP_NODELAY), so the difference to it is the library's own cost.
/// Written the way a careful raw client would: the command name and script digests are built
/// once, so a call allocates only what fred itself needs.
#[derive(Clone)]
pub struct Floor {
    clients: Vec<Client>,
    evalsha: CustomCommand,
    release_sha: Str,
    acquire_sha: Str,
}

impl Floor {
    /// Connects to every port (inside the current runtime) and loads the scripts.
    pub async fn connect(ports: &[u16]) -> Self {
        let command_timeout = ConnectionOptions::default()
            .for_instance_timeout(instance_timeout())
            .command_timeout();
        let mut clients = Vec::new();
        for &port in ports {
            let config = Config {
                fail_fast: false,
                server: ServerConfig::Centralized {
                    server: Server::new("127.0.0.1", port),
                },
                ..Config::default()
            };
            let perf = PerformanceConfig {
                default_command_timeout: command_timeout,
                ..PerformanceConfig::default()
            };
            let connection = ConnectionConfig {
                connection_timeout: Duration::from_secs(1),
                internal_command_timeout: Duration::from_secs(1),
                max_command_attempts: 1,
                tcp: TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                },
                ..ConnectionConfig::default()
            };
            let mut policy = ReconnectPolicy::new_exponential(0, 10, 1000, 2);
            policy.set_jitter(20);
            let client = Client::new(config, Some(perf), Some(connection), Some(policy));
            drop(client.init().await.expect("floor client connects"));
            clients.push(client);
        }
        let load = CustomCommand::new_static("SCRIPT", ClusterHash::Random, false);
        let mut shas = [String::new(), String::new()];
        for client in &clients {
            for (sha, body) in shas.iter_mut().zip([FLOOR_RELEASE, BACKEND_ACQUIRE]) {
                *sha = client
                    .custom::<String, Value>(load.clone(), vec!["LOAD".into(), body.into()])
                    .await
                    .expect("SCRIPT LOAD");
            }
        }
        let [release_sha, acquire_sha] = shas;
        Self {
            clients,
            evalsha: CustomCommand::new_static("EVALSHA", ClusterHash::FirstKey, false),
            release_sha: release_sha.into(),
            acquire_sha: acquire_sha.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// `SET key token NX PX ttl` on every instance at once; how many said OK.
    pub async fn acquire(&self, key: &str, token: &str, ttl: Duration) -> usize {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let calls = self.clients.iter().map(|c| {
            c.set::<Value, _, _>(
                key,
                token,
                Some(Expiration::PX(ms)),
                Some(SetOptions::NX),
                false,
            )
        });
        join_all(calls)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(v) if !v.is_null()))
            .count()
    }

    /// The backend's acquire script by `EVALSHA` on every instance at once; how many acquired.
    pub async fn acquire_lua(&self, key: &str, token: &str, ttl: Duration) -> usize {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.evalsha_all(&self.acquire_sha, key, &[token.into(), Value::Integer(ms)])
            .await
    }

    /// The compare-and-delete on every instance at once, as `EVALSHA` sent as a custom command:
    /// fred's own `evalsha` is not pipelined, and the backend sends it the same way.
    pub async fn release(&self, key: &str, token: &str) -> usize {
        self.evalsha_all(&self.release_sha, key, &[token.into()])
            .await
    }

    /// A plain `DEL` on every instance at once; how many deleted. Not a safe release (it does not
    /// compare the token): a cost probe only, for what a built-in compare-and-delete (Redis 8.4's
    /// `DELEX key IFEQ token`, Valkey 9's `DELIFEQ`) would cost where the server lacks it. fred
    /// batches built-in commands into shared writes, while it flushes after every script.
    pub async fn release_del(&self, key: &str) -> usize {
        let calls = self.clients.iter().map(|c| c.del::<i64, _>(key));
        join_all(calls)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(1)))
            .count()
    }

    /// How many instances answered 1.
    async fn evalsha_all(&self, sha: &Str, key: &str, args: &[Value]) -> usize {
        let calls = self.clients.iter().map(|c| {
            let mut command = Vec::with_capacity(3 + args.len());
            command.push(Value::String(sha.clone()));
            command.push(Value::Integer(1));
            command.push(key.into());
            command.extend_from_slice(args);
            c.custom::<i64, Value>(self.evalsha.clone(), command)
        });
        join_all(calls)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(1)))
            .count()
    }

    pub async fn quit(&self) {
        for c in &self.clients {
            let _ = c.quit().await;
        }
    }
}

impl Subject {
    pub async fn close(&self) {
        match self {
            Subject::Floor(f) | Subject::FloorLua(f) | Subject::FloorDel(f) => f.quit().await,
            Subject::Backends(backends) => {
                for b in backends {
                    drop(b.close().await);
                }
            }
            Subject::Redlock(m) => drop(m.close().await),
            // rslock has no close: its connections end with the runtime.
            Subject::Rslock(_) => {}
        }
    }
}

/// A floor token: unique per (task, cycle), the 32 ASCII characters a Redlock token has.
pub fn floor_token(task: u64, cycle: u64) -> String {
    format!("{task:016x}{cycle:016x}")
}

/// One side of a comparison: the raw floor, the raw floor acquiring with the backend's script,
/// the fred backends called directly (their scripts and command building, no algorithm), a
/// lock manager, or the peer rslock (redis-rs).
pub enum Subject {
    Floor(Floor),
    FloorLua(Floor),
    /// The floor releasing with a plain `DEL` ([`Floor::release_del`]): a cost probe, not a lock.
    FloorDel(Floor),
    Backends(Vec<Arc<RedisBackend>>),
    Redlock(LockManager),
    Rslock(rslock::LockManager),
}

impl Subject {
    /// One lock + unlock cycle on `key`; how long the lock and the unlock took, or what failed.
    /// Failures are counted and reported, not fatal: on a loaded machine a round can run out of
    /// its per-instance timeout, and that is a figure too.
    pub async fn cycle(
        &self,
        key: &str,
        task: u64,
        cycle: u64,
    ) -> Result<(Duration, Duration), String> {
        match self {
            Subject::Floor(floor) | Subject::FloorLua(floor) | Subject::FloorDel(floor) => {
                let token = floor_token(task, cycle);
                let start = Instant::now();
                let got = if matches!(self, Subject::FloorLua(_)) {
                    floor.acquire_lua(key, &token, TTL).await
                } else {
                    floor.acquire(key, &token, TTL).await
                };
                let locked = Instant::now();
                let quorum = floor.len() / 2 + 1;
                if got < quorum {
                    floor.release(key, &token).await;
                    return Err(format!("floor: lock: {got} of {} instances", floor.len()));
                }
                let released = if matches!(self, Subject::FloorDel(_)) {
                    floor.release_del(key).await
                } else {
                    floor.release(key, &token).await
                };
                if released < quorum {
                    return Err(format!(
                        "floor: unlock: {released} of {} instances",
                        floor.len()
                    ));
                }
                Ok((locked - start, locked.elapsed()))
            }
            Subject::Backends(backends) => {
                let token = floor_token(task, cycle);
                let (key, token) = (key.as_bytes(), token.as_bytes());
                let quorum = backends.len() / 2 + 1;
                let start = Instant::now();
                let got = join_all(backends.iter().map(|b| b.acquire(key, token, TTL))).await;
                let locked = Instant::now();
                let got = got.into_iter().filter(|r| matches!(r, Ok(true))).count();
                let released = join_all(backends.iter().map(|b| b.release(key, token))).await;
                let released = released
                    .into_iter()
                    .filter(|r| matches!(r, Ok(true)))
                    .count();
                if got < quorum || released < quorum {
                    return Err(format!("backends: {got} acquired, {released} released"));
                }
                Ok((locked - start, locked.elapsed()))
            }
            Subject::Redlock(manager) => {
                let start = Instant::now();
                let lock = manager
                    .lock(key, TTL)
                    .await
                    .map_err(|e| format!("redlock: lock: {e}"))?;
                let locked = Instant::now();
                lock.release()
                    .await
                    .map_err(|e| format!("redlock: unlock: {e}"))?;
                Ok((locked - start, locked.elapsed()))
            }
            Subject::Rslock(manager) => {
                let start = Instant::now();
                let lock = manager
                    .lock(key.as_bytes(), TTL)
                    .await
                    .map_err(|e| format!("rslock: lock: {e}"))?;
                let locked = Instant::now();
                // Best effort by rslock's design: it reports no unlock failure.
                manager.unlock(&lock).await;
                Ok((locked - start, locked.elapsed()))
            }
        }
    }
}

impl Subject {
    /// Takes the lock on `key` and returns how long that took, leaving the unlock to a task of
    /// its own: the next lock then starts at once, not after the slowest instance answered the
    /// unlock.
    pub async fn lock_detached(
        self: &Arc<Self>,
        key: &str,
        task: u64,
        cycle: u64,
    ) -> Result<Duration, String> {
        match &**self {
            Subject::Floor(floor) | Subject::FloorLua(floor) | Subject::FloorDel(floor) => {
                let token = floor_token(task, cycle);
                let start = Instant::now();
                let got = if matches!(**self, Subject::FloorLua(_)) {
                    floor.acquire_lua(key, &token, TTL).await
                } else {
                    floor.acquire(key, &token, TTL).await
                };
                let took = start.elapsed();
                let (floor, key) = (floor.clone(), key.to_owned());
                let quorum = floor.len() / 2 + 1;
                tokio::spawn(async move { floor.release(&key, &token).await });
                if got < quorum {
                    return Err(format!("floor: lock: {got} instances"));
                }
                Ok(took)
            }
            Subject::Backends(backends) => {
                let token = floor_token(task, cycle);
                let start = Instant::now();
                let got = join_all(
                    backends
                        .iter()
                        .map(|b| b.acquire(key.as_bytes(), token.as_bytes(), TTL)),
                )
                .await;
                let took = start.elapsed();
                let (backends, key) = (backends.clone(), key.to_owned());
                let quorum = backends.len() / 2 + 1;
                tokio::spawn(async move {
                    join_all(
                        backends
                            .iter()
                            .map(|b| b.release(key.as_bytes(), token.as_bytes())),
                    )
                    .await
                });
                let got = got.into_iter().filter(|r| matches!(r, Ok(true))).count();
                if got < quorum {
                    return Err(format!("backends: lock: {got} instances"));
                }
                Ok(took)
            }
            Subject::Redlock(manager) => {
                let start = Instant::now();
                let lock = manager
                    .lock(key, TTL)
                    .await
                    .map_err(|e| format!("redlock: lock: {e}"))?;
                let took = start.elapsed();
                tokio::spawn(async move { lock.release().await });
                Ok(took)
            }
            Subject::Rslock(manager) => {
                let start = Instant::now();
                let lock = manager
                    .lock(key.as_bytes(), TTL)
                    .await
                    .map_err(|e| format!("rslock: lock: {e}"))?;
                let took = start.elapsed();
                tokio::spawn(lock.release());
                Ok(took)
            }
        }
    }
}

/// Failed cycles of a run, and the first failure's message.
#[derive(Debug, Default, Clone)]
pub struct Failures {
    pub count: u64,
    pub first: Option<String>,
}

impl Failures {
    pub fn add(&mut self, error: String) {
        self.count += 1;
        self.first.get_or_insert(error);
    }

    pub fn merge(&mut self, other: Failures) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// One task, `cycles` lock + unlock cycles on distinct resources.
#[derive(Debug, Default, Clone)]
pub struct Seq {
    pub elapsed: Duration,
    pub cycles: u64,
    pub lock: Vec<Duration>,
    pub unlock: Vec<Duration>,
    pub failures: Failures,
}

impl Seq {
    /// Completed cycles per second.
    pub fn per_sec(&self) -> f64 {
        (self.cycles - self.failures.count) as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn seq(subject: &Subject, prefix: &str, cycles: u64) -> Seq {
    seq_paced(subject, prefix, cycles, Duration::ZERO).await
}

/// As [`seq`], idle for `pause` between cycles (and the pauses not counted in the rate).
pub async fn seq_paced(subject: &Subject, prefix: &str, cycles: u64, pause: Duration) -> Seq {
    let mut out = Seq {
        cycles,
        lock: Vec::with_capacity(cycles as usize),
        unlock: Vec::with_capacity(cycles as usize),
        ..Seq::default()
    };
    let mut paused = Duration::ZERO;
    let start = Instant::now();
    for i in 0..cycles {
        if !pause.is_zero() {
            let idle = Instant::now();
            tokio::time::sleep(pause).await;
            paused += idle.elapsed();
        }
        let key = format!("{prefix}:{i}");
        match subject.cycle(&key, 0, i).await {
            Ok((lock, unlock)) => {
                out.lock.push(lock);
                out.unlock.push(unlock);
            }
            Err(e) => out.failures.add(e),
        }
    }
    out.elapsed = start.elapsed() - paused;
    out
}

/// `tasks` tasks, each `per_task` cycles on resources of its own.
#[derive(Debug, Clone)]
pub struct Conc {
    pub elapsed: Duration,
    pub cpu: Duration,
    /// The system part of `cpu`.
    pub sys: Duration,
    /// CPU time the redis-servers used meanwhile.
    pub server_cpu: Duration,
    pub cycles: u64,
    pub failures: Failures,
}

impl Conc {
    /// Completed cycles per second.
    pub fn per_sec(&self) -> f64 {
        (self.cycles - self.failures.count) as f64 / self.elapsed.as_secs_f64()
    }

    pub fn cpu_per_cycle(&self) -> Duration {
        self.cpu.div_f64(self.cycles as f64)
    }

    /// The system part of the client CPU, in percent.
    pub fn sys_percent(&self) -> f64 {
        self.sys.as_secs_f64() / self.cpu.as_secs_f64().max(f64::MIN_POSITIVE) * 100.0
    }

    pub fn server_cpu_per_cycle(&self) -> Duration {
        self.server_cpu.div_f64(self.cycles as f64)
    }
}

pub async fn conc(
    subject: &Arc<Subject>,
    prefix: &str,
    tasks: u64,
    per_task: u64,
    servers: &[u32],
) -> Conc {
    let server_cpu = cpu_time_of(servers);
    let (user, sys) = cpu_times();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let subject = Arc::clone(subject);
            let prefix = format!("{prefix}:{t}");
            tokio::spawn(async move {
                let mut failures = Failures::default();
                for i in 0..per_task {
                    let key = format!("{prefix}:{i}");
                    if let Err(e) = subject.cycle(&key, t, i).await {
                        failures.add(e);
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Failures::default();
    for h in handles {
        failures.merge(h.await.expect("bench task"));
    }
    let elapsed = start.elapsed();
    let (user_after, sys_after) = cpu_times();
    Conc {
        elapsed,
        cpu: (user_after + sys_after).saturating_sub(user + sys),
        sys: sys_after.saturating_sub(sys),
        server_cpu: cpu_time_of(servers).saturating_sub(server_cpu),
        cycles: tasks * per_task,
        failures,
    }
}

/// Connects a subject's lazy connections and fills fred's buffers before anything is timed.
pub async fn warm_up(subject: &Subject, prefix: &str, cycles: u64) {
    for i in 0..cycles {
        // The first calls may time out while connections come up.
        let _ = subject.cycle(&format!("{prefix}:warm:{i}"), 0, i).await;
    }
}

/// The `p`-quantile (0..=1) of `samples`, nearest rank.
pub fn quantile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `value / reference` as `1.23x`, or `-` when the reference subject was not run (a run pinned
/// to one subject).
pub fn ratio(value: f64, reference: f64) -> String {
    if reference.is_finite() && reference > 0.0 {
        format!("{:.2}x", value / reference)
    } else {
        "-".to_owned()
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// User + system CPU time of this process (all threads), from `getrusage(RUSAGE_SELF)`.
pub fn cpu_time() -> Duration {
    let (user, sys) = cpu_times();
    user + sys
}

/// User and system CPU time of this process (all threads), from `getrusage(RUSAGE_SELF)`: the
/// system part is mostly socket reads and writes, wake-ups and parking.
// `getrusage` is a plain libc call: there is no safe std equivalent.
#[allow(unsafe_code)]
pub fn cpu_times() -> (Duration, Duration) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory of the right type and size for one `rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: zero-initialised, then filled in by a successful getrusage.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// User + system CPU time of other processes (the redis-servers), from `/proc/PID/stat`, in
/// clock ticks (10 ms): coarse, so only read around runs of seconds.
// `sysconf` is a plain libc call: there is no safe std equivalent.
#[allow(unsafe_code)]
pub fn cpu_time_of(pids: &[u32]) -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let total: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The command name may hold spaces; the fields after it never do.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .sum();
    Duration::from_secs_f64(total as f64 / ticks)
}

pub fn pids(servers: &[RedisServer]) -> Vec<u32> {
    servers.iter().filter_map(RedisServer::pid).collect()
}

/// Resident memory of this process in KiB (`VmRSS` in `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The 1-minute load average, printed with the figures: other work on the 2 cores moves them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Whether the fred backend can announce releases (without it, wake-on-release polls).
pub fn backend_announces_releases() -> bool {
    RedisBackend::new(url(1))
        .map(|b| b.release_notify().is_some())
        .unwrap_or(false)
}

/// Prints the failures of a table's rows, if any.
pub fn print_failures<'a>(rows: impl IntoIterator<Item = (String, &'a Failures)>) {
    for (row, failures) in rows {
        if failures.count > 0 {
            println!(
                "  failed cycles in {row}: {} (first: {})",
                failures.count,
                failures.first.as_deref().unwrap_or("?")
            );
        }
    }
}

pub fn header(title: &str, quick: bool) {
    println!("{title}");
    println!(
        "mode: {}; load average (1 min) at start: {}; fred backend announces releases: {}",
        if quick {
            "QUICK smoke run (figures meaningless; `cargo bench --bench <name>` for real ones)"
        } else {
            "full"
        },
        load_average(),
        if backend_announces_releases() {
            "yes"
        } else {
            "no (wake-on-release falls back to polling)"
        }
    );
}
