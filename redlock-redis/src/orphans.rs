//! Requests whose callers stopped waiting (a round that reached its quorum), seen through to
//! their replies or their deadlines by one task per connection.
//!
//! redis-rs skips a queued request whose caller is gone, and the backend contract wants every
//! request polled once to reach the server; so such a request's future must live on until it
//! is written. It used to get a task of its own with a timer of its own, one per lock cycle
//! (the round returns at the quorum, before the last instance answered): a task allocation, a
//! timer registration and a scheduling each time. With the manager's task for background
//! releases, this took 3 % off the rate of uncontended cycles on one thread (BENCHMARKS.md
//! run 18). Here one task per connection keeps them all, polling only
//! those woken by a reply, and one timer drops those still unanswered at their deadline (a
//! request not written by then is never written later: redis-rs skips it once dropped).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::stream::{FuturesUnordered, StreamExt};
use redlock_core::TaskInbox;
use tokio::time::{Instant, Sleep};

use crate::link::Sent;

/// A request's future, once polled.
pub(crate) type SendFuture = Pin<Box<dyn Future<Output = Sent> + Send>>;

/// The orphans of one connection, on their way to the task that finishes them.
pub(crate) struct Orphans {
    inbox: TaskInbox<Orphan>,
    /// The runtime the connection was made on (its redis-rs task runs there): the task for its
    /// orphans runs there too, whichever runtime the callers were on.
    runtime: Option<tokio::runtime::Handle>,
}

struct Orphan {
    future: SendFuture,
    deadline: Instant,
}

impl Future for Orphan {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A panic (a timer of a runtime shut down since) ends this orphan, not the task that
        // finishes the others.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.future.as_mut().poll(cx)
        })) {
            Ok(poll) => poll.map(drop),
            Err(_) => Poll::Ready(()),
        }
    }
}

impl Orphans {
    /// For a connection made on the current runtime.
    pub(crate) fn new() -> Self {
        Self {
            inbox: TaskInbox::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Keeps `future` until it completes or `deadline` passes. Outside a tokio runtime, with no
    /// task yet to take it, it is dropped (as a request whose caller is gone).
    pub(crate) fn adopt(self: &Arc<Self>, future: SendFuture, deadline: Instant) {
        if !self.inbox.hand(Orphan { future, deadline }) {
            return;
        }
        let runtime = self
            .runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok());
        match runtime {
            Some(runtime) => drop(runtime.spawn(Driver {
                owner: Arc::downgrade(self),
                orphans: FuturesUnordered::new(),
                timer: None,
            })),
            None => self.inbox.ended(),
        }
    }
}

/// The task of one connection's orphans. It lives as long as the connection (so that an
/// orphan per lock cycle costs no task of its own), then until its last orphan is done.
struct Driver {
    owner: Weak<Orphans>,
    orphans: FuturesUnordered<Orphan>,
    /// At the earliest deadline of the orphans kept (set or moved earlier as they come, moved
    /// to the earliest left when it fires): a steady flow of orphans costs one timer at a time,
    /// moved only by one that must go sooner.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Once the connection is gone (its inbox woke this task), the orphans left run out.
        let owned = match this.owner.upgrade() {
            Some(owner) => {
                for orphan in owner.inbox.take(cx) {
                    match &mut this.timer {
                        None => {
                            this.timer = Some(Box::pin(tokio::time::sleep_until(orphan.deadline)));
                        }
                        Some(timer) if orphan.deadline < timer.deadline() => {
                            timer.as_mut().reset(orphan.deadline);
                        }
                        Some(_) => {}
                    }
                    this.orphans.push(orphan);
                }
                true
            }
            None => false,
        };
        loop {
            while let Poll::Ready(Some(())) = this.orphans.poll_next_unpin(cx) {}
            let Some(timer) = this.timer.as_mut() else {
                break;
            };
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            // Those past their deadline are dropped unanswered; the others go back in, to be
            // polled again (their wakers belonged to the set they left).
            let now = Instant::now();
            let mut earliest: Option<Instant> = None;
            for orphan in std::mem::take(&mut this.orphans) {
                if orphan.deadline > now {
                    earliest = Some(earliest.map_or(orphan.deadline, |e| e.min(orphan.deadline)));
                    this.orphans.push(orphan);
                }
            }
            match earliest {
                Some(at) => timer.as_mut().reset(at),
                None => this.timer = None,
            }
        }
        if !owned && this.orphans.is_empty() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Its runtime is going away (or it ended): the next orphan starts another task, and
        // those handed over meanwhile are dropped with it, never to be written later.
        if let Some(owner) = self.owner.upgrade() {
            owner.inbox.ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The tasks alive on the current runtime (the orphans' task is the only one spawned).
    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    fn orphan(rx: futures::channel::oneshot::Receiver<()>) -> SendFuture {
        Box::pin(async move {
            let _ = rx.await;
            Ok(Ok(redis::Value::Nil))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_orphan_is_kept_until_its_reply_then_dropped() {
        let orphans = Arc::new(Orphans::new());
        let (tx, rx) = futures::channel::oneshot::channel();
        // Held by the orphan's future: gone once that future is dropped.
        let probe = Arc::new(());
        let held = Arc::clone(&probe);
        let future: SendFuture = Box::pin(async move {
            let _held = held;
            let _ = rx.await;
            Ok(Ok(redis::Value::Nil))
        });
        orphans.adopt(future, Instant::now() + Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(!tx.is_canceled(), "kept while unanswered");
        tx.send(()).expect("the orphan still listens");
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&probe), 1, "dropped once answered");
        assert_eq!(alive_tasks(), 1, "one task per connection stays");
    }

    #[tokio::test(start_paused = true)]
    async fn an_orphan_is_dropped_at_its_deadline_and_no_sooner() {
        let orphans = Arc::new(Orphans::new());
        let (early_tx, early_rx) = futures::channel::oneshot::channel::<()>();
        let (late_tx, late_rx) = futures::channel::oneshot::channel::<()>();
        let start = Instant::now();
        orphans.adopt(orphan(early_rx), start + Duration::from_millis(100));
        orphans.adopt(orphan(late_rx), start + Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(99)).await;
        assert!(!early_tx.is_canceled());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(early_tx.is_canceled(), "dropped at its deadline");
        assert!(!late_tx.is_canceled(), "the later one is kept");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(late_tx.is_canceled(), "dropped at its own deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn an_orphan_due_sooner_than_those_kept_is_dropped_at_its_own_deadline() {
        let orphans = Arc::new(Orphans::new());
        let (late_tx, late_rx) = futures::channel::oneshot::channel::<()>();
        let (early_tx, early_rx) = futures::channel::oneshot::channel::<()>();
        let start = Instant::now();
        orphans.adopt(orphan(late_rx), start + Duration::from_millis(300));
        tokio::task::yield_now().await;
        orphans.adopt(orphan(early_rx), start + Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert!(
            early_tx.is_canceled(),
            "dropped at its deadline, not the later one's"
        );
        assert!(!late_tx.is_canceled());
    }

    #[tokio::test(start_paused = true)]
    async fn an_orphan_that_panics_ends_alone() {
        let orphans = Arc::new(Orphans::new());
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let deadline = Instant::now() + Duration::from_secs(1);
        orphans.adopt(orphan(rx), deadline);
        orphans.adopt(
            Box::pin(async { panic!("an orphan that panics") }),
            deadline,
        );
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(alive_tasks(), 1, "the task goes on");
        assert!(!tx.is_canceled(), "and keeps the other orphan");
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_the_connection_once_its_orphans_are_done() {
        let orphans = Arc::new(Orphans::new());
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        orphans.adopt(orphan(rx), Instant::now() + Duration::from_secs(1));
        tokio::task::yield_now().await;
        let weak = Arc::downgrade(&orphans);
        drop(orphans);
        tokio::task::yield_now().await;
        assert!(
            !tx.is_canceled(),
            "still finished after the connection went"
        );
        drop(tx);
        tokio::task::yield_now().await;
        assert!(weak.upgrade().is_none());
        assert_eq!(alive_tasks(), 0, "the task ended");
    }

    #[test]
    fn a_task_whose_runtime_went_away_is_replaced() {
        let orphans = Arc::new(Orphans::new());
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                orphans.adopt(orphan(rx), Instant::now() + Duration::from_secs(10));
                tokio::task::yield_now().await;
            });
        }
        // Its end is recorded: the next orphan starts a task (checked below).
        assert!(tx.is_canceled(), "dropped with its runtime");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        runtime.block_on(async {
            orphans.adopt(orphan(rx), Instant::now() + Duration::from_secs(10));
            tokio::task::yield_now().await;
            assert!(!tx.is_canceled(), "a new task keeps it");
            assert_eq!(alive_tasks(), 1, "on this runtime");
        });
    }
}
