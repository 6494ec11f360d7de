//! Releases still on their way after `unlock` returned at a quorum: counted, so that `close`
//! sees them through before it closes the backends under them.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// The background release tasks of one manager.
#[derive(Debug, Default)]
pub(crate) struct Stragglers {
    running: AtomicUsize,
    /// Waiting for `running` to reach zero (`close`).
    idle: Mutex<Vec<Waker>>,
}

impl Stragglers {
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

    #[test]
    fn a_dropped_task_counts_as_ended() {
        let stragglers = Arc::new(Stragglers::default());
        let task = stragglers.track(futures::future::pending::<()>());
        assert!(stragglers.settled().now_or_never().is_none());
        drop(task);
        assert!(stragglers.settled().now_or_never().is_some());
    }
}
