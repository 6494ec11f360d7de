//! Restart recovery: when a backend announces that its connection to an instance was made
//! again ([`LockBackend::reconnects`]), every lock this manager holds is re-checked on that
//! instance at once, instead of at its next renewal.
//!
//! An instance that restarted without persistence lost our keys; another client may take them
//! there and, with a majority restarted, take the lock. The holder cannot prevent that (only a
//! fenced resource can), but it can stop trusting its lock as soon as it knows, which is one
//! reconnection plus one round after the restart rather than up to 60 % of a lease later.
//!
//! [`LockBackend::reconnects`]: crate::LockBackend::reconnects

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::{AbortHandle, Abortable};
use futures::{FutureExt, StreamExt};

use super::Inner;
use crate::error::LossReason;
use crate::holders::MAX_TRACKED;
use crate::lock::{LockShared, Status};
use crate::round::{self, Gating, Wait};

impl Inner {
    /// Subscribes to every instance's reconnections, once, in the background. Called at the
    /// first lock this manager owns: a spawner may need the runtime the locks are used in, and
    /// without a lock there is nothing to re-check.
    pub(crate) fn watch_reconnects(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(spawner) = &self.spawner else { return };
        // Closed meanwhile: close has stopped the subscriptions already, and would not again.
        if self.ensure_open().is_err() {
            return;
        }
        if !self.config.restart_recovery || self.engine.instances.len() > MAX_TRACKED {
            return;
        }
        let mut tasks = self.reconnect_tasks();
        for (i, backend) in self.engine.instances.iter().enumerate() {
            let Some(mut reconnects) = backend.reconnects() else {
                continue;
            };
            // Weak: the subscription must not keep a manager alive that nobody uses any more.
            let weak: Weak<Self> = Arc::downgrade(self);
            let task = async move {
                while reconnects.next().await.is_some() {
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.ensure_open().is_err() {
                        return;
                    }
                    inner.recheck(i).await;
                }
            };
            let (handle, registration) = AbortHandle::new_pair();
            spawner.spawn(Abortable::new(task, registration).map(drop).boxed());
            tasks.push(handle);
        }
    }

    /// Stops the subscriptions (close, drop).
    pub(crate) fn stop_watching(&self) {
        for task in self.reconnect_tasks().drain(..) {
            task.abort();
        }
    }

    /// One re-check of every owned lock on instance `i`, concurrent over the locks within the
    /// instance's in-flight limit.
    async fn recheck(&self, i: usize) {
        let mut held: Vec<Arc<LockShared>> = self.active().values().cloned().collect();
        // In the order they were taken: a seeded simulation replays exactly.
        held.sort_by_key(|shared| shared.id);
        crate::telemetry::reconnected(self.engine.instances[i].id(), held.len());
        for batch in held.chunks(self.config.max_in_flight.max(1)) {
            futures::future::join_all(batch.iter().map(|shared| self.recheck_lock(shared, i)))
                .await;
        }
    }

    /// Looks at `shared`'s key on instance `i`: ours, someone else's, or missing (then set it
    /// again, for the validity left). Reports the lock lost when fewer than a quorum still
    /// hold it.
    async fn recheck_lock(&self, shared: &LockShared, i: usize) {
        if shared.state().status != Status::Held {
            return;
        }
        let token = &shared.token;
        let found = self.on_one(i, |b| b.inspect(&shared.key), |_| true).await;
        let holds = match found {
            Some(Ok(Some(state))) => state.value == **token,
            Some(Ok(None)) => self.reassert(shared, i).await,
            // No answer: unknown until the next extend proves otherwise.
            Some(Err(_)) | None => false,
        };
        self.settle(shared, i, holds);
    }

    /// Sets the missing key on instance `i` again (only if still absent), for the validity left
    /// on our clock rounded down to the millisecond, never longer. Counted from its arrival,
    /// the key can outlive the lock's deadline by the one-way delay of this call, and still
    /// expires before the keys of the grant (whose TTL exceeds the validity by the drift
    /// allowance and the grant round's time). Whether it was set.
    async fn reassert(&self, shared: &LockShared, i: usize) -> bool {
        let left = {
            let state = shared.state();
            if state.status != Status::Held || shared.release_sent.load(Ordering::Acquire) {
                return false;
            }
            state.remaining(self.clock().now())
        };
        let ttl = Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        if ttl < Duration::from_millis(1) {
            return false;
        }
        let set = matches!(
            self.on_one(
                i,
                |b| b.acquire(&shared.key, &shared.token, ttl),
                |acquired| *acquired
            )
            .await,
            Some(Ok(true))
        );
        // A release that began before this answer came may have passed this instance before our
        // key landed: take it back, or it stays until its TTL. One that begins later finds it.
        if set
            && (shared.release_sent.load(Ordering::Acquire)
                || shared.state().status != Status::Held)
        {
            let _ = self
                .on_one(i, |b| b.release(&shared.key, &shared.token), |r| *r)
                .await;
            return false;
        }
        set
    }

    /// Records whether instance `i` holds `shared`, and reports the lock lost when fewer than a
    /// quorum of known holders are left.
    fn settle(&self, shared: &LockShared, i: usize, holds: bool) {
        let short = {
            let mut state = shared.state();
            if state.status != Status::Held {
                return;
            }
            let holders = state.lease.holders().with(i, holds);
            state.lease = state.lease.held_on(holders);
            if !holds {
                // An extend round running now may have counted this instance before it lost
                // the key: it must not put it back (see `extend_round`).
                shared.rechecks.fetch_add(1, Ordering::AcqRel);
            }
            holders.count() < self.engine.quorum()
        };
        if short {
            drop(self.lose(shared, LossReason::InstancesLost, None));
        }
    }

    /// One call to instance `i` alone, through its gate and bounded by the per-instance
    /// timeout; `None` when it did not answer in time.
    async fn on_one<'a, T, C, Y>(
        &'a self,
        i: usize,
        call: C,
        is_yes: Y,
    ) -> Option<Result<T, crate::BackendError>>
    where
        C: Fn(
            &'a std::sync::Arc<dyn crate::LockBackend>,
        ) -> futures::future::BoxFuture<'a, Result<T, crate::BackendError>>,
        Y: Fn(&T) -> bool,
    {
        let mut round = round::run(
            &self.engine.instances[i..=i],
            Gating::Limit(&self.engine.gates[i..=i], None),
            self.clock(),
            self.engine.instance_timeout,
            Wait::ForAll,
            call,
            is_yes,
        )
        .await;
        round.answers.pop().flatten()
    }
}
