//! Acquiring with retries: attempts, the cleanup after each failed one, the retry windows, and
//! the cleanup of an acquire whose future was dropped.

use std::sync::Arc;
use std::time::Duration;

use super::{Inner, LockManager};
use crate::error::Error;
use crate::lock::Lock;
use crate::round::Verdict;
use crate::wait::Waiter;

impl Inner {
    /// Acquires `key` with `token` for `ttl`, in at most `retry_count` counted attempts.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        resource: &[u8],
        key: Box<[u8]>,
        token: Box<[u8]>,
        ttl: Duration,
    ) -> Result<Lock, Error> {
        // `retry_count` counts attempts made at the end of a retry window (and the first). An
        // attempt made early because a release was announced is free while its window lasts:
        // with several waiters, all woken by each release, counting those would make the k-th
        // in line give up after k releases. The time bound is unchanged: a window lasts its
        // drawn delay, and an early attempt that runs past the window's end counts.
        let attempts = self.config.retry_count;
        let (mut made, mut counted) = (0u32, 0u32);
        let mut window_end: Option<Duration> = None;
        // If this future is dropped mid-attempt, keys may be set with our token: release them in
        // the background when a spawner is available (otherwise they expire by their TTL).
        let mut cleanup_on_drop = CancelCleanup {
            inner: Arc::clone(self),
            key: &key,
            token: &token,
            armed: true,
        };
        let mut waiter = Waiter::default();
        let engine = &self.engine;
        self.fairness.yield_to_waiters(self.clock(), &key).await;
        loop {
            made += 1;
            let rejected = match engine.acquire(&key, &token, ttl).await {
                Ok(lease) => {
                    cleanup_on_drop.armed = false;
                    drop(cleanup_on_drop);
                    let shared = self.new_shared(resource, key, token, ttl, lease);
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
            let error = rejected.into_acquire_error(made);
            // A timed-out or ambiguous acquire may still have landed: clean up everywhere. Not
            // announced: our own subscription would hear it and wake us for nothing.
            let cleanup = engine.release(&key, &token, false);
            let now = self.clock().now();
            let until = match window_end {
                Some(end) if now < end => end,
                _ => {
                    counted += 1;
                    if counted >= attempts {
                        cleanup.await;
                        cleanup_on_drop.armed = false;
                        return Err(error);
                    }
                    now.saturating_add(self.retry_delay())
                }
            };
            // Only a refusal by holders can be shortened by an announced release.
            let listen = contended && self.config.wake_on_release;
            let wait = engine.wait_for_retry(&key, &mut waiter, listen, until);
            let (_, woke) = futures::future::join(cleanup, wait).await;
            window_end = woke.then_some(until);
        }
    }
}

/// Releases a cancelled acquire's keys in the background.
struct CancelCleanup<'a> {
    inner: Arc<Inner>,
    key: &'a [u8],
    token: &'a [u8],
    armed: bool,
}

impl Drop for CancelCleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(spawner) = &self.inner.spawner {
            let inner = Arc::clone(&self.inner);
            let key = self.key.to_vec();
            let token = self.token.to_vec();
            spawner.spawn(Box::pin(async move {
                inner.engine.release(&key, &token, false).await;
            }));
        }
    }
}
