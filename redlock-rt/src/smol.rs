//! The smol family: the clock on async-io's timer, the spawner on an async-executor
//! `Executor` (`smol::Executor` is the same type).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use futures::future::BoxFuture;
use futures::FutureExt;
use redlock_core::{Clock, Spawner};

/// [`Clock`] on `std::time::Instant` (monotonic) and async-io's [`Timer`](async_io::Timer).
///
/// async-io drives its timers from whichever thread blocks on it (`smol::block_on`,
/// `async_io::block_on`) or, when none does, from its own background thread, so this clock
/// sleeps correctly under any executor, `futures::executor::block_on` included.
#[derive(Debug, Clone, Copy)]
pub struct SmolClock {
    origin: Instant,
}

impl SmolClock {
    /// A clock whose origin is now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SmolClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SmolClock {
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        // `Timer::after` with a duration too large for an `Instant` never fires, which is what
        // such a sleep means.
        async_io::Timer::after(duration).map(drop).boxed()
    }
}

/// [`Spawner`] on an async-executor [`Executor`]: tasks are detached, and run while the
/// executor is run (`executor.run(...)`, or the threads of `smol`'s global one).
#[derive(Clone)]
pub struct SmolSpawner {
    executor: Arc<Executor<'static>>,
}

impl SmolSpawner {
    /// Spawns on `executor`.
    #[must_use]
    pub fn new(executor: Arc<Executor<'static>>) -> Self {
        Self { executor }
    }
}

impl fmt::Debug for SmolSpawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolSpawner").finish_non_exhaustive()
    }
}

impl Spawner for SmolSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.executor.spawn(task).detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_wakes_early_under_any_executor() {
        let clock = SmolClock::new();
        let start = clock.now();
        futures::executor::block_on(clock.sleep(Duration::from_millis(20)));
        assert!(clock.now() - start >= Duration::from_millis(20));
        let start = clock.now();
        async_io::block_on(clock.sleep(Duration::from_millis(20)));
        assert!(clock.now() - start >= Duration::from_millis(20));
    }

    #[test]
    fn spawned_tasks_run_on_the_executor() {
        let executor = Arc::new(Executor::new());
        let spawner = SmolSpawner::new(Arc::clone(&executor));
        let (done, ran) = futures::channel::oneshot::channel();
        spawner.spawn(Box::pin(async move {
            let _ = done.send(7);
        }));
        assert_eq!(async_io::block_on(executor.run(ran)), Ok(7));
    }
}
