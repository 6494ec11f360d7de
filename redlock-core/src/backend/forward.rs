//! `LockBackend` and `ReleaseNotify` for the smart pointers, so a decorator generic over
//! `B: LockBackend` also wraps an `Arc<dyn LockBackend>` or a `Box<dyn LockBackend>`.
//!
//! Every method forwards, the provided ones included: falling back to a default here would
//! silently drop the inner backend's announcements or its configuration check.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::{BackendError, Fencing, Handoff, KeyState, LockBackend, QueuePlace, ReleaseNotify};
use crate::Config;

macro_rules! forward {
    ($pointer:ident) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: LockBackend + ?Sized> LockBackend for $pointer<T> {
            fn id(&self) -> &str {
                (**self).id()
            }

            async fn acquire(
                &self,
                key: &[u8],
                token: &[u8],
                ttl: Duration,
            ) -> Result<bool, BackendError> {
                (**self).acquire(key, token, ttl).await
            }

            async fn extend(
                &self,
                key: &[u8],
                token: &[u8],
                ttl: Duration,
            ) -> Result<bool, BackendError> {
                (**self).extend(key, token, ttl).await
            }

            async fn release(&self, key: &[u8], token: &[u8]) -> Result<bool, BackendError> {
                (**self).release(key, token).await
            }

            async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
                (**self).inspect(key).await
            }

            fn check_config(&self, config: &Config) -> Result<(), String> {
                (**self).check_config(config)
            }

            fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
                (**self).release_notify()
            }

            fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
                (**self).reconnects()
            }

            fn fencing(&self) -> Option<&dyn Fencing> {
                (**self).fencing()
            }

            fn handoff(&self) -> Option<&dyn Handoff> {
                (**self).handoff()
            }

            async fn connect(&self) -> Result<(), BackendError> {
                (**self).connect().await
            }

            async fn close(&self) -> Result<(), BackendError> {
                (**self).close().await
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: ReleaseNotify + ?Sized> ReleaseNotify for $pointer<T> {
            async fn release_and_notify(
                &self,
                key: &[u8],
                token: &[u8],
            ) -> Result<(bool, bool), BackendError> {
                (**self).release_and_notify(key, token).await
            }

            async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
                (**self).subscribe(key).await
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: Fencing + ?Sized> Fencing for $pointer<T> {
            async fn next_fence(
                &self,
                key: &[u8],
                token: &[u8],
                counter: &[u8],
            ) -> Result<Option<u64>, BackendError> {
                (**self).next_fence(key, token, counter).await
            }

            async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError> {
                (**self).raise_fence(counter, value).await
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: Handoff + ?Sized> Handoff for $pointer<T> {
            async fn listen(&self, token: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
                (**self).listen(token).await
            }

            async fn acquire_or_queue(
                &self,
                key: &[u8],
                token: &[u8],
                ttl: Duration,
                place: QueuePlace,
            ) -> Result<bool, BackendError> {
                (**self).acquire_or_queue(key, token, ttl, place).await
            }

            async fn release_and_hand_off(
                &self,
                key: &[u8],
                token: &[u8],
                leaving: bool,
            ) -> Result<(bool, bool), BackendError> {
                (**self).release_and_hand_off(key, token, leaving).await
            }

            fn grants_by_hand_off(&self) -> bool {
                (**self).grants_by_hand_off()
            }
        }
    };
}

forward!(Arc);
forward!(Box);

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::executor::block_on;
    use futures::stream::BoxStream;

    use crate::{
        BackendError, Config, Fencing, Handoff, KeyState, LockBackend, QueuePlace, ReleaseNotify,
    };

    /// Logs every method called on it; refuses every configuration so a forwarded check shows.
    #[derive(Debug, Default)]
    struct Probe {
        log: Mutex<Vec<&'static str>>,
    }

    impl Probe {
        fn note(&self, what: &'static str) {
            self.log.lock().unwrap().push(what);
        }
    }

    #[async_trait]
    impl LockBackend for Probe {
        fn id(&self) -> &str {
            self.note("id");
            "probe"
        }
        async fn acquire(&self, _: &[u8], _: &[u8], _: Duration) -> Result<bool, BackendError> {
            self.note("acquire");
            Ok(true)
        }
        async fn extend(&self, _: &[u8], _: &[u8], _: Duration) -> Result<bool, BackendError> {
            self.note("extend");
            Ok(true)
        }
        async fn release(&self, _: &[u8], _: &[u8]) -> Result<bool, BackendError> {
            self.note("release");
            Ok(true)
        }
        async fn inspect(&self, _: &[u8]) -> Result<Option<KeyState>, BackendError> {
            self.note("inspect");
            Ok(None)
        }
        fn check_config(&self, _: &Config) -> Result<(), String> {
            self.note("check_config");
            Err("refused by the probe".into())
        }
        fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
            self.note("release_notify");
            Some(self)
        }
        fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
            self.note("reconnects");
            Some(Box::pin(futures::stream::empty()))
        }

        fn fencing(&self) -> Option<&dyn Fencing> {
            self.note("fencing");
            Some(self)
        }
        fn handoff(&self) -> Option<&dyn Handoff> {
            self.note("handoff");
            Some(self)
        }
        async fn connect(&self) -> Result<(), BackendError> {
            self.note("connect");
            Ok(())
        }
        async fn close(&self) -> Result<(), BackendError> {
            self.note("close");
            Ok(())
        }
    }

    #[async_trait]
    impl ReleaseNotify for Probe {
        async fn release_and_notify(
            &self,
            _: &[u8],
            _: &[u8],
        ) -> Result<(bool, bool), BackendError> {
            self.note("release_and_notify");
            Ok((true, true))
        }
        async fn subscribe(&self, _: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
            self.note("subscribe");
            Ok(Box::pin(futures::stream::empty()))
        }
    }

    #[async_trait]
    impl Fencing for Probe {
        async fn next_fence(
            &self,
            _: &[u8],
            _: &[u8],
            _: &[u8],
        ) -> Result<Option<u64>, BackendError> {
            self.note("next_fence");
            Ok(Some(7))
        }
        async fn raise_fence(&self, _: &[u8], value: u64) -> Result<u64, BackendError> {
            self.note("raise_fence");
            Ok(value)
        }
    }

    #[async_trait]
    impl Handoff for Probe {
        async fn listen(&self, _: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
            self.note("listen");
            Ok(Box::pin(futures::stream::empty()))
        }
        async fn acquire_or_queue(
            &self,
            _: &[u8],
            _: &[u8],
            _: Duration,
            _: QueuePlace,
        ) -> Result<bool, BackendError> {
            self.note("acquire_or_queue");
            Ok(false)
        }
        async fn release_and_hand_off(
            &self,
            _: &[u8],
            _: &[u8],
            _: bool,
        ) -> Result<(bool, bool), BackendError> {
            self.note("release_and_hand_off");
            Ok((true, false))
        }
        fn grants_by_hand_off(&self) -> bool {
            self.note("grants_by_hand_off");
            true
        }
    }

    /// A clock the manager builder accepts; these tests never wait.
    #[derive(Debug)]
    struct Still;

    impl crate::Clock for Still {
        fn now(&self) -> Duration {
            Duration::ZERO
        }
        fn sleep(&self, _: Duration) -> futures::future::BoxFuture<'static, ()> {
            Box::pin(futures::future::ready(()))
        }
    }

    const EVERY_METHOD: [&str; 20] = [
        "acquire",
        "acquire_or_queue",
        "check_config",
        "close",
        "connect",
        "extend",
        "fencing",
        "grants_by_hand_off",
        "handoff",
        "id",
        "inspect",
        "listen",
        "next_fence",
        "raise_fence",
        "reconnects",
        "release",
        "release_and_hand_off",
        "release_and_notify",
        "release_notify",
        "subscribe",
    ];

    /// Calls every method of both traits through `backend`, `check_config` through the
    /// manager builder (the path that must reach the inner backend).
    fn call_everything(backend: Arc<dyn LockBackend>) {
        let ttl = Duration::from_secs(1);
        let built = crate::LockManager::builder(Arc::new(Still))
            .instance(Arc::clone(&backend))
            .build();
        match built {
            Err(crate::Error::InvalidInput(crate::InvalidInput::Config(message))) => {
                assert!(message.contains("refused by the probe"), "{message}");
            }
            other => panic!("the probe's check was not consulted: {other:?}"),
        }
        block_on(async {
            assert!(backend.acquire(b"k", b"t", ttl).await.unwrap());
            assert!(backend.extend(b"k", b"t", ttl).await.unwrap());
            assert!(backend.release(b"k", b"t").await.unwrap());
            assert_eq!(backend.inspect(b"k").await.unwrap(), None);
            let notify = backend
                .release_notify()
                .expect("the probe announces releases");
            assert_eq!(
                notify.release_and_notify(b"k", b"t").await.unwrap(),
                (true, true)
            );
            assert!(notify.subscribe(b"k").await.is_ok());
            assert!(backend.reconnects().is_some());
            let fencing = backend.fencing().expect("the probe keeps counters");
            assert_eq!(fencing.next_fence(b"k", b"t", b"c").await.unwrap(), Some(7));
            assert_eq!(fencing.raise_fence(b"c", 9).await.unwrap(), 9);
            let handoff = backend.handoff().expect("the probe hands off");
            assert!(handoff.grants_by_hand_off());
            assert!(handoff.listen(b"t").await.is_ok());
            let place = QueuePlace {
                stay: ttl,
                reserve: ttl,
            };
            assert!(!handoff
                .acquire_or_queue(b"k", b"t", ttl, place)
                .await
                .unwrap());
            assert_eq!(
                handoff
                    .release_and_hand_off(b"k", b"t", false)
                    .await
                    .unwrap(),
                (true, false)
            );
            backend.connect().await.unwrap();
            backend.close().await.unwrap();
        });
    }

    fn forwards_everything(wrap: impl FnOnce(Arc<Probe>) -> Arc<dyn LockBackend>) {
        let probe = Arc::new(Probe::default());
        call_everything(wrap(Arc::clone(&probe)));
        let mut seen = probe.log.lock().unwrap().clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, EVERY_METHOD);
    }

    #[test]
    fn arc_forwards_every_method() {
        forwards_everything(|p| Arc::new(p));
        forwards_everything(|p| Arc::new(p as Arc<dyn LockBackend>));
    }

    #[test]
    fn box_forwards_every_method() {
        forwards_everything(|p| Arc::new(Box::new(p) as Box<dyn LockBackend>));
        forwards_everything(|p| Arc::new(Box::new(Box::new(p))));
    }

    #[test]
    fn pointers_forward_release_notify_themselves() {
        let probe = Arc::new(Probe::default());
        let boxed: Box<dyn ReleaseNotify> = Box::new(Arc::clone(&probe));
        block_on(async {
            assert_eq!(
                boxed.release_and_notify(b"k", b"t").await.unwrap(),
                (true, true)
            );
            assert!(boxed.subscribe(b"k").await.is_ok());
        });
        assert_eq!(
            *probe.log.lock().unwrap(),
            ["release_and_notify", "subscribe"]
        );
    }
}
