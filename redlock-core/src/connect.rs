//! The start-up check: every instance connected and able to serve, reported all at once.

use futures::future::join_all;

use crate::error::{Error, Failure, InstanceOutcome, InstanceReport};
use crate::manager::LockManager;
use crate::round;

impl LockManager {
    /// Connects every instance now, all at once, and reports each one that cannot serve locks
    /// (see [`LockBackend::connect`](crate::LockBackend::connect)): a wrong password, a refused
    /// connection or a server too old then shows up at start-up, with its reason, instead of as
    /// failed votes later. Each backend bounds its own wait (the Redis backend: one connection
    /// timeout), so this takes about the slowest instance's bound, not their sum.
    ///
    /// Optional: without it, instances connect on first use.
    ///
    /// # Errors
    /// - [`Error::Unavailable`] when at least one instance failed, even if a quorum could still
    ///   be reached: a misconfigured instance silently lowers how many failures the deployment
    ///   tolerates. [`Error::failure`] lists every instance, the failed ones with their
    ///   [`BackendError`](crate::BackendError); decide from
    ///   [`Failure::unreachable`] whether to go on anyway;
    /// - [`Error::Closed`]: the manager was closed.
    pub async fn connect(&self) -> Result<(), Error> {
        self.inner.ensure_open()?;
        let instances = &self.inner.engine.instances;
        let start = self.inner.engine.clock.now();
        let results = join_all(instances.iter().map(|b| b.connect())).await;
        let elapsed = self.inner.engine.clock.now().saturating_sub(start);
        let mut failed = false;
        let reports = instances
            .iter()
            .zip(results)
            .map(|(backend, result)| InstanceReport {
                instance: backend.id().to_owned(),
                outcome: match result {
                    Ok(()) => InstanceOutcome::Succeeded,
                    Err(e) => {
                        failed = true;
                        InstanceOutcome::Failed(e)
                    }
                },
            })
            .collect();
        if !failed {
            return Ok(());
        }
        Err(Error::Unavailable(Box::new(Failure {
            // About no resource: the instances themselves.
            resource: None,
            attempts: 1,
            quorum: round::quorum(instances.len()),
            instances: reports,
            elapsed,
        })))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::future::BoxFuture;

    use crate::{
        BackendError, BackendErrorKind, Clock, Error, InstanceOutcome, KeyState, LockBackend,
        LockManager,
    };

    #[derive(Debug)]
    struct Fixed;

    impl Clock for Fixed {
        fn now(&self) -> Duration {
            Duration::ZERO
        }

        fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
            Box::pin(futures::future::pending())
        }
    }

    /// A backend whose only behaviour is its start-up check.
    #[derive(Debug)]
    struct Checked(&'static str, Option<BackendErrorKind>);

    #[async_trait]
    impl LockBackend for Checked {
        fn id(&self) -> &str {
            self.0
        }
        async fn acquire(&self, _: &[u8], _: &[u8], _: Duration) -> Result<bool, BackendError> {
            Ok(false)
        }
        async fn extend(&self, _: &[u8], _: &[u8], _: Duration) -> Result<bool, BackendError> {
            Ok(false)
        }
        async fn release(&self, _: &[u8], _: &[u8]) -> Result<bool, BackendError> {
            Ok(false)
        }
        async fn inspect(&self, _: &[u8]) -> Result<Option<KeyState>, BackendError> {
            Ok(None)
        }
        async fn connect(&self) -> Result<(), BackendError> {
            match self.1 {
                None => Ok(()),
                Some(kind) => Err(BackendError::new(kind, format!("{}: refused", self.0))),
            }
        }
    }

    fn manager(backends: Vec<Checked>) -> LockManager {
        LockManager::builder(Arc::new(Fixed))
            .instances(
                backends
                    .into_iter()
                    .map(|b| Arc::new(b) as Arc<dyn LockBackend>),
            )
            .build()
            .expect("valid")
    }

    #[test]
    fn every_instance_is_reported_even_when_a_quorum_connected() {
        let m = manager(vec![
            Checked("a", None),
            Checked("b", Some(BackendErrorKind::Auth)),
            Checked("c", None),
        ]);
        let error = futures::executor::block_on(m.connect()).expect_err("b failed");
        assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
        let failure = error.failure().expect("report");
        let kinds: Vec<Option<BackendErrorKind>> = failure
            .instances
            .iter()
            .map(|r| match &r.outcome {
                InstanceOutcome::Failed(e) => Some(e.kind()),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, [None, Some(BackendErrorKind::Auth), None]);
        assert_eq!(failure.unreachable().count(), 1);
    }

    #[test]
    fn all_connected_is_ok_and_a_closed_manager_says_so() {
        let m = manager(vec![Checked("a", None), Checked("b", None)]);
        futures::executor::block_on(m.connect()).expect("all connected");
        futures::executor::block_on(m.close()).expect("close");
        assert!(matches!(
            futures::executor::block_on(m.connect()),
            Err(Error::Closed)
        ));
    }
}
