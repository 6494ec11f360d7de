//! Virtual time: a clock that only moves when the simulation moves it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use redlock_core::Clock;

/// A clock whose time advances only through [`advance`](Self::advance),
/// [`advance_to_next_timer`](Self::advance_to_next_timer), or the [`Simulation`](crate::Simulation)
/// executor (which jumps to the next timer whenever every task is waiting).
///
/// Clones share one time line. Sleeps are woken in deadline order, ties in creation order, so a
/// run is reproducible.
#[derive(Clone, Default)]
pub struct VirtualClock {
    state: Arc<Mutex<TimeLine>>,
}

#[derive(Default)]
struct TimeLine {
    now: Duration,
    next_id: u64,
    timers: BinaryHeap<Reverse<(Duration, u64)>>,
    wakers: HashMap<u64, Waker>,
}

impl std::fmt::Debug for VirtualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("VirtualClock")
            .field("now", &state.now)
            .field("timers", &state.timers.len())
            .finish()
    }
}

impl VirtualClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, TimeLine> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves time forward by `by`, waking every sleep whose deadline is reached.
    pub fn advance(&self, by: Duration) {
        let target = self.lock().now.saturating_add(by);
        self.advance_to(target);
    }

    /// Moves time forward to `target` (never backwards), waking sleeps that are due.
    pub fn advance_to(&self, target: Duration) {
        let wake: Vec<Waker> = {
            let mut state = self.lock();
            if target > state.now {
                state.now = target;
            }
            state.due()
        };
        wake.into_iter().for_each(Waker::wake);
    }

    /// Jumps to the earliest pending sleep's deadline and wakes it (and any other sleep due then).
    /// Returns `false` when no sleep is pending.
    pub fn advance_to_next_timer(&self) -> bool {
        let next = {
            let mut state = self.lock();
            state.drop_cancelled();
            state.timers.peek().map(|Reverse((deadline, _))| *deadline)
        };
        match next {
            Some(deadline) => {
                self.advance_to(deadline);
                true
            }
            None => false,
        }
    }

    /// The earliest pending sleep's deadline.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Duration> {
        let mut state = self.lock();
        state.drop_cancelled();
        state.timers.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// A sleep until `deadline` on this clock.
    pub fn sleep_until(&self, deadline: Duration) -> Sleep {
        Sleep {
            clock: self.clone(),
            deadline,
            id: None,
        }
    }
}

impl TimeLine {
    fn due(&mut self) -> Vec<Waker> {
        let mut wake = Vec::new();
        while let Some(Reverse((deadline, id))) = self.timers.peek().copied() {
            if deadline > self.now {
                break;
            }
            self.timers.pop();
            if let Some(w) = self.wakers.remove(&id) {
                wake.push(w);
            }
        }
        wake
    }

    /// Forgets heap entries of sleeps that were dropped before their deadline.
    fn drop_cancelled(&mut self) {
        while let Some(Reverse((_, id))) = self.timers.peek().copied() {
            if self.wakers.contains_key(&id) {
                break;
            }
            self.timers.pop();
        }
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Duration {
        self.lock().now
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let deadline = self.now().saturating_add(duration);
        Box::pin(self.sleep_until(deadline))
    }
}

/// A sleep on a [`VirtualClock`].
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    clock: VirtualClock,
    deadline: Duration,
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.lock();
        if state.now >= self.deadline {
            if let Some(id) = self.id {
                state.wakers.remove(&id);
            }
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = state.next_id;
                state.next_id += 1;
                state.timers.push(Reverse((self.deadline, id)));
                id
            }
        };
        state.wakers.insert(id, cx.waker().clone());
        drop(state);
        self.id = Some(id);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.clock.lock().wakers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn sleeps_complete_only_when_time_reaches_them() {
        let clock = VirtualClock::new();
        let mut short = clock.sleep(Duration::from_millis(5));
        let mut long = clock.sleep(Duration::from_millis(10));
        assert!((&mut short).now_or_never().is_none());
        assert!((&mut long).now_or_never().is_none());
        assert!(clock.advance_to_next_timer());
        assert_eq!(clock.now(), Duration::from_millis(5));
        assert!((&mut short).now_or_never().is_some());
        assert!((&mut long).now_or_never().is_none());
        clock.advance(Duration::from_millis(5));
        assert!(long.now_or_never().is_some());
        assert!(!clock.advance_to_next_timer());
    }

    #[test]
    fn dropped_sleeps_are_not_timers() {
        let clock = VirtualClock::new();
        let mut s = clock.sleep(Duration::from_millis(5));
        assert!((&mut s).now_or_never().is_none());
        drop(s);
        assert_eq!(clock.next_deadline(), None);
    }
}
