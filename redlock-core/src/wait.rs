//! What an acquirer does between attempts: sleep a jittered delay, but wake as soon as a
//! release is announced (when the backends can announce it), and, in fair mode, let a waiter go
//! first after releasing.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::select;
use futures::stream::{BoxStream, SelectAll, StreamExt};
use futures::FutureExt;

use crate::manager::Inner;
use crate::round::{self, Verdict, Wait};

/// Most yield entries kept for fair mode before expired ones are swept.
const YIELD_SWEEP_AT: usize = 1024;

/// Release subscriptions held for the duration of one `lock` call.
#[derive(Default)]
pub(crate) struct Waiter {
    subscriptions: Option<SelectAll<BoxStream<'static, ()>>>,
}

impl Inner {
    /// Subscribes to releases of `key` on every instance that supports it, each bounded by the
    /// per-instance timeout. Instances that fail or time out are simply not heard from.
    async fn subscribe_all(&self, key: &[u8]) -> SelectAll<BoxStream<'static, ()>> {
        let round = round::run(
            &self.instances,
            self.clock.as_ref(),
            self.config.instance_timeout,
            Wait::ForAll,
            |b| match b.release_notify() {
                Some(n) => n.subscribe(key).map(|r| r.map(Some)).boxed(),
                None => futures::future::ready(Ok(None)).boxed(),
            },
            Option::is_some,
        )
        .await;
        round
            .answers
            .into_iter()
            .filter_map(|a| match a {
                Some(Ok(Some(stream))) => Some(stream),
                _ => None,
            })
            .collect()
    }

    /// Waits before the next attempt. `contended`: the last attempt was refused by holders,
    /// the only case a release announcement can shorten.
    pub(crate) async fn wait_for_retry(&self, key: &[u8], waiter: &mut Waiter, contended: bool) {
        let mut delay = self.retry_delay();
        if !(contended && self.config.wake_on_release) {
            self.clock.sleep(delay).await;
            return;
        }
        if waiter.subscriptions.is_none() {
            let start = self.clock.now();
            let subscriptions = self.subscribe_all(key).await;
            let listening = !subscriptions.is_empty();
            waiter.subscriptions = Some(subscriptions);
            if listening {
                // A release between the refused attempt and the subscription went unheard: look
                // once, now that any later one will be heard.
                let held = self.inspect(key, |s| s.is_some()).await;
                if held.verdict() == Verdict::Refused {
                    return;
                }
            }
            delay = delay.saturating_sub(self.clock.now().saturating_sub(start));
        }
        let Some(subscriptions) = waiter.subscriptions.as_mut().filter(|s| !s.is_empty()) else {
            self.clock.sleep(delay).await;
            return;
        };
        let announced = async {
            if subscriptions.next().await.is_none() {
                // Every subscription ended (connections lost): only the delay is left.
                futures::future::pending::<()>().await;
            }
            // One release is announced by every instance: drop the echoes so they do not wake
            // the next wait for nothing.
            while let Some(Some(())) = subscriptions.next().now_or_never() {}
        };
        drop(select(pin!(announced), self.clock.sleep(delay)).await);
    }

    /// Fair mode: after a release that a waiter heard, this manager's next acquire of the same
    /// key waits `fair_grace` so the waiter can take its turn.
    pub(crate) fn note_release(&self, key: &[u8], heard: bool) {
        if !(self.config.fair && heard) {
            return;
        }
        let now = self.clock.now();
        let mut yields = self.yields();
        if yields.len() >= YIELD_SWEEP_AT {
            yields.retain(|_, until| *until > now);
        }
        yields.insert(Arc::from(key), now + self.config.fair_grace);
    }

    /// Fair mode: waits out a pending yield for `key`.
    pub(crate) async fn yield_to_waiters(&self, key: &[u8]) {
        if !self.config.fair {
            return;
        }
        let until = self.yields().remove(key);
        if let Some(until) = until {
            let now = self.clock.now();
            if until > now {
                self.clock.sleep(until - now).await;
            }
        }
    }
}

/// How long fair mode lets a waiter go first, by default. It bounds how long a waiter that
/// vanished right after the release can delay the releaser.
pub const DEFAULT_FAIR_GRACE: Duration = Duration::from_millis(20);
