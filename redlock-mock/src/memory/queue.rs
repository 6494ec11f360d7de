//! Hand-off queues of the in-memory instance: the Redis backends' `ACQUIRE_QUEUE` and
//! `RELEASE_HAND_OFF` scripts (`redlock_core::redis_lua`) step by step, on the instance's store
//! and clock, so that simulations exercise the same queue semantics as a real server.
//!
//! The queue of a lock key lives where the scripts keep it, in the two keys of
//! [`queue_keys`]: the order of the waiters and, per waiter, its deadline and reserve. Both are
//! ordinary entries of the store, so they expire, are flushed by a restart, can be deleted or
//! replaced by application data, and count in [`MemoryBackend::len`] like the server's keys.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::channel::mpsc::{unbounded, UnboundedSender};
use futures::stream::BoxStream;
use redlock_core::{queue_keys, BackendError, QueuePlace};

use super::{wrong_type, Entry, MemoryBackend, Value};

/// Per waiter token, the sender of its live hand-off listener on this instance. One per token,
/// as the Redis backends keep one per token and connection: a later `listen` replaces it.
pub(super) type HandoffListeners = HashMap<Vec<u8>, UnboundedSender<()>>;

/// The value of a hand-off queue key.
#[derive(Debug, Clone)]
pub(super) enum QueueValue {
    /// The queue proper ([`queue_keys`]'s first key): waiter tokens, oldest first. A token
    /// may appear twice after it left and queued again (its old entry is then skipped if its
    /// place is gone, or served at the old position if it is back, as in Redis).
    Order(VecDeque<Vec<u8>>),
    /// The waiter table ([`queue_keys`]'s second key): per queued token, its place.
    Waiters(HashMap<Vec<u8>, Place>),
}

/// One waiter's place, as `ACQUIRE_QUEUE` records it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Place {
    /// Until when (instance clock) the waiter counts as waiting.
    deadline: Duration,
    /// How long a key handed to it stays reserved.
    reserve: Duration,
}

type Store = HashMap<Vec<u8>, Entry>;

/// The waiter table under `waiters`, or `None` when absent or of another type: what
/// `redis.pcall('HDEL' | 'HGET', ...)` tolerates.
fn table<'a>(
    store: &'a mut Store,
    waiters: &[u8],
    now: Duration,
) -> Option<&'a mut HashMap<Vec<u8>, Place>> {
    match MemoryBackend::live(store, waiters, now) {
        Some(Entry {
            value: Value::Queue(QueueValue::Waiters(table)),
            ..
        }) => Some(table),
        _ => None,
    }
}

/// `HDEL waiters token`, ignoring a key of another type; an emptied table is deleted, as Redis
/// deletes an empty hash.
fn forget(store: &mut Store, waiters: &[u8], token: &[u8], now: Duration) {
    if let Some(t) = table(store, waiters, now) {
        t.remove(token);
        if t.is_empty() {
            store.remove(waiters);
        }
    }
}

/// Sets `key` to `token` with expiry `ttl` from `now`.
fn set(store: &mut Store, key: &[u8], token: &[u8], now: Duration, ttl: Duration) {
    store.insert(
        key.to_vec(),
        Entry {
            value: Value::Str(token.to_vec()),
            expires_at: Some(now.saturating_add(ttl)),
        },
    );
}

impl MemoryBackend {
    /// [`Handoff::listen`](redlock_core::Handoff::listen) without the async wrapper: the
    /// stream yields once per hand-off of a key to `token` on this instance. Dropping it makes
    /// the waiter dead: hand-offs to it are passed on (see
    /// [`release_and_hand_off_now`](Self::release_and_hand_off_now)).
    #[must_use]
    pub fn listen_now(&self, token: &[u8]) -> BoxStream<'static, ()> {
        let (tx, rx) = unbounded();
        let mut listeners = self.handoff_listeners();
        // Forget listeners whose stream was dropped, so the map does not grow with every call.
        listeners.retain(|_, tx| !tx.is_closed());
        listeners.insert(token.to_vec(), tx);
        Box::pin(rx)
    }

    fn handoff_listeners(&self) -> std::sync::MutexGuard<'_, HandoffListeners> {
        // Entries are inserted or removed whole.
        self.handoff_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Tells `token`'s listener that a key was handed to it; whether a live listener heard.
    /// A listener whose stream was dropped is forgotten.
    fn tell(&self, token: &[u8]) -> bool {
        let mut listeners = self.handoff_listeners();
        let told = listeners
            .get(token)
            .is_some_and(|tx| tx.unbounded_send(()).is_ok());
        if !told {
            listeners.remove(token);
        }
        told
    }

    /// [`Handoff::acquire_or_queue`](redlock_core::Handoff::acquire_or_queue) without the
    /// async wrapper, as `ACQUIRE_QUEUE` does it: granted like
    /// [`acquire_now`](Self::acquire_now) (and the token's place dropped), or refused with the
    /// token queued at the end, or, already queued, its place renewed where it is.
    ///
    /// # Errors
    /// `WrongType` when the key or the waiter table holds another type, or the queue does
    /// (the place is then recorded but not queued, as the script leaves it).
    pub fn acquire_or_queue_now(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError> {
        let now = self.clock.now();
        let (order, waiters) = queue_keys(key);
        let mut store = self.store();
        let free = match Self::live(&mut store, key, now) {
            None => true,
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => v == token,
            Some(_) => return Err(wrong_type()),
        };
        if free {
            set(&mut store, key, token, now, ttl);
            forget(&mut store, &waiters, token, now);
            return Ok(true);
        }
        let entry = Place {
            deadline: now.saturating_add(place.stay),
            reserve: place.reserve,
        };
        let new = match Self::live(&mut store, &waiters, now) {
            None => {
                let table = HashMap::from([(token.to_vec(), entry)]);
                store.insert(
                    waiters.clone(),
                    Entry {
                        value: Value::Queue(QueueValue::Waiters(table)),
                        expires_at: None,
                    },
                );
                true
            }
            Some(Entry {
                value: Value::Queue(QueueValue::Waiters(table)),
                ..
            }) => table.insert(token.to_vec(), entry).is_none(),
            Some(_) => return Err(wrong_type()),
        };
        if new {
            match Self::live(&mut store, &order, now) {
                None => {
                    store.insert(
                        order.clone(),
                        Entry {
                            value: Value::Queue(QueueValue::Order(VecDeque::from(
                                [token.to_vec()],
                            ))),
                            expires_at: None,
                        },
                    );
                }
                Some(Entry {
                    value: Value::Queue(QueueValue::Order(queue)),
                    ..
                }) => queue.push_back(token.to_vec()),
                Some(_) => return Err(wrong_type()),
            }
        }
        // Both keys live at least as long as this place: they expire when the last waiter
        // would have (a key without expiry has a PTTL of -1, below any stay).
        let until = now.saturating_add(place.stay);
        for k in [&order, &waiters] {
            if let Some(e) = store.get_mut(k.as_slice()) {
                if e.expires_at.is_none_or(|at| at < until) {
                    e.expires_at = Some(until);
                }
            }
        }
        Ok(false)
    }

    /// [`Handoff::release_and_hand_off`](redlock_core::Handoff::release_and_hand_off) without
    /// the async wrapper, as `RELEASE_HAND_OFF` does it. When the key does not hold `token`,
    /// nothing changes but, with `leaving`, the token's place is given up: `(false, false)`. When it does,
    /// waiters are taken from the head of the queue (at most 100 per call) and skipped when
    /// their place ran out, when they are the releaser, or when no live listener waits for
    /// them; the first other one is set as the key's value for its reserve and told:
    /// `(true, true)`. With none, the key is deleted and the release announced to
    /// [`ReleaseNotify`](redlock_core::ReleaseNotify) subscribers: `(true, heard)`.
    ///
    /// A waiter whose listener stream was dropped is passed over at once, here: in the Redis
    /// backends its process gets the hand-off and passes it on with another
    /// `RELEASE_HAND_OFF`, which ends the same way, a round trip later. Only a live listener
    /// makes a waiter count: its place (even one that has not run out) does not.
    ///
    /// # Errors
    /// `WrongType` when the key holds another type.
    pub fn release_and_hand_off_now(
        &self,
        key: &[u8],
        token: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError> {
        /// `RELEASE_HAND_OFF` bounds the waiters one call looks at.
        const MAX_POPS: usize = 100;
        let now = self.clock.now();
        let (order, waiters) = queue_keys(key);
        let mut store = self.store();
        let held = match Self::live(&mut store, key, now) {
            None => false,
            Some(Entry {
                value: Value::Str(v),
                ..
            }) => v == token,
            Some(_) => return Err(wrong_type()),
        };
        if !held {
            if leaving {
                forget(&mut store, &waiters, token, now);
            }
            return Ok((false, false));
        }
        for _ in 0..MAX_POPS {
            // LPOP through pcall: an absent queue or one of another type ends the search.
            let waiter = match Self::live(&mut store, &order, now) {
                Some(Entry {
                    value: Value::Queue(QueueValue::Order(queue)),
                    ..
                }) => {
                    let w = queue.pop_front();
                    if queue.is_empty() {
                        store.remove(&order);
                    }
                    w
                }
                _ => None,
            };
            let Some(waiter) = waiter else { break };
            let Some(place) =
                table(&mut store, &waiters, now).and_then(|t| t.get(&waiter).copied())
            else {
                // Left the queue (or already served): its list entry is stale.
                continue;
            };
            forget(&mut store, &waiters, &waiter, now);
            if waiter != token && place.deadline >= now && !place.reserve.is_zero() {
                set(&mut store, key, &waiter, now, place.reserve);
                if self.tell(&waiter) {
                    return Ok((true, true));
                }
            }
        }
        store.remove(key);
        drop(store);
        Ok((true, self.announce(key)))
    }
}
