//! The simulated network: one link per client × instance, messages delivered by the simulation
//! (not by the caller's future), in order per link and direction.
//!
//! Release announcements ([`ReleaseNotify`]) are messages too: a subscription is a request whose
//! acknowledgement comes back over the link, and each announcement travels from the instance to
//! the subscriber over the subscriber's own link, behind the replies already on their way.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::channel::oneshot;
use futures::stream::{BoxStream, Stream};
use rand::rngs::StdRng;
use rand::Rng;
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Clock, Config, Fencing, KeyState, LockBackend,
    ReleaseNotify,
};

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
    ReleaseNotify(Vec<u8>, Vec<u8>),
    /// Key, token, counter.
    NextFence(Vec<u8>, Vec<u8>, Vec<u8>),
    RaiseFence(Vec<u8>, u64),
    Subscribe {
        key: Vec<u8>,
        id: u64,
        tx: UnboundedSender<()>,
    },
    /// One-way: nothing answers it.
    Unsubscribe(u64),
}

impl Request {
    /// Whether the request reads or writes keys. Only those (and their replies) count as in
    /// flight for the leftover check: a subscription in flight cannot hide a key, and counting
    /// the unsubscribe a finished `lock` sends would skip the check after every wait.
    fn touches_keys(&self) -> bool {
        !matches!(self, Self::Subscribe { .. } | Self::Unsubscribe(_))
    }
}

#[derive(Debug)]
pub(crate) enum Answer {
    Flag(bool),
    State(Option<KeyState>),
    Released { released: bool, heard: bool },
    Subscribed,
    Fence(Option<u64>),
    Counter(u64),
}

type Reply = Result<Answer, BackendError>;

#[derive(Debug)]
enum Event {
    Deliver {
        link: usize,
        request: Request,
        reply_to: Option<oneshot::Sender<Reply>>,
        counted: bool,
    },
    Reply {
        link: usize,
        reply: Reply,
        reply_to: oneshot::Sender<Reply>,
        counted: bool,
    },
    /// A release announcement on its way to a subscriber.
    Announce {
        link: usize,
        tx: UnboundedSender<()>,
    },
    /// The connection reset of a crashed instance, on its way to a subscriber: it ends the
    /// subscription's stream when it arrives.
    End {
        link: usize,
        tx: UnboundedSender<()>,
    },
    Restart {
        instance: usize,
        epoch: u64,
    },
    /// The client end of `link` has made its connection again, after the instance's restart
    /// of `epoch`.
    Reconnect {
        link: usize,
        epoch: u64,
    },
}

/// One live subscription, as the instance knows it.
#[derive(Debug)]
struct Subscriber {
    link: usize,
    key: Vec<u8>,
    tx: UnboundedSender<()>,
}

/// Counters of the release-announcement traffic, to show a run exercised it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyStats {
    /// Subscriptions an instance registered.
    pub subscriptions: u64,
    /// Releases through `release_and_notify` that deleted the key with a subscriber registered
    /// (answered "heard").
    pub heard: u64,
    /// Announcements that reached a subscriber's end of its link (lost ones are not counted).
    pub announcements: u64,
    /// Subscription streams, still listened to, that an instance crash ended.
    pub ended: u64,
}

pub(crate) struct Server {
    pub(crate) backend: MemoryBackend,
    pub(crate) status: ServerStatus,
    pub(crate) error: Option<(BackendErrorKind, String)>,
    /// True time of the last fault change, so checks can ask "was it reachable all along".
    pub(crate) changed_at: Duration,
    /// Counts crashes, so a scheduled restart does not revive an instance crashed again later.
    epoch: u64,
    /// Live subscriptions by id (ids grow, so iteration is in subscription order).
    subscribers: BTreeMap<u64, Subscriber>,
    /// Whether its data survives a crash (AOF with `appendfsync always`); otherwise it
    /// restarts empty.
    pub(crate) persistent: bool,
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
    /// A reconnection came due while the link was cut: it happens once the link is healed.
    reconnect_pending: bool,
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
    next_subscription: u64,
    /// Senders of subscriptions whose connection reset was swallowed by a partition: kept so
    /// the subscriber's stream goes silent instead of ending, as the client never learns.
    silenced: Vec<UnboundedSender<()>>,
    pub(crate) notify: NotifyStats,
    /// Per client, its releases answered "heard" (what makes a fair-mode manager yield).
    pub(crate) heard_by: Vec<u64>,
    /// How long a client takes to connect again after an instance restarts; `None`: links
    /// announce no reconnection.
    reconnect_delay: Option<Latency>,
    /// Per link, the reconnection streams handed out by its backend.
    reconnect_subs: Vec<Vec<UnboundedSender<()>>>,
    /// Per link, when its latest reconnection was announced (true time).
    pub(crate) reconnected_at: Vec<Option<Duration>>,
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
        reconnect_delay: Option<Latency>,
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
            reconnect_pending: false,
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
                        subscribers: BTreeMap::new(),
                        persistent: false,
                    })
                    .collect(),
                links: vec![link; n * clients],
                clients,
                events: BTreeMap::new(),
                seq: 0,
                driver: None,
                last_acquire: vec![HashMap::new(); clients],
                messages: 0,
                next_subscription: 0,
                silenced: Vec::new(),
                notify: NotifyStats::default(),
                heard_by: vec![0; clients],
                reconnect_delay,
                reconnect_subs: vec![Vec::new(); n * clients],
                reconnected_at: vec![None; n * clients],
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
        self.post(client, instance, request, Some(tx));
        rx
    }

    /// Puts `request` on the link; `reply_to: None` for a one-way message. Dropping `reply_to`
    /// (partition) leaves the caller waiting until its own timeout, as on a black hole.
    fn post(
        &self,
        client: usize,
        instance: usize,
        request: Request,
        reply_to: Option<oneshot::Sender<Reply>>,
    ) {
        let mut st = self.lock();
        let link = st.link_index(client, instance);
        if let Request::Acquire(key, token, _) = &request {
            st.last_acquire[client].insert(key.clone(), token.clone());
        }
        st.messages += 1;
        if st.links[link].partitioned {
            return;
        }
        let now = st.truth.now();
        let st = &mut *st;
        let delay = st.links[link].latency.draw(&mut st.rng);
        let at = (now + delay).max(st.links[link].last_to_server);
        st.links[link].last_to_server = at;
        let counted = request.touches_keys();
        if counted {
            st.links[link].in_flight += 1;
        }
        st.push(
            at,
            Event::Deliver {
                link,
                request,
                reply_to,
                counted,
            },
        );
    }

    /// A new reconnection stream of `link`, or `None` when the world models no reconnections.
    fn reconnects(&self, client: usize, instance: usize) -> Option<UnboundedReceiver<()>> {
        let mut st = self.lock();
        st.reconnect_delay?;
        let link = st.link_index(client, instance);
        let (tx, rx) = mpsc::unbounded();
        st.reconnect_subs[link].push(tx);
        Some(rx)
    }

    fn next_subscription_id(&self) -> u64 {
        let mut st = self.lock();
        st.next_subscription += 1;
        st.next_subscription
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
        if !server.persistent {
            server.backend.flush();
        }
        self.reset_subscribers(instance, now);
    }

    /// The process is gone with its subscriptions: each subscriber's connection is reset, and
    /// the reset travels like any message from the instance.
    fn reset_subscribers(&mut self, instance: usize, now: Duration) {
        let subscribers = std::mem::take(&mut self.servers[instance].subscribers);
        for sub in subscribers.into_values() {
            self.send_to_client(sub.link, now, |link| Event::End { link, tx: sub.tx });
        }
    }

    /// Schedules a message from the instance to the client end of `link`, never before the
    /// previous one on that direction of the link (TCP order).
    fn send_to_client(&mut self, link: usize, now: Duration, event: impl FnOnce(usize) -> Event) {
        let delay = self.links[link].latency.draw(&mut self.rng);
        let at = (now + delay).max(self.links[link].last_to_client);
        self.links[link].last_to_client = at;
        self.push(at, event(link));
    }

    /// Tells every subscription to `key` on `instance` that it was released; whether there was
    /// one. The instance cannot tell a subscriber behind a partition from a live one: it counts
    /// too, and its announcement is lost on the way.
    fn announce(&mut self, instance: usize, key: &[u8], now: Duration) -> bool {
        let targets: Vec<(usize, UnboundedSender<()>)> = self.servers[instance]
            .subscribers
            .values()
            .filter(|sub| sub.key == key)
            .map(|sub| (sub.link, sub.tx.clone()))
            .collect();
        let heard = !targets.is_empty();
        for (link, tx) in targets {
            self.messages += 1;
            self.send_to_client(link, now, |link| Event::Announce { link, tx });
        }
        heard
    }

    /// Applies a delivered request on an instance that is up and healthy.
    fn apply(&mut self, instance: usize, link: usize, request: Request, now: Duration) -> Reply {
        let backend = &self.servers[instance].backend;
        match request {
            Request::Acquire(key, token, ttl) => {
                backend.acquire_now(&key, &token, ttl).map(Answer::Flag)
            }
            Request::Extend(key, token, ttl) => {
                backend.extend_now(&key, &token, ttl).map(Answer::Flag)
            }
            Request::Release(key, token) => backend.release_now(&key, &token).map(Answer::Flag),
            Request::Inspect(key) => backend.inspect_now(&key).map(Answer::State),
            Request::NextFence(key, token, counter) => backend
                .next_fence_now(&key, &token, &counter)
                .map(Answer::Fence),
            Request::RaiseFence(counter, value) => backend
                .raise_fence_now(&counter, value)
                .map(Answer::Counter),
            Request::ReleaseNotify(key, token) => {
                let released = backend.release_now(&key, &token)?;
                let heard = released && self.announce(instance, &key, now);
                self.notify.heard += u64::from(heard);
                self.heard_by[link / self.servers.len()] += u64::from(heard);
                Ok(Answer::Released { released, heard })
            }
            Request::Subscribe { key, id, tx } => {
                self.notify.subscriptions += 1;
                self.servers[instance]
                    .subscribers
                    .insert(id, Subscriber { link, key, tx });
                Ok(Answer::Subscribed)
            }
            Request::Unsubscribe(id) => {
                // One-way: this answer has nowhere to go.
                let removed = self.servers[instance].subscribers.remove(&id);
                Ok(Answer::Flag(removed.is_some()))
            }
        }
    }

    pub(crate) fn restart(&mut self, instance: usize) {
        let now = self.truth.now();
        let server = &mut self.servers[instance];
        server.status = ServerStatus::Up;
        server.epoch += 1;
        server.changed_at = now;
        // Without persistence a restarted server starts empty, whatever it held before.
        if !server.persistent {
            server.backend.flush();
        }
        // Empty after a crash; a restart of a running instance drops them here.
        self.reset_subscribers(instance, now);
        // Every client lost its connection with the process and makes a new one.
        let epoch = self.servers[instance].epoch;
        for client in 0..self.clients {
            let link = self.link_index(client, instance);
            self.schedule_reconnect(link, epoch, now);
        }
    }

    fn schedule_reconnect(&mut self, link: usize, epoch: u64, now: Duration) {
        let Some(delay) = self.reconnect_delay else {
            return;
        };
        let at = now.saturating_add(delay.draw(&mut self.rng));
        self.push(at, Event::Reconnect { link, epoch });
    }

    /// A healed link makes the reconnection it missed while it was cut.
    pub(crate) fn healed(&mut self, client: usize, instance: usize) {
        let link = self.link_index(client, instance);
        if std::mem::take(&mut self.links[link].reconnect_pending) {
            let (now, epoch) = (self.truth.now(), self.servers[instance].epoch);
            self.schedule_reconnect(link, epoch, now);
        }
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
                counted,
            } => {
                if counted {
                    self.links[link].in_flight -= 1;
                }
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
                            let answer = self.apply(instance, link, request, now);
                            (!self.links[link].lose_replies).then_some(answer)
                        }
                    },
                };
                if let (Some(reply), Some(reply_to)) = (reply, reply_to) {
                    if counted {
                        self.links[link].in_flight += 1;
                    }
                    self.send_to_client(link, now, |link| Event::Reply {
                        link,
                        reply,
                        reply_to,
                        counted,
                    });
                }
            }
            Event::Reply {
                link,
                reply,
                reply_to,
                counted,
            } => {
                if counted {
                    self.links[link].in_flight -= 1;
                }
                if !self.links[link].partitioned {
                    // The caller may have given up: its answer is then simply not read.
                    let _ = reply_to.send(reply);
                }
            }
            Event::Announce { link, tx } => {
                if !self.links[link].partitioned && tx.unbounded_send(()).is_ok() {
                    self.notify.announcements += 1;
                }
            }
            Event::End { link, tx } => {
                if self.links[link].partitioned {
                    self.silenced.push(tx);
                } else {
                    // Dropping the last sender (here) ends the stream once it is drained.
                    self.notify.ended += u64::from(!tx.is_closed());
                }
            }
            Event::Reconnect { link, epoch } => {
                let instance = link % self.servers.len();
                let server = &self.servers[instance];
                // Crashed or restarted again since: that restart schedules its own.
                if server.epoch != epoch || server.status == ServerStatus::Crashed {
                    return;
                }
                if self.links[link].partitioned {
                    self.links[link].reconnect_pending = true;
                    return;
                }
                self.reconnected_at[link] = Some(now);
                self.reconnect_subs[link].retain(|tx| tx.unbounded_send(()).is_ok());
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
///
/// # Release announcements
///
/// The handle implements [`ReleaseNotify`] over the same link, so wake-on-release and fair mode
/// run under every fault:
///
/// - `release_and_notify` is a request like `release`; the instance answers "heard" when it
///   has a subscription to the key, whatever the state of that subscriber's link.
/// - `subscribe` sends a request and returns when its acknowledgement comes back; under a
///   partition, hang or lost reply it never returns (the manager's timeout ends it). Dropping
///   the stream sends a one-way unsubscribe; if that is lost, the instance keeps counting the
///   subscriber as a listener, as Redis does for a connection it has not seen die.
/// - Each announcement travels from the instance over the subscriber's link, after the replies
///   already on their way: latency delays it, a partition at its arrival drops it.
/// - A **partition** does not end a subscription: the client cannot tell a silent link from a
///   quiet one, so its stream just goes silent (and hears later releases again once healed).
/// - A **crash** loses the instance's subscriptions. Each subscriber's connection is reset:
///   the reset travels over its link, and its stream ends when it arrives (the manager then
///   relies on its retry delay). If a partition swallows the reset, the stream stays silent
///   instead. A restarted instance knows no subscription (nothing re-subscribes).
///
/// # Reconnections
///
/// When the world is built with [`WorldBuilder::reconnect_delay`](crate::WorldBuilder::reconnect_delay),
/// [`LockBackend::reconnects`] hands out a stream that yields each time this link's connection
/// is made again: a reconnection delay (drawn from the world's seeded generator) after the
/// instance restarts, or, when the link is cut at that moment, the same delay after it is
/// healed. A partition alone does not reset the connection (TCP does not notice a silent
/// link), so healing one that missed no restart announces nothing. Without that setting the
/// backend offers no reconnection stream, as a backend that cannot tell.
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
            _ => Err(unexpected()),
        }
    }
}

fn unexpected() -> BackendError {
    BackendError::new(BackendErrorKind::Protocol, "unexpected reply")
}

/// The client end of one subscription.
struct Subscription {
    rx: UnboundedReceiver<()>,
    net: Net,
    client: usize,
    instance: usize,
    id: u64,
    /// Whether the instance may have registered it (so dropping it must unsubscribe).
    registered: bool,
}

impl Stream for Subscription {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.registered {
            self.net.post(
                self.client,
                self.instance,
                Request::Unsubscribe(self.id),
                None,
            );
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
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
            _ => Err(unexpected()),
        }
    }

    fn check_config(&self, config: &Config) -> Result<(), String> {
        // Whatever the instance behind the link would refuse, the link refuses.
        let server = self.net.lock().servers[self.instance].backend.clone();
        server.check_config(config)
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        Some(self)
    }

    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        self.net
            .reconnects(self.client, self.instance)
            .map(|rx| Box::pin(rx) as BoxStream<'static, ()>)
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        Some(self)
    }

    fn handoff(&self) -> Option<&dyn redlock_core::Handoff> {
        // The simulated servers keep no queues: contended waiters are woken by announcements.
        None
    }

    async fn connect(&self) -> Result<(), BackendError> {
        // Nothing to set up: the link exists from the start, and its faults show on the calls
        // that cross it.
        Ok(())
    }

    async fn close(&self) -> Result<(), BackendError> {
        // Nothing to tear down: the link is the simulation's, and the instance serves the other
        // clients on. Not forwarded to the instance's store for that reason.
        Ok(())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ReleaseNotify for LinkBackend {
    async fn release_and_notify(
        &self,
        key: &[u8],
        token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        match self
            .call(Request::ReleaseNotify(key.to_vec(), token.to_vec()))
            .await?
        {
            Answer::Released { released, heard } => Ok((released, heard)),
            _ => Err(unexpected()),
        }
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        let (tx, rx) = mpsc::unbounded();
        let id = self.net.next_subscription_id();
        // Made before sending: a caller that gives up before the acknowledgement drops it, and
        // the unsubscribe follows the subscribe on the link.
        let mut stream = Subscription {
            rx,
            net: self.net.clone(),
            client: self.client,
            instance: self.instance,
            id,
            registered: true,
        };
        let request = Request::Subscribe {
            key: key.to_vec(),
            id,
            tx,
        };
        match self.call(request).await {
            Ok(Answer::Subscribed) => Ok(Box::pin(stream)),
            Ok(_) => Err(unexpected()),
            Err(e) => {
                // Refused by the instance: there is nothing to unsubscribe.
                stream.registered = false;
                Err(e)
            }
        }
    }
}

/// Counter calls are requests over the link like the lock calls, under the same faults.
#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Fencing for LinkBackend {
    async fn next_fence(
        &self,
        key: &[u8],
        token: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError> {
        let request = Request::NextFence(key.to_vec(), token.to_vec(), counter.to_vec());
        match self.call(request).await? {
            Answer::Fence(value) => Ok(value),
            _ => Err(unexpected()),
        }
    }

    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
        match self
            .call(Request::RaiseFence(counter.to_vec(), value))
            .await?
        {
            Answer::Counter(value) => Ok(value),
            _ => Err(unexpected()),
        }
    }
}
