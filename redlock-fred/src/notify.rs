//! Release announcements over Redis pub/sub (the core's `ReleaseNotify`).
//!
//! A release made through the manager runs a script that deletes the key and `PUBLISH`es on a
//! channel derived from the key; a contended acquirer subscribes to that channel on every
//! instance and wakes as soon as one announces the release. One dedicated subscriber connection
//! per instance, made on first use, carries every subscription of the process; after a reconnect
//! it subscribes again to the channels that still have listeners. Announcements are only a hint: the manager always runs a full acquire
//! attempt after one, and polls on its jittered delay when none comes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::stream::{BoxStream, Stream};
use redlock_core::{BackendError, BackendErrorKind};

pub(crate) use redlock_core::redis_lua::release_channel as channel;

type Listeners = HashMap<String, Vec<UnboundedSender<()>>>;

/// The subscriber connection of one instance and the local listeners of each channel.
pub(crate) struct Notifier {
    subscriber: SubscriberClient,
    listeners: Arc<Mutex<Listeners>>,
    started: Mutex<Option<Tasks>>,
}

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
    pub(crate) fn new(subscriber: SubscriberClient) -> Self {
        Self {
            subscriber,
            listeners: Arc::default(),
            started: Mutex::new(None),
        }
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
        ));
        let mut messages = self.subscriber.message_rx();
        let listeners = Arc::clone(&self.listeners);
        let dispatch = tokio::spawn(async move {
            loop {
                match messages.recv().await {
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

    /// Subscribes to releases of `key`; returns once the server acknowledged the subscription.
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
        self.subscriber
            .subscribe(channel)
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

/// After every reconnect, subscribes again to the channels that still have local listeners.
///
/// Not fred's `manage_subscriptions`: that one subscribes again to every channel on fred's own
/// list, which keeps a channel whose UNSUBSCRIBE failed (sent while the connection was down) or
/// raced with the reconnect. Such a channel then stayed subscribed for the life of the
/// connection with no one listening. The listener map is the truth here: after the SUBSCRIBE,
/// channels whose last listener left meanwhile are unsubscribed again.
async fn resubscribe(subscriber: SubscriberClient, listeners: Arc<Mutex<Listeners>>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        match reconnects.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        let wanted: Vec<String> = Notifier::listeners(&listeners).keys().cloned().collect();
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
