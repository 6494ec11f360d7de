//! What an acquirer does between attempts: sleep a jittered delay, but wake as soon as a
//! release is announced (when the backends can announce it), and, in fair mode, let a waiter go
//! first after releasing.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{select, Either};
use futures::stream::{BoxStream, SelectAll, StreamExt};
use futures::FutureExt;

use crate::engine::Engine;
use crate::holders::Holders;
use crate::round::{self, Verdict, Wait};
use crate::runtime::Clock;

/// Most yield entries kept for fair mode before expired ones are swept.
const YIELD_SWEEP_AT: usize = 1024;

/// How long a key counts as contended after an attempt on it was refused: while it does, the
/// first attempt of a call already queues for a hand-off (see [`Contention`]).
const CONTENDED_FOR: Duration = Duration::from_secs(5);

/// Release subscriptions or hand-off listeners, one per instance; each yields the index of its
/// instance.
pub(crate) type Listeners = SelectAll<BoxStream<'static, usize>>;

/// Release subscriptions held for the duration of one `lock` call; each yields the index of
/// its instance.
#[derive(Default)]
pub(crate) struct Waiter {
    subscriptions: Option<Listeners>,
    /// `subscriptions` are hand-off listeners of this call's token (the call queues).
    listening: bool,
    /// Listening failed on too many instances once: this call does not queue.
    no_listen: bool,
}

impl Waiter {
    /// Whether this call listens for hand-offs, so that its attempts queue.
    pub(crate) fn listening(&self) -> bool {
        self.listening
    }

    /// The hand-off listeners, for the lock this call got (see `LockShared::listening`).
    pub(crate) fn take_listeners(&mut self) -> Option<Listeners> {
        if !self.listening {
            return None;
        }
        self.listening = false;
        self.subscriptions.take()
    }
}

impl Engine {
    /// Subscribes to releases of `key` on every instance that supports it, for at most `limit`.
    /// Instances that fail or have not answered by then are simply not heard from.
    async fn subscribe_all(
        &self,
        key: &[u8],
        limit: Duration,
    ) -> SelectAll<BoxStream<'static, usize>> {
        let round = round::run(
            &self.instances,
            round::Gating::Off,
            self.clock.as_ref(),
            limit,
            Wait::ForAll,
            |b| match b.release_notify() {
                Some(n) => n.subscribe(key).map(|r| r.map(Some)).boxed(),
                None => futures::future::ready(Ok(None)).boxed(),
            },
            Option::is_some,
        )
        .await;
        round
            .answers
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Some(Ok(Some(stream))) => Some(stream.map(move |()| i).boxed()),
                _ => None,
            })
            .collect()
    }

    /// Listens for hand-offs to `token` on every instance (once per call), for at most `limit`;
    /// `true` when a quorum listens, so that the call may queue: a queued waiter that nobody
    /// would tell of its turn would only hold up the others for its reserve.
    pub(crate) async fn listen(&self, token: &[u8], waiter: &mut Waiter, limit: Duration) -> bool {
        if waiter.listening || waiter.no_listen {
            return waiter.listening;
        }
        let round = round::run(
            &self.instances,
            round::Gating::Off,
            self.clock.as_ref(),
            limit,
            Wait::ForAll,
            |b| match b.handoff() {
                Some(h) => h.listen(token).map(|r| r.map(Some)).boxed(),
                None => futures::future::ready(Ok(None)).boxed(),
            },
            Option::is_some,
        )
        .await;
        let streams: SelectAll<_> = round
            .answers
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Some(Ok(Some(stream))) => Some(stream.map(move |()| i).boxed()),
                _ => None,
            })
            .collect();
        if streams.len() < self.quorum() {
            waiter.no_listen = true;
            return false;
        }
        waiter.subscriptions = Some(streams);
        waiter.listening = true;
        true
    }

    /// Waits until `until` (the end of the current retry window) or until a release is
    /// announced or a quorum handed the key over, whichever comes first. Subscribing and the check after
    /// it are spent out of the window, so `lock` keeps its documented bound even when an instance
    /// is slow to answer. `contended`: the last attempt was refused by holders, the only case an
    /// announcement can shorten.
    pub(crate) async fn wait_for_retry(
        &self,
        key: &[u8],
        waiter: &mut Waiter,
        listen: bool,
        until: Duration,
    ) -> Woke {
        self.wait(key, waiter, listen, true, until).await
    }

    /// Fair mode's yield: waits until `until`, or until a release of `key` is announced (the
    /// waiter that took its turn released it: no need to keep stepping aside, and a release
    /// nobody hears would let that waiter take it straight back). Unlike
    /// [`wait_for_retry`](Self::wait_for_retry) it does not end early because the key is free:
    /// being free is what the yield is for.
    pub(crate) async fn yield_until(&self, key: &[u8], waiter: &mut Waiter, until: Duration) {
        self.wait(key, waiter, true, false, until).await;
    }

    async fn wait(
        &self,
        key: &[u8],
        waiter: &mut Waiter,
        listen: bool,
        look: bool,
        until: Duration,
    ) -> Woke {
        let quorum = self.quorum();
        let left = || until.saturating_sub(self.clock.now());
        if !listen {
            self.clock.sleep(left()).await;
            return Woke::Timeout;
        }
        if waiter.subscriptions.is_none() {
            let limit = left().min(self.instance_timeout);
            let subscriptions = self.subscribe_all(key, limit).await;
            let listening = subscriptions.len() >= quorum;
            waiter.subscriptions = Some(subscriptions);
            if listening && look {
                // A release between the refused attempt and the subscription went unheard: look
                // once, now that any later one will be heard. A check that outlasts the window is
                // moot: the next attempt looks anyway.
                let check = self.inspect(key, |s| s.is_some());
                match select(pin!(check), self.clock.sleep(left())).await {
                    Either::Left((held, _)) if held.verdict() == Verdict::Refused => {
                        return Woke::Released
                    }
                    Either::Left(_) => {}
                    Either::Right(_) => return Woke::Timeout,
                }
            }
        }
        let handing = waiter.listening;
        let Some(subscriptions) = waiter.subscriptions.as_mut().filter(|s| s.len() >= quorum)
        else {
            self.clock.sleep(left()).await;
            return Woke::Timeout;
        };
        let instances = self.instances.len();
        let announced = async move {
            // The lock is free once a majority deleted it: wake when a quorum of distinct
            // instances announced a release. Waking at the first announcement let the late
            // echoes of one release (one per instance) wake a waiter that lost the race for it
            // again and again. After a wake, that release's echoes still to come number fewer
            // than a quorum. Announcements buffered while the last attempt ran count: dropping
            // them could miss a release that happened just after the attempt was refused.
            let mut heard = vec![false; instances];
            let mut count = 0;
            while count < quorum {
                let Some(i) = subscriptions.next().await else {
                    // Every subscription ended (connections lost): only the window is left.
                    return futures::future::pending().await;
                };
                if !std::mem::replace(&mut heard[i], true) {
                    count += 1;
                }
            }
            // Echoes already here belong to the release just heard (hand-offs: more holders).
            while let Some(Some(i)) = subscriptions.next().now_or_never() {
                heard[i] = true;
            }
            heard
        };
        let announced = pin!(announced);
        match select(announced, self.clock.sleep(left())).await {
            Either::Left((heard, _)) if handing => Woke::Handed(Holders::of(heard)),
            Either::Left(_) => Woke::Released,
            Either::Right(_) => Woke::Timeout,
        }
    }
}

/// Why a wait between attempts ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Its window ended.
    Timeout,
    /// A quorum announced a release, or the look after subscribing found the key free.
    Released,
    /// A quorum of these instances handed the key to the call (its listeners are hand-off
    /// listeners). Where hand-offs are grants, that may be the acquisition itself.
    Handed(Holders),
}

/// Keys on which an attempt of this manager was refused lately: the first attempt of a later
/// call on such a key queues for a hand-off at once (a scripted acquire), while other keys keep
/// the cheaper plain acquire.
#[derive(Debug, Default)]
pub(crate) struct Contention {
    state: Mutex<ContentionState>,
    /// Whether any key was ever noted: every lock call asks [`recent`], and a never
    /// contended manager then answers without taking the mutex all its tasks share.
    ///
    /// [`recent`]: Self::recent
    any: AtomicBool,
}

#[derive(Debug, Default)]
struct ContentionState {
    until: HashMap<Arc<[u8]>, Duration>,
    /// No sweep before this: with many keys contended at once, sweeping at every refusal
    /// would cost a pass over all of them each time.
    next_sweep: Duration,
}

impl Contention {
    fn state(&self) -> std::sync::MutexGuard<'_, ContentionState> {
        // Entries are inserted or removed whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An attempt on `key` was refused by holders.
    pub(crate) fn note(&self, clock: &dyn Clock, key: &Arc<[u8]>) {
        let now = clock.now();
        let mut state = self.state();
        if state.until.len() >= YIELD_SWEEP_AT && now >= state.next_sweep {
            state.until.retain(|_, t| *t > now);
            state.next_sweep = now.saturating_add(CONTENDED_FOR);
        }
        state
            .until
            .insert(Arc::clone(key), now.saturating_add(CONTENDED_FOR));
        self.any.store(true, Ordering::Release);
    }

    /// Whether an attempt on `key` was refused lately.
    pub(crate) fn recent(&self, clock: &dyn Clock, key: &[u8]) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .state()
                .until
                .get(key)
                .is_some_and(|t| *t > clock.now())
    }
}

/// How long fair mode lets a waiter go first, by default. It bounds how long a waiter that
/// vanished right after the release can delay the releaser.
pub const DEFAULT_FAIR_GRACE: Duration = Duration::from_millis(20);

/// Fair mode's memory: keys this manager released while someone waited, and until when it lets
/// them go first.
#[derive(Debug, Default)]
pub(crate) struct Fairness {
    grace: Option<Duration>,
    yields: Mutex<HashMap<Arc<[u8]>, Duration>>,
}

impl Fairness {
    /// Fair mode with `grace`, or off.
    pub(crate) fn new(grace: Option<Duration>) -> Self {
        Self {
            grace,
            yields: Mutex::default(),
        }
    }

    fn yields(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<[u8]>, Duration>> {
        // Entries are inserted or removed whole.
        self.yields.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a release that a waiter heard, this manager's next acquire of the same key waits
    /// the grace so the waiter can take its turn.
    pub(crate) fn note_release(&self, clock: &dyn Clock, key: &[u8], heard: bool) {
        let Some(grace) = self.grace.filter(|_| heard) else {
            return;
        };
        let now = clock.now();
        let mut yields = self.yields();
        if yields.len() >= YIELD_SWEEP_AT {
            yields.retain(|_, until| *until > now);
        }
        yields.insert(Arc::from(key), now.saturating_add(grace));
    }

    /// Until when this manager still steps aside for a waiter on `key` (once: the yield is
    /// consumed).
    pub(crate) fn pending_yield(&self, clock: &dyn Clock, key: &[u8]) -> Option<Duration> {
        self.grace?;
        let until = self.yields().remove(key)?;
        (until > clock.now()).then_some(until)
    }
}
