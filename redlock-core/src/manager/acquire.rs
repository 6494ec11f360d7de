//! Acquiring with retries: the local queue, attempts, the cleanup after each failed one, the
//! retry windows, and the cleanup of an acquire whose future was dropped.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use futures::FutureExt;

use super::{Inner, LockManager};
use crate::backend::QueuePlace;
use crate::engine::Release;
use crate::error::Error;
use crate::holders::Holders;
use crate::lease::Lease;
use crate::lock::Lock;
use crate::options::Patience;
use crate::round::{Ask, Verdict};
use crate::telemetry;
use crate::wait::{Waiter, Woke};

impl Inner {
    /// Acquires `key` with `token` for `ttl`, waiting as `patience` allows; with `fenced`, each
    /// granted attempt also draws a fence (two more rounds) before it counts.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        resource: &[u8],
        key: Arc<[u8]>,
        token: Arc<[u8]>,
        ttl: Duration,
        patience: Patience,
        fenced: bool,
    ) -> Result<Lock, Error> {
        let start = self.clock().now();
        // `Attempts` counts attempts made at the end of a retry window (and the first). An
        // attempt made early because a release was announced is free while its window lasts:
        // with several waiters, all woken by each release, counting those would make the k-th
        // in line give up after k releases. The time bound is unchanged: a window lasts its
        // drawn delay, and an early attempt that runs past the window's end counts.
        // The last moment an attempt may start, and the last moment to stop waiting in the
        // local queue, so that the call keeps its documented bound: an attempt and the cleanup
        // of a failed one take at most two instance timeouts (four when fenced: two more
        // rounds), and the fair yield its grace.
        let round_trip = self.config.instance_timeout.saturating_mul(rounds(fenced));
        let grace = self.config.fair.unwrap_or_default();
        let (attempts, last_start, queue_until) = match patience {
            Patience::Attempts(n) => {
                let last = start
                    .saturating_add(self.bound(n, fenced))
                    .saturating_sub(round_trip);
                (n.max(1), Some(last), Some(last.saturating_sub(grace)))
            }
            Patience::NoWait => (1, None, None),
            Patience::For(d) => {
                let last = start.saturating_add(d);
                (u32::MAX, Some(last), Some(last))
            }
            Patience::UntilCancelled => (u32::MAX, None, None),
        };
        // One contender per key in this manager: wait for the head of the local queue.
        let mut place = match patience {
            Patience::NoWait => match self.queues.try_join(&key) {
                Some(place) => place,
                None => return Err(self.refused_locally(start)),
            },
            _ => self.queues.join(&key),
        };
        // Usually the head at once: no timer needed (a sleep allocates on some clocks).
        let at_head = place.turn().now_or_never().is_some();
        match queue_until {
            _ if at_head => {}
            Some(until) => {
                let left = until.saturating_sub(self.clock().now());
                let turn = place.turn();
                if let Either::Right(_) = select(turn, self.clock().sleep(left)).await {
                    return Err(self.refused_locally(start));
                }
            }
            None => place.turn().await,
        }
        if !at_head && !place.local_state().0 {
            // Promoted while no task here holds the key: the waiter ahead gave up or was
            // dropped (after a win, its lock is counted here and the wait below sends nothing).
            // When waiters are dropped en masse (the end of a run, a shutdown, one timeout
            // shared by many), this caller is most likely being dropped in the same instant:
            // step back once so that its own timer or select can drop it before anything is
            // sent. Otherwise every dropped head promotes the next into an acquire and a
            // cleanup release on its way out, a burst that left the connection queues so long
            // that releases timed out unsent (their keys stayed for the TTL).
            YieldOnce(false).await;
        }
        self.ensure_open()?;
        let (mut made, mut counted) = (0u32, 0u32);
        let mut window_end: Option<Duration> = None;
        // If this future is dropped mid-attempt, keys may be set with our token: release them in
        // the background when a spawner is available (otherwise they expire by their TTL).
        // Armed only once an attempt's request went out, and disarmed when its cleanup is done:
        // a mass drop of queued waiters must not spawn a release for every one of them (those
        // releases would crowd out the few that matter).
        let cleanup_on_drop = CancelCleanup {
            inner: Arc::clone(self),
            key: &key,
            token: &token,
            armed: AtomicBool::new(false),
            queued: AtomicBool::new(false),
        };
        let mut waiter = Waiter::default();
        let engine = &self.engine;
        // Hand-offs: once an attempt on this key was refused (by this call, or lately by this
        // manager), attempts queue on the instances, and a release hands the key to one waiter
        // instead of waking all of them. A queued place outlives the longest retry window by
        // two rounds, so a waiter that keeps trying keeps it.
        let handoff = engine.handoff && self.config.wake_on_release && patience != Patience::NoWait;
        // Where hand-offs are grants, a quorum of them is this call's acquisition: the key is
        // handed over for the whole TTL, set after the call first queued (`queued_at`, the start
        // of that round, is where the lease is measured from). Only hand-offs from instances
        // this call never sent a release of the key to (`released_on`): a cleanup still on its
        // way could land after a hand-off there and undo it.
        let grants = handoff && engine.handoff_grants;
        let (mut queued_at, mut released_on) = (None::<Duration>, Ask::none());
        let mut handed: Option<Lease> = None;
        let queue_place = QueuePlace {
            stay: self
                .config
                .retry_delay()
                .1
                .saturating_add(self.config.instance_timeout.saturating_mul(2))
                .saturating_add(grace)
                .max(MIN_QUEUE_TIME),
            // Whole milliseconds on the wire: a sub-millisecond timeout must not become 0.
            reserve: if grants {
                ttl
            } else {
                self.config.instance_timeout.max(MIN_QUEUE_TIME)
            },
        };
        let (held_here, releases) = place.local_state();
        if held_here && patience != Patience::NoWait {
            // Another task of this manager holds the key: an attempt now would only be refused.
            // Wait for its release, heard locally at once (no subscription needed), or one retry
            // delay (its lease may run out without a release).
            let until = self.clock().now().saturating_add(self.retry_delay());
            let until = last_start.map_or(until, |last| until.min(last));
            // The waits and rounds off the uncontended path are boxed: a call's future is as
            // large as its largest wait, and every call allocates and copies it (the lock
            // future shrank by a quarter, BENCHMARKS.md run 18).
            let wait = Box::pin(engine.wait_for_retry(&key, &mut waiter, false, until));
            let _woke = select(wait, place.released_since(releases)).await;
        }
        loop {
            // Closed since the last attempt: nothing of ours is set (its cleanup was awaited; a
            // key handed over is given back by the drop guard, as by a call that stops waiting).
            self.ensure_open()?;
            let (_, releases) = place.local_state();
            let attempt = handed.is_none();
            let mut granted = if let Some(lease) = handed.take() {
                telemetry::handed_over(made, lease.holders().count());
                Ok(lease)
            } else {
                // Fair mode: a release of this manager that a rival heard lets the rival go
                // first. Checked before every attempt, not only the first: a queued task is past
                // its first attempt when the local holder releases, and would otherwise take the
                // lock straight back while the rival that heard the release is trying.
                if let Some(until) = self.fairness.pending_yield(self.clock(), &key) {
                    let until = last_start.map_or(until, |last| until.min(last));
                    telemetry::fair_yield(self.clock(), resource, until);
                    engine.yield_until(&key, &mut waiter, until).boxed().await;
                }
                made += 1;
                if handoff && made == 1 && self.contention.recent(self.clock(), &key) {
                    // A key refused lately: this attempt only takes a place in the queue, behind
                    // the waiter that was just handed the key (often by this process's own
                    // release a moment ago). Step back once first, so that a runtime with one
                    // thread delivers that hand-off before it sends N requests that cannot win
                    // (measured on contend, BENCHMARKS.md run 16).
                    YieldOnce(false).await;
                    // Queue from the first attempt. Listening comes first, so that no hand-off
                    // to this call can go unheard.
                    let limit = self.listen_limit(last_start);
                    engine.listen(&token, &mut waiter, limit).boxed().await;
                }
                let queue = waiter.listening();
                if queue {
                    cleanup_on_drop.queued.store(true, Ordering::Relaxed);
                    // Before the requests go out: every hand-off to this call comes later.
                    queued_at.get_or_insert_with(|| self.clock().now());
                }
                engine
                    .acquire(
                        &key,
                        &token,
                        ttl,
                        Some(&cleanup_on_drop.armed),
                        queue.then_some(queue_place),
                        grants,
                    )
                    .await
            };
            let queue = waiter.listening();
            let mut fence = None;
            if let (true, Ok(lease)) = (fenced, &granted) {
                let raise = self.config.fence_raise;
                granted = engine
                    .fence(&key, &token, ttl, *lease, raise)
                    .boxed()
                    .await
                    .map(|(lease, value)| {
                        fence = Some(value);
                        lease
                    });
            }
            if attempt {
                telemetry::attempt(made, &granted);
            }
            let rejected = match granted {
                Ok(_) if self.ensure_open().is_err() => {
                    // Won while the manager was being closed: the close did not see this lock
                    // and no call on it could release it, so give it back now.
                    let _ = engine.release(&key, &token, false).await;
                    cleanup_on_drop.settle();
                    return Err(Error::Closed);
                }
                Ok(lease) => {
                    cleanup_on_drop.settle();
                    drop(cleanup_on_drop);
                    let shared = self.new_shared(resource, key, token, ttl, lease, fence);
                    // Counted before this head leaves the queue, so the next one waits for it.
                    *shared.holding.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(self.queues.hold(&place));
                    *shared.listening.lock().unwrap_or_else(|e| e.into_inner()) =
                        waiter.take_listeners();
                    self.register(&shared);
                    return Ok(Lock::new(
                        shared,
                        LockManager {
                            inner: Arc::clone(self),
                        },
                    ));
                }
                Err(rejected) => rejected,
            };
            let contended = rejected.verdict == Verdict::Refused;
            let dirty = rejected.dirty;
            if contended && handoff {
                self.contention.note(self.clock(), &key);
                // Only a call that would wait for another attempt anyway: one whose attempts are
                // used up gives up now (`retry_count(1)` means one attempt, not one and a
                // queued one after listening).
                let now = self.clock().now();
                let out_of_time = last_start.is_some_and(|last| now >= last);
                let in_window = window_end.is_some_and(|end| now < end) && !out_of_time;
                let gives_up = !in_window && (counted.saturating_add(1) >= attempts || out_of_time);
                if !queue && !gives_up {
                    // Refused without a place in the queues: take one at once (an attempt that
                    // queues), rather than wait a retry window for a hand-off that cannot come.
                    // Not counted: no window passed.
                    let limit = self.listen_limit(last_start);
                    if engine.listen(&token, &mut waiter, limit).boxed().await {
                        if !dirty.is_empty() {
                            released_on = released_on.or(dirty);
                            engine.cleanup(&key, &token, Release::Quiet, dirty).await;
                        }
                        cleanup_on_drop.disarm();
                        if last_start.is_some_and(|last| self.clock().now() > last) {
                            self.leave_later(&key, &token);
                            cleanup_on_drop.settle();
                            return Err(rejected.into_acquire_error(made));
                        }
                        continue;
                    }
                }
            }
            let error = rejected.into_acquire_error(made);
            // A timed-out or ambiguous acquire may still have landed: clean up wherever it may
            // have (an instance that said no wrote nothing, so a fully contended attempt costs no
            // release at all). Not announced: our own subscription would hear it and wake us for
            // nothing.
            // A queued call's cleanup hands on what it holds: a reservation it could not turn
            // into a lock goes to the next waiter instead of freeing a key nobody is told of.
            let how = if waiter.listening() {
                Release::Queued
            } else {
                Release::Quiet
            };
            released_on = released_on.or(dirty);
            let cleanup = async {
                if !dirty.is_empty() {
                    engine.cleanup(&key, &token, how, dirty).await;
                }
            };
            // A call that gives up while queued leaves the queues (and passes on a key already
            // handed to it) on every instance: a place left behind would be handed the next
            // release, and hold it up until the hand-off came back as unclaimed.
            let leave = waiter.listening();
            let now = self.clock().now();
            let out_of_time = last_start.is_some_and(|last| now >= last);
            let until = match window_end {
                Some(end) if now < end && !out_of_time => end,
                _ => {
                    counted = counted.saturating_add(1);
                    if counted >= attempts || out_of_time {
                        if leave {
                            // The cleanup's round, on every instance.
                            engine.leave(&key, &token).await;
                        } else {
                            cleanup.await;
                        }
                        cleanup_on_drop.settle();
                        return Err(error);
                    }
                    let until = now.saturating_add(self.retry_delay());
                    last_start.map_or(until, |last| until.min(last))
                }
            };
            // Only a refusal by holders can be shortened by an announced release.
            let listen = contended && self.config.wake_on_release;
            let wait = async {
                let wait = engine.wait_for_retry(&key, &mut waiter, listen, until);
                match select(pin!(wait), place.released_since(releases)).await {
                    Either::Left((woke, _)) => woke,
                    // A task of this manager released it: try now.
                    Either::Right(_) => Woke::Released,
                }
            };
            let (_, woke) = futures::future::join(cleanup, wait).boxed().await;
            // The failed attempt is cleaned up: nothing of ours is set any more, but for keys
            // handed over since.
            cleanup_on_drop.disarm();
            if let (Woke::Handed(holders), true, Some(queued_at)) = (woke, grants, queued_at) {
                // Taken even past the last start when it costs no round, so the bound holds; a
                // fenced lock's fence rounds would overrun it, so not that one.
                let in_time = last_start.is_none_or(|last| self.clock().now() <= last);
                if in_time || !fenced {
                    handed = self.handed_lease(queued_at, ttl, holders, released_on);
                    if handed.is_some() {
                        continue;
                    }
                }
            }
            if last_start.is_some_and(|last| self.clock().now() > last) {
                // The cleanup outlasted the window and the last moment to start an attempt:
                // one more would overrun the call's bound by up to an instance timeout.
                if leave {
                    // In the background: another round here would overrun the bound.
                    self.leave_later(&key, &token);
                }
                cleanup_on_drop.settle();
                return Err(error);
            }
            window_end = (woke != Woke::Timeout).then_some(until);
        }
    }

    /// The lease that hand-offs on `handed` grant a call that first queued at `queued_at` and
    /// sent releases to `released_on`: each key handed over by an instance outside
    /// `released_on` was set for `ttl` after that moment and stays, so it stands at least until
    /// `queued_at + ttl` on the instances' clocks, less the drift. `None` without a quorum of
    /// those, or when the lease would be due for renewal already (the call waited long): an
    /// attempt then sets the keys' expiry afresh, as when hand-offs are not grants.
    fn handed_lease(
        &self,
        queued_at: Duration,
        ttl: Duration,
        handed: Holders,
        released_on: Ask,
    ) -> Option<Lease> {
        let n = self.engine.instances.len();
        // Only the first 64 instances are tracked as holders, and a release sent to an
        // instance past them counts as sent to every one: past 64 instances the quorum must
        // come from the tracked ones.
        let holders = Holders::of((0..n).map(|i| handed.contains(i) && !released_on.contains(i)));
        if holders.count() < self.engine.quorum() {
            return None;
        }
        let now = self.clock().now();
        let elapsed = now.saturating_sub(queued_at);
        let lease = Lease::granted(
            queued_at,
            ttl,
            elapsed,
            self.config.drift,
            self.config.instance_timeout,
        )?;
        (now < lease.renew_at()).then(|| lease.held_on(holders))
    }

    /// Leaves the hand-off queues in the background, where a spawner allows; otherwise the
    /// places run out by themselves, and a hand-off to them is passed on as unclaimed.
    fn leave_later(self: &Arc<Self>, key: &[u8], token: &[u8]) {
        if let Some(spawner) = &self.spawner {
            let inner = Arc::clone(self);
            let (key, token) = (key.to_vec(), token.to_vec());
            spawner.spawn(Box::pin(async move {
                inner.engine.leave(&key, &token).await;
            }));
        }
    }

    /// How long listening for hand-offs may take before an attempt: an instance timeout, and
    /// never past the last moment an attempt may start.
    fn listen_limit(&self, last_start: Option<Duration>) -> Duration {
        let timeout = self.config.instance_timeout;
        last_start.map_or(timeout, |last| {
            timeout.min(last.saturating_sub(self.clock().now()))
        })
    }

    /// How long `attempts` attempts may take in all: each an attempt, its cleanup and a retry
    /// delay, plus the fair grace.
    fn bound(&self, attempts: u32, fenced: bool) -> Duration {
        let (_, delay_max) = self.config.retry_delay();
        self.config
            .instance_timeout
            .saturating_mul(rounds(fenced))
            .saturating_add(delay_max)
            .saturating_mul(attempts.max(1))
            .saturating_add(self.config.fair.unwrap_or_default())
    }

    /// `Contended` without a round: another task of this manager holds or is acquiring the key.
    fn refused_locally(&self, start: Duration) -> Error {
        let elapsed = self.clock().now().saturating_sub(start);
        Error::Contended(Box::new(self.engine.not_asked(elapsed)))
    }
}

/// The shortest place or reservation sent to the instances (which count whole milliseconds).
const MIN_QUEUE_TIME: Duration = Duration::from_millis(1);

/// The rounds an attempt and the cleanup of a failed one make at most, each bounded by the
/// instance timeout: the acquire and the release, plus the two fence rounds when fenced.
fn rounds(fenced: bool) -> u32 {
    if fenced {
        4
    } else {
        2
    }
}

/// Releases a cancelled acquire's keys in the background.
struct CancelCleanup<'a> {
    inner: Arc<Inner>,
    key: &'a [u8],
    token: &'a [u8],
    /// An acquire request of the current attempt went out and is not cleaned up yet (set by
    /// the round, which alone knows when a call passed its gate).
    armed: AtomicBool,
    /// The call holds places in the hand-off queues: a dropped call leaves them (and passes on
    /// a key already handed to it), so that the next release is not handed to nobody.
    queued: AtomicBool,
}

impl CancelCleanup<'_> {
    fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    /// The call is over: nothing to release or leave on drop (a won lock is the caller's now;
    /// a call that gave up has cleaned up).
    fn settle(&self) {
        self.armed.store(false, Ordering::Relaxed);
        self.queued.store(false, Ordering::Relaxed);
    }
}

impl Drop for CancelCleanup<'_> {
    fn drop(&mut self) {
        let queued = *self.queued.get_mut();
        if !*self.armed.get_mut() && !queued {
            return;
        }
        if let Some(spawner) = &self.inner.spawner {
            let inner = Arc::clone(&self.inner);
            let key = self.key.to_vec();
            let token = self.token.to_vec();
            spawner.spawn(Box::pin(async move {
                // Queued: leaving also passes on a key handed to us.
                if queued {
                    inner.engine.leave(&key, &token).await;
                } else {
                    inner.engine.release(&key, &token, false).await;
                }
            }));
        }
    }
}

/// Returns `Pending` once (waking itself), so that whoever polls this future's task gets to
/// look at its other futures before the next step.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
