//! The core's runtime traits on tokio.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redlock_core::{Clock, Spawner};

/// [`Clock`] on tokio's timer and `std::time::Instant` (monotonic).
///
/// Needs a tokio runtime with the time driver enabled when sleeping.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(origin())
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// [`Spawner`] on the tokio runtime current when it spawns; without one, the task is dropped
/// (the lock then expires by its TTL) rather than panicking.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            drop(handle.spawn(task));
        }
    }
}
