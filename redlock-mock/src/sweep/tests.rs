//! The checkers are proven when they catch bugs put back on purpose: seeds of the contention
//! and queue families run against a deliberately broken client until one is caught, and the
//! same seed without the bug is clean. Unit tests, so that the broken clients are not reachable from
//! outside the crate.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use redlock_core::{
    async_trait, BackendError, BackendErrorKind, Config, Fencing, Handoff, KeyState, LockBackend,
    ReleaseNotify,
};

use super::broken::{OneToken, RefuseAcquires};
use super::{run_seed, seeds_from_env, Bug, Family, SeedRun};
use crate::check::ViolationKind;
use crate::world::WorldBuilder;

impl Bug {
    /// `world` with this bug in every client.
    pub(super) fn reintroduce(self, world: WorldBuilder) -> WorldBuilder {
        match self {
            Self::NoDriftCompensation => world.configure_client(|_, b| b.drift_factor(0.0)),
            Self::ReleaseWithoutTokenCheck => {
                world.wrap_backends(|_, _, link| Arc::new(UncheckedRelease(link)))
            }
            Self::TokenPerManager => world.wrap_backends(|k, _, link| {
                Arc::new(OneToken {
                    inner: link,
                    token: format!("client-{k}").into_bytes(),
                })
            }),
            Self::NoFenceRaise => world.fenced(true).persistent(true).without_fence_raise(),
            Self::AcquireAlwaysRefused => world.wrap_backends(|k, _, link| {
                if k == 0 {
                    Arc::new(RefuseAcquires(link))
                } else {
                    link
                }
            }),
        }
    }
}

/// The first seed of `bug`'s family whose run `caught` selects, or a panic naming the range;
/// the same seed without the bug must be clean.
fn caught_by(bug: Bug, healthy: Family, caught: impl Fn(&SeedRun) -> bool) {
    let seeds = seeds_from_env(0..100);
    let found = seeds
        .clone()
        .map(|seed| run_seed(Family::Buggy(bug), seed))
        .find(|r| caught(r));
    let Some(caught) = found else {
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
    let healthy = run_seed(healthy, caught.seed);
    assert!(healthy.report.is_clean(), "{healthy}");
}

/// Fences that do not grow are caught: without the raise round, two grants reaching different
/// quorums can draw the same counter value. The same seed with the raise is clean.
#[test]
fn checker_catches_a_missing_fence_raise() {
    caught_by(Bug::NoFenceRaise, Family::FencedStandard, |r| {
        r.report
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::FenceNotIncreasing)
    });
}

fn catches(bug: Bug) {
    caught_by(bug, Family::Contention, |r| !r.report.overlaps.is_empty());
}

#[test]
fn checker_catches_missing_drift_compensation() {
    catches(Bug::NoDriftCompensation);
}

#[test]
fn checker_catches_release_without_token_check() {
    catches(Bug::ReleaseWithoutTokenCheck);
}

/// Two tasks of one manager holding a resource at once are caught like two clients: every
/// lock of a manager sets the same value, so a second task "wins" what a first one holds.
#[test]
fn checker_catches_two_holders_in_one_manager() {
    caught_by(Bug::TokenPerManager, Family::Queue, |r| {
        r.report
            .overlaps
            .iter()
            .any(|o| o.first.client == o.second.client)
    });
}

/// A waiter left waiting while its resource is free is caught: one client's acquires are all
/// refused, so its last `UntilCancelled` waiters are never served.
#[test]
fn checker_catches_a_waiter_never_served() {
    caught_by(Bug::AcquireAlwaysRefused, Family::Queue, |r| {
        r.report
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::NotServed)
    });
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

    fn reconnects(&self) -> Option<BoxStream<'static, ()>> {
        self.0.reconnects()
    }

    fn fencing(&self) -> Option<&dyn Fencing> {
        // Only releases are broken.
        self.0.fencing()
    }

    fn handoff(&self) -> Option<&dyn Handoff> {
        self.0.handoff()
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
