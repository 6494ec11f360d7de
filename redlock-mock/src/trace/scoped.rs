//! The scoped form, recorded: [`TracedClient::with_lock`] and
//! [`TracedClient::with_lock_opts`].
//!
//! The manager renews a scoped lock internally, so the holder's window cannot be read off the
//! calls. It is built from what the job itself sees instead: the acquire is recorded at the
//! job's first poll (the lease it was granted), every later poll that finds the lease renewed
//! adds an [`OpKind::Renewed`] record, and an [`OpKind::Drop`] record ends the window when the
//! job ends or is dropped (the scoped form's own release starts then, and is not recorded: it
//! is internal, as the renewals are). A job that polls at least once between two renewals has
//! one continuous window.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use redlock_core::{AutoExtend, Clock, Error, LockWatch, Patience};

use super::{Begin, Call, TracedClient};
use crate::history::{OpKind, Outcome};

/// What the traced job saw, shared between the job and the call that runs it.
#[derive(Default)]
struct Seen {
    /// The call's start, until a record of the acquire took it.
    call: Option<Begin>,
    /// The acquire's serial, once the job was first polled.
    serial: Option<u64>,
    /// The deadline on the holder's clock at the last poll that recorded it.
    deadline: Option<Duration>,
    /// Whether the job ended or was dropped (and its window's end recorded).
    ended: bool,
}

type Shared = Arc<Mutex<Seen>>;

fn seen(shared: &Shared) -> MutexGuard<'_, Seen> {
    // Every update leaves whole fields.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl TracedClient {
    /// [`LockManager::with_lock`](redlock_core::LockManager::with_lock), recorded: the
    /// acquire (when the job is first polled, or when it failed), the renewals the job saw,
    /// and the job's end (an [`OpKind::Drop`] of the lock). Cancelling the call before the job
    /// ran records an [`Outcome::Cancelled`] acquire.
    ///
    /// # Errors
    /// As [`LockManager::with_lock`](redlock_core::LockManager::with_lock).
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

    /// [`LockManager::with_lock_opts`](redlock_core::LockManager::with_lock_opts), recorded as
    /// [`with_lock`](Self::with_lock).
    ///
    /// # Errors
    /// As [`LockManager::with_lock_opts`](redlock_core::LockManager::with_lock_opts).
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
        let resource = resource.as_ref();
        let shared = Arc::new(Mutex::new(Seen {
            call: Some(self.begin()),
            ..Seen::default()
        }));
        let guard = ScopedCall {
            traced: self,
            resource,
            shared: Arc::clone(&shared),
        };
        let job_shared = Arc::clone(&shared);
        let result = self
            .manager()
            .with_lock_opts(resource, options, move |watch| Job {
                traced: self.clone(),
                shared: job_shared,
                work: Box::pin(work(watch.clone())),
                watch,
            })
            .await;
        guard.returned(&result);
        result
    }

    fn patience(&self) -> Patience {
        Patience::Attempts(self.manager().config().retry_count())
    }
}

/// The traced call: records a failed or cancelled acquire (the job records the rest).
struct ScopedCall<'a> {
    traced: &'a TracedClient,
    resource: &'a [u8],
    shared: Shared,
}

impl ScopedCall<'_> {
    /// The call's start, unless the job took it to record the grant.
    fn take_begin(&self) -> Option<Begin> {
        let mut seen = seen(&self.shared);
        match seen.serial {
            Some(_) => None,
            None => seen.call.take(),
        }
    }

    fn returned<T>(&self, result: &Result<T, Error>) {
        let Some(begin) = self.take_begin() else {
            return;
        };
        let serial = self.traced.world().next_lock_serial();
        let patience = self.traced.patience();
        match result {
            Err(e) => self
                .traced
                .acquire_failed(begin, self.resource, serial, patience, e),
            // Unreachable (the output comes from the job, and its first poll took the start);
            // recorded as what it claims.
            Ok(_) => {
                let call = Call {
                    op: OpKind::Lock,
                    resource: self.resource,
                    serial,
                    patience: Some(patience),
                    fence: None,
                };
                self.traced.finish(begin, &call, Outcome::Ok, None, None);
            }
        }
    }
}

impl Drop for ScopedCall<'_> {
    fn drop(&mut self) {
        // Cancelled before the job ran (after it, the job recorded its own end).
        if let Some(begin) = self.take_begin() {
            let call = Call {
                op: OpKind::Lock,
                resource: self.resource,
                serial: self.traced.world().next_lock_serial(),
                patience: Some(self.traced.patience()),
                fence: None,
            };
            self.traced
                .finish(begin, &call, Outcome::Cancelled, None, None);
        }
    }
}

/// The job of a traced scoped lock.
struct Job<F> {
    traced: TracedClient,
    shared: Shared,
    watch: LockWatch,
    work: Pin<Box<F>>,
}

impl<F> Job<F> {
    /// Records the grant at the first poll, and a renewal when the deadline moved since.
    fn look(&self) {
        let remaining = self.watch.remaining();
        let local = self.traced.world().client_clock(self.traced.index()).now();
        let deadline = (!remaining.is_zero()).then(|| local + remaining);
        let mut seen = seen(&self.shared);
        match seen.serial {
            None => {
                let serial = self.traced.world().next_lock_serial();
                seen.serial = Some(serial);
                seen.deadline = deadline;
                let begin = seen.call.take();
                drop(seen);
                let begin = begin.unwrap_or_else(|| self.traced.begin());
                let call = Call {
                    op: OpKind::Lock,
                    resource: self.watch.resource(),
                    serial,
                    patience: Some(self.traced.patience()),
                    fence: self.watch.fence(),
                };
                let holds_until = self.traced.holds_until(remaining);
                self.traced
                    .finish(begin, &call, Outcome::Ok, holds_until, None);
            }
            Some(serial) => {
                if deadline.is_some_and(|d| seen.deadline.is_none_or(|old| d > old)) {
                    seen.deadline = deadline;
                    drop(seen);
                    let call = Call {
                        op: OpKind::Renewed,
                        resource: self.watch.resource(),
                        serial,
                        patience: None,
                        fence: None,
                    };
                    let holds_until = self.traced.holds_until(remaining);
                    self.traced
                        .finish(self.traced.begin(), &call, Outcome::Ok, holds_until, None);
                }
            }
        }
    }
}

impl<F> Job<F> {
    /// The job ended or was dropped: its window ends now, where the scoped form's release
    /// starts.
    fn end(&self) {
        let serial = {
            let mut seen = seen(&self.shared);
            if std::mem::replace(&mut seen.ended, true) {
                return;
            }
            seen.serial
        };
        if let Some(serial) = serial {
            let call = Call {
                op: OpKind::Drop,
                resource: self.watch.resource(),
                serial,
                patience: None,
                fence: None,
            };
            self.traced
                .finish(self.traced.begin(), &call, Outcome::Ok, None, None);
        }
    }
}

impl<F: Future> Future for Job<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.look();
        let out = self.work.as_mut().poll(cx);
        if out.is_ready() {
            self.end();
        }
        out
    }
}

impl<F> Drop for Job<F> {
    fn drop(&mut self) {
        self.end();
    }
}
