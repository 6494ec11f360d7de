//! The quorum engine: one acquire, extend, release or inspect round over the instances, judged
//! against the quorum and turned into a [`Lease`] or a verdict with its [`Failure`].
//!
//! It knows nothing of retries, handles, the registry, spawning, fair mode or randomness: those
//! belong to the manager. That keeps the safety-relevant arithmetic in one place that can be
//! tested on the in-memory backend without a manager.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};

use crate::backend::{KeyState, LockBackend, QueuePlace};
use crate::error::{Error, Failure};
use crate::gate::Gate;
use crate::holders::Holders;
use crate::lease::Lease;
use crate::round::{self, Ask, Gating, Round, Verdict, Wait};
use crate::runtime::Clock;
use crate::validity::DriftPpm;

fn no_fencing() -> crate::backend::BackendError {
    crate::backend::BackendError::new(
        crate::backend::BackendErrorKind::Incompatible,
        "this backend keeps no fencing counters",
    )
}

/// The instances and the settings a round needs.
pub(crate) struct Engine {
    pub(crate) instances: Box<[Arc<dyn LockBackend>]>,
    /// Per instance, in the same order: the in-flight limit.
    pub(crate) gates: Box<[Gate]>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) drift: DriftPpm,
    pub(crate) instance_timeout: Duration,
    /// Every instance supports [`Handoff`](crate::Handoff): contended acquirers queue, and
    /// announced releases hand the key to one of them.
    pub(crate) handoff: bool,
    /// With `handoff`: every instance's hand-offs are grants
    /// ([`Handoff::grants_by_hand_off`](crate::Handoff::grants_by_hand_off)), so a quorum of
    /// them may be a waiter's acquisition.
    pub(crate) handoff_grants: bool,
}

/// A fencing counter's value as the instance keeps it (decimal ASCII); `None` for anything else.
fn parse_counter(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A release still on its way when its round stopped waiting.
pub(crate) type Straggler = BoxFuture<'static, Result<(bool, bool), crate::BackendError>>;

/// How one instance's release is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// A plain compare-and-delete, unannounced.
    Quiet,
    /// Announced through [`ReleaseNotify`](crate::ReleaseNotify) where supported, or handed to
    /// the next waiter through [`Handoff`](crate::Handoff); the releaser leaves the queues (a
    /// holder may still have a place where it was refused; a call that gives up has them
    /// everywhere).
    Announced,
    /// The cleanup of a failed attempt of a call that keeps waiting in the hand-off queues: what
    /// it holds or was handed goes to the next waiter, and its own places stay. Quiet where
    /// hand-offs are not supported.
    Queued,
}

fn release_call<'a>(
    b: &'a Arc<dyn LockBackend>,
    key: &'a [u8],
    token: &'a [u8],
    how: Release,
) -> BoxFuture<'a, Result<(bool, bool), crate::BackendError>> {
    let quiet = || b.release(key, token).map_ok(|r| (r, false)).boxed();
    match (how, b.handoff()) {
        (Release::Quiet, _) | (Release::Queued, None) => quiet(),
        (Release::Queued, Some(h)) => h.release_and_hand_off(key, token, false),
        (Release::Announced, Some(h)) => h.release_and_hand_off(key, token, true),
        (Release::Announced, None) => match b.release_notify() {
            Some(n) => n.release_and_notify(key, token),
            None => quiet(),
        },
    }
}

/// A round that granted nothing: its verdict and what each instance did.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// `Quorum` here means a quorum agreed, but too slowly to leave validity.
    pub(crate) verdict: Verdict,
    pub(crate) failure: Failure,
    /// The instances that may hold our key after this round: every one but those that
    /// answered a plain no (an acquire that says no wrote nothing).
    pub(crate) dirty: Ask,
}

impl Rejected {
    /// The error an acquire reports after `attempts` attempts, this one the last.
    pub(crate) fn into_acquire_error(mut self, attempts: u32) -> Error {
        self.failure.attempts = attempts;
        let failure = Box::new(self.failure);
        match self.verdict {
            Verdict::Quorum => Error::ValidityExpired(failure),
            Verdict::Refused => Error::Contended(failure),
            Verdict::Undecided => Error::Unavailable(failure),
        }
    }
}

impl Engine {
    /// The number of instances a lock must be held on.
    pub(crate) fn quorum(&self) -> usize {
        round::quorum(self.instances.len())
    }

    /// The per-instance report of `round`, as the outcome of `attempts` attempts.
    pub(crate) fn failure<T>(&self, round: Round<T>, attempts: u32) -> Failure {
        round.into_failure(attempts, &self.instances)
    }

    /// A report for a refusal made without asking any instance (`attempts` 0, every instance
    /// not awaited).
    pub(crate) fn not_asked(&self, elapsed: Duration) -> Failure {
        Failure {
            resource: None,
            attempts: 0,
            quorum: self.quorum(),
            instances: self
                .instances
                .iter()
                .map(|b| crate::error::InstanceReport {
                    instance: b.id().to_owned(),
                    outcome: crate::error::InstanceOutcome::NotAwaited,
                })
                .collect(),
            elapsed,
        }
    }

    /// The time limit of a round whose answers are only useful while `ttl` leaves validity.
    fn limit(&self, ttl: Duration) -> Duration {
        self.instance_timeout
            .min(self.drift.validity(ttl, Duration::ZERO))
    }

    /// The lease a round granted, or why not.
    fn judge(&self, t1: Duration, ttl: Duration, round: Round<bool>) -> Result<Lease, Rejected> {
        let verdict = round.verdict();
        if verdict == Verdict::Quorum {
            if let Some(lease) =
                Lease::granted(t1, ttl, round.elapsed, self.drift, self.instance_timeout)
            {
                let yes = round.answers.iter().map(|a| matches!(a, Some(Ok(true))));
                return Ok(lease.held_on(Holders::of(yes)));
            }
        }
        let dirty = round
            .answers
            .iter()
            .enumerate()
            .filter(|(_, a)| !matches!(a, Some(Ok(false))))
            .fold(Ask::none(), |ask, (i, _)| ask.with(i));
        Err(Rejected {
            verdict,
            failure: self.failure(round, 1),
            dirty,
        })
    }

    /// One acquire attempt: `key = token` for `ttl` on a quorum, within validity. A failed
    /// attempt may have left keys anywhere: the caller releases them. With `every_answer` (a
    /// call that may take hand-offs as its acquisition), a refused attempt waits for every
    /// answer (within the same limit), so that its cleanup skips the instances that said no.
    /// `sent` is set once a request went out (before that, nothing can be set: no cleanup
    /// needed). With `queue`, a refusal queues the caller for a hand-off on instances that
    /// support it.
    pub(crate) async fn acquire(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        sent: Option<&AtomicBool>,
        queue: Option<QueuePlace>,
        every_answer: bool,
    ) -> Result<Lease, Rejected> {
        let t1 = self.clock.now();
        let wait = if every_answer {
            Wait::UntilGranted
        } else {
            Wait::UntilDecided
        };
        let round = round::run(
            &self.instances,
            Gating::Limit(&self.gates, sent),
            self.clock.as_ref(),
            self.limit(ttl),
            wait,
            |b| match (queue, b.handoff()) {
                (Some(place), Some(h)) => h.acquire_or_queue(key, token, ttl, place),
                _ => b.acquire(key, token, ttl),
            },
            |acquired| *acquired,
        )
        .await;
        self.judge(t1, ttl, round)
    }

    /// The two rounds that give a granted acquire its fence, within the lease `granted` (the
    /// acquire round's):
    ///
    /// 2. `next_fence` on every instance: where the key still holds our token, the counter is
    ///    incremented. A quorum of values is needed; the candidate is their maximum.
    /// 3. `raise_fence(candidate)` on every instance, raise-only; a quorum of acks is needed.
    ///
    /// Why the fence of a later grant is larger: let A be handed out before B is granted. B's
    /// round-2 quorum meets A's round-3 quorum at some instance m; B's increment at m runs after
    /// B's grant, so after A's hand-out, so after A's raise landed at m: B reads more than
    /// fence(A) there, and its candidate is at least that. (Provided m kept its counter.)
    ///
    /// Validity is what is left of `ttl` after all three rounds, less the drift allowance. With
    /// `raise` off (tests only), round 3 is skipped.
    pub(crate) async fn fence(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        granted: Lease,
        raise: bool,
    ) -> Result<(Lease, u64), Rejected> {
        let counter = crate::backend::fence_key(key);
        let counter = counter.as_slice();
        // No round may outlast the lease it is part of.
        let limit = |engine: &Self| {
            let left = granted.deadline().saturating_sub(engine.clock.now());
            engine.instance_timeout.min(left)
        };
        // Every answer, not only a quorum's: an instance that says "not held" is read below,
        // and one whose increment is still on its way must not be read after it (the fence
        // would skip a number).
        let round = round::run(
            &self.instances,
            Gating::Limit(&self.gates, None),
            self.clock.as_ref(),
            limit(self),
            Wait::ForAll,
            |b| match b.fencing() {
                Some(f) => f.next_fence(key, token, counter),
                None => futures::future::ready(Err(no_fencing())).boxed(),
            },
            Option::is_some,
        )
        .await;
        let verdict = round.verdict();
        let candidate = round
            .answers
            .iter()
            .filter_map(|a| match a {
                Some(Ok(Some(value))) => Some(*value),
                _ => None,
            })
            .max();
        // A round cut at the lease's deadline ran out of validity, whatever it heard by then.
        let out_of_time = |engine: &Self, verdict| {
            if engine.clock.now() >= granted.deadline() {
                Verdict::Quorum
            } else {
                verdict
            }
        };
        let (Verdict::Quorum, Some(candidate)) = (verdict, candidate) else {
            return Err(Rejected {
                verdict: out_of_time(self, verdict),
                failure: self.failure(round, 1),
                // The acquire won: our key is on a quorum at least.
                dirty: Ask::ALL,
            });
        };
        // The instances that answered without an increment (they do not hold our key) may
        // still keep a counter above ours: after a majority restarted empty, the survivors
        // hold the last fence handed out. Read them, and draw above what they hold, so that
        // one survivor that saw the last raise is enough to keep the fences growing. (One that
        // gave no answer at all is not asked again: it would cost another timeout.)
        let unread = round
            .answers
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Some(Ok(None))))
            .fold(Ask::none(), |ask, (i, _)| ask.with(i));
        let candidate = if unread.is_empty() {
            candidate
        } else {
            let read = round::run_keep(
                &self.instances,
                Gating::Limit(&self.gates, None),
                self.clock.as_ref(),
                limit(self),
                Wait::ForAll,
                unread,
                |b| b.inspect(counter),
                |_| true,
            )
            .await
            .round;
            read.answers
                .iter()
                .filter_map(|a| match a {
                    Some(Ok(Some(state))) => parse_counter(&state.value),
                    _ => None,
                })
                .map(|held| held.saturating_add(1))
                .fold(candidate, u64::max)
        };
        // Kept for the report of a grant that ran out of validity (the last round's).
        let mut last = self.failure(round, 1);
        if raise {
            let round = round::run(
                &self.instances,
                Gating::Limit(&self.gates, None),
                self.clock.as_ref(),
                limit(self),
                Wait::UntilDecided,
                |b| match b.fencing() {
                    Some(f) => f.raise_fence(counter, candidate),
                    None => futures::future::ready(Err(no_fencing())).boxed(),
                },
                |_| true,
            )
            .await;
            let verdict = round.verdict();
            if verdict != Verdict::Quorum {
                return Err(Rejected {
                    verdict: out_of_time(self, verdict),
                    failure: self.failure(round, 1),
                    dirty: Ask::ALL,
                });
            }
            last = self.failure(round, 1);
        }
        let t1 = granted.granted_at();
        let elapsed = self.clock.now().saturating_sub(t1);
        match Lease::granted(t1, ttl, elapsed, self.drift, self.instance_timeout) {
            // Held where the acquire said yes (the fence rounds write no lock key).
            Some(lease) => Ok((lease.held_on(granted.holders()), candidate)),
            None => Err(Rejected {
                verdict: Verdict::Quorum,
                failure: last,
                dirty: Ask::ALL,
            }),
        }
    }

    /// One extend round: a fresh lease of `ttl` on a quorum. With `cut_at` (the current lease's
    /// deadline), the round stops waiting then: a round that cannot finish before the deadline
    /// cannot extend the lease, and a holder must not be kept waiting past it.
    pub(crate) async fn extend(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        cut_at: Option<Duration>,
    ) -> Result<Lease, Rejected> {
        let t1 = self.clock.now();
        let limit = match cut_at {
            Some(deadline) => self.limit(ttl).min(deadline.saturating_sub(t1)),
            None => self.limit(ttl),
        };
        let round = round::run(
            &self.instances,
            Gating::Limit(&self.gates, None),
            self.clock.as_ref(),
            limit,
            Wait::UntilDecided,
            |b| b.extend(key, token, ttl),
            |extended| *extended,
        )
        .await;
        self.judge(t1, ttl, round)
    }

    /// Releases on every instance, waiting for all of them up to the per-instance timeout; with
    /// `announce`, through [`ReleaseNotify`](crate::ReleaseNotify) where supported, so waiters
    /// wake at once. Each answer is `(released, a waiter heard it)`.
    pub(crate) fn release<'a>(
        &'a self,
        key: &'a [u8],
        token: &'a [u8],
        announce: bool,
    ) -> BoxFuture<'a, Round<(bool, bool)>> {
        let how = if announce {
            Release::Announced
        } else {
            Release::Quiet
        };
        self.cleanup(key, token, how, Ask::ALL)
    }

    /// A release made `how` on the instances in `ask` only: after a failed acquire, those that
    /// answered no hold nothing of ours. Asks nobody when `ask` is empty.
    pub(crate) fn cleanup<'a>(
        &'a self,
        key: &'a [u8],
        token: &'a [u8],
        how: Release,
        ask: Ask,
    ) -> BoxFuture<'a, Round<(bool, bool)>> {
        round::run_keep(
            &self.instances,
            Gating::Always(&self.gates),
            self.clock.as_ref(),
            self.instance_timeout,
            Wait::ForAll,
            ask,
            move |b| release_call(b, key, token, how),
            |(released, _)| *released,
        )
        .map(|kept| kept.round)
        .boxed()
    }

    /// Leaves the hand-off queues on every instance (a call that stops waiting), releasing and
    /// handing on a key held or reserved with `token` on the way.
    pub(crate) fn leave<'a>(
        &'a self,
        key: &'a [u8],
        token: &'a [u8],
    ) -> BoxFuture<'a, Round<(bool, bool)>> {
        self.release(key, token, true)
    }

    /// A release that stops waiting once a quorum has answered (or the answer can no longer
    /// change), and hands back the deletes still on their way, for the caller to see through in
    /// the background: a slow instance then costs the caller nothing, and its key still goes
    /// (by the delete, or by its expiry).
    pub(crate) async fn release_at_quorum(
        &self,
        key: &Arc<[u8]>,
        token: &Arc<[u8]>,
        announce: bool,
    ) -> round::Kept<(bool, bool), Straggler> {
        round::run_keep(
            &self.instances,
            Gating::Always(&self.gates),
            self.clock.as_ref(),
            self.instance_timeout,
            Wait::UntilDecided,
            Ask::ALL,
            |b| {
                let (b, key, token) = (Arc::clone(b), Arc::clone(key), Arc::clone(token));
                let how = if announce {
                    Release::Announced
                } else {
                    Release::Quiet
                };
                async move { release_call(&b, &key, &token, how).await }.boxed()
            },
            |(released, _)| *released,
        )
        .await
    }

    /// Reads `key` on the instances until `is_yes` has a verdict.
    pub(crate) async fn inspect<Y>(&self, key: &[u8], is_yes: Y) -> Round<Option<KeyState>>
    where
        Y: Fn(&Option<KeyState>) -> bool,
    {
        round::run(
            &self.instances,
            Gating::Limit(&self.gates, None),
            self.clock.as_ref(),
            self.instance_timeout,
            Wait::UntilDecided,
            |b| b.inspect(key),
            is_yes,
        )
        .await
    }

    /// Rehydrates a lock from its token: the lease is what a quorum of instances still grants
    /// it (the quorum-th longest remaining TTL; `fallback` for a key without expiry), less the
    /// drift allowance, measured from the start of this round.
    pub(crate) async fn rehydrate(
        &self,
        key: &[u8],
        token: &[u8],
        fallback: Duration,
    ) -> Result<Lease, Rejected> {
        let t1 = self.clock.now();
        let round = self
            .inspect(key, |s| s.as_ref().is_some_and(|s| s.value == token))
            .await;
        let verdict = round.verdict();
        if verdict == Verdict::Quorum {
            let mut left: Vec<Duration> = round
                .answers
                .iter()
                .filter_map(|a| match a {
                    Some(Ok(Some(s))) if s.value == token => Some(s.ttl.unwrap_or(fallback)),
                    _ => None,
                })
                .collect();
            // The lock stands while a quorum of keys does: until the quorum-th longest expires.
            left.sort_unstable_by(|a, b| b.cmp(a));
            let held_for = left[self.quorum() - 1];
            if let Some(lease) = Lease::granted(
                t1,
                held_for,
                round.elapsed,
                self.drift,
                self.instance_timeout,
            ) {
                let yes = round
                    .answers
                    .iter()
                    .map(|a| matches!(a, Some(Ok(Some(s))) if s.value == token));
                return Ok(lease.held_on(Holders::of(yes)));
            }
        }
        Err(Rejected {
            verdict,
            failure: self.failure(round, 1),
            dirty: Ask::none(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! The engine alone, on a minimal in-crate backend: no manager, no runtime.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use futures::executor::block_on;

    use super::*;
    use crate::backend::BackendError;

    /// A clock that stands still unless told; sleeping never completes, so a round that would
    /// wait shows up as a hang instead of passing by accident.
    #[derive(Debug, Default)]
    struct StillClock(Mutex<Duration>);

    impl Clock for StillClock {
        fn now(&self) -> Duration {
            *self.0.lock().unwrap()
        }
        fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
            futures::future::pending().boxed()
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        Up,
        Down,
        /// Never answers.
        Hung,
    }
    use Mode::{Down, Hung, Up};

    #[derive(Debug)]
    struct Map {
        id: String,
        keys: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
        mode: Mode,
    }

    impl Map {
        fn backend(i: usize, mode: Mode) -> Arc<dyn LockBackend> {
            Arc::new(Self {
                id: format!("m{i}"),
                keys: Mutex::default(),
                mode,
            })
        }
        async fn check(&self) -> Result<(), BackendError> {
            match self.mode {
                Up => Ok(()),
                Down => Err(BackendError::new(
                    crate::BackendErrorKind::Connection,
                    "down",
                )),
                Hung => futures::future::pending().await,
            }
        }
    }

    #[async_trait]
    impl LockBackend for Map {
        fn id(&self) -> &str {
            &self.id
        }
        async fn acquire(&self, k: &[u8], t: &[u8], _: Duration) -> Result<bool, BackendError> {
            self.check().await?;
            let mut keys = self.keys.lock().unwrap();
            let held = keys.get(k).is_some_and(|v| v != t);
            if !held {
                keys.insert(k.to_vec(), t.to_vec());
            }
            Ok(!held)
        }
        async fn extend(&self, k: &[u8], t: &[u8], _: Duration) -> Result<bool, BackendError> {
            self.check().await?;
            Ok(self.keys.lock().unwrap().get(k).is_some_and(|v| v == t))
        }
        async fn release(&self, k: &[u8], t: &[u8]) -> Result<bool, BackendError> {
            self.check().await?;
            let mut keys = self.keys.lock().unwrap();
            let ours = keys.get(k).is_some_and(|v| v == t);
            if ours {
                keys.remove(k);
            }
            Ok(ours)
        }
        async fn inspect(&self, k: &[u8]) -> Result<Option<KeyState>, BackendError> {
            self.check().await?;
            Ok(self.keys.lock().unwrap().get(k).map(|v| KeyState {
                value: v.clone(),
                ttl: Some(Duration::from_secs(5)),
            }))
        }
    }

    fn engine(modes: &[Mode]) -> Engine {
        Engine {
            instances: modes
                .iter()
                .enumerate()
                .map(|(i, &m)| Map::backend(i, m))
                .collect(),
            gates: modes.iter().map(|_| Gate::new(16)).collect(),
            clock: Arc::new(StillClock::default()),
            drift: DriftPpm(10_000),
            instance_timeout: Duration::from_millis(100),
            handoff: false,
            handoff_grants: false,
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn a_quorum_grants_a_lease_from_the_round_start() {
        let e = engine(&[Up, Up, Down]);
        let lease = block_on(e.acquire(b"k", b"t", TTL, None, None, false)).unwrap();
        assert_eq!(lease.validity(), Duration::from_millis(9_898));
        assert_eq!(lease.deadline(), Duration::from_millis(9_898));
    }

    #[test]
    fn a_minority_is_undecided_and_a_holder_refuses() {
        let e = engine(&[Up, Down, Down]);
        let err = block_on(e.acquire(b"k", b"t", TTL, None, None, false)).unwrap_err();
        assert_eq!(err.verdict, Verdict::Undecided);
        assert!(matches!(err.into_acquire_error(1), Error::Unavailable(_)));

        let e = engine(&[Up, Up, Up]);
        block_on(e.acquire(b"k", b"rival", TTL, None, None, false)).unwrap();
        let err = block_on(e.acquire(b"k", b"t", TTL, None, None, false)).unwrap_err();
        assert_eq!(err.verdict, Verdict::Refused);
        assert_eq!(err.failure.quorum, 2);
        assert!(matches!(err.into_acquire_error(1), Error::Contended(_)));
    }

    #[test]
    fn extend_needs_our_token_and_release_removes_it() {
        let e = engine(&[Up, Up, Up]);
        assert_eq!(
            block_on(e.extend(b"k", b"t", TTL, None))
                .unwrap_err()
                .verdict,
            Verdict::Refused
        );
        block_on(e.acquire(b"k", b"t", TTL, None, None, false)).unwrap();
        block_on(e.extend(b"k", b"t", TTL, Some(Duration::from_secs(1)))).unwrap();
        let round = block_on(e.release(b"k", b"t", false));
        assert_eq!(round.verdict(), Verdict::Quorum);
        assert_eq!(
            block_on(e.inspect(b"k", Option::is_some)).verdict(),
            Verdict::Refused
        );
    }

    #[test]
    fn an_extend_cut_at_a_passed_deadline_grants_nothing() {
        // The deadline is now: the round may not wait at all. Two hung instances leave the
        // answer open, and the round must not sleep (this clock never wakes a sleeper).
        let e = engine(&[Up, Hung, Hung]);
        let err = block_on(e.extend(b"k", b"t", TTL, Some(Duration::ZERO))).unwrap_err();
        assert_eq!(err.verdict, Verdict::Undecided);
    }

    #[test]
    fn rehydration_takes_the_quorum_th_longest_ttl() {
        let e = engine(&[Up, Up, Up]);
        block_on(e.acquire(b"k", b"t", TTL, None, None, false)).unwrap();
        let lease = block_on(e.rehydrate(b"k", b"t", TTL)).unwrap();
        // Every instance reports 5 s left: validity 5 s − 1 % − 2 ms.
        assert_eq!(lease.validity(), Duration::from_millis(4_948));
        assert_eq!(
            block_on(e.rehydrate(b"k", b"other", TTL))
                .unwrap_err()
                .verdict,
            Verdict::Refused
        );
    }
}
