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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The queues of one manager, by key. An entry exists only while some task holds or waits for
/// the key, so idle keys cost nothing.
#[derive(Debug, Default)]
pub(crate) struct KeyQueues {
    map: Mutex<HashMap<Arc<[u8]>, KeyQueue>>,
}

#[derive(Debug)]
struct KeyQueue {
    /// The ticket at the head: the one task that may run rounds for this key, or hold it.
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

impl KeyQueue {
    fn idle(&self) -> bool {
        self.serving == self.next && self.held == 0
    }
}

/// A task's place in a key's queue. Dropping it leaves the queue (passing the head on if it had
/// it).
#[derive(Debug)]
pub(crate) struct Place<'a> {
    queues: &'a KeyQueues,
    slot: Option<Slot>,
}

/// A ticket in a key's queue.
#[derive(Debug)]
struct Slot {
    key: Arc<[u8]>,
    ticket: u64,
}

impl KeyQueues {
    fn map(&self) -> MutexGuard<'_, HashMap<Arc<[u8]>, KeyQueue>> {
        // Every update leaves a consistent queue: entries are inserted or removed whole.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a ticket for `key`: the head at once when nobody else here holds or wants the key.
    pub(crate) fn join(&self, key: &Arc<[u8]>) -> Place<'_> {
        let mut map = self.map();
        let key: Arc<[u8]> = match map.get_key_value(&**key) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::clone(key),
        };
        let queue = map.entry(Arc::clone(&key)).or_insert(KeyQueue {
            serving: 0,
            next: 0,
            waiting: BTreeMap::new(),
            held: 0,
            releases: 0,
            head_waker: None,
        });
        let ticket = queue.next;
        queue.next += 1;
        if ticket != queue.serving {
            queue.waiting.insert(ticket, None);
        }
        Place {
            queues: self,
            slot: Some(Slot { key, ticket }),
        }
    }

    /// The head for `key` if no other task here is acquiring it; `None` otherwise (`try_lock`
    /// does not queue).
    pub(crate) fn try_join(&self, key: &Arc<[u8]>) -> Option<Place<'_>> {
        if self.map().get(&**key).is_some_and(|q| q.serving != q.next) {
            return None;
        }
        Some(self.join(key))
    }

    /// A lock of this manager now holds `key` (called by the head that won it).
    pub(crate) fn hold(&self, key: &[u8]) {
        if let Some(queue) = self.map().get_mut(key) {
            queue.held += 1;
        }
    }

    /// A lock of this manager that held `key` was released, lost or dropped: the head (if one
    /// waits) tries at once.
    pub(crate) fn unhold(&self, key: &[u8]) {
        let wake = {
            let mut map = self.map();
            let Some(queue) = map.get_mut(key) else {
                return;
            };
            queue.held = queue.held.saturating_sub(1);
            queue.releases += 1;
            let wake = queue.head_waker.take();
            if queue.idle() {
                map.remove(key);
            }
            wake
        };
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// Gives up `slot`: the next waiter, if any, becomes the head and is woken.
    fn leave(&self, slot: Slot) {
        let wake = {
            let mut map = self.map();
            let Some(queue) = map.get_mut(&slot.key) else {
                return;
            };
            let wake = if queue.serving == slot.ticket {
                queue.head_waker = None;
                match queue.waiting.pop_first() {
                    Some((ticket, waker)) => {
                        queue.serving = ticket;
                        waker
                    }
                    None => {
                        queue.serving = queue.next;
                        None
                    }
                }
            } else {
                queue.waiting.remove(&slot.ticket);
                None
            };
            if queue.idle() {
                map.remove(&slot.key);
            }
            wake
        };
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// How many keys have a queue (someone holding or waiting), for tests and metrics.
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
        let Some(slot) = &self.slot else {
            return (false, 0);
        };
        self.queues
            .map()
            .get(&slot.key)
            .map_or((false, 0), |q| (q.held > 0, q.releases))
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

/// See [`Place::released_since`].
#[derive(Debug)]
pub(crate) struct ReleasedSince<'p, 'q> {
    place: &'p Place<'q>,
    releases: u64,
}

impl Future for ReleasedSince<'_, '_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(slot) = &self.place.slot else {
            return Poll::Pending;
        };
        let mut map = self.place.queues.map();
        let Some(queue) = map.get_mut(&slot.key) else {
            return Poll::Pending;
        };
        if queue.releases != self.releases {
            return Poll::Ready(());
        }
        match &queue.head_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => queue.head_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.queues.leave(slot);
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
        let Some(slot) = &self.place.slot else {
            return Poll::Ready(());
        };
        let mut map = self.place.queues.map();
        let Some(queue) = map.get_mut(&slot.key) else {
            return Poll::Ready(());
        };
        if queue.serving == slot.ticket {
            return Poll::Ready(());
        }
        if let Some(waker) = queue.waiting.get_mut(&slot.ticket) {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
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
        q.hold(b"k");
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
        q.unhold(b"k");
        assert_eq!(q.len(), 0, "an idle key keeps no entry");
    }

    #[test]
    fn a_local_release_wakes_the_head() {
        let q = KeyQueues::default();
        let a = q.join(&k(b"k"));
        q.hold(b"k");
        drop(a);
        let b = q.join(&k(b"k"));
        let (held, releases) = b.local_state();
        assert!(held);
        assert!(b.released_since(releases).now_or_never().is_none());
        q.unhold(b"k");
        assert!(b.released_since(releases).now_or_never().is_some());
        assert_eq!(b.local_state(), (false, 1));
    }

    #[test]
    fn try_join_only_when_nobody_here_wants_the_key() {
        let q = KeyQueues::default();
        let a = q.join(&k(b"k"));
        assert!(q.try_join(&k(b"k")).is_none());
        assert!(q.try_join(&k(b"other")).is_some());
        q.hold(b"k");
        drop(a);
        assert!(
            q.try_join(&k(b"k")).is_some(),
            "a local holder alone does not stop try_lock"
        );
    }

    #[test]
    fn the_waiter_promoted_by_a_leave_is_woken() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let q = KeyQueues::default();
        let a = q.join(&k(b"k"));
        let mut b = q.join(&k(b"k"));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut b.turn()).poll(&mut cx).is_pending());
        drop(a);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(ready(&mut b));
    }
}
