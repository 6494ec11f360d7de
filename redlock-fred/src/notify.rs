//! Release announcements over Redis pub/sub (the core's `ReleaseNotify`).
//!
//! A release made through the manager runs a script that deletes the key and `PUBLISH`es on a
//! channel derived from the key; a contended acquirer subscribes to that channel on every
//! instance (and registers there, see `redis_lua::WATCH_RELEASES`: a release that hands off
//! announces only to registered listeners) and wakes as soon as one announces the release. One dedicated subscriber connection
//! per instance, made on first use, carries every subscription of the process; after a reconnect
//! it subscribes again to the channels that still have listeners. Announcements are only a hint: the manager always runs a full acquire
//! attempt after one, and polls on its jittered delay when none comes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use fred::bytes::Bytes;
use fred::bytes_utils::Str;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand, Value};
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::stream::{BoxStream, Stream};
use redlock_core::{redis_lua, BackendError, BackendErrorKind, OsRandom, RandomSource};

pub(crate) use redlock_core::redis_lua::release_channel as channel;

type Listeners = HashMap<String, Vec<UnboundedSender<()>>>;

/// Hand-off listeners by waiter token.
type Waiting = HashMap<Box<[u8]>, UnboundedSender<()>>;

/// The subscriber connection of one instance and the local listeners of each channel.
pub(crate) struct Notifier {
    subscriber: SubscriberClient,
    listeners: Arc<Mutex<Listeners>>,
    started: Mutex<Option<Tasks>>,
    handoff: Arc<HandoffState>,
}

/// This connection's hand-off channel and the calls waiting on it.
struct HandoffState {
    channel: String,
    waiting: Mutex<Waiting>,
    /// The channel was subscribed once; after a reconnect [`resubscribe`] does it again.
    subscribed: AtomicBool,
    /// The main connection, to pass on a hand-off that no call here waits for any more.
    client: Client,
}

impl HandoffState {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        // Entries are inserted or removed whole.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes a hand-off message to its call, or passes the key on when the call is gone.
    fn deliver(&self, message: &[u8]) {
        let Some((token, key)) = redis_lua::parse_handoff(message) else {
            return;
        };
        let delivered = self
            .waiting()
            .get(token)
            .is_some_and(|tx| tx.unbounded_send(()).is_ok());
        if !delivered {
            tokio::spawn(pass_on(self.client.clone(), key.to_vec(), token.to_vec()));
        }
    }
}

/// Releases `key` for `token`, whose call stopped waiting, handing it to the next waiter, if
/// the key is still an unclaimed reservation for `token` (the rare path: a plain `EVAL`, cached
/// by the server after the first).
async fn pass_on(client: Client, key: Vec<u8>, token: Vec<u8>) {
    let command = CustomCommand::new_static("EVAL", ClusterHash::FirstKey, false);
    let args: Vec<Value> = vec![
        Value::String(Str::from_static(redis_lua::RELEASE_HAND_OFF)),
        Value::Integer(1),
        Value::Bytes(Bytes::from(key)),
        Value::Bytes(Bytes::from(token)),
        // Only an unclaimed reservation: the message may have outrun nothing, or arrived after
        // the acquire it led to (the key is then the token's, and stays).
        Value::String(Str::from_static("1")),
    ];
    let options = Options {
        timeout: Some(PASS_ON_TIMEOUT),
        ..Options::default()
    };
    // A failure leaves the key reserved for its reserve; the waiters then poll.
    drop(
        client
            .with_options(&options)
            .custom::<Value, Value>(command, args)
            .await,
    );
}

/// How long passing on a hand-off may take; the key's reserve (the waiter's TTL, or an instance
/// timeout) bounds the cost of a failure.
const PASS_ON_TIMEOUT: Duration = Duration::from_secs(1);

/// The background tasks of a started notifier; aborted on close or drop (a dropped tokio
/// handle would leave them running, and fred's connection task reconnects forever).
struct Tasks {
    connection: fred::types::ConnectHandle,
    helpers: [tokio::task::JoinHandle<()>; 2],
}

impl Tasks {
    fn abort(&self) {
        self.connection.abort();
        self.helpers.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

impl Notifier {
    pub(crate) fn new(subscriber: SubscriberClient, client: Client) -> Self {
        Self {
            subscriber,
            listeners: Arc::default(),
            started: Mutex::new(None),
            handoff: Arc::new(HandoffState {
                channel: redis_lua::handoff_channel(OsRandom.next_u64()),
                waiting: Mutex::default(),
                subscribed: AtomicBool::new(false),
                client,
            }),
        }
    }

    /// This connection's hand-off channel, sent with each queued acquire.
    pub(crate) fn handoff_channel(&self) -> &str {
        &self.handoff.channel
    }

    /// Listens for hand-offs to `token`; returns once the hand-off channel is subscribed.
    pub(crate) async fn listen(
        &self,
        token: &[u8],
        map_error: impl Fn(fred::error::Error) -> BackendError,
    ) -> Result<BoxStream<'static, ()>, BackendError> {
        self.ensure_started()?;
        let (tx, rx) = unbounded();
        self.handoff.waiting().insert(token.into(), tx);
        let stream = Listening {
            rx,
            token: token.into(),
            handoff: Arc::clone(&self.handoff),
        };
        if !self.handoff.subscribed.load(Ordering::Acquire) {
            subscribe_confirmed(&self.subscriber, self.handoff.channel.as_str())
                .await
                .map_err(map_error)?;
            self.handoff.subscribed.store(true, Ordering::Release);
        }
        Ok(Box::pin(stream))
    }

    fn listeners(listeners: &Mutex<Listeners>) -> MutexGuard<'_, Listeners> {
        // Entries are inserted or removed whole.
        listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects the subscriber and starts dispatching its messages, once.
    fn ensure_started(&self) -> Result<(), BackendError> {
        if let Err(problem) = crate::runtime::check_context() {
            return Err(BackendError::new(
                BackendErrorKind::Other,
                format!("release notifications: {}", problem.message()),
            ));
        }
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tasks) = started.as_ref() {
            if tasks.connection.is_finished() {
                return Err(BackendError::new(
                    BackendErrorKind::Other,
                    "release notifications: the subscriber's task has ended (its tokio runtime shut down)",
                ));
            }
            return Ok(());
        }
        let connection = self.subscriber.connect();
        let resubscribe = tokio::spawn(resubscribe(
            self.subscriber.clone(),
            Arc::clone(&self.listeners),
            Arc::clone(&self.handoff),
        ));
        let mut messages = self.subscriber.message_rx();
        let listeners = Arc::clone(&self.listeners);
        let handoff = Arc::clone(&self.handoff);
        let dispatch = tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) if *message.channel == *handoff.channel => {
                        if let Some(bytes) = message.value.as_bytes() {
                            handoff.deliver(bytes);
                        }
                    }
                    Ok(message) => {
                        let mut map = Self::listeners(&listeners);
                        if let Some(senders) = map.get_mut(&*message.channel) {
                            senders.retain(|tx| tx.unbounded_send(()).is_ok());
                        }
                    }
                    // Missed messages only cost a poll; keep listening.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        *started = Some(Tasks {
            connection,
            helpers: [resubscribe, dispatch],
        });
        Ok(())
    }

    /// Subscribes to releases of `key`; returns once the server has the subscription.
    pub(crate) async fn subscribe(
        &self,
        key: &[u8],
        map_error: impl Fn(fred::error::Error) -> BackendError,
    ) -> Result<BoxStream<'static, ()>, BackendError> {
        self.ensure_started()?;
        let channel = channel(key);
        let (tx, rx) = unbounded();
        Self::listeners(&self.listeners)
            .entry(channel.clone())
            .or_default()
            .push(tx);
        let stream = Subscription {
            rx,
            channel: channel.clone(),
            listeners: Arc::clone(&self.listeners),
            subscriber: self.subscriber.clone(),
        };
        // SUBSCRIBE is idempotent: sending it for every subscription (not only the first of a
        // channel) guarantees this one is active when we return.
        subscribe_confirmed(&self.subscriber, channel)
            .await
            .map_err(map_error)?;
        Ok(Box::pin(stream))
    }

    pub(crate) async fn close(&self) {
        let tasks = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tasks) = tasks {
            let quit = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                self.subscriber.quit(),
            );
            drop(quit.await);
            tasks.abort();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(tasks) = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            tasks.abort();
        }
    }
}

/// One call's hand-off listener; stops listening when dropped.
struct Listening {
    rx: UnboundedReceiver<()>,
    token: Box<[u8]>,
    handoff: Arc<HandoffState>,
}

impl Stream for Listening {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut waiting = self.handoff.waiting();
        // Only ours: a later listen of the same token replaced the entry.
        if waiting
            .get(&self.token)
            .is_some_and(|tx| tx.is_connected_to(&self.rx))
        {
            waiting.remove(&self.token);
        }
    }
}

/// One local subscription; unsubscribes the channel when the last one is dropped.
struct Subscription {
    rx: UnboundedReceiver<()>,
    channel: String,
    listeners: Arc<Mutex<Listeners>>,
    subscriber: SubscriberClient,
}

impl Stream for Subscription {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.rx.close();
        let last = {
            let mut map = Notifier::listeners(&self.listeners);
            let Some(senders) = map.get_mut(&self.channel) else {
                return;
            };
            senders.retain(|tx| !tx.is_closed());
            let last = senders.is_empty();
            if last {
                map.remove(&self.channel);
            }
            last
        };
        if last {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let subscriber = self.subscriber.clone();
                let channel = std::mem::take(&mut self.channel);
                let listeners = Arc::clone(&self.listeners);
                runtime.spawn(unsubscribe(subscriber, channel, listeners));
            }
        }
    }
}

/// Subscribes `channels` and returns once the server has executed the SUBSCRIBE. fred answers
/// a SUBSCRIBE as soon as it is written (its reply comes out of band), and the server serves
/// its clients in the order their sockets turn readable, not in the order they were written
/// to: a release sent just after on the command connection could be served first and be
/// announced to nobody (seen under load in the conformance rule
/// `a_subscription_hears_every_later_release`). The reply to a PING on the same connection
/// comes only after the SUBSCRIBE before it was executed.
async fn subscribe_confirmed<S>(
    subscriber: &SubscriberClient,
    channels: S,
) -> Result<(), fred::error::Error>
where
    S: Into<fred::types::MultipleStrings> + Send,
{
    subscriber.subscribe(channels).await?;
    subscriber.ping::<Value>(None).await.map(drop)
}

/// After every reconnect, subscribes again to the channels that still have local listeners.
///
/// Not fred's `manage_subscriptions`: that one subscribes again to every channel on fred's own
/// list, which keeps a channel whose UNSUBSCRIBE failed (sent while the connection was down) or
/// raced with the reconnect. Such a channel then stayed subscribed for the life of the
/// connection with no one listening. The listener map is the truth here: after the SUBSCRIBE,
/// channels whose last listener left meanwhile are unsubscribed again.
async fn resubscribe(
    subscriber: SubscriberClient,
    listeners: Arc<Mutex<Listeners>>,
    handoff: Arc<HandoffState>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        match reconnects.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        let wanted: Vec<String> = Notifier::listeners(&listeners).keys().cloned().collect();
        if handoff.subscribed.load(Ordering::Acquire) {
            // Kept for the life of the connection: one channel per process and instance.
            if subscribe_confirmed(&subscriber, handoff.channel.as_str())
                .await
                .is_err()
            {
                // Until it is made again, releases skip this process's waiters (nobody is
                // subscribed), and they poll: let the next listen try.
                handoff.subscribed.store(false, Ordering::Release);
            }
        }
        if wanted.is_empty() {
            continue;
        }
        // A failure leaves those waiters polling on their delay, as without announcements.
        drop(subscriber.subscribe(wanted.clone()).await);
        for channel in wanted {
            if !Notifier::listeners(&listeners).contains_key(&channel) {
                tokio::spawn(unsubscribe(
                    subscriber.clone(),
                    channel,
                    Arc::clone(&listeners),
                ));
            }
        }
    }
}

/// How long a failed UNSUBSCRIBE is retried. One that timed out unsent (the connection busy
/// or reconnecting) left the channel subscribed with no one listening, until the connection
/// dropped. Bounded so that a server gone for good does not keep a task alive; a reconnect
/// clears such channels anyway (see [`resubscribe`]).
const UNSUBSCRIBE_RETRY_FOR: Duration = Duration::from_secs(4);

/// Unsubscribes `channel` unless someone subscribed to it again meanwhile, retrying with backoff
/// while the command fails (connection busy or reconnecting) for [`UNSUBSCRIBE_RETRY_FOR`].
async fn unsubscribe(
    subscriber: SubscriberClient,
    channel: String,
    listeners: Arc<Mutex<Listeners>>,
) {
    let give_up = tokio::time::Instant::now() + UNSUBSCRIBE_RETRY_FOR;
    let mut pause = Duration::from_millis(50);
    loop {
        // Someone may have subscribed again meanwhile: keep the channel for them.
        if Notifier::listeners(&listeners).contains_key(&channel) {
            return;
        }
        if subscriber.unsubscribe(channel.as_str()).await.is_ok() {
            return;
        }
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::channel;

    #[test]
    fn channels_are_the_key_in_hex() {
        assert_eq!(channel(b"ab\x00\xff"), "redlock:released:616200ff");
        assert_ne!(channel(b"a"), channel(b"b"));
    }
}
