//! The scoped form: work that runs only while its lock is held.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures::future::{select, BoxFuture, Either};
use futures::FutureExt;

use crate::error::{Error, LossReason};
use crate::lifecycle::{keep_alive, AutoExtend, LockWatch, OnLoss};
use crate::lock::{Lock, Status};
use crate::manager::LockManager;

impl LockManager {
    /// Runs `work` while holding `resource`, the Rust counterpart of aioredlock's
    /// `async with await lock_manager.lock(...)`: acquires with the `internal_lock_timeout` lease,
    /// keeps the lock alive alongside the work (in the same task: no spawn), releases it when the
    /// work ends (also on panic, which is then resumed), and returns the work's output.
    ///
    /// If the lock is lost meanwhile, the work is stopped (its future dropped) and this returns
    /// [`Error::Lost`]; see [`with_lock_opts`](Self::with_lock_opts) to let it run instead.
    ///
    /// # The deadline is a hard boundary
    ///
    /// The work is polled only while the lease is valid on the manager's clock: on every
    /// wake-up the deadline is checked *before* the work is polled, and a timer wakes the task
    /// at the deadline, so the work's future is dropped no later than the deadline whatever the
    /// renewal is doing (every renewal round is itself cut at the deadline). Once the work's
    /// [`LockWatch::is_valid`] has returned `false`, the work is never polled again. Renewals
    /// start 60 % into the lease, or earlier so that a whole round (the per-instance timeout)
    /// fits before the deadline.
    ///
    /// What no lease can do: stop a step the work is already executing (a write in flight, a
    /// blocking call), or a process that is paused (GC, swap, `SIGSTOP`) from resuming a step
    /// past the deadline. After such a pause the work is not polled again, but a request it had
    /// already sent may land after the lock passed to someone else. Fence the protected
    /// resource when that matters (see the crate docs).
    ///
    /// # Errors
    /// As [`lock`](Self::lock) when acquiring fails; [`Error::Lost`] when the lock was lost
    /// during the work, or found lost when releasing; [`Error::Closed`].
    pub async fn with_lock<F, Fut, T>(
        &self,
        resource: impl AsRef<[u8]>,
        work: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(LockWatch) -> Fut,
        Fut: Future<Output = T>,
    {
        self.with_lock_opts(resource, AutoExtend::default(), work)
            .await
    }

    /// [`with_lock`](Self::with_lock) with options: lease, renewal cap, and what to do on loss.
    ///
    /// With [`OnLoss::KeepRunning`] the work always runs to completion and its output is
    /// returned; it learns of a loss through its [`LockWatch`].
    ///
    /// # Errors
    /// As [`with_lock`](Self::with_lock).
    pub async fn with_lock_opts<F, Fut, T>(
        &self,
        resource: impl AsRef<[u8]>,
        options: AutoExtend,
        work: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(LockWatch) -> Fut,
        Fut: Future<Output = T>,
    {
        let lease = options
            .lease
            .unwrap_or(self.inner.config.internal_lock_timeout);
        let lock = self.lock(resource, lease).await?;
        let work = AssertUnwindSafe(work(lock.watch())).catch_unwind();
        let (outcome, lost) = match options.on_loss {
            OnLoss::Cancel if self.inner.config.deadline_guard => {
                match guarded(&lock, work, options.max_renewals).await {
                    Ok(outcome) => (Some(outcome), None),
                    Err(e) => (None, Some(e)),
                }
            }
            OnLoss::Cancel => {
                // The old race, kept only for tests that prove their checkers catch it.
                let renew = keep_alive(&lock.shared, &self.inner, options.max_renewals);
                match select(pin!(work), pin!(renew)).await {
                    Either::Left((outcome, _)) => (Some(outcome), None),
                    Either::Right((renewed, _)) => (None, renewed.err()),
                }
            }
            OnLoss::KeepRunning => {
                let mut work = pin!(work);
                let renew = keep_alive(&lock.shared, &self.inner, options.max_renewals);
                match select(work.as_mut(), pin!(renew)).await {
                    Either::Left((outcome, _)) => (Some(outcome), None),
                    // Lost (or closed): the work goes on without renewals.
                    Either::Right((renewed, _)) => (Some(work.await), renewed.err()),
                }
            }
        };
        let released = lock.release().await;
        match outcome {
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(lost.unwrap_or(Error::Released)),
            Some(Ok(out)) => match (options.on_loss, released) {
                (OnLoss::Cancel, Err(e @ Error::Lost(_))) => Err(e),
                // The work ran under the lock; an instance that did not answer the release keeps
                // the key until its TTL, which harms no one.
                _ => Ok(out),
            },
        }
    }
}

/// Polls `work` only while the lock's lease is valid, renewing it alongside (in this task), and
/// returns the work's output, or why it was stopped. The work's future is dropped when this
/// returns.
async fn guarded<W: Future>(
    lock: &Lock,
    work: W,
    max_renewals: Option<u32>,
) -> Result<W::Output, Error> {
    let inner = &lock.manager.inner;
    let shared = &lock.shared;
    let clock = inner.clock();
    let mut work = pin!(work);
    let mut renew = pin!(keep_alive(shared, inner, max_renewals));
    // A wake-up at the deadline, re-armed whenever a renewal moves it.
    let mut timer: Option<(Duration, BoxFuture<'static, ()>)> = None;
    futures::future::poll_fn(|cx| {
        // The renewal first: it may have moved the deadline, or found the lock lost.
        if let Poll::Ready(renewed) = renew.as_mut().poll(cx) {
            return Poll::Ready(Err(renewed.err().unwrap_or(Error::Released)));
        }
        loop {
            let (status, deadline) = {
                let state = shared.state();
                (state.status, state.lease.deadline())
            };
            match status {
                Status::Held => {}
                Status::Lost(reason) => return Poll::Ready(Err(Error::lost(reason, None))),
                // Released under the work: only the manager's close does that.
                Status::Released => {
                    return Poll::Ready(Err(inner.ensure_open().err().unwrap_or(Error::Released)))
                }
            }
            let now = clock.now();
            if now >= deadline {
                return Poll::Ready(Err(inner.lose(shared, LossReason::Expired, None)));
            }
            if timer.as_ref().map(|(at, _)| *at) != Some(deadline) {
                timer = Some((deadline, clock.sleep(deadline - now)));
            }
            let fired = timer
                .as_mut()
                .is_some_and(|(_, sleep)| sleep.as_mut().poll(cx).is_ready());
            if !fired {
                break;
            }
            // Fired: look at the clock again (it fires at the deadline, not before it).
            timer = None;
        }
        // The lease was valid on this very wake-up, checked just above.
        work.as_mut().poll(cx).map(Ok)
    })
    .await
}
