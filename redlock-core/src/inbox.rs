//! Work handed to one long-lived task, for the work left behind by lock cycles: the manager's
//! background releases, and a backend's requests whose callers stopped waiting (`redlock-redis`
//! finishes those in one task per connection). One task for all of them, rather than one each:
//! an uncontended lock cycle leaves such work behind every time, and a task per piece cost its
//! allocation and scheduling every cycle (BENCHMARKS.md run 18).

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Waker};

/// The hand-over between the callers that leave work behind and the one task that runs it.
///
/// The task is started by the caller whose [`hand`](Self::hand) finds none alive, takes what
/// was handed over at each poll ([`take`](Self::take)), and reports its end, also when its
/// runtime drops it ([`ended`](Self::ended)): the next hand-over then starts another. Dropping
/// the inbox (with its owner) wakes the task, which should then end once its work is done.
pub struct TaskInbox<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    /// Handed over since the task last looked.
    incoming: Vec<T>,
    /// The task's waker, once it has been polled.
    driver: Option<Waker>,
    /// A task exists (it may not have run yet).
    alive: bool,
}

impl<T> Default for TaskInbox<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                incoming: Vec::new(),
                driver: None,
                alive: false,
            }),
        }
    }
}

impl<T> fmt::Debug for TaskInbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("TaskInbox")
            .field("incoming", &state.incoming.len())
            .field("alive", &state.alive)
            .finish()
    }
}

impl<T> TaskInbox<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `item` to the task, waking it. `true` when no task was alive: the caller must
    /// start one (it counts as alive from now on), or call [`ended`](Self::ended) if it cannot,
    /// which drops what was handed over.
    #[must_use = "with `true`, the caller must start the task"]
    pub fn hand(&self, item: T) -> bool {
        let mut state = self.state();
        state.incoming.push(item);
        if state.alive {
            let driver = state.driver.take();
            drop(state);
            if let Some(driver) = driver {
                driver.wake();
            }
            return false;
        }
        state.alive = true;
        true
    }

    /// For the task, at each poll: wakes it through `cx` at the next hand-over, and gives what
    /// was handed over since it last looked.
    pub fn take(&self, cx: &Context<'_>) -> Vec<T> {
        let mut state = self.state();
        if !state
            .driver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.driver = Some(cx.waker().clone());
        }
        std::mem::take(&mut state.incoming)
    }

    /// For the task, when it is dropped (it ended, or its runtime went away): the next
    /// hand-over starts another, and what was handed over meanwhile is dropped with it.
    pub fn ended(&self) {
        let incoming = {
            let mut state = self.state();
            state.alive = false;
            state.driver = None;
            std::mem::take(&mut state.incoming)
        };
        // Dropped outside the lock: dropping a piece of work may run its own code.
        drop(incoming);
    }
}

impl<T> Drop for TaskInbox<T> {
    fn drop(&mut self) {
        // The owner is gone: the task finishes what it holds, then ends.
        if let Some(driver) = self.state().driver.take() {
            driver.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::test_util::CountingWaker;

    #[test]
    fn the_first_hand_over_starts_the_task_and_later_ones_wake_it() {
        let inbox = TaskInbox::default();
        let count = Arc::new(CountingWaker::default());
        let waker = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&waker);
        assert!(inbox.hand(1), "no task yet: start one");
        assert!(!inbox.hand(2), "one is alive");
        assert_eq!(inbox.take(&cx), [1, 2]);
        assert_eq!(count.wakes(), 0);
        assert!(!inbox.hand(3));
        assert_eq!(count.wakes(), 1, "woken for the new work");
        assert_eq!(inbox.take(&cx), [3]);
        drop(inbox);
        assert_eq!(count.wakes(), 2, "woken when the inbox goes");
    }

    #[test]
    fn after_the_task_ended_the_next_hand_over_starts_another() {
        let inbox = TaskInbox::default();
        let dropped = Arc::new(());
        assert!(inbox.hand(Arc::clone(&dropped)));
        assert!(!inbox.hand(Arc::clone(&dropped)));
        inbox.ended();
        assert_eq!(
            Arc::strong_count(&dropped),
            1,
            "what was not taken is dropped"
        );
        assert!(inbox.hand(Arc::clone(&dropped)), "a new task");
    }
}
