//! One round: the same call sent concurrently to every instance, bounded by one timer, and
//! counted against the quorum.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::backend::{BackendError, LockBackend};
use crate::error::{Failure, InstanceOutcome, InstanceReport};
use crate::gate::{Gate, Gated};
use crate::runtime::Clock;

thread_local! {
    /// Set while a round polls one of its calls.
    static IN_ROUND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the code running now is a backend call being polled by a manager's round.
///
/// A round bounds every call it polls by its time limit (at most the per-instance timeout) and
/// drops the call then, so a backend may leave out its own per-call timer for a call whose
/// **first poll** sees `true`: the timer would fire only after the round stopped waiting
/// anyway. Such a call must still meet the rest of the contract: once polled, it is on its way
/// even if dropped (rule 9), and a request dropped before it was written is not written later
/// (rule 10), so a call dropped early must still end by its backend's own deadline. A call
/// first polled anywhere else (a direct call, a task of a decorator's own) sees `false` and
/// must bound itself.
///
/// The round measures its limit on the manager's [`Clock`](crate::Clock): a backend that talks
/// to a real server and leaves its calls to the round relies on that clock following real time
/// (as the tokio and smol clocks do; a simulated clock that stands still would leave such a
/// call waiting). This is a hint for performance only; ignoring it is always correct.
#[must_use]
pub fn polled_by_round() -> bool {
    IN_ROUND.with(std::cell::Cell::get)
}

/// Polls `fut` with [`polled_by_round`] true, restoring the previous value after (also when the
/// poll panics).
fn poll_in_round<F: Future + Unpin>(
    fut: &mut F,
    cx: &mut std::task::Context<'_>,
) -> Poll<F::Output> {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_ROUND.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(IN_ROUND.with(|flag| flag.replace(true)));
    Pin::new(fut).poll(cx)
}

/// When a round may stop waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// As soon as the verdict can no longer change (acquire, extend, queries).
    UntilDecided,
    /// For every instance, up to the time limit (release: no reachable instance may keep the
    /// token once the call returns).
    ForAll,
    /// As soon as a quorum said yes; otherwise for every instance, up to the time limit (the
    /// acquire of a manager whose hand-offs are grants: a refused attempt then knows which
    /// instances said no, and cleans up only where a key may have been set, so that its
    /// hand-offs from the others stay trustworthy).
    UntilGranted,
}

/// How the calls of a round pass the per-instance gates.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Gating<'a> {
    /// Not gated (subscriptions: not commands in the lock's path).
    Off,
    /// Held back at the in-flight limit; `sent` (when given) is set once any call went out.
    Limit(&'a [Gate], Option<&'a AtomicBool>),
    /// Counted but never held back (releases, see [`gate`](crate::gate)).
    Always(&'a [Gate]),
}

/// The verdict of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// At least a quorum said yes.
    Quorum,
    /// So many said no that a quorum of yes is impossible.
    Refused,
    /// Neither: failures and timeouts leave the question open.
    Undecided,
}

/// The answers of one round.
#[derive(Debug)]
pub(crate) struct Round<T> {
    /// Per instance, in configuration order: the answer, when one came.
    pub(crate) answers: Vec<Option<Result<T, BackendError>>>,
    outcomes: Vec<InstanceOutcome>,
    pub(crate) yes: usize,
    no: usize,
    quorum: usize,
    /// From the start of the round to the moment it stopped waiting.
    pub(crate) elapsed: Duration,
}

impl<T> Round<T> {
    pub(crate) fn verdict(&self) -> Verdict {
        verdict(self.yes, self.no, self.outcomes.len(), self.quorum)
    }

    pub(crate) fn into_failure(self, attempts: u32, instances: &[Arc<dyn LockBackend>]) -> Failure {
        Failure {
            resource: None,
            attempts,
            quorum: self.quorum,
            instances: instances
                .iter()
                .zip(self.outcomes)
                .map(|(b, outcome)| InstanceReport {
                    instance: b.id().to_owned(),
                    outcome,
                })
                .collect(),
            elapsed: self.elapsed,
        }
    }
}

/// The smallest majority of `n`.
pub(crate) const fn quorum(n: usize) -> usize {
    n / 2 + 1
}

fn verdict(yes: usize, no: usize, n: usize, quorum: usize) -> Verdict {
    if yes >= quorum {
        Verdict::Quorum
    } else if no > n - quorum {
        Verdict::Refused
    } else {
        Verdict::Undecided
    }
}

/// Whether the answers still missing could change the verdict.
fn decided(yes: usize, no: usize, failed: usize, n: usize, quorum: usize) -> bool {
    let pending = n - yes - no - failed;
    let can_reach_quorum = yes + pending >= quorum;
    let can_be_refused = no + pending > n - quorum;
    match verdict(yes, no, n, quorum) {
        Verdict::Quorum | Verdict::Refused => true,
        Verdict::Undecided => !can_reach_quorum && !can_be_refused,
    }
}

/// Which instances a round asks: bit `i` for instance `i`. Rounds over more than 64 instances
/// ask every one (a cleanup may then ask more than it needs to, never fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask(u64);

impl Ask {
    pub(crate) const ALL: Self = Self(u64::MAX);

    /// No instance yet.
    pub(crate) const fn none() -> Self {
        Self(0)
    }

    /// Adds instance `i`.
    pub(crate) fn with(self, i: usize) -> Self {
        match u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i)) {
            Some(bit) => Self(self.0 | bit),
            None => Self::ALL,
        }
    }

    pub(crate) fn contains(self, i: usize) -> bool {
        match u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i)) {
            Some(bit) => self.0 & bit != 0,
            None => self == Self::ALL,
        }
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The instances in either set.
    #[must_use]
    pub(crate) fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Sends `call` to every instance at once and collects the answers for at most `limit`.
///
/// `is_yes` classifies an answer. Calls still running when the round stops are dropped: a
/// backend must not write an abandoned request later (see the contract), and the manager's
/// follow-up rounds (release after a failed acquire) reach every instance anyway.
pub(crate) fn run<'a, T, C, F, Y>(
    instances: &'a [Arc<dyn LockBackend>],
    gating: Gating<'a>,
    clock: &'a dyn Clock,
    limit: Duration,
    wait: Wait,
    call: C,
    is_yes: Y,
) -> RoundOnly<'a, T, C, F, Y>
where
    C: Fn(&'a Arc<dyn LockBackend>) -> F,
    F: Future<Output = Result<T, BackendError>> + Unpin,
    Y: Fn(&T) -> bool,
{
    let round: fn(Kept<T, F>) -> Round<T> = |kept| kept.round;
    run_keep(
        instances,
        gating,
        clock,
        limit,
        wait,
        Ask::ALL,
        call,
        is_yes,
    )
    .map(round)
}

/// What [`run`] returns: a round that yields its answers alone.
pub(crate) type RoundOnly<'a, T, C, F, Y> =
    futures::future::Map<RoundFuture<'a, T, C, F, Y>, fn(Kept<T, F>) -> Round<T>>;

/// What [`run_keep`] returns.
pub(crate) struct Kept<T, F> {
    pub(crate) round: Round<T>,
    /// The calls still running when the round stopped waiting.
    pub(crate) running: Vec<F>,
    /// The round's timer (ending at its limit), when it made one: the running calls are bounded
    /// by the same limit, and another timer would cost a registration with the runtime.
    pub(crate) timer: Option<BoxFuture<'static, ()>>,
}

/// [`run`] over the instances in `ask` only (the others count as not awaited), returning also
/// the calls still running when it stopped waiting, for the caller to finish or drop.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_keep<'a, T, C, F, Y>(
    instances: &'a [Arc<dyn LockBackend>],
    gating: Gating<'a>,
    clock: &'a dyn Clock,
    limit: Duration,
    wait: Wait,
    ask: Ask,
    call: C,
    is_yes: Y,
) -> RoundFuture<'a, T, C, F, Y>
where
    C: Fn(&'a Arc<dyn LockBackend>) -> F,
    F: Future<Output = Result<T, BackendError>> + Unpin,
    Y: Fn(&T) -> bool,
{
    RoundFuture {
        instances,
        gating,
        clock,
        limit,
        wait,
        ask,
        call,
        is_yes,
        state: State::Unpolled,
    }
}

/// A round in progress (see [`run_keep`]). Written out by hand rather than as an `async fn`:
/// that one kept its arguments and its locals twice over, and every lock and release call
/// carries a round's state (allocated and copied with the call's future).
#[must_use = "a round sends nothing until it is polled"]
pub(crate) struct RoundFuture<'a, T, C, F, Y> {
    instances: &'a [Arc<dyn LockBackend>],
    gating: Gating<'a>,
    clock: &'a dyn Clock,
    limit: Duration,
    wait: Wait,
    ask: Ask,
    call: C,
    is_yes: Y,
    state: State<'a, T, F>,
}

enum State<'a, T, F> {
    /// The calls are made at the first poll, as the start of the round is read then.
    Unpolled,
    Waiting(Waiting<'a, T, F>),
    Done,
}

/// What a round keeps between polls.
struct Waiting<'a, T, F> {
    start: Duration,
    answers: Vec<Option<Result<T, BackendError>>>,
    outcomes: Vec<InstanceOutcome>,
    calls: Vec<Option<Gated<'a, F>>>,
    yes: usize,
    no: usize,
    failed: usize,
    pending: usize,
    /// Made at the first sweep that leaves calls waiting: rounds that complete at once (an
    /// in-memory backend) need no timer.
    timer: Option<BoxFuture<'static, ()>>,
}

// Nothing in a round is ever pinned in place: the calls are `Unpin` and polled through
// `Pin::new`, the closures are only called.
impl<T, C, F, Y> Unpin for RoundFuture<'_, T, C, F, Y> {}

impl<'a, T, C, F, Y> Future for RoundFuture<'a, T, C, F, Y>
where
    C: Fn(&'a Arc<dyn LockBackend>) -> F,
    F: Future<Output = Result<T, BackendError>> + Unpin,
    Y: Fn(&T) -> bool,
{
    type Output = Kept<T, F>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Kept<T, F>> {
        let this = self.get_mut();
        if matches!(this.state, State::Unpolled) {
            this.state = State::Waiting(this.start());
        }
        let State::Waiting(round) = &mut this.state else {
            panic!("a round polled after it returned");
        };
        let n = this.instances.len();
        let quorum = quorum(n);
        // Every pending call is polled on every wake-up, in the caller's task: the first sweep
        // polls each call once before any verdict (a call is on its way after its first poll,
        // see the backend contract), so a round decided early never leaves an instance
        // unasked. N is small, so sweeping beats a `FuturesUnordered` (no allocation per call,
        // and that one returns at the first completion, before it polled the rest).
        let sent_flag = match this.gating {
            Gating::Limit(_, sent) => sent,
            _ => None,
        };
        for (i, slot) in round.calls.iter_mut().enumerate() {
            let Some(fut) = slot else { continue };
            let polled = poll_in_round(fut, cx);
            if let Some(flag) = sent_flag.filter(|_| fut.sent()) {
                flag.store(true, Ordering::Relaxed);
            }
            let Poll::Ready(answer) = polled else {
                continue;
            };
            *slot = None;
            round.pending -= 1;
            round.outcomes[i] = match &answer {
                Ok(v) if (this.is_yes)(v) => {
                    round.yes += 1;
                    InstanceOutcome::Succeeded
                }
                Ok(_) => {
                    round.no += 1;
                    InstanceOutcome::Refused
                }
                Err(e) => {
                    round.failed += 1;
                    InstanceOutcome::Failed(e.clone())
                }
            };
            round.answers[i] = Some(answer);
        }
        let stop = match this.wait {
            Wait::UntilDecided => decided(round.yes, round.no, round.failed, n, quorum),
            Wait::UntilGranted => round.yes >= quorum,
            Wait::ForAll => false,
        };
        if round.pending == 0 || stop {
            return Poll::Ready(this.finish(false));
        }
        let timer = match &mut round.timer {
            Some(timer) => timer,
            None => {
                let now = this.clock.now();
                let left = this.limit.saturating_sub(now.saturating_sub(round.start));
                // A limit already reached (a round cut at a deadline that has come) waits for
                // nothing: not even one turn of a timer.
                if left.is_zero() {
                    return Poll::Ready(this.finish(true));
                }
                round.timer.insert(this.clock.sleep(left))
            }
        };
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(this.finish(true));
        }
        Poll::Pending
    }
}

impl<'a, T, C, F, Y> RoundFuture<'a, T, C, F, Y>
where
    C: Fn(&'a Arc<dyn LockBackend>) -> F,
    F: Future<Output = Result<T, BackendError>> + Unpin,
{
    /// The round's start: every call made (none sent before its first poll).
    fn start(&self) -> Waiting<'a, T, F> {
        let n = self.instances.len();
        let start = self.clock.now();
        let gating = self.gating;
        let calls: Vec<_> = self
            .instances
            .iter()
            .enumerate()
            .map(|(i, backend)| {
                let gated = |fut| match gating {
                    Gating::Off => Gated::new(None, fut),
                    Gating::Limit(gates, _) => Gated::new(gates.get(i), fut),
                    Gating::Always(gates) => Gated::always(gates.get(i), fut),
                };
                self.ask.contains(i).then(|| gated((self.call)(backend)))
            })
            .collect();
        let pending = calls.iter().filter(|c| c.is_some()).count();
        Waiting {
            start,
            answers: (0..n).map(|_| None).collect(),
            outcomes: vec![InstanceOutcome::NotAwaited; n],
            calls,
            yes: 0,
            no: 0,
            // Instances not asked can neither say yes nor no: for the verdict they are
            // failures.
            failed: n - pending,
            pending,
            timer: None,
        }
    }

    /// The round's result, once it stopped waiting (`timed_out`: at its limit).
    fn finish(&mut self, timed_out: bool) -> Kept<T, F> {
        let State::Waiting(round) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("finish is called from a waiting round only");
        };
        let Waiting {
            start,
            answers,
            mut outcomes,
            calls,
            yes,
            no,
            timer,
            ..
        } = round;
        if timed_out {
            for ((outcome, answer), call) in outcomes.iter_mut().zip(&answers).zip(&calls) {
                // A call still here was asked and did not answer; a slot emptied without an
                // answer was never asked.
                if let (None, Some(call)) = (answer, call) {
                    *outcome = if call.sent() {
                        InstanceOutcome::TimedOut
                    } else {
                        InstanceOutcome::Saturated
                    };
                }
            }
        }
        crate::telemetry::round(self.instances, &outcomes);
        let running = calls.into_iter().flatten().map(Gated::into_inner).collect();
        Kept {
            round: Round {
                answers,
                outcomes,
                yes,
                no,
                quorum: quorum(self.instances.len()),
                elapsed: self.clock.now().saturating_sub(start),
            },
            running,
            // A timer that fired is finished: polling it again breaks the `Future` contract
            // (some clocks' sleeps panic, others never wake again).
            timer: if timed_out { None } else { timer },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_know_they_are_polled_by_a_round_and_nothing_else_does() {
        assert!(!polled_by_round());
        let seen = std::sync::Mutex::new(Vec::new());
        let mut call = futures::future::poll_fn(|_| {
            seen.lock().unwrap().push(polled_by_round());
            Poll::Ready(())
        });
        assert!(poll_in_round(
            &mut call,
            &mut std::task::Context::from_waker(std::task::Waker::noop())
        )
        .is_ready());
        assert_eq!(*seen.lock().unwrap(), [true]);
        // Restored after the poll, also after one that panicked.
        assert!(!polled_by_round());
        let mut panics = futures::future::poll_fn(|_| -> Poll<()> { panic!("a call that panics") });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = poll_in_round(
                &mut panics,
                &mut std::task::Context::from_waker(std::task::Waker::noop()),
            );
        }));
        assert!(caught.is_err());
        assert!(!polled_by_round());
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        let expected = [1, 2, 2, 3, 3, 4, 4, 5, 5];
        for (n, q) in (1..=9).zip(expected) {
            assert_eq!(quorum(n), q, "N = {n}");
        }
    }

    #[test]
    fn verdicts() {
        // N = 4, quorum 3: a 2-2 split is refused (no one can reach 3).
        assert_eq!(verdict(2, 2, 4, 3), Verdict::Refused);
        assert_eq!(verdict(3, 1, 4, 3), Verdict::Quorum);
        assert_eq!(verdict(2, 1, 4, 3), Verdict::Undecided);
        // N = 5: two yes, two no, one failure: the failure decided it.
        assert_eq!(verdict(2, 2, 5, 3), Verdict::Undecided);
    }

    #[test]
    fn decided_as_soon_as_the_missing_answers_cannot_matter() {
        // N = 5, quorum 3.
        assert!(!decided(2, 0, 0, 5, 3));
        assert!(decided(3, 0, 0, 5, 3));
        assert!(decided(0, 3, 0, 5, 3));
        // Two failures and one no: the other two could still be two no (refused).
        assert!(!decided(0, 1, 2, 5, 3));
        // Three failures: neither quorum nor refusal possible any more.
        assert!(decided(0, 0, 3, 5, 3));
        assert!(decided(2, 2, 1, 5, 3));
    }
}
