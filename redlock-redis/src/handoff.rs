//! Hand-off listeners (the core's `Handoff`): the calls of this process waiting for a key to be
//! handed to them, on the same channel scheme as redlock-fred.
//!
//! One hand-off channel per backend, named with a random id, is subscribed on the subscriber
//! connection of [`notify`](crate::notify) the first time a call listens, and kept for the life
//! of that connection. Every queued acquire names it, and a release that hands the key over
//! publishes the waiter's token on it; the message is routed here to the call waiting for that
//! token. A hand-off to a token no call waits for any more is passed on to the next waiter at
//! once, so a waiter that went away costs its successors nothing.
//!
//! The subscriber connection is replaced when it breaks, and nothing is re-subscribed behind the
//! callers' back: the listeners of the old connection end their streams (their calls then poll),
//! and the next listen subscribes the channel again on the new connection before it returns.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::stream::Stream;
use redlock_core::{redis_lua, OsRandom, RandomSource};
use tokio::time::Instant;

use crate::error;
use crate::link::{Link, Routed};

/// How long passing on a hand-off may take; the key's reserve (the waiter's TTL, or an instance
/// timeout) bounds the cost of a failure.
const PASS_ON_TIMEOUT: Duration = Duration::from_secs(1);

/// One call waiting for hand-offs to its token.
struct Waiting {
    tx: UnboundedSender<()>,
    /// The subscriber connection it listens through: it ends with that connection.
    generation: u64,
}

#[derive(Default)]
struct Inner {
    /// The calls waiting, by token.
    waiting: HashMap<Box<[u8]>, Waiting>,
    /// The generation of the open subscriber connection; 0 when there is none.
    live: u64,
    /// Whether the hand-off channel is subscribed on the `live` connection.
    subscribed: bool,
}

/// This backend's hand-off channel and the calls waiting on it.
pub(crate) struct Handoffs {
    channel: String,
    inner: Mutex<Inner>,
    /// The backend's command connection, to pass on a hand-off that no call here waits for.
    link: Arc<Link>,
}

impl Handoffs {
    pub(crate) fn new(link: Arc<Link>) -> Self {
        Self {
            channel: redis_lua::handoff_channel(OsRandom.next_u64()),
            inner: Mutex::default(),
            link,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every change leaves the state whole (entries inserted or removed whole).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This backend's hand-off channel, sent with each queued acquire.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// Subscriber connection `generation` was opened: the channel is not subscribed on it yet.
    pub(crate) fn opened(&self, generation: u64) {
        let mut inner = self.inner();
        inner.live = generation;
        inner.subscribed = false;
    }

    /// Subscriber connection `generation` is gone: its listeners' streams end, so that their
    /// calls stop counting on hand-offs nobody would deliver.
    pub(crate) fn ended(&self, generation: u64) {
        let mut inner = self.inner();
        if inner.live == generation {
            inner.live = 0;
            inner.subscribed = false;
        }
        inner.waiting.retain(|_, w| w.generation != generation);
    }

    /// Every listener's stream ends (the notifier closed).
    pub(crate) fn clear(&self) {
        let mut inner = self.inner();
        inner.live = 0;
        inner.subscribed = false;
        inner.waiting.clear();
    }

    /// Whether the channel is subscribed on connection `generation`, still the open one.
    pub(crate) fn subscribed_on(&self, generation: u64) -> bool {
        let inner = self.inner();
        inner.live == generation && inner.subscribed
    }

    /// The channel was subscribed on connection `generation`; later listens on it need not.
    pub(crate) fn mark_subscribed(&self, generation: u64) {
        let mut inner = self.inner();
        if inner.live == generation {
            inner.subscribed = true;
        }
    }

    /// Registers a listener of `token` through connection `generation`; `None` when that
    /// connection is no longer the open one (it broke meanwhile: nothing would be delivered).
    /// A later listen of the same token replaces an earlier one.
    pub(crate) fn register(self: &Arc<Self>, token: &[u8], generation: u64) -> Option<Listening> {
        let (tx, rx) = unbounded();
        let mut inner = self.inner();
        if inner.live != generation {
            return None;
        }
        inner
            .waiting
            .insert(token.into(), Waiting { tx, generation });
        Some(Listening {
            rx,
            token: token.into(),
            handoffs: Arc::clone(self),
        })
    }

    /// Routes a hand-off message to its call, or passes the key on when the call is gone.
    pub(crate) fn deliver(&self, message: &[u8]) {
        let Some((token, key)) = redis_lua::parse_handoff(message) else {
            return;
        };
        let delivered = self
            .inner()
            .waiting
            .get(token)
            .is_some_and(|w| w.tx.unbounded_send(()).is_ok());
        if !delivered {
            tokio::spawn(pass_on(
                Arc::clone(&self.link),
                key.to_vec(),
                token.to_vec(),
            ));
        }
    }
}

/// Releases `key` for `token`, whose call stopped waiting, handing it to the next waiter, if
/// the key is still an unclaimed reservation for `token` (the rare path: a plain `EVAL`, cached by the server after the first, on the backend's command
/// connection). A failure leaves the key reserved for its reserve; the waiters then poll.
async fn pass_on(link: Arc<Link>, key: Vec<u8>, token: Vec<u8>) {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(redis_lua::RELEASE_HAND_OFF)
        .arg(1)
        .arg(&key)
        .arg(&token)
        // Only an unclaimed reservation: the message may have arrived after the acquire it led
        // to (the key is then the token's, and stays).
        .arg("1");
    let deadline = Instant::now() + PASS_ON_TIMEOUT;
    let Ok(routed) = link.route("pass on a hand-off", |_| cmd, deadline, true) else {
        return;
    };
    let (sending, conn) = match routed {
        Routed::Sending(sending, conn) => (sending, conn),
        Routed::Queued(rx) => match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(routed))) => routed,
            _ => return,
        },
    };
    // A broken connection is forgotten as after any command, so the next call makes a new one.
    if let Ok(Err(e)) = sending.await {
        if error::is_broken(&e) {
            link.broken(&conn);
        }
    }
}

/// One call's hand-off listener; stops listening when dropped.
pub(crate) struct Listening {
    rx: UnboundedReceiver<()>,
    token: Box<[u8]>,
    handoffs: Arc<Handoffs>,
}

impl Stream for Listening {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut inner = self.handoffs.inner();
        // Only ours: a later listen of the same token replaced the entry.
        if inner
            .waiting
            .get(&self.token)
            .is_some_and(|w| w.tx.is_connected_to(&self.rx))
        {
            inner.waiting.remove(&self.token);
        }
    }
}
