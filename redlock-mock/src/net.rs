//! The simulated network: one link per client × instance, messages delivered by the simulation
//! (not by the caller's future), in order per link and direction.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use rand::rngs::StdRng;
use rand::Rng;
use redlock_core::{async_trait, BackendError, BackendErrorKind, Clock, KeyState, LockBackend};

use crate::clock::{Sleep, VirtualClock};
use crate::memory::MemoryBackend;

/// One-way delay of a link. A call takes two draws: request, then reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// Always this delay.
    Fixed(Duration),
    /// Uniformly distributed in `[min, max]` (nanosecond resolution), drawn from the world's
    /// seeded generator.
    Uniform {
        /// Shortest delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Self::Fixed(Duration::ZERO)
    }
}

impl Latency {
    /// The longest delay this latency can produce.
    #[must_use]
    pub fn max(&self) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Uniform { min, max } => min.max(max),
        }
    }

    fn draw(&self, rng: &mut StdRng) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Uniform { min, max } => {
                let (lo, hi) = (min.min(max), min.max(max));
                let lo = u64::try_from(lo.as_nanos()).unwrap_or(u64::MAX);
                let hi = u64::try_from(hi.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.random_range(lo..=hi))
            }
        }
    }
}

/// What an instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    /// Answers every request.
    Up,
    /// Refuses connections (the process is gone; the host answers with a reset). Keys are lost.
    Crashed,
    /// Accepts requests and never answers them, nor applies them (`SIGSTOP`).
    Hung,
}

#[derive(Debug)]
pub(crate) enum Request {
    Acquire(Vec<u8>, Vec<u8>, Duration),
    Extend(Vec<u8>, Vec<u8>, Duration),
    Release(Vec<u8>, Vec<u8>),
    Inspect(Vec<u8>),
}

#[derive(Debug)]
pub(crate) enum Answer {
    Flag(bool),
    State(Option<KeyState>),
}

type Reply = Result<Answer, BackendError>;

#[derive(Debug)]
enum Event {
    Deliver {
        link: usize,
        request: Request,
        reply_to: oneshot::Sender<Reply>,
    },
    Reply {
        link: usize,
        reply: Reply,
        reply_to: oneshot::Sender<Reply>,
    },
    Restart {
        instance: usize,
        epoch: u64,
    },
}

pub(crate) struct Server {
    pub(crate) backend: MemoryBackend,
    pub(crate) status: ServerStatus,
    pub(crate) error: Option<(BackendErrorKind, String)>,
    /// True time of the last fault change, so checks can ask "was it reachable all along".
    pub(crate) changed_at: Duration,
    /// Counts crashes, so a scheduled restart does not revive an instance crashed again later.
    epoch: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct LinkState {
    pub(crate) partitioned: bool,
    pub(crate) lose_replies: bool,
    pub(crate) latency: Latency,
    /// Arrival time of the latest message each way: later messages never overtake it (TCP).
    last_to_server: Duration,
    last_to_client: Duration,
    pub(crate) in_flight: usize,
    pub(crate) changed_at: Duration,
}

pub(crate) struct NetState {
    pub(crate) truth: VirtualClock,
    rng: StdRng,
    pub(crate) servers: Vec<Server>,
    pub(crate) links: Vec<LinkState>,
    clients: usize,
    events: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    driver: Option<Waker>,
    /// Per client, the token of its latest acquire per key (a failed acquire does not tell its
    /// caller the token, but the leftover check needs it).
    last_acquire: Vec<HashMap<Vec<u8>, Vec<u8>>>,
    pub(crate) messages: u64,
}

/// The shared network of a [`World`](crate::World). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Net {
    state: Arc<Mutex<NetState>>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Net")
            .field("servers", &st.servers.len())
            .field("clients", &st.clients)
            .field("in_flight", &st.events.len())
            .finish()
    }
}

fn refused() -> BackendError {
    BackendError::new(
        BackendErrorKind::Connection,
        "connection refused (instance down)",
    )
}

impl Net {
    pub(crate) fn new(
        truth: VirtualClock,
        rng: StdRng,
        servers: Vec<MemoryBackend>,
        clients: usize,
        latency: Latency,
    ) -> Self {
        let n = servers.len();
        let link = LinkState {
            partitioned: false,
            lose_replies: false,
            latency,
            last_to_server: Duration::ZERO,
            last_to_client: Duration::ZERO,
            in_flight: 0,
            changed_at: Duration::ZERO,
        };
        Self {
            state: Arc::new(Mutex::new(NetState {
                truth,
                rng,
                servers: servers
                    .into_iter()
                    .map(|backend| Server {
                        backend,
                        status: ServerStatus::Up,
                        error: None,
                        changed_at: Duration::ZERO,
                        epoch: 0,
                    })
                    .collect(),
                links: vec![link; n * clients],
                clients,
                events: BTreeMap::new(),
                seq: 0,
                driver: None,
                last_acquire: vec![HashMap::new(); clients],
                messages: 0,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, NetState> {
        // Single-threaded simulation: a poisoned lock means a task panicked, and the state is
        // still whole (every update is one assignment or one map operation).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn driver(&self) -> Driver {
        Driver {
            net: self.clone(),
            sleep: None,
        }
    }

    fn send(&self, client: usize, instance: usize, request: Request) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        let link = st.link_index(client, instance);
        if let Request::Acquire(key, token, _) = &request {
            st.last_acquire[client].insert(key.clone(), token.clone());
        }
        st.messages += 1;
        if st.links[link].partitioned {
            // Dropping the sender: the caller waits until its own timeout, as on a black hole.
            return rx;
        }
        let now = st.truth.now();
        let st = &mut *st;
        let delay = st.links[link].latency.draw(&mut st.rng);
        let at = (now + delay).max(st.links[link].last_to_server);
        st.links[link].last_to_server = at;
        st.links[link].in_flight += 1;
        st.push(
            at,
            Event::Deliver {
                link,
                request,
                reply_to: tx,
            },
        );
        rx
    }

    pub(crate) fn schedule_restart(&self, instance: usize, after: Duration) {
        let mut st = self.lock();
        let at = st.truth.now().saturating_add(after);
        let epoch = st.servers[instance].epoch;
        st.push(at, Event::Restart { instance, epoch });
    }
}

impl NetState {
    pub(crate) fn link_index(&self, client: usize, instance: usize) -> usize {
        client * self.servers.len() + instance
    }

    fn push(&mut self, at: Duration, event: Event) {
        let earliest = self
            .events
            .first_key_value()
            .is_none_or(|((t, _), _)| at < *t);
        self.seq += 1;
        self.events.insert((at, self.seq), event);
        if earliest {
            if let Some(w) = &self.driver {
                w.wake_by_ref();
            }
        }
    }

    pub(crate) fn crash(&mut self, instance: usize) {
        let now = self.truth.now();
        let server = &mut self.servers[instance];
        server.status = ServerStatus::Crashed;
        server.epoch += 1;
        server.changed_at = now;
        server.backend.flush();
    }

    pub(crate) fn restart(&mut self, instance: usize) {
        let now = self.truth.now();
        let server = &mut self.servers[instance];
        server.status = ServerStatus::Up;
        server.epoch += 1;
        server.changed_at = now;
        // Without persistence a restarted server starts empty, whatever it held before.
        server.backend.flush();
    }

    pub(crate) fn touch_link(&mut self, client: usize, instance: usize) -> &mut LinkState {
        let now = self.truth.now();
        let i = self.link_index(client, instance);
        let link = &mut self.links[i];
        link.changed_at = now;
        link
    }

    pub(crate) fn touch_server(&mut self, instance: usize) -> &mut Server {
        let now = self.truth.now();
        let server = &mut self.servers[instance];
        server.changed_at = now;
        server
    }

    /// Whether a call from `client` started at `since` could reach `instance` all along and
    /// has nothing left in flight: only then must its effects be visible there.
    pub(crate) fn reachable_since(&self, client: usize, instance: usize, since: Duration) -> bool {
        let link = &self.links[self.link_index(client, instance)];
        let server = &self.servers[instance];
        server.status == ServerStatus::Up
            && server.error.is_none()
            && server.changed_at <= since
            && !link.partitioned
            && link.changed_at <= since
            && link.in_flight == 0
    }

    pub(crate) fn last_acquire_token(&self, client: usize, key: &[u8]) -> Option<Vec<u8>> {
        self.last_acquire[client].get(key).cloned()
    }

    fn run_due(&mut self) {
        loop {
            let now = self.truth.now();
            let due = self
                .events
                .first_key_value()
                .is_some_and(|((t, _), _)| *t <= now);
            if !due {
                return;
            }
            let Some((_, event)) = self.events.pop_first() else {
                return;
            };
            self.handle(event, now);
        }
    }

    fn handle(&mut self, event: Event, now: Duration) {
        match event {
            Event::Deliver {
                link,
                request,
                reply_to,
            } => {
                self.links[link].in_flight -= 1;
                if self.links[link].partitioned {
                    return;
                }
                let instance = link % self.servers.len();
                let server = &self.servers[instance];
                let reply = match server.status {
                    ServerStatus::Crashed => Some(Err(refused())),
                    ServerStatus::Hung => None,
                    ServerStatus::Up => match &server.error {
                        Some((kind, message)) => {
                            Some(Err(BackendError::new(*kind, message.clone())))
                        }
                        None => {
                            let answer = apply(&server.backend, request);
                            (!self.links[link].lose_replies).then_some(answer)
                        }
                    },
                };
                if let Some(reply) = reply {
                    let delay = self.links[link].latency.draw(&mut self.rng);
                    let at = (now + delay).max(self.links[link].last_to_client);
                    self.links[link].last_to_client = at;
                    self.links[link].in_flight += 1;
                    self.push(
                        at,
                        Event::Reply {
                            link,
                            reply,
                            reply_to,
                        },
                    );
                }
            }
            Event::Reply {
                link,
                reply,
                reply_to,
            } => {
                self.links[link].in_flight -= 1;
                if !self.links[link].partitioned {
                    // The caller may have given up: its answer is then simply not read.
                    let _ = reply_to.send(reply);
                }
            }
            Event::Restart { instance, epoch } => {
                if self.servers[instance].epoch == epoch
                    && self.servers[instance].status == ServerStatus::Crashed
                {
                    self.restart(instance);
                }
            }
        }
    }
}

fn apply(backend: &MemoryBackend, request: Request) -> Reply {
    match request {
        Request::Acquire(key, token, ttl) => {
            backend.acquire_now(&key, &token, ttl).map(Answer::Flag)
        }
        Request::Extend(key, token, ttl) => backend.extend_now(&key, &token, ttl).map(Answer::Flag),
        Request::Release(key, token) => backend.release_now(&key, &token).map(Answer::Flag),
        Request::Inspect(key) => backend.inspect_now(&key).map(Answer::State),
    }
}

/// The task that delivers messages when their time comes. It lives in the simulation, so a
/// request is delivered even when the future that sent it was dropped.
pub(crate) struct Driver {
    net: Net,
    sleep: Option<(Duration, Sleep)>,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let (next, truth) = {
                let mut st = self.net.lock();
                st.run_due();
                if !st.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.driver = Some(cx.waker().clone());
                }
                let next = st.events.first_key_value().map(|((t, _), _)| *t);
                (next, st.truth.clone())
            };
            let Some(at) = next else {
                self.sleep = None;
                return Poll::Pending;
            };
            if self.sleep.as_ref().is_none_or(|(t, _)| *t != at) {
                self.sleep = Some((at, truth.sleep_until(at)));
            }
            let Some((_, sleep)) = self.sleep.as_mut() else {
                return Poll::Pending;
            };
            match Pin::new(sleep).poll(cx) {
                Poll::Ready(()) => self.sleep = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One client's connection to one simulated instance: the backend a [`World`](crate::World)
/// client's [`LockManager`](redlock_core::LockManager) holds.
///
/// A call sends a request into the simulated network and waits for the reply. The request is
/// delivered and applied whether or not the caller is still waiting, so a call abandoned by
/// the manager's timeout can still land, as on a real network. A call whose request or reply is
/// dropped (partition, hang, lost reply) never answers: the manager's timeout ends it.
#[derive(Debug, Clone)]
pub struct LinkBackend {
    net: Net,
    client: usize,
    instance: usize,
    id: Arc<str>,
}

impl LinkBackend {
    pub(crate) fn new(net: Net, client: usize, instance: usize, id: Arc<str>) -> Self {
        Self {
            net,
            client,
            instance,
            id,
        }
    }

    /// The client end of this link.
    #[must_use]
    pub fn client(&self) -> usize {
        self.client
    }

    /// The instance end of this link.
    #[must_use]
    pub fn instance(&self) -> usize {
        self.instance
    }

    async fn call(&self, request: Request) -> Reply {
        let rx = self.net.send(self.client, self.instance, request);
        match rx.await {
            Ok(reply) => reply,
            Err(oneshot::Canceled) => futures::future::pending().await,
        }
    }

    async fn flag(&self, request: Request) -> Result<bool, BackendError> {
        match self.call(request).await? {
            Answer::Flag(b) => Ok(b),
            Answer::State(_) => Err(BackendError::new(
                BackendErrorKind::Protocol,
                "unexpected reply",
            )),
        }
    }
}

#[async_trait]
impl LockBackend for LinkBackend {
    fn id(&self) -> &str {
        &self.id
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.flag(Request::Acquire(key.to_vec(), token.to_vec(), ttl))
            .await
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.flag(Request::Extend(key.to_vec(), token.to_vec(), ttl))
            .await
    }

    async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
        self.flag(Request::Release(key.to_vec(), token.to_vec()))
            .await
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        match self.call(Request::Inspect(key.to_vec())).await? {
            Answer::State(s) => Ok(s),
            Answer::Flag(_) => Err(BackendError::new(
                BackendErrorKind::Protocol,
                "unexpected reply",
            )),
        }
    }
}
