//! Releases still on their way after `unlock` returned at a quorum: run by one task per
//! manager, and counted, so that `close` sees them through before it closes the backends under
//! them.
//!
//! One task for all of them, fed through a [`TaskInbox`]: an uncontended lock cycle leaves one
//! such release behind (the last instance's delete).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;

use crate::inbox::TaskInbox;
use crate::runtime::Spawner;

/// The background release tasks of one manager.
#[derive(Debug, Default)]
pub(crate) struct Stragglers {
    running: AtomicUsize,
    /// Waiting for `running` to reach zero (`close`).
    idle: Mutex<Vec<Waker>>,
    inbox: TaskInbox<BoxFuture<'static, ()>>,
}

impl Stragglers {
    /// Runs `work` in the manager's task for them (started through `spawner` when there is
    /// none), counted as running until it ends or is dropped.
    pub(crate) fn run<F>(self: &Arc<Self>, spawner: &dyn Spawner, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // A panic (a timer of a runtime shut down since, a backend's bug) ends this release, not
        // the task that runs the others.
        let work = std::panic::AssertUnwindSafe(self.track(work)).catch_unwind();
        if self.inbox.hand(Box::pin(work.map(drop))) {
            spawner.spawn(Box::pin(Driver {
                owner: Arc::downgrade(self),
                works: FuturesUnordered::new(),
            }));
        }
    }

    /// Wraps `work` so that it counts as running until it ends or is dropped.
    pub(crate) fn track<F: Future>(self: &Arc<Self>, work: F) -> impl Future<Output = F::Output> {
        self.running.fetch_add(1, Ordering::AcqRel);
        let done = Done(Arc::clone(self));
        async move {
            let out = work.await;
            drop(done);
            out
        }
    }

    /// Until every tracked task has ended. Each is bounded by the per-instance timeout.
    pub(crate) async fn settled(&self) {
        futures::future::poll_fn(|cx| {
            if self.running.load(Ordering::Acquire) == 0 {
                return Poll::Ready(());
            }
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the lock: the last task may have ended in between, and it
            // wakes only the wakers it finds.
            if self.running.load(Ordering::Acquire) == 0 {
                return Poll::Ready(());
            }
            if !idle.iter().any(|w| w.will_wake(cx.waker())) {
                idle.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }
}

/// The manager's task for its background releases. It lives as long as the manager, so that
/// a release per lock cycle costs no task of its own. It runs where the spawner put it, on the
/// first background release: with a runtime per thread, where that release was made; once
/// that runtime is gone, the next release starts another.
struct Driver {
    owner: Weak<Stragglers>,
    works: FuturesUnordered<BoxFuture<'static, ()>>,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Once the manager is gone (its inbox woke this task), the releases left run out.
        let owned = match this.owner.upgrade() {
            Some(owner) => {
                this.works.extend(owner.inbox.take(cx));
                true
            }
            None => false,
        };
        while let Poll::Ready(Some(())) = this.works.poll_next_unpin(cx) {}
        if !owned && this.works.is_empty() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Its runtime is going away: the next release starts another task, and those handed
        // over meanwhile are dropped with it (each counted as ended, as a dropped task was).
        if let Some(owner) = self.owner.upgrade() {
            owner.inbox.ended();
        }
    }
}

/// The calls a release left running at its quorum, until each has ended or `timer` fires (at
/// the round's limit: the round's own timer, or one made to end there). Written out rather than
/// a `join_all` under a `select`, which cost two allocations more per lock cycle. Not to be
/// polled again once it returned.
pub(crate) struct Leftover<F> {
    calls: Vec<F>,
    timer: BoxFuture<'static, ()>,
}

impl<F> Leftover<F> {
    pub(crate) fn new(calls: Vec<F>, timer: BoxFuture<'static, ()>) -> Self {
        Self { calls, timer }
    }
}

impl<F: Future + Unpin> Future for Leftover<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // A call that ended leaves at once: it is never polled again.
        this.calls
            .retain_mut(|call| Pin::new(call).poll(cx).is_pending());
        if this.calls.is_empty() || this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Ends a tracked task's count, also when the runtime drops the task.
struct Done(Arc<Stragglers>);

impl Drop for Done {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            let wakers =
                std::mem::take(&mut *self.0.idle.lock().unwrap_or_else(|e| e.into_inner()));
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::CountingWaker;
    use futures::channel::oneshot;
    use futures::FutureExt;

    #[test]
    fn settled_waits_for_every_tracked_task_and_no_longer() {
        let stragglers = Arc::new(Stragglers::default());
        assert!(
            stragglers.settled().now_or_never().is_some(),
            "nothing tracked"
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = stragglers.track(rx);
        let mut task = Box::pin(task);
        let mut settled = Box::pin(stragglers.settled());
        assert!((&mut settled).now_or_never().is_none());
        assert!((&mut task).now_or_never().is_none());
        tx.send(()).expect("receiver alive");
        assert!((&mut task).now_or_never().is_some());
        assert!(settled.now_or_never().is_some());
    }

    /// Keeps what it is given to run, for the test to poll.
    #[derive(Default)]
    struct Collect(Mutex<Vec<BoxFuture<'static, ()>>>);

    impl std::fmt::Debug for Collect {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Collect")
        }
    }

    impl Spawner for Collect {
        fn spawn(&self, task: BoxFuture<'static, ()>) {
            self.0.lock().unwrap().push(task);
        }
    }

    #[test]
    fn background_releases_share_one_task_and_close_waits_for_them() {
        let stragglers = Arc::new(Stragglers::default());
        let spawner = Collect::default();
        let (tx1, rx1) = oneshot::channel::<()>();
        let (tx2, rx2) = oneshot::channel::<()>();
        stragglers.run(&spawner, rx1.map(drop));
        stragglers.run(&spawner, rx2.map(drop));
        let mut tasks = std::mem::take(&mut *spawner.0.lock().unwrap());
        assert_eq!(tasks.len(), 1, "one task for both");
        let mut driver = tasks.pop().unwrap();
        assert!((&mut driver).now_or_never().is_none());
        let mut settled = Box::pin(stragglers.settled());
        tx1.send(()).unwrap();
        assert!((&mut driver).now_or_never().is_none());
        assert!((&mut settled).now_or_never().is_none(), "one still running");
        tx2.send(()).unwrap();
        assert!(
            (&mut driver).now_or_never().is_none(),
            "the task outlives its work"
        );
        assert!(settled.now_or_never().is_some());
        let (tx3, rx3) = oneshot::channel::<()>();
        stragglers.run(&spawner, rx3.map(drop));
        assert!(
            spawner.0.lock().unwrap().is_empty(),
            "the same task takes the next one"
        );
        drop(tx3);
        assert!((&mut driver).now_or_never().is_none());
        assert!(stragglers.settled().now_or_never().is_some());
        drop(stragglers);
        assert!(driver.now_or_never().is_some(), "ends with the manager");
    }

    #[test]
    fn a_task_dropped_with_its_runtime_counts_its_work_as_ended_and_is_replaced() {
        let stragglers = Arc::new(Stragglers::default());
        let spawner = Collect::default();
        stragglers.run(&spawner, futures::future::pending::<()>());
        let driver = spawner.0.lock().unwrap().pop().unwrap();
        assert!(stragglers.settled().now_or_never().is_none());
        drop(driver);
        assert!(stragglers.settled().now_or_never().is_some());
        stragglers.run(&spawner, futures::future::pending::<()>());
        assert_eq!(spawner.0.lock().unwrap().len(), 1, "a new task");
    }

    #[test]
    fn a_waiting_task_is_woken_for_a_new_release_and_when_the_manager_goes() {
        let stragglers = Arc::new(Stragglers::default());
        let spawner = Collect::default();
        stragglers.run(&spawner, futures::future::ready(()));
        let mut driver = spawner.0.lock().unwrap().pop().unwrap();
        let count = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        assert!(driver.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.wakes(), 0);
        stragglers.run(&spawner, futures::future::ready(()));
        assert_eq!(count.wakes(), 1, "woken for the new release");
        assert!(driver.as_mut().poll(&mut cx).is_pending());
        drop(stragglers);
        assert_eq!(count.wakes(), 2, "woken when the manager went");
        assert!(driver.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_release_that_panics_ends_alone() {
        let stragglers = Arc::new(Stragglers::default());
        let spawner = Collect::default();
        let (tx, rx) = oneshot::channel::<()>();
        stragglers.run(&spawner, rx.map(drop));
        stragglers.run(&spawner, async { panic!("a release that panics") });
        let mut driver = spawner.0.lock().unwrap().pop().unwrap();
        assert!((&mut driver).now_or_never().is_none(), "the task goes on");
        assert!(
            stragglers.settled().now_or_never().is_none(),
            "the other release still runs"
        );
        tx.send(()).unwrap();
        assert!((&mut driver).now_or_never().is_none());
        assert!(stragglers.settled().now_or_never().is_some(), "both ended");
    }

    #[test]
    fn leftover_calls_end_when_the_last_one_answers_or_at_the_timer() {
        let (tx1, rx1) = oneshot::channel::<()>();
        let (tx2, rx2) = oneshot::channel::<()>();
        let (fire, timer) = oneshot::channel::<()>();
        let mut left = Leftover::new(vec![rx1, rx2], timer.map(drop).boxed());
        assert!((&mut left).now_or_never().is_none());
        tx1.send(()).unwrap();
        assert!((&mut left).now_or_never().is_none(), "one still running");
        assert_eq!(left.calls.len(), 1, "the answered one is not polled again");
        tx2.send(()).unwrap();
        assert!((&mut left).now_or_never().is_some(), "all answered");
        drop(fire);

        let (_tx, rx) = oneshot::channel::<()>();
        let (fire, timer) = oneshot::channel::<()>();
        let mut left = Leftover::new(vec![rx], timer.map(drop).boxed());
        assert!((&mut left).now_or_never().is_none());
        fire.send(()).unwrap();
        assert!(left.now_or_never().is_some(), "given up at the timer");
    }

    #[test]
    fn a_dropped_task_counts_as_ended() {
        let stragglers = Arc::new(Stragglers::default());
        let task = stragglers.track(futures::future::pending::<()>());
        assert!(stragglers.settled().now_or_never().is_none());
        drop(task);
        assert!(stragglers.settled().now_or_never().is_some());
    }
}
