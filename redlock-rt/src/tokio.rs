//! tokio: the clock on tokio's timer, the spawner on the current runtime, and the check that
//! tells whether the calling context can drive tokio's timers at all.
//!
//! tokio's timers panic when used outside a tokio runtime, or in one built without its time
//! driver. Tokio offers no way to ask whether a runtime has timers, so [`context`] creates a
//! timer once per runtime and thread and catches the panic tokio raises without a time driver,
//! with that panic's message kept off stderr (see `quiet_probe_panics`).

use std::cell::Cell;
use std::fmt;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redlock_core::{Clock, Spawner};
use tokio::runtime::Handle;

/// What keeps the calling context from using tokio's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextProblem {
    /// Not inside a tokio runtime (`futures::executor::block_on`, another executor, a plain
    /// thread).
    NoRuntime,
    /// Inside a tokio runtime built without `enable_time`.
    NoTimers,
}

impl fmt::Display for ContextProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoRuntime => "not inside a tokio runtime",
            Self::NoTimers => "the tokio runtime has no timer driver (build it with enable_time)",
        })
    }
}

impl std::error::Error for ContextProblem {}

/// Whether the calling context is a tokio runtime with timers. Cheap after the first call on a
/// thread for a given runtime (the answer is kept per thread).
///
/// # Errors
/// The [`ContextProblem`] when it is not.
pub fn context() -> Result<(), ContextProblem> {
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
/// without `enable_time`) it sleeps on a helper thread instead of panicking, so a manager used
/// from the wrong context reports its backend's error rather than crash. All `TokioClock`s of a
/// process share one origin.
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
        if context().is_ok() {
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
        assert_eq!(context(), Err(ContextProblem::NoRuntime));
        let timed = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        assert_eq!(timed.block_on(async { context() }), Ok(()));
        let untimed = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_eq!(
            untimed.block_on(async { context() }),
            Err(ContextProblem::NoTimers)
        );
        // Cached per runtime: the first one is still known to have timers.
        assert_eq!(timed.block_on(async { context() }), Ok(()));
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

    #[test]
    fn the_spawner_drops_its_task_outside_a_runtime() {
        let (done, ran) = futures::channel::oneshot::channel::<()>();
        TokioSpawner.spawn(Box::pin(async move {
            let _ = done.send(());
        }));
        // The task (and with it the sender) was dropped, not run and not leaked.
        assert!(futures::executor::block_on(ran).is_err());
    }
}
