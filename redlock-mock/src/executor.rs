//! A deterministic single-threaded executor on virtual time.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, RemoteHandle};
use futures::task::{waker, ArcWake};
use futures::FutureExt;
use redlock_core::{Clock, Spawner};

use crate::clock::VirtualClock;

/// Runs futures on a [`VirtualClock`]: tasks are polled in the order they were woken, and when
/// every task is waiting, time jumps to the next sleep's deadline. No wall-clock time passes, and
/// the same program gives the same interleaving every run.
#[derive(Clone, Default)]
pub struct Simulation {
    clock: VirtualClock,
    queue: Arc<Queue>,
    parked: Arc<Mutex<Vec<Slot>>>,
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulation")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The simulation made no progress: no task can run and no sleep is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    /// Virtual time when it stalled.
    pub at: Duration,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation stalled at {:?}: every task waits and no timer is pending",
            self.at
        )
    }
}

impl std::error::Error for Stalled {}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<usize>,
    spawned: Vec<BoxFuture<'static, ()>>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Queue")
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct TaskWaker {
    id: usize,
    queued: AtomicBool,
    queue: Arc<Queue>,
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if !arc_self.queued.swap(true, Ordering::AcqRel) {
            arc_self.queue.lock().ready.push_back(arc_self.id);
        }
    }
}

/// A handle to a spawned task's output. Dropping it cancels the task.
#[derive(Debug)]
#[must_use = "dropping a JoinHandle cancels its task; call detach() to let it run"]
pub struct JoinHandle<T> {
    handle: RemoteHandle<T>,
}

impl<T: 'static> JoinHandle<T> {
    /// Lets the task run to completion without anyone awaiting it.
    pub fn detach(self) {
        self.handle.forget();
    }
}

impl<T: 'static> Future for JoinHandle<T> {
    type Output = T;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.handle.poll_unpin(cx)
    }
}

const MAIN: usize = usize::MAX;

impl Simulation {
    /// A simulation at virtual time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The virtual clock; hand it to the lock manager and to backends.
    #[must_use]
    pub fn clock(&self) -> VirtualClock {
        self.clock.clone()
    }

    /// The clock as the core's trait object.
    #[must_use]
    pub fn clock_arc(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock.clone())
    }

    /// A [`Spawner`] that runs tasks on this simulation.
    #[must_use]
    pub fn spawner(&self) -> Arc<dyn Spawner> {
        Arc::new(SimSpawner {
            queue: Arc::clone(&self.queue),
        })
    }

    /// Starts `fut` as a task of this simulation; it runs while [`run`](Self::run) or
    /// [`try_run`](Self::try_run) drives the simulation.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, handle) = fut.remote_handle();
        self.queue.lock().spawned.push(Box::pin(task));
        JoinHandle { handle }
    }

    /// Runs `fut` to completion, with every spawned task, on virtual time.
    ///
    /// # Panics
    /// When the simulation stalls (see [`Stalled`]); use [`try_run`](Self::try_run) to get it
    /// as an error.
    pub fn run<F: Future>(&self, fut: F) -> F::Output {
        match self.try_run(fut) {
            Ok(out) => out,
            Err(stalled) => panic!("{stalled}"),
        }
    }

    /// Runs `fut` to completion, with every spawned task, on virtual time. Tasks still pending
    /// when `fut` completes stay in the simulation and continue in the next run.
    ///
    /// # Errors
    /// [`Stalled`] when no task can make progress and no sleep is pending (a deadlock).
    pub fn try_run<F: Future>(&self, fut: F) -> Result<F::Output, Stalled> {
        let mut main = pin!(fut);
        let main_waker = Arc::new(TaskWaker {
            id: MAIN,
            queued: AtomicBool::new(true),
            queue: Arc::clone(&self.queue),
        });
        self.queue.lock().ready.push_back(MAIN);
        let mut tasks = Tasks::take(self);
        let result = loop {
            tasks.admit(&self.queue);
            let next = self.queue.lock().ready.pop_front();
            match next {
                Some(MAIN) => {
                    main_waker.queued.store(false, Ordering::Release);
                    let w = waker(Arc::clone(&main_waker));
                    if let Poll::Ready(out) = main.as_mut().poll(&mut Context::from_waker(&w)) {
                        break Ok(out);
                    }
                }
                Some(id) => tasks.poll(id),
                None => {
                    if !self.clock.advance_to_next_timer() {
                        break Err(Stalled {
                            at: self.clock.now(),
                        });
                    }
                }
            }
        };
        tasks.give_back(self);
        result
    }
}

/// The spawned tasks, owned by one `try_run` at a time.
struct Tasks {
    slots: Vec<Slot>,
}

type Slot = Option<(BoxFuture<'static, ()>, Arc<TaskWaker>)>;

impl Tasks {
    fn take(sim: &Simulation) -> Self {
        let mut parked = sim.parked.lock().unwrap_or_else(|e| e.into_inner());
        Self {
            slots: std::mem::take(&mut *parked),
        }
    }

    /// Tasks left pending by one run continue in the next run of the same simulation.
    fn give_back(self, sim: &Simulation) {
        *sim.parked.lock().unwrap_or_else(|e| e.into_inner()) = self.slots;
    }

    fn admit(&mut self, queue: &Arc<Queue>) {
        let spawned = std::mem::take(&mut queue.lock().spawned);
        for fut in spawned {
            let id = self.slots.len();
            let w = Arc::new(TaskWaker {
                id,
                queued: AtomicBool::new(false),
                queue: Arc::clone(queue),
            });
            ArcWake::wake_by_ref(&w);
            self.slots.push(Some((fut, w)));
        }
    }

    fn poll(&mut self, id: usize) {
        let Some(Some((fut, w))) = self.slots.get_mut(id) else {
            return;
        };
        w.queued.store(false, Ordering::Release);
        let task_waker = waker(Arc::clone(w));
        if fut
            .as_mut()
            .poll(&mut Context::from_waker(&task_waker))
            .is_ready()
        {
            self.slots[id] = None;
        }
    }
}

#[derive(Debug)]
struct SimSpawner {
    queue: Arc<Queue>,
}

impl Spawner for SimSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.queue.lock().spawned.push(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_jumps_to_the_next_timer() {
        let sim = Simulation::new();
        let clock = sim.clock();
        let out = sim.run(async {
            clock.sleep(Duration::from_secs(3600)).await;
            clock.now()
        });
        assert_eq!(out, Duration::from_secs(3600));
    }

    #[test]
    fn spawned_tasks_interleave_deterministically() {
        let run = || {
            let sim = Simulation::new();
            let log = Arc::new(Mutex::new(Vec::new()));
            for i in 0..3u64 {
                let clock = sim.clock();
                let log = Arc::clone(&log);
                sim.spawn(async move {
                    for step in 0..3u64 {
                        clock.sleep(Duration::from_millis(10 - i * 3 + step)).await;
                        log.lock().unwrap().push((i, step, clock.now()));
                    }
                })
                .detach();
            }
            let clock = sim.clock();
            sim.run(async move { clock.sleep(Duration::from_secs(1)).await });
            let log = log.lock().unwrap().clone();
            log
        };
        let a = run();
        assert_eq!(a.len(), 9);
        assert_eq!(a, run());
        assert!(a.windows(2).all(|w| w[0].2 <= w[1].2), "{a:?}");
    }

    #[test]
    fn a_deadlock_is_reported() {
        let sim = Simulation::new();
        let err = sim.try_run(futures::future::pending::<()>()).unwrap_err();
        assert_eq!(err.at, Duration::ZERO);
    }

    #[test]
    fn pending_tasks_survive_into_the_next_run() {
        let sim = Simulation::new();
        let clock = sim.clock();
        let handle = sim.spawn(async move {
            clock.sleep(Duration::from_secs(5)).await;
            7
        });
        let clock = sim.clock();
        sim.run(async move { clock.sleep(Duration::from_secs(1)).await });
        assert_eq!(sim.run(handle), 7);
    }
}
