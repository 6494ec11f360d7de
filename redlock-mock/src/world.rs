//! A simulated deployment: N instances, C clients, a network between them, and the fault verbs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::SeedableRng;
use redlock_core::{
    BackendErrorKind, Clock, Error, LockBackend, LockManager, LockManagerBuilder, SeededRandom,
    Spawner,
};

use crate::check::{self, CheckReport};
use crate::clock::{Sleep, VirtualClock};
use crate::executor::{JoinHandle, Simulation, Stalled};
use crate::history::{Entry, History};
use crate::memory::MemoryBackend;
use crate::net::{Latency, LinkBackend, Net, NotifyStats, ServerStatus};
use crate::skew::SkewedClock;
use crate::trace::TracedClient;

type Configure = Arc<dyn Fn(LockManagerBuilder) -> LockManagerBuilder + Send + Sync>;
type ConfigureClient = Arc<dyn Fn(usize, LockManagerBuilder) -> LockManagerBuilder + Send + Sync>;
type Wrap = Arc<dyn Fn(usize, usize, Arc<dyn LockBackend>) -> Arc<dyn LockBackend> + Send + Sync>;

/// Derives independent streams from one seed (SplitMix64), so adding a client does not change
/// the tokens of the others.
pub(crate) fn derive(seed: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds a [`World`]. Start from [`World::builder`].
///
/// # Default
///
/// | setting | default |
/// | --- | --- |
/// | `seed` | 0 |
/// | `instances` | 5 |
/// | `clients` | 1 |
/// | `latency` | [`Latency::Fixed`] 0 on every link |
/// | `fenced` | off: plain locks |
/// | `persistent` | off: a crashed instance restarts empty |
/// | manager settings | the core's defaults (3 attempts, 100–300 ms delays, 1 % drift, 100 ms instance timeout, wake-on-release on, fair mode off) |
#[must_use]
pub struct WorldBuilder {
    seed: u64,
    instances: usize,
    clients: usize,
    latency: Latency,
    reconnect_delay: Option<Latency>,
    configure: Option<Configure>,
    configure_client: Option<ConfigureClient>,
    wrap: Option<Wrap>,
    fenced: bool,
    persistent: bool,
    #[cfg(test)]
    deadline_guard: bool,
    #[cfg(test)]
    fence_raise: bool,
}

impl fmt::Debug for WorldBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorldBuilder")
            .field("seed", &self.seed)
            .field("instances", &self.instances)
            .field("clients", &self.clients)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl WorldBuilder {
    /// The seed every random choice of the world derives from: tokens, retry jitter, latency
    /// draws.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The number of lock instances (independent simulated servers).
    pub fn instances(mut self, n: usize) -> Self {
        self.instances = n;
        self
    }

    /// The number of clients, each with its own [`LockManager`] and clock.
    pub fn clients(mut self, c: usize) -> Self {
        self.clients = c;
        self
    }

    /// The one-way latency of every link, until changed with [`World::set_latency`].
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// Models reconnections: after an instance restarts, each client's link to it announces a
    /// reconnection ([`LockBackend::reconnects`]) after a delay drawn from `delay` (seeded),
    /// and the managers re-check their locks there (restart recovery). Off by default: the
    /// links then offer no reconnection stream, and seeded runs are as before.
    pub fn reconnect_delay(mut self, delay: Latency) -> Self {
        self.reconnect_delay = Some(delay);
        self
    }

    /// Adjusts every client's manager builder (retry count, delays, drift factor, timeouts).
    /// The clock, randomness, spawner and instances are set by the world.
    pub fn configure(
        mut self,
        f: impl Fn(LockManagerBuilder) -> LockManagerBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(f));
        self
    }

    /// Adjusts client `c`'s manager builder only, after [`configure`](Self::configure): mixed
    /// deployments, such as some clients in fair mode
    /// ([`LockManagerBuilder::fair`]) or polling without announcements
    /// ([`LockManagerBuilder::wake_on_release`]).
    pub fn configure_client(
        mut self,
        f: impl Fn(usize, LockManagerBuilder) -> LockManagerBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure_client = Some(Arc::new(f));
        self
    }

    /// Wraps each link backend `(client, instance, link)` before the manager gets it: a
    /// [`FaultyBackend`](crate::FaultyBackend), your own decorator, or a deliberately broken
    /// one to prove a checker.
    pub fn wrap_backends(
        mut self,
        f: impl Fn(usize, usize, Arc<dyn LockBackend>) -> Arc<dyn LockBackend> + Send + Sync + 'static,
    ) -> Self {
        self.wrap = Some(Arc::new(f));
        self
    }

    /// Every client's manager fences its locks by default
    /// ([`LockManagerBuilder::fenced`]); the traced `lock` calls record their fences.
    pub fn fenced(mut self, on: bool) -> Self {
        self.fenced = on;
        self
    }

    /// Every instance keeps its data across a crash (see [`World::set_persistent`]); by
    /// default they restart empty.
    pub fn persistent(mut self, on: bool) -> Self {
        self.persistent = on;
        self
    }

    /// Every client's manager is built with `LockManagerBuilder::without_fence_raise` (fenced
    /// acquires skip the raise round): this crate's unit tests prove with it that the fencing
    /// checker catches that bug.
    #[cfg(test)]
    pub(crate) fn without_fence_raise(mut self) -> Self {
        self.fence_raise = false;
        self
    }

    /// Every client's manager is built with `LockManagerBuilder::without_deadline_guard`, which
    /// brings back the scoped form's old bug (its job polled past the lease's deadline): this
    /// crate's unit tests prove with it that [`PollLog`](crate::PollLog) catches that bug.
    #[cfg(test)]
    pub(crate) fn without_deadline_guard(mut self) -> Self {
        self.deadline_guard = false;
        self
    }

    /// Builds the world at true time zero.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a client's manager configuration is invalid (no instance,
    /// bad delays, ...).
    pub fn build(self) -> Result<World, Error> {
        let sim = Simulation::new();
        let truth = sim.clock();
        let servers: Vec<(MemoryBackend, SkewedClock)> = (0..self.instances)
            .map(|i| {
                let clock = SkewedClock::new(truth.clone());
                let backend = MemoryBackend::new(format!("sim-{i}"), Arc::new(clock.clone()));
                (backend, clock)
            })
            .collect();
        let instances: Vec<MemoryBackend> = servers.iter().map(|(b, _)| b.clone()).collect();
        let instance_clocks: Vec<SkewedClock> = servers.into_iter().map(|(_, c)| c).collect();
        let ids: Vec<Arc<str>> = (0..self.instances)
            .map(|i| Arc::from(format!("sim-{i}")))
            .collect();
        let net = Net::new(
            truth.clone(),
            StdRng::seed_from_u64(derive(self.seed, u64::MAX)),
            instances.clone(),
            self.clients,
            self.latency,
            self.reconnect_delay,
        );
        for server in &mut net.lock().servers {
            server.persistent = self.persistent;
        }
        sim.spawn(net.driver()).detach();
        let mut clients = Vec::with_capacity(self.clients);
        for c in 0..self.clients {
            let clock = SkewedClock::new(truth.clone());
            let gate = Arc::new(Gate::default());
            let links = (0..self.instances).map(|i| {
                let link: Arc<dyn LockBackend> =
                    Arc::new(LinkBackend::new(net.clone(), c, i, Arc::clone(&ids[i])));
                match &self.wrap {
                    Some(wrap) => wrap(c, i, link),
                    None => link,
                }
            });
            let mut builder = LockManager::builder(Arc::new(clock.clone()))
                .instances(links)
                .random(Arc::new(SeededRandom::new(derive(self.seed, c as u64))))
                .spawner(Arc::new(GateSpawner {
                    sim: sim.clone(),
                    gate: Arc::clone(&gate),
                }));
            #[cfg(test)]
            if !self.deadline_guard {
                builder = builder.without_deadline_guard();
            }
            #[cfg(test)]
            if !self.fence_raise {
                builder = builder.without_fence_raise();
            }
            if self.fenced {
                builder = builder.fenced(true);
            }
            if let Some(configure) = &self.configure {
                builder = configure(builder);
            }
            if let Some(configure) = &self.configure_client {
                builder = configure(c, builder);
            }
            clients.push(ClientParts {
                manager: builder.build()?,
                clock,
                gate,
            });
        }
        Ok(World {
            inner: Arc::new(Inner {
                seed: self.seed,
                sim,
                net,
                clients,
                instances,
                instance_clocks,
                history: Mutex::new(History::default()),
                next_lock: AtomicU64::new(0),
            }),
        })
    }
}

/// A simulated deployment of N lock instances and C clients on virtual time, with the fault
/// verbs to break it (turmoil-style: [`partition`](Self::partition), [`heal`](Self::heal),
/// [`crash`](Self::crash), [`restart`](Self::restart), [`hang`](Self::hang),
/// [`pause`](Self::pause), [`set_latency`](Self::set_latency),
/// [`lose_replies`](Self::lose_replies), [`inject_error`](Self::inject_error), clock skew).
///
/// Every client has its own [`LockManager`] whose backends are per-link handles
/// ([`LinkBackend`]), so partitions and latency apply to one client × instance pair. Every
/// instance and every client has its own [`SkewedClock`]. Requests travel through a simulated
/// network (FIFO per link and direction) that delivers them even if the caller stopped
/// waiting. Release announcements (wake-on-release, fair mode) are messages on the same links,
/// subject to the same faults (see [`LinkBackend`]). Cheap to clone; clones are the same world.
///
/// Indices: clients `0..C`, instances `0..N`. An index out of range panics (a bug in the
/// scenario, not a simulated fault).
#[derive(Clone)]
pub struct World {
    inner: Arc<Inner>,
}

struct Inner {
    seed: u64,
    sim: Simulation,
    net: Net,
    clients: Vec<ClientParts>,
    instances: Vec<MemoryBackend>,
    instance_clocks: Vec<SkewedClock>,
    history: Mutex<History>,
    next_lock: AtomicU64,
}

pub(crate) struct ClientParts {
    pub(crate) manager: LockManager,
    pub(crate) clock: SkewedClock,
    pub(crate) gate: Arc<Gate>,
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.inner.seed)
            .field("now", &self.now())
            .field("instances", &self.inner.instances.len())
            .field("clients", &self.inner.clients.len())
            .finish_non_exhaustive()
    }
}

impl World {
    /// A builder with 5 instances, 1 client, seed 0.
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            seed: 0,
            instances: 5,
            clients: 1,
            latency: Latency::default(),
            reconnect_delay: None,
            configure: None,
            configure_client: None,
            wrap: None,
            fenced: false,
            persistent: false,
            #[cfg(test)]
            deadline_guard: true,
            #[cfg(test)]
            fence_raise: true,
        }
    }

    /// The seed this world was built with.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The executor; [`run`](Self::run) is a shortcut for `simulation().run`.
    #[must_use]
    pub fn simulation(&self) -> &Simulation {
        &self.inner.sim
    }

    /// True time.
    #[must_use]
    pub fn clock(&self) -> VirtualClock {
        self.inner.sim.clock()
    }

    /// True time now.
    #[must_use]
    pub fn now(&self) -> Duration {
        self.inner.sim.clock().now()
    }

    /// Sleeps for `d` of true time.
    pub fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.inner.sim.clock().sleep(d)
    }

    /// Runs `fut` (and every client task) to completion on virtual time.
    ///
    /// # Panics
    /// When the simulation stalls, or a task panics.
    pub fn run<F: Future>(&self, fut: F) -> F::Output {
        self.inner.sim.run(fut)
    }

    /// Runs `fut` to completion on virtual time.
    ///
    /// # Errors
    /// [`Stalled`] when every task waits and no timer is pending.
    pub fn try_run<F: Future>(&self, fut: F) -> Result<F::Output, Stalled> {
        self.inner.sim.try_run(fut)
    }

    /// Number of instances.
    #[must_use]
    pub fn instance_count(&self) -> usize {
        self.inner.instances.len()
    }

    /// Number of clients.
    #[must_use]
    pub fn client_count(&self) -> usize {
        self.inner.clients.len()
    }

    /// Client `c`'s lock manager. Calls made through it directly are not traced; use
    /// [`traced`](Self::traced) for calls the checkers should see.
    #[must_use]
    pub fn client(&self, c: usize) -> &LockManager {
        &self.inner.clients[c].manager
    }

    /// Client `c`'s lock manager, recording every call in the world's history.
    #[must_use]
    pub fn traced(&self, c: usize) -> TracedClient {
        TracedClient::new(self.clone(), c)
    }

    /// Client `c`'s clock (its manager's clock).
    #[must_use]
    pub fn client_clock(&self, c: usize) -> &SkewedClock {
        &self.inner.clients[c].clock
    }

    /// Instance `i`'s store, to look at what it holds.
    #[must_use]
    pub fn instance(&self, i: usize) -> &MemoryBackend {
        &self.inner.instances[i]
    }

    /// Instance `i`'s clock (the one its keys expire on).
    #[must_use]
    pub fn instance_clock(&self, i: usize) -> &SkewedClock {
        &self.inner.instance_clocks[i]
    }

    /// Instance `i`'s state.
    #[must_use]
    pub fn status(&self, i: usize) -> ServerStatus {
        self.inner.net.lock().servers[i].status
    }

    /// Runs `fut` as client `c`'s process: [`pause`](Self::pause) stops polling it.
    pub fn spawn_client<F>(&self, c: usize, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let gate = Arc::clone(&self.inner.clients[c].gate);
        self.inner.sim.spawn(Gated::new(gate, self.clock(), fut))
    }

    /// Runs `fut` as a background task of the world (a fault script, a nemesis).
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.sim.spawn(fut)
    }

    /// A copy of the history recorded so far.
    #[must_use]
    pub fn history(&self) -> History {
        self.history_mut().clone()
    }

    /// Runs every checker over the history so far.
    #[must_use]
    pub fn check(&self) -> CheckReport {
        check::check(&self.history_mut())
    }

    /// How many messages the network carried so far (requests and release announcements sent,
    /// delivered or not).
    #[must_use]
    pub fn messages(&self) -> u64 {
        self.inner.net.lock().messages
    }

    /// The release-announcement traffic so far: subscriptions, releases heard, announcements
    /// delivered.
    #[must_use]
    pub fn notify_stats(&self) -> NotifyStats {
        self.inner.net.lock().notify
    }

    /// How many of client `c`'s releases an instance answered "heard" (a subscriber was
    /// registered): each makes a fair-mode manager yield its next acquire of that resource.
    #[must_use]
    pub fn heard_releases(&self, c: usize) -> u64 {
        self.inner.net.lock().heard_by[c]
    }

    /// When client `c`'s link to instance `i` last announced a reconnection (true time), with
    /// [`WorldBuilder::reconnect_delay`] set.
    #[must_use]
    pub fn reconnected_at(&self, c: usize, i: usize) -> Option<Duration> {
        let net = self.inner.net.lock();
        net.reconnected_at[net.link_index(c, i)]
    }

    pub(crate) fn history_mut(&self) -> MutexGuard<'_, History> {
        self.inner.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn net(&self) -> &Net {
        &self.inner.net
    }

    pub(crate) fn parts(&self, c: usize) -> &ClientParts {
        &self.inner.clients[c]
    }

    pub(crate) fn next_lock_serial(&self) -> u64 {
        self.inner.next_lock.fetch_add(1, Ordering::Relaxed)
    }

    fn fault(&self, what: String) {
        let at = self.now();
        self.history_mut().entries.push(Entry::Fault { at, what });
    }

    /// Records a note in the history (shown in failure reports).
    pub fn note(&self, what: impl Into<String>) {
        self.fault(what.into());
    }

    // ----- fault verbs -----

    /// Cuts the link between client `c` and instance `i` both ways. Messages on the link,
    /// and sent later, are dropped: calls time out.
    pub fn partition(&self, c: usize, i: usize) {
        self.inner.net.lock().touch_link(c, i).partitioned = true;
        self.fault(format!("partition c{c} i{i}"));
    }

    /// Restores the link between client `c` and instance `i`.
    pub fn heal(&self, c: usize, i: usize) {
        {
            let mut net = self.inner.net.lock();
            net.touch_link(c, i).partitioned = false;
            net.healed(c, i);
        }
        self.fault(format!("heal c{c} i{i}"));
    }

    /// Cuts client `c` off from every instance.
    pub fn isolate(&self, c: usize) {
        for i in 0..self.instance_count() {
            self.partition(c, i);
        }
    }

    /// Restores every link and clears lost replies (instances stay as they are).
    pub fn heal_all(&self) {
        {
            let mut net = self.inner.net.lock();
            for c in 0..self.client_count() {
                for i in 0..self.instance_count() {
                    let link = net.touch_link(c, i);
                    link.partitioned = false;
                    link.lose_replies = false;
                    net.healed(c, i);
                }
            }
        }
        self.fault("heal all".into());
    }

    /// Crashes instance `i`: it loses every key (unless persistent) and refuses connections until
    /// [`restart`](Self::restart)ed.
    pub fn crash(&self, i: usize) {
        self.inner.net.lock().crash(i);
        self.fault(format!("crash i{i}"));
    }

    /// Whether instance `i` keeps its data across a crash, like Redis with AOF and
    /// `appendfsync always` (keys then expire by their own deadlines on its clock, downtime
    /// included); by default it restarts empty. Fencing counters survive a restart only on a
    /// persistent instance.
    pub fn set_persistent(&self, i: usize, persistent: bool) {
        self.inner.net.lock().servers[i].persistent = persistent;
        self.fault(format!("persistent i{i} {persistent}"));
    }

    /// Starts instance `i` again, empty unless it is persistent
    /// ([`set_persistent`](Self::set_persistent)).
    pub fn restart(&self, i: usize) {
        self.inner.net.lock().restart(i);
        self.fault(format!("restart i{i}"));
    }

    /// Crashes instance `i` now and restarts it, empty, after `down` of true time. Redlock
    /// stays safe when `down` exceeds the largest TTL in use.
    pub fn restart_after(&self, i: usize, down: Duration) {
        self.crash(i);
        self.inner.net.schedule_restart(i, down);
        self.fault(format!("restart i{i} after {}ns", down.as_nanos()));
    }

    /// Crashes and restarts instance `i` at once: its keys are lost while locks relying on
    /// them may still be live (breaks a Redlock assumption).
    pub fn bounce(&self, i: usize) {
        self.crash(i);
        self.restart(i);
    }

    /// Instance `i` accepts requests and never answers nor applies them, until
    /// [`resume`](Self::resume). A crashed instance stays crashed: there is no process to stop.
    pub fn hang(&self, i: usize) {
        {
            let mut net = self.inner.net.lock();
            // Hanging a crashed instance used to make it Hung, and `resume` then brought it back
            // up before its restart: keys lost while a lock relied on them, in the standard
            // family (seed 34066).
            if net.servers[i].status != ServerStatus::Crashed {
                net.touch_server(i).status = ServerStatus::Hung;
            }
        }
        self.fault(format!("hang i{i}"));
    }

    /// Instance `i` answers again (after [`hang`](Self::hang)). Requests it swallowed stay
    /// unanswered.
    pub fn resume(&self, i: usize) {
        {
            let mut net = self.inner.net.lock();
            let server = net.touch_server(i);
            if server.status == ServerStatus::Hung {
                server.status = ServerStatus::Up;
            }
        }
        self.fault(format!("resume i{i}"));
    }

    /// Instance `i` answers every request with this error without applying it (`READONLY`,
    /// `OOM`, ...); `None` stops it.
    pub fn inject_error(&self, i: usize, error: Option<(BackendErrorKind, &str)>) {
        self.inner.net.lock().touch_server(i).error = error.map(|(k, m)| (k, m.to_owned()));
        self.fault(format!("inject_error i{i} {error:?}"));
    }

    /// Requests from client `c` to instance `i` still apply, but their replies are dropped
    /// (ambiguous writes), until called again with `false`.
    pub fn lose_replies(&self, c: usize, i: usize, lose: bool) {
        self.inner.net.lock().touch_link(c, i).lose_replies = lose;
        self.fault(format!("lose_replies c{c} i{i} {lose}"));
    }

    /// The one-way latency between client `c` and instance `i`. Messages already in flight
    /// keep their arrival time; later ones never overtake them.
    pub fn set_latency(&self, c: usize, i: usize, latency: Latency) {
        self.inner.net.lock().touch_link(c, i).latency = latency;
        self.fault(format!("latency c{c} i{i} {latency:?}"));
    }

    /// The one-way latency of every link.
    pub fn set_latency_all(&self, latency: Latency) {
        {
            let mut net = self.inner.net.lock();
            for c in 0..self.client_count() {
                for i in 0..self.instance_count() {
                    net.touch_link(c, i).latency = latency;
                }
            }
        }
        self.fault(format!("latency all {latency:?}"));
    }

    /// Stops polling client `c`'s process (its tasks spawned through
    /// [`spawn_client`](Self::spawn_client) and its manager's background work) for `d` of true
    /// time, like a GC pause or `SIGSTOP`. Replies keep arriving and wait to be read; time keeps
    /// running on its clock.
    pub fn pause(&self, c: usize, d: Duration) {
        let until = self.now().saturating_add(d);
        self.inner.clients[c].gate.pause_until(until);
        self.fault(format!("pause c{c} for {}ns", d.as_nanos()));
    }

    /// Instance `i`'s clock runs `ppm` parts per million fast (negative: slow) from now on.
    pub fn set_instance_rate(&self, i: usize, ppm: i64) {
        self.inner.instance_clocks[i].set_rate_ppm(ppm);
        self.fault(format!("rate i{i} {ppm}ppm"));
    }

    /// Instance `i`'s clock jumps forward by `by`: its keys expire that much earlier.
    pub fn jump_instance_clock(&self, i: usize, by: Duration) {
        self.inner.instance_clocks[i].jump(by);
        self.fault(format!("jump i{i} {}ns", by.as_nanos()));
    }

    /// Client `c`'s clock runs `ppm` parts per million fast (negative: slow) from now on.
    pub fn set_client_rate(&self, c: usize, ppm: i64) {
        self.inner.clients[c].clock.set_rate_ppm(ppm);
        self.fault(format!("rate c{c} {ppm}ppm"));
    }
}

/// A client process's run switch.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GateState {
    pub(crate) until: Duration,
    pub(crate) pauses: u64,
}

impl Gate {
    pub(crate) fn get(&self) -> GateState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pause_until(&self, until: Duration) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.until = st.until.max(until);
        st.pauses += 1;
    }
}

/// A future that is not polled while its client is paused.
struct Gated<F> {
    gate: Arc<Gate>,
    truth: VirtualClock,
    inner: Pin<Box<F>>,
    sleep: Option<(Duration, Sleep)>,
}

impl<F> Gated<F> {
    fn new(gate: Arc<Gate>, truth: VirtualClock, fut: F) -> Self {
        Self {
            gate,
            truth,
            inner: Box::pin(fut),
            sleep: None,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        loop {
            let until = self.gate.get().until;
            if self.truth.now() >= until {
                self.sleep = None;
                return self.inner.as_mut().poll(cx);
            }
            if self.sleep.as_ref().is_none_or(|(t, _)| *t != until) {
                let sleep = self.truth.sleep_until(until);
                self.sleep = Some((until, sleep));
            }
            let Some((_, sleep)) = self.sleep.as_mut() else {
                return Poll::Pending;
            };
            if Pin::new(sleep).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Background work of a client's manager runs in that client's process, so it pauses too.
#[derive(Debug)]
struct GateSpawner {
    sim: Simulation,
    gate: Arc<Gate>,
}

impl Spawner for GateSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        let truth = self.sim.clock();
        self.sim
            .spawn(Gated::new(Arc::clone(&self.gate), truth, task))
            .detach();
    }
}
