//! The manager's side of a held lock: extend, release and check, and how their rounds change
//! the handle's lease and status.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::stragglers::Leftover;
use super::Inner;
use crate::error::{Error, LossReason};
use crate::lock::{LockShared, Status};
use crate::round::Verdict;
use crate::telemetry;

impl Inner {
    /// One extend round: a fresh lease of `ttl` on a quorum, within validity, cut at the current
    /// deadline.
    pub(crate) async fn extend(&self, shared: &LockShared, ttl: Duration) -> Result<(), Error> {
        telemetry::observed!(
            telemetry::Op::extend(self.clock(), shared, ttl),
            self.extend_round(shared, ttl)
        )
    }

    async fn extend_round(&self, shared: &LockShared, ttl: Duration) -> Result<(), Error> {
        let deadline = {
            let state = shared.state();
            match state.status {
                Status::Released => return Err(Error::Released),
                Status::Lost(reason) => return Err(Error::lost(reason, None)),
                Status::Held => {}
            }
            if !state.lease.is_valid(self.clock().now()) {
                drop(state);
                return Err(self.lose(shared, LossReason::Expired, None));
            }
            state.lease.deadline()
        };
        let guard = self.config.deadline_guard;
        let cut_at = guard.then_some(deadline);
        let rechecks = shared.rechecks.load(Ordering::Acquire);
        let granted = self
            .engine
            .extend(&shared.key, &shared.token, ttl, cut_at)
            .await;
        match granted {
            Ok(lease) => {
                let mut state = shared.state();
                match state.status {
                    // The lease still ran when the new one came: a lock that was allowed to
                    // expire, even for a moment, has been reported invalid and stays lost.
                    Status::Held if !guard || state.lease.is_valid(self.clock().now()) => {
                        // A reconnection re-check during the round found an instance without
                        // our token: trust only instances both agree on.
                        let lease = if shared.rechecks.load(Ordering::Acquire) == rechecks {
                            lease
                        } else {
                            lease.held_on(lease.holders().and(state.lease.holders()))
                        };
                        state.lease = lease;
                        state.ttl = ttl;
                        Ok(())
                    }
                    Status::Held => {
                        drop(state);
                        Err(self.lose(shared, LossReason::Expired, None))
                    }
                    // A release that completed while we were extending wins: never revive a lock.
                    Status::Released => Err(Error::Released),
                    Status::Lost(reason) => Err(Error::lost(reason, None)),
                }
            }
            Err(rejected) => match rejected.verdict {
                Verdict::Quorum => Err(Error::ValidityExpired(Box::new(rejected.failure))),
                Verdict::Refused => {
                    Err(self.lose(shared, LossReason::NotHeld, Some(rejected.failure)))
                }
                // Cut at the deadline: the lease ran out while the round was open.
                Verdict::Undecided if guard && self.clock().now() >= deadline => {
                    Err(self.lose(shared, LossReason::Expired, Some(rejected.failure)))
                }
                Verdict::Undecided => Err(Error::Unavailable(Box::new(rejected.failure))),
            },
        }
    }

    /// Sends the release to every instance and reports whether the lock was still ours.
    pub(crate) async fn release(&self, shared: &LockShared) -> Result<(), Error> {
        self.release_as(shared, false).await
    }

    /// Close's release: the lock stops being valid at once (its watchers see it, scoped work
    /// is stopped), then the release round goes out.
    pub(crate) async fn release_at_close(&self, shared: &LockShared) -> Result<(), Error> {
        self.release_as(shared, true).await
    }

    async fn release_as(&self, shared: &LockShared, invalid_at_once: bool) -> Result<(), Error> {
        let prior = shared.state().status;
        if prior == Status::Released {
            return Err(Error::Released);
        }
        if invalid_at_once {
            shared.mark_released();
        }
        telemetry::observed!(
            telemetry::Op::release(self.clock(), shared),
            self.release_round(shared, prior, !invalid_at_once)
        )
    }

    /// The release round of a lock whose status was `prior` when the release began. With
    /// `at_quorum` and a spawner, it returns once a quorum has answered and the other deletes
    /// finish in the background (close waits for every instance: the runtime may be going away).
    async fn release_round(
        &self,
        shared: &LockShared,
        prior: Status,
        at_quorum: bool,
    ) -> Result<(), Error> {
        // A release round already went out for this handle (it came back undecided): its deletes
        // may have landed since, so "not held" now is most likely our own doing.
        let sent_before = shared.release_sent.swap(true, Ordering::AcqRel);
        let announce = self.config.wake_on_release;
        let round = match self.spawner.as_ref().filter(|_| at_quorum) {
            Some(spawner) => {
                let kept = self
                    .engine
                    .release_at_quorum(&shared.key, &shared.token, announce)
                    .await;
                let round = kept.round;
                let stragglers = kept.running;
                if !stragglers.is_empty() {
                    // Bounded like the round they left, by its own timer where it made one: a
                    // hung instance's call is given up at the per-instance timeout, as it would
                    // have been in the foreground.
                    let timer = kept.timer.unwrap_or_else(|| {
                        let left = self.config.instance_timeout.saturating_sub(round.elapsed);
                        self.engine.clock.sleep(left)
                    });
                    self.stragglers
                        .run(spawner.as_ref(), Leftover::new(stragglers, timer));
                }
                round
            }
            None => {
                self.engine
                    .release(&shared.key, &shared.token, announce)
                    .await
            }
        };
        let heard = round
            .answers
            .iter()
            .any(|a| matches!(a, Some(Ok((_, true)))));
        // With hand-offs the key is reserved for the waiter it went to: no yield needed (and the
        // yield would wait for an announcement that a hand-off does not make).
        let yield_to_waiter = heard && !self.engine.handoff;
        self.fairness
            .note_release(self.clock(), &shared.key, yield_to_waiter);
        // Judged on the deadline, not the status: a concurrent extend or check that ran into
        // this very release's deletes marks the lock lost, but it was ours until now.
        let expired = !shared.state().lease.is_valid(self.clock().now());
        let verdict = round.verdict();
        if verdict == Verdict::Undecided && prior == Status::Held && !expired {
            // Unknown whether the keys are gone: keep the handle so the caller can retry.
            return Err(Error::Unavailable(Box::new(self.engine.failure(round, 1))));
        }
        let result = match (prior, verdict) {
            (Status::Lost(reason), _) => Err(Error::lost(reason, None)),
            _ if expired => Err(Error::lost(LossReason::Expired, None)),
            (_, Verdict::Quorum) => Ok(()),
            // Held until the first release went out, and a quorum no longer holds it: the
            // first round's deletes landed, their answers were lost.
            (Status::Held, Verdict::Refused) if sent_before => Ok(()),
            _ => Err(Error::lost(
                LossReason::NotHeld,
                Some(self.engine.failure(round, 1)),
            )),
        };
        let was_held = shared.mark_released();
        telemetry::released(shared, was_held, &result);
        self.unregister(shared);
        result
    }

    /// Whether a quorum still holds our token, and the validity left.
    pub(crate) async fn check(&self, shared: &LockShared) -> Result<Duration, Error> {
        telemetry::observed!(
            telemetry::Op::check(self.clock(), shared),
            self.check_round(shared)
        )
    }

    async fn check_round(&self, shared: &LockShared) -> Result<Duration, Error> {
        match shared.state().status {
            Status::Released => return Err(Error::Released),
            Status::Lost(reason) => return Err(Error::lost(reason, None)),
            Status::Held => {}
        }
        let round = self
            .engine
            .inspect(&shared.key, |s| {
                s.as_ref().is_some_and(|s| *s.value == *shared.token)
            })
            .await;
        let remaining = shared.state().remaining(self.clock().now());
        if remaining.is_zero() {
            return Err(self.lose(shared, LossReason::Expired, None));
        }
        match round.verdict() {
            Verdict::Quorum => Ok(remaining),
            Verdict::Refused => Err(self.lose(
                shared,
                LossReason::NotHeld,
                Some(self.engine.failure(round, 1)),
            )),
            Verdict::Undecided => Err(Error::Unavailable(Box::new(self.engine.failure(round, 1)))),
        }
    }
}
