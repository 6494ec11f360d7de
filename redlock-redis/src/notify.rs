//! Release announcements over Redis pub/sub (the core's `ReleaseNotify`), on the same channels
//! as redlock-fred, so a release by either backend wakes waiters of both; and the connection
//! that carries them and the hand-offs of [`handoff`](crate::handoff).
//!
//! One subscriber connection per instance, made on first use, carries every subscription of the
//! process. When it breaks, every subscription's stream ends (the manager then polls on its
//! jittered delay) and the next subscription makes a new connection: nothing is re-subscribed
//! behind the caller's back.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::stream::{BoxStream, Stream, StreamExt};
use redis::aio::PubSubSink;
use redis::Client;
use redlock_core::{BackendError, BackendErrorKind};

use crate::error;
use crate::handoff::Handoffs;
use crate::link::Link;

pub(crate) use redlock_core::redis_lua::release_channel as channel;

type Listeners = HashMap<String, Vec<UnboundedSender<()>>>;

fn lock(listeners: &Mutex<Listeners>) -> MutexGuard<'_, Listeners> {
    // Entries are inserted or removed whole.
    listeners.lock().unwrap_or_else(|e| e.into_inner())
}

struct Subscriber {
    sink: PubSubSink,
    /// Which connection of this notifier it is (from 1), so that the hand-off channel is known
    /// to be subscribed on this one and not on one before it.
    generation: u64,
    /// Reads the connection's messages; owns its stream, so aborting it ends the connection.
    dispatch: tokio::task::JoinHandle<()>,
}

pub(crate) struct Notifier {
    id: Arc<str>,
    client: Client,
    connection_timeout: Duration,
    command_timeout: Duration,
    subscriber: tokio::sync::Mutex<Option<Subscriber>>,
    generations: AtomicU64,
    listeners: Arc<Mutex<Listeners>>,
    handoffs: Arc<Handoffs>,
}

impl Notifier {
    pub(crate) fn new(
        id: Arc<str>,
        client: Client,
        link: Arc<Link>,
        connection_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        Self {
            id,
            client,
            connection_timeout,
            command_timeout,
            subscriber: tokio::sync::Mutex::new(None),
            generations: AtomicU64::new(0),
            listeners: Arc::default(),
            handoffs: Arc::new(Handoffs::new(link)),
        }
    }

    /// This backend's hand-off channel, sent with each queued acquire.
    pub(crate) fn handoff_channel(&self) -> &str {
        self.handoffs.channel()
    }

    /// The subscriber connection's sink and generation, connecting it first if there is none
    /// (or it broke).
    async fn sink(&self) -> Result<(PubSubSink, u64), BackendError> {
        let mut subscriber = self.subscriber.lock().await;
        if let Some(s) = subscriber.as_ref() {
            if !s.dispatch.is_finished() {
                return Ok((s.sink.clone(), s.generation));
            }
        }
        let pubsub = tokio::time::timeout(self.connection_timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| {
                BackendError::new(
                    BackendErrorKind::Connection,
                    format!(
                        "{}: subscribe: no connection within {:?}",
                        self.id, self.connection_timeout
                    ),
                )
            })?
            .map_err(|e| error::connecting(&self.id, e))?;
        let (sink, mut stream) = pubsub.split();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        // Before the dispatch task starts, so that its end is always after this.
        self.handoffs.opened(generation);
        let listeners = Arc::clone(&self.listeners);
        let handoffs = Arc::clone(&self.handoffs);
        let dispatch = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                if message.get_channel_name() == handoffs.channel() {
                    handoffs.deliver(message.get_payload_bytes());
                } else if let Some(senders) = lock(&listeners).get_mut(message.get_channel_name()) {
                    senders.retain(|tx| tx.unbounded_send(()).is_ok());
                }
            }
            // The connection is gone: end every subscription and hand-off listener, so no
            // waiter counts on it.
            lock(&listeners).clear();
            handoffs.ended(generation);
        });
        *subscriber = Some(Subscriber {
            sink: sink.clone(),
            generation,
            dispatch,
        });
        Ok((sink, generation))
    }

    /// Waits, for at most the command timeout, for the server to confirm a `SUBSCRIBE` (`op`
    /// names the call in errors).
    async fn confirm(
        &self,
        op: &str,
        subscribing: impl std::future::Future<Output = redis::RedisResult<()>>,
    ) -> Result<(), BackendError> {
        match tokio::time::timeout(self.command_timeout, subscribing).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(error::command(&self.id, op, e)),
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!(
                    "{}: {op}: no confirmation within {:?}",
                    self.id, self.command_timeout
                ),
            )),
        }
    }

    /// Subscribes to releases of `key`; returns once the server confirmed the subscription.
    pub(crate) async fn subscribe(
        &self,
        key: &[u8],
    ) -> Result<BoxStream<'static, ()>, BackendError> {
        let (mut sink, _) = self.sink().await?;
        let channel = channel(key);
        let (tx, rx) = unbounded();
        lock(&self.listeners)
            .entry(channel.clone())
            .or_default()
            .push(tx);
        let stream = Subscription {
            rx,
            channel: channel.clone(),
            listeners: Arc::clone(&self.listeners),
            sink: sink.clone(),
        };
        // SUBSCRIBE is idempotent: sending it for every subscription (not only the first of a
        // channel) guarantees this one is active when we return.
        self.confirm("subscribe", sink.subscribe(&channel)).await?;
        Ok(Box::pin(stream))
    }

    /// Listens for hand-offs to `token`; returns once the hand-off channel is subscribed on the
    /// open subscriber connection. The stream ends when that connection breaks.
    pub(crate) async fn listen(
        &self,
        token: &[u8],
    ) -> Result<BoxStream<'static, ()>, BackendError> {
        let (mut sink, generation) = self.sink().await?;
        // Registered first, so that a hand-off published right after the SUBSCRIBE is routed.
        let Some(stream) = self.handoffs.register(token, generation) else {
            return Err(BackendError::new(
                BackendErrorKind::Connection,
                format!(
                    "{}: listen: the subscriber connection was lost while listening",
                    self.id
                ),
            ));
        };
        // Kept for the life of the connection (one channel per backend): only the first listen
        // on each connection subscribes, and concurrent first ones each wait for their own
        // (idempotent) SUBSCRIBE.
        if !self.handoffs.subscribed_on(generation) {
            self.confirm("listen", sink.subscribe(self.handoffs.channel()))
                .await?;
            self.handoffs.mark_subscribed(generation);
        }
        Ok(Box::pin(stream))
    }

    /// Closes the subscriber connection and ends every subscription's stream.
    pub(crate) async fn close(&self) {
        if let Some(s) = self.subscriber.lock().await.take() {
            s.dispatch.abort();
        }
        // An aborted dispatch task never reaches its own clean-up.
        lock(&self.listeners).clear();
        self.handoffs.clear();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(s) = self.subscriber.get_mut().take() {
            s.dispatch.abort();
        }
    }
}

/// One local subscription; unsubscribes the channel when the last one is dropped.
struct Subscription {
    rx: UnboundedReceiver<()>,
    channel: String,
    listeners: Arc<Mutex<Listeners>>,
    sink: PubSubSink,
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
            let mut map = lock(&self.listeners);
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
                let mut sink = self.sink.clone();
                let channel = std::mem::take(&mut self.channel);
                let listeners = Arc::clone(&self.listeners);
                runtime.spawn(async move {
                    // Someone may have subscribed again meanwhile: keep the channel for them.
                    if !lock(&listeners).contains_key(&channel) {
                        let unsubscribe = sink.unsubscribe(&channel);
                        drop(tokio::time::timeout(Duration::from_secs(1), unsubscribe).await);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::channel;

    #[test]
    fn channels_are_the_key_in_hex_as_in_redlock_fred() {
        assert_eq!(channel(b"ab\x00\xff"), "redlock:released:616200ff");
        assert_ne!(channel(b"a"), channel(b"b"));
    }
}
