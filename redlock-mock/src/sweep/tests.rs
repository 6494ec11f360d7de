//! The checkers are proven when they catch bugs put back on purpose: seeds of the contention
//! family run against a deliberately broken client until one overlaps, and the same seed
//! without the bug is clean. Unit tests, so that the broken clients are not reachable from
//! outside the crate.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Config, KeyState, LockBackend, ReleaseNotify,
};

use super::{run_seed, seeds_from_env, Bug, Family};
use crate::world::WorldBuilder;

impl Bug {
    /// `world` with this bug in every client.
    pub(super) fn reintroduce(self, world: WorldBuilder) -> WorldBuilder {
        match self {
            Self::NoDriftCompensation => world.configure_client(|_, b| b.drift_factor(0.0)),
            Self::ReleaseWithoutTokenCheck => {
                world.wrap_backends(|_, _, link| Arc::new(UncheckedRelease(link)))
            }
        }
    }
}

fn catches(bug: Bug) {
    let seeds = seeds_from_env(0..100);
    let caught = seeds
        .clone()
        .map(|seed| run_seed(Family::Buggy(bug), seed))
        .find(|r| !r.report.overlaps.is_empty());
    let Some(caught) = caught else {
        panic!("the checker missed {bug:?} over seeds {seeds:?}");
    };
    eprintln!("{caught}");
    assert!(caught
        .to_string()
        .contains(&format!("REDLOCK_SIM_SEED={}", caught.seed)));
    assert!(
        caught.reproduce().contains("--lib"),
        "{}",
        caught.reproduce()
    );
    let healthy = run_seed(Family::Contention, caught.seed);
    assert!(healthy.report.is_clean(), "{healthy}");
}

#[test]
fn checker_catches_missing_drift_compensation() {
    catches(Bug::NoDriftCompensation);
}

#[test]
fn checker_catches_release_without_token_check() {
    catches(Bug::ReleaseWithoutTokenCheck);
}

/// Releases by reading the key and deleting whatever token it holds: the race of a `GET`
/// followed by a `DEL` without a script.
#[derive(Debug)]
struct UncheckedRelease(Arc<dyn LockBackend>);

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl LockBackend for UncheckedRelease {
    fn id(&self) -> &str {
        self.0.id()
    }

    async fn acquire(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.0.acquire(key, token, ttl).await
    }

    async fn extend(&self, key: &[u8], token: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.0.extend(key, token, ttl).await
    }

    async fn release(&self, key: &[u8], _token: &[u8]) -> Result<bool, BackendError> {
        match self.0.inspect(key).await? {
            Some(state) => self.0.release(key, &state.value).await,
            None => Ok(false),
        }
    }

    async fn inspect(&self, key: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.0.inspect(key).await
    }

    fn check_config(&self, config: &Config) -> Result<(), String> {
        self.0.check_config(config)
    }

    fn release_notify(&self) -> Option<&dyn ReleaseNotify> {
        // Announcing releases the same broken way keeps the only difference from the healthy
        // contention family the bug itself.
        self.0.release_notify().map(|_| self as &dyn ReleaseNotify)
    }

    async fn connect(&self) -> Result<(), BackendError> {
        self.0.connect().await
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.0.close().await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ReleaseNotify for UncheckedRelease {
    async fn release_and_notify(
        &self,
        key: &[u8],
        _token: &[u8],
    ) -> Result<(bool, bool), BackendError> {
        let Some(notify) = self.0.release_notify() else {
            return Err(BackendError::new(
                BackendErrorKind::Other,
                "no release announcements",
            ));
        };
        match self.0.inspect(key).await? {
            Some(state) => notify.release_and_notify(key, &state.value).await,
            None => Ok((false, false)),
        }
    }

    async fn subscribe(&self, key: &[u8]) -> Result<BoxStream<'static, ()>, BackendError> {
        match self.0.release_notify() {
            Some(notify) => notify.subscribe(key).await,
            None => Err(BackendError::new(
                BackendErrorKind::Other,
                "no release announcements",
            )),
        }
    }
}
