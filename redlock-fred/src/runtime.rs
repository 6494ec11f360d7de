//! The core's runtime traits on tokio, and the checks that turn a missing runtime into an error.
//!
//! fred and tokio's timers panic when used outside a tokio runtime, or in one built without its
//! time driver. Tokio offers no way to ask whether a runtime has timers, so the check creates a
//! timer once per runtime and thread and catches the panic tokio raises without a time driver,
//! with that panic's message kept off stderr (see [`quiet_probe_panics`]).

use std::cell::Cell;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redlock_core::{Clock, Spawner};
use tokio::runtime::Handle;

/// What is wrong with the calling context, for an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextProblem {
    /// Not inside a tokio runtime (`futures::executor::block_on`, another executor, a plain
    /// thread).
    NoRuntime,
    /// Inside a tokio runtime built without `enable_time`.
    NoTimers,
}

impl ContextProblem {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::NoRuntime => {
                "called outside a tokio runtime: redlock-fred runs on tokio; call it from a task of a tokio runtime built with enable_all() (futures::executor::block_on and other executors cannot drive it)"
            }
            Self::NoTimers => {
                "the tokio runtime has no timer driver: build it with enable_all() (or enable_time() and enable_io())"
            }
        }
    }
}

/// Checks that the calling context can drive fred: a tokio runtime with timers.
pub(crate) fn check_context() -> Result<(), ContextProblem> {
    let handle = Handle::try_current().map_err(|_| ContextProblem::NoRuntime)?;
    if timers_enabled(&handle) {
        Ok(())
    } else {
        Err(ContextProblem::NoTimers)
    }
}

thread_local! {
    /// The runtime last checked on this thread, and whether it has timers.
    static CHECKED: Cell<Option<(tokio::runtime::Id, bool)>> = const { Cell::new(None) };
    /// Set while this thread probes for timers, so the probe's panic is not printed.
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

fn timers_enabled(handle: &Handle) -> bool {
    let id = handle.id();
    if let Some((checked, enabled)) = CHECKED.with(Cell::get) {
        if checked == id {
            return enabled;
        }
    }
    quiet_probe_panics();
    PROBING.with(|p| p.set(true));
    // Creating a sleep is where tokio panics without a time driver; nothing is registered.
    let enabled = std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok();
    PROBING.with(|p| p.set(false));
    CHECKED.with(|c| c.set(Some((id, enabled))));
    enabled
}

/// Wraps the process's panic hook, once, so that a panic raised by the timer probe on the
/// probing thread is not printed: it is expected, caught, and turned into an error. Every other
/// panic goes to the hook that was installed before, unchanged.
fn quiet_probe_panics() {
    static WRAPPED: Once = Once::new();
    WRAPPED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PROBING.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// [`Clock`] on tokio's timer and `std::time::Instant` (monotonic).
///
/// Sleeps on tokio's timer inside a tokio runtime with timers. Elsewhere (no runtime, or one
/// without `enable_time`) it sleeps on a helper thread instead of panicking, so the manager can
/// report the Redis backend's error about that context rather than crash.
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
        if check_context().is_ok() {
            Box::pin(tokio::time::sleep(duration))
        } else {
            thread_sleep(duration)
        }
    }
}

/// A sleep for any executor: a thread wakes the future. Only used outside a usable runtime.
fn thread_sleep(duration: Duration) -> BoxFuture<'static, ()> {
    let (done, wait) = futures::channel::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("redlock-sleep".into())
        .spawn(move || {
            std::thread::sleep(duration);
            let _ = done.send(());
        });
    match spawned {
        // Either the thread's signal or its end (the sender dropped) completes the sleep.
        Ok(_) => Box::pin(async move {
            let _ = wait.await;
        }),
        // No thread to be had: a zero sleep is wrong by `duration` but never hangs.
        Err(_) => Box::pin(futures::future::ready(())),
    }
}

/// [`Spawner`] on the tokio runtime current when it spawns; without one, the task is dropped
/// (the lock then expires by its TTL) rather than panicking.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        if let Ok(handle) = Handle::try_current() {
            drop(handle.spawn(task));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_context_is_told_apart() {
        assert_eq!(check_context(), Err(ContextProblem::NoRuntime));
        let timed = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        assert_eq!(timed.block_on(async { check_context() }), Ok(()));
        let untimed = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_eq!(
            untimed.block_on(async { check_context() }),
            Err(ContextProblem::NoTimers)
        );
        // Cached per runtime: the first one is still known to have timers.
        assert_eq!(timed.block_on(async { check_context() }), Ok(()));
    }

    #[test]
    fn the_clock_sleeps_outside_a_runtime_too() {
        let clock = TokioClock;
        let start = clock.now();
        futures::executor::block_on(clock.sleep(Duration::from_millis(20)));
        assert!(clock.now() - start >= Duration::from_millis(20));
        let untimed = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let start = clock.now();
        untimed.block_on(clock.sleep(Duration::from_millis(20)));
        assert!(clock.now() - start >= Duration::from_millis(20));
    }
}
