//! The hooks, with `tracing` or `metrics` (or both) on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "tracing")]
use tracing::{field::display, field::Empty, Span};

use super::labels;
#[cfg(feature = "tracing")]
use super::shown::{Instances, Resource, Token};
use crate::backend::LockBackend;
use crate::engine::Rejected;
use crate::error::{Error, Failure, InstanceOutcome, LossReason};
use crate::lease::Lease;
use crate::lock::{Lock, LockShared};
use crate::round::Verdict;
use crate::runtime::Clock;

/// The metric names, as documented in the crate docs.
#[cfg(feature = "metrics")]
mod name {
    pub(super) const ACQUISITIONS: &str = "redlock_acquisitions_total";
    pub(super) const ACQUIRE_SECONDS: &str = "redlock_acquire_duration_seconds";
    pub(super) const ATTEMPTS: &str = "redlock_acquire_attempts_total";
    pub(super) const LOSSES: &str = "redlock_losses_total";
    pub(super) const RENEWAL_FAILURES: &str = "redlock_renewal_failures_total";
    pub(super) const INSTANCE_ERRORS: &str = "redlock_instance_errors_total";
    pub(super) const FAIR_YIELDS: &str = "redlock_fair_yields_total";
    pub(super) const HANDED_OVER: &str = "redlock_handed_over_total";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Acquire,
    Extend,
    Release,
    Check,
}

impl Kind {
    fn succeeded(self) -> &'static str {
        match self {
            Self::Acquire => "acquired",
            Self::Extend => "extended",
            Self::Release => "released",
            Self::Check => "held",
        }
    }
}

/// Whether anything may observe an operation: a `metrics` build always may (a recorder can be
/// installed at any time, and nothing tells cheaply whether one is); a `tracing`-only build when
/// the current level lets the operations' `DEBUG` spans through. Otherwise their spans would be
/// disabled, and building them, reading the clock for their timings and wrapping the call cost
/// a lock cycle about 2.5 % of its rate for nothing (BENCHMARKS.md run 19). The level is the
/// highest any subscriber in the process takes (scoped ones included), so a `true` may be for
/// another thread's subscriber: then the work is done for nothing, never left out for one that
/// wants it.
#[inline]
pub(crate) fn watched() -> bool {
    cfg!(feature = "metrics") || tracing_watches()
}

#[cfg(feature = "tracing")]
#[inline]
fn tracing_watches() -> bool {
    // What `tracing`'s own macros check first, spelt with its public items.
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    tracing::Level::DEBUG <= STATIC_MAX_LEVEL && tracing::Level::DEBUG <= LevelFilter::current()
}

#[cfg(not(feature = "tracing"))]
#[inline]
fn tracing_watches() -> bool {
    false
}

/// One lock, extend, release or check call: its span, and when it started.
pub(crate) struct Op<'a> {
    kind: Kind,
    clock: &'a dyn Clock,
    start: Duration,
    /// The lock an extend reads its new validity from.
    shared: Option<&'a LockShared>,
    #[cfg(feature = "tracing")]
    span: Span,
}

/// What a successful call tells about validity, for its span.
pub(crate) trait Observed {
    /// The validity granted (acquire, extend) or left (check).
    fn validity(&self, op: &Op<'_>) -> Option<Duration>;
}

impl Observed for Lock {
    fn validity(&self, _: &Op<'_>) -> Option<Duration> {
        Some(Lock::validity(self))
    }
}

impl Observed for () {
    fn validity(&self, op: &Op<'_>) -> Option<Duration> {
        let shared = op.shared.filter(|_| op.kind == Kind::Extend)?;
        Some(shared.state().lease.validity())
    }
}

impl Observed for Duration {
    fn validity(&self, _: &Op<'_>) -> Option<Duration> {
        Some(*self)
    }
}

impl<'a> Op<'a> {
    /// A lock call (`lock`, `try_lock`, `lock_opts`, and through them `lock_auto` and
    /// `with_lock`), once its arguments were found valid.
    pub(crate) fn acquire(
        clock: &'a dyn Clock,
        resource: &[u8],
        token: &[u8],
        ttl: Duration,
    ) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = (resource, token, ttl);
        Self {
            kind: Kind::Acquire,
            clock,
            start: clock.now(),
            shared: None,
            #[cfg(feature = "tracing")]
            span: tracing::debug_span!(
                "redlock.lock",
                resource = %Resource(resource),
                token = %Token(token),
                ttl_ms = millis(ttl),
                attempts = Empty,
                outcome = Empty,
                reason = Empty,
                elapsed_us = Empty,
                validity_ms = Empty,
                instances = Empty,
            ),
        }
    }

    /// An extend round, explicit or a renewal.
    pub(crate) fn extend(clock: &'a dyn Clock, shared: &'a LockShared, ttl: Duration) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = ttl;
        Self {
            kind: Kind::Extend,
            clock,
            start: clock.now(),
            shared: Some(shared),
            #[cfg(feature = "tracing")]
            span: tracing::debug_span!(
                "redlock.extend",
                resource = %Resource(&shared.resource),
                token = %Token(&shared.token),
                ttl_ms = millis(ttl),
                outcome = Empty,
                reason = Empty,
                elapsed_us = Empty,
                validity_ms = Empty,
                instances = Empty,
            ),
        }
    }

    /// A release.
    pub(crate) fn release(clock: &'a dyn Clock, shared: &'a LockShared) -> Self {
        Self {
            kind: Kind::Release,
            clock,
            start: clock.now(),
            shared: Some(shared),
            #[cfg(feature = "tracing")]
            span: tracing::debug_span!(
                "redlock.release",
                resource = %Resource(&shared.resource),
                token = %Token(&shared.token),
                outcome = Empty,
                reason = Empty,
                elapsed_us = Empty,
                instances = Empty,
            ),
        }
    }

    /// A check of a held lock.
    pub(crate) fn check(clock: &'a dyn Clock, shared: &'a LockShared) -> Self {
        Self {
            kind: Kind::Check,
            clock,
            start: clock.now(),
            shared: Some(shared),
            #[cfg(feature = "tracing")]
            span: tracing::debug_span!(
                "redlock.check",
                resource = %Resource(&shared.resource),
                token = %Token(&shared.token),
                outcome = Empty,
                reason = Empty,
                elapsed_us = Empty,
                remaining_ms = Empty,
                instances = Empty,
            ),
        }
    }

    /// Runs `call` in this operation's span and records its outcome when it ends, or
    /// `cancelled` when it is dropped before.
    pub(crate) fn finish<T, F>(self, call: F) -> impl Future<Output = Result<T, Error>> + 'a
    where
        T: Observed + 'a,
        F: Future<Output = Result<T, Error>> + 'a,
    {
        #[cfg(feature = "tracing")]
        let span = self.span.clone();
        // A combinator, not an `async` block that awaits `call`: such a block keeps `call` twice
        // in its state (as captured and as awaited), which doubled the size of every lock and
        // release future (`lock`: 4 336 bytes, 2 232 with the combinator) and cost 3-5 % of the
        // throughput of short lock cycles on one thread (BENCHMARKS.md run 17).
        // Dropped before it ends, the closure drops the guard, which records `cancelled`.
        let mut pending = Unfinished(Some(self));
        let run = futures::FutureExt::map(call, move |result| {
            if let Some(op) = pending.0.take() {
                let validity = result.as_ref().ok().and_then(|v| v.validity(&op));
                op.done(result.as_ref().map(|_| validity));
            }
            result
        });
        #[cfg(feature = "tracing")]
        let run = tracing::Instrument::instrument(run, span);
        run
    }

    /// Records the outcome: `Ok` with the validity to show, `Err` with the error, `None` when
    /// the call was dropped.
    fn done(self, result: Result<Option<Duration>, &Error>) {
        let elapsed = self.clock.now().saturating_sub(self.start);
        let outcome = match result {
            Ok(_) => self.kind.succeeded(),
            Err(e) => labels::error(e),
        };
        self.record(outcome, elapsed, result);
    }

    fn cancelled(self) {
        let elapsed = self.clock.now().saturating_sub(self.start);
        self.record("cancelled", elapsed, Ok(None));
    }

    fn record(
        &self,
        outcome: &'static str,
        elapsed: Duration,
        result: Result<Option<Duration>, &Error>,
    ) {
        #[cfg(feature = "tracing")]
        {
            let span = &self.span;
            span.record("outcome", outcome);
            span.record("elapsed_us", micros(elapsed));
            match result {
                Ok(Some(validity)) if self.kind == Kind::Check => {
                    span.record("remaining_ms", millis(validity));
                }
                Ok(Some(validity)) => {
                    span.record("validity_ms", millis(validity));
                }
                Ok(None) => {}
                Err(e) => {
                    if let Error::Lost(loss) = e {
                        span.record("reason", labels::reason(loss.reason));
                    }
                    if let Some(failure) = e.failure() {
                        span.record("instances", display(Instances(failure)));
                    }
                }
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = result;
        #[cfg(feature = "metrics")]
        if self.kind == Kind::Acquire {
            metrics::counter!(name::ACQUISITIONS, "outcome" => outcome).increment(1);
            metrics::histogram!(name::ACQUIRE_SECONDS, "outcome" => outcome)
                .record(elapsed.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (outcome, elapsed);
    }
}

/// Records `cancelled` for an operation whose future is dropped before it ends.
struct Unfinished<'a>(Option<Op<'a>>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(op) = self.0.take() {
            op.cancelled();
        }
    }
}

/// One acquire attempt (round) ended; `made` counts the attempts of this call so far.
pub(crate) fn attempt(made: u32, granted: &Result<Lease, Rejected>) {
    let outcome = match granted {
        Ok(_) => "acquired",
        Err(rejected) => match rejected.verdict {
            Verdict::Quorum => "validity_expired",
            Verdict::Refused => "contended",
            Verdict::Undecided => "unavailable",
        },
    };
    #[cfg(feature = "tracing")]
    {
        // Into the operation's span, which exists only when watched: otherwise the current
        // span is the caller's own.
        if tracing_watches() {
            Span::current().record("attempts", made);
        }
        // Not gated: `tracing`'s `log` feature emits it as a log record with no subscriber.
        if let Err(rejected) = granted {
            tracing::debug!(
                attempt = made,
                outcome,
                instances = %Instances(&rejected.failure),
                "acquire attempt failed"
            );
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = made;
    #[cfg(feature = "metrics")]
    metrics::counter!(name::ATTEMPTS, "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// A waiting call took a quorum of hand-offs on `instances` instances as its acquisition, after
/// `made` attempts of its own.
pub(crate) fn handed_over(made: u32, instances: usize) {
    #[cfg(feature = "tracing")]
    {
        if tracing_watches() {
            Span::current().record("attempts", made);
        }
        tracing::debug!(attempt = made, instances, "acquired by hand-off");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (made, instances);
    #[cfg(feature = "metrics")]
    metrics::counter!(name::HANDED_OVER).increment(1);
}

/// Fair mode: this acquire steps aside until `until` for a waiter of `resource`.
pub(crate) fn fair_yield(clock: &dyn Clock, resource: &[u8], until: Duration) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        resource = %Resource(resource),
        wait_ms = millis(until.saturating_sub(clock.now())),
        "fair mode: letting a waiter go first"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (clock, resource, until);
    #[cfg(feature = "metrics")]
    metrics::counter!(name::FAIR_YIELDS).increment(1);
}

/// `shared` was held until now and is lost. Called once per lock.
pub(crate) fn lost(shared: &LockShared, reason: LossReason, failure: Option<&Failure>) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        resource = %Resource(&shared.resource),
        token = %Token(&shared.token),
        reason = labels::reason(reason),
        instances = failure.map(|f| display(Instances(f))),
        "lock lost"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (shared, failure);
    #[cfg(feature = "metrics")]
    metrics::counter!(name::LOSSES, "reason" => labels::reason(reason)).increment(1);
}

/// A release ended with `result`; `was_held`: the lock was held until the release marked it
/// released (so a loss it reports was not reported before).
pub(crate) fn released(shared: &LockShared, was_held: bool, result: &Result<(), Error>) {
    if let (true, Err(Error::Lost(loss))) = (was_held, result) {
        lost(shared, loss.reason, loss.failure.as_deref());
    }
}

/// A renewal round of `keep_alive` ended with `renewed`.
pub(crate) fn renewal(shared: &LockShared, renewed: &Result<(), Error>) {
    let Err(e) = renewed else { return };
    if matches!(e, Error::Released | Error::Closed) {
        return;
    }
    #[cfg(feature = "tracing")]
    tracing::warn!(
        resource = %Resource(&shared.resource),
        token = %Token(&shared.token),
        outcome = labels::error(e),
        retrying = e.is_retryable(),
        error = %e,
        "lock renewal failed"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = shared;
    #[cfg(feature = "metrics")]
    metrics::counter!(name::RENEWAL_FAILURES, "error" => labels::error(e)).increment(1);
}

/// The background renewal of `lock_auto` ended with `result`, which nobody awaits.
pub(crate) fn background_renewal_ended(shared: &LockShared, result: &Result<(), Error>) {
    #[cfg(feature = "tracing")]
    match result {
        Ok(()) => {}
        Err(e @ Error::Closed) => tracing::debug!(
            resource = %Resource(&shared.resource),
            token = %Token(&shared.token),
            error = %e,
            "background renewal stopped"
        ),
        Err(e) => tracing::warn!(
            resource = %Resource(&shared.resource),
            token = %Token(&shared.token),
            outcome = labels::error(e),
            error = %e,
            "background renewal stopped"
        ),
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (shared, result);
}

/// A round ended with `outcomes`, one per instance in configuration order.
pub(crate) fn round(instances: &[Arc<dyn LockBackend>], outcomes: &[InstanceOutcome]) {
    for (backend, outcome) in instances.iter().zip(outcomes) {
        let Some(kind) = labels::instance_error(outcome) else {
            continue;
        };
        #[cfg(feature = "tracing")]
        tracing::debug!(
            instance = backend.id(),
            kind,
            error = match outcome {
                InstanceOutcome::Failed(e) => Some(display(e)),
                _ => None,
            },
            "instance gave no answer"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!(
            name::INSTANCE_ERRORS,
            "instance" => backend.id().to_owned(),
            "kind" => kind
        )
        .increment(1);
    }
}

#[cfg(feature = "tracing")]
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(feature = "tracing")]
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// An instance's connection was made again: `locks` held locks are re-checked there.
pub(crate) fn reconnected(instance: &str, locks: usize) {
    #[cfg(feature = "tracing")]
    tracing::info!(instance, locks, "reconnected: re-checking held locks");
    #[cfg(not(feature = "tracing"))]
    let _ = (instance, locks);
}
