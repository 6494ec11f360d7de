//! One contender per resource per manager: the tasks of one manager that want the same key wait
//! in a local FIFO queue, and only the task at its head runs Redlock rounds. The queue also
//! counts this manager's holders of the key, and a local release wakes the head at once.
//!
//! Local order is a courtesy, never a safety shortcut: the task at the head still acquires
//! through a full quorum round. What the queue saves is load: N waiters in one process no longer
//! make N rounds per release (and N subscriptions), so the work per release stays O(1) in the
//! number of waiters. The head leaves the queue when its acquire ends (won or given up), not when
//! its lock is released: a handle that is kept (or leaked) past its lease never blocks the key
//! for the other tasks; they find out from the servers, as any client would.
//!
//! The map from key to queue is touched (and the key hashed) only to join a queue and to drop
//! an idle one; everything else goes through the queue's own handle, on the lock/unlock path.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The queues of one manager, by key. An entry exists only while some task holds or waits for
/// the key, so idle keys cost nothing.
#[derive(Debug, Default)]
pub(crate) struct KeyQueues {
    map: Mutex<HashMap<Arc<[u8]>, Arc<Queue>>>,
}

/// One key's queue.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    /// The ticket at the head: the one task that may run rounds for this key.
    serving: u64,
    /// The next ticket to hand out.
    next: u64,
    /// Tickets behind the head that still wait (a dropped waiter removes its own), with the
    /// waker to call when it becomes the head.
    waiting: BTreeMap<u64, Option<Waker>>,
    /// Locks of this manager that hold the key.
    held: usize,
    /// Counts local releases, so the head can tell whether one happened since it looked.
    releases: u64,
    /// The head, when it waits for a local release.
    head_waker: Option<Waker>,
}

impl QueueState {
    fn idle(&self) -> bool {
        self.serving == self.next && self.held == 0
    }
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        // Every update leaves a consistent state: fields are written whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A lock's membership among the local holders of its key (see [`KeyQueues::hold`]).
#[derive(Debug)]
pub(crate) struct Holding {
    key: Arc<[u8]>,
    queue: Arc<Queue>,
}

/// A task's place in a key's queue. Dropping it leaves the queue (passing the head on if it had
/// it).
#[derive(Debug)]
pub(crate) struct Place<'a> {
    queues: &'a KeyQueues,
    key: Arc<[u8]>,
    queue: Arc<Queue>,
    ticket: u64,
}

impl KeyQueues {
    fn map(&self) -> MutexGuard<'_, HashMap<Arc<[u8]>, Arc<Queue>>> {
        // Entries are inserted or removed whole.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a ticket for `key`: the head at once when nobody else here wants the key.
    pub(crate) fn join(&self, key: &Arc<[u8]>) -> Place<'_> {
        // The ticket is taken under the map's lock: an idle queue is only dropped under it too,
        // so a queue cannot be dropped between being found and being joined.
        let mut map = self.map();
        let queue = Arc::clone(map.entry(Arc::clone(key)).or_default());
        let ticket = {
            let mut state = queue.state();
            let ticket = state.next;
            state.next += 1;
            if ticket != state.serving {
                state.waiting.insert(ticket, None);
            }
            ticket
        };
        drop(map);
        Place {
            queues: self,
            key: Arc::clone(key),
            queue,
            ticket,
        }
    }

    /// The head for `key` if no other task here is acquiring it; `None` otherwise (`try_lock`
    /// does not queue).
    pub(crate) fn try_join(&self, key: &Arc<[u8]>) -> Option<Place<'_>> {
        let busy = self.map().get(&**key).is_some_and(|q| {
            let state = q.state();
            state.serving != state.next
        });
        (!busy).then(|| self.join(key))
    }

    /// Counts the lock that `place` (the head) won among the local holders of its key.
    pub(crate) fn hold(&self, place: &Place<'_>) -> Holding {
        place.queue.state().held += 1;
        Holding {
            key: Arc::clone(&place.key),
            queue: Arc::clone(&place.queue),
        }
    }

    /// A local holder of the key released it, lost it or was dropped: the head (if one waits)
    /// tries at once.
    pub(crate) fn unhold(&self, holding: Holding) {
        let (wake, idle) = {
            let mut state = holding.queue.state();
            state.held = state.held.saturating_sub(1);
            state.releases += 1;
            (state.head_waker.take(), state.idle())
        };
        if idle {
            self.drop_if_idle(&holding.key, &holding.queue);
        }
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// Forgets `key`'s queue if it is still `queue` and idle (nobody joined meanwhile).
    fn drop_if_idle(&self, key: &[u8], queue: &Arc<Queue>) {
        let mut map = self.map();
        let same = map.get(key).is_some_and(|q| Arc::ptr_eq(q, queue));
        if same && queue.state().idle() {
            map.remove(key);
        }
    }

    /// How many keys have a queue (someone holding or waiting), for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

impl<'q> Place<'q> {
    /// Completes when this place is the head of its queue.
    pub(crate) fn turn(&mut self) -> Turn<'_, 'q> {
        Turn { place: self }
    }

    /// Whether a lock of this manager holds the key, and how many local releases there were so
    /// far (for [`released_since`](Self::released_since)).
    pub(crate) fn local_state(&self) -> (bool, u64) {
        let state = self.queue.state();
        (state.held > 0, state.releases)
    }

    /// Completes once a local holder of the key released it after `releases` were counted.
    /// Only the head waits on it.
    pub(crate) fn released_since(&self, releases: u64) -> ReleasedSince<'_, 'q> {
        ReleasedSince {
            place: self,
            releases,
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let (wake, idle) = {
            let mut state = self.queue.state();
            let wake = if state.serving == self.ticket {
                state.head_waker = None;
                match state.waiting.pop_first() {
                    Some((ticket, waker)) => {
                        state.serving = ticket;
                        waker
                    }
                    None => {
                        state.serving = state.next;
                        None
                    }
                }
            } else {
                state.waiting.remove(&self.ticket);
                None
            };
            (wake, state.idle())
        };
        if idle {
            self.queues.drop_if_idle(&self.key, &self.queue);
        }
        if let Some(waker) = wake {
            waker.wake();
        }
    }
}

/// See [`Place::turn`].
#[derive(Debug)]
pub(crate) struct Turn<'p, 'q> {
    place: &'p mut Place<'q>,
}

impl Future for Turn<'_, '_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let ticket = self.place.ticket;
        let mut state = self.place.queue.state();
        if state.serving == ticket {
            return Poll::Ready(());
        }
        if let Some(waker) = state.waiting.get_mut(&ticket) {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

/// See [`Place::released_since`].
#[derive(Debug)]
pub(crate) struct ReleasedSince<'p, 'q> {
    place: &'p Place<'q>,
    releases: u64,
}

impl Future for ReleasedSince<'_, '_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.place.queue.state();
        if state.releases != self.releases {
            return Poll::Ready(());
        }
        match &state.head_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.head_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn k(name: &[u8]) -> Arc<[u8]> {
        Arc::from(name)
    }

    fn ready(place: &mut Place<'_>) -> bool {
        place.turn().now_or_never().is_some()
    }

    #[test]
    fn first_come_first_served_and_cancelled_waiters_are_skipped() {
        let q = KeyQueues::default();
        let mut a = q.join(&k(b"k"));
        let mut b = q.join(&k(b"k"));
        let mut c = q.join(&k(b"k"));
        let mut d = q.join(&k(b"k"));
        assert!(ready(&mut a));
        assert!(!ready(&mut b) && !ready(&mut c) && !ready(&mut d));
        drop(c); // cancelled while waiting: nobody notices
        let holding = q.hold(&a);
        assert!(!ready(&mut b));
        drop(a); // the acquire ended: the next waiter is the head, even while the lock is held
        assert!(ready(&mut b));
        assert_eq!(b.local_state(), (true, 0));
        assert!(!ready(&mut d));
        drop(b); // the head gives up: the next waiter is the head
        assert!(ready(&mut d));
        assert_eq!(q.len(), 1);
        drop(d);
        assert_eq!(q.len(), 1, "still held here");
        q.unhold(holding);
        assert_eq!(q.len(), 0, "an idle key keeps no entry");
    }

    #[test]
    fn a_local_release_wakes_the_head() {
        let q = KeyQueues::default();
        let a = q.join(&k(b"k"));
        let holding = q.hold(&a);
        drop(a);
        let b = q.join(&k(b"k"));
        let (held, releases) = b.local_state();
        assert!(held);
        assert!(b.released_since(releases).now_or_never().is_none());
        q.unhold(holding);
        assert!(b.released_since(releases).now_or_never().is_some());
        assert_eq!(b.local_state(), (false, 1));
    }

    #[test]
    fn try_join_only_when_nobody_here_is_acquiring_the_key() {
        let q = KeyQueues::default();
        let a = q.join(&k(b"k"));
        assert!(q.try_join(&k(b"k")).is_none());
        assert!(q.try_join(&k(b"other")).is_some());
        let _holding = q.hold(&a);
        drop(a);
        assert!(
            q.try_join(&k(b"k")).is_some(),
            "a local holder alone does not stop try_lock"
        );
    }

    #[test]
    fn the_waiter_promoted_by_a_leave_is_woken() {
        let q = KeyQueues::default();
        let a = q.join(&k(b"k"));
        let mut b = q.join(&k(b"k"));
        let count = Arc::new(crate::test_util::CountingWaker::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut b.turn()).poll(&mut cx).is_pending());
        drop(a);
        assert_eq!(count.wakes(), 1);
        assert!(ready(&mut b));
    }
}
