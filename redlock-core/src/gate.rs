//! Backpressure: at most so many calls in flight to one instance from one manager.
//!
//! Under overload a client that sends every call at once queues thousands of requests behind
//! each other in its connection; by the time the last ones are written their callers have given
//! up, every round times out, and the retries add more. A gate lets a call go out only while
//! fewer than the limit are in flight; a call that cannot get through before its round's time
//! limit is never sent (it counts as [`InstanceOutcome::Saturated`](crate::InstanceOutcome)), so
//! a saturated instance sheds load instead of accumulating stale requests.
//!
//! Releases are the exception: they pass at the limit (still counted). A release that is not
//! sent leaves its key standing until the TTL runs out, which is exactly the load and the
//! leftover keys backpressure is meant to prevent; and a release is only ever sent once per
//! acquire attempt or lock, so letting it through cannot grow without bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The in-flight limit of one instance.
#[derive(Debug)]
pub(crate) struct Gate {
    limit: usize,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    in_flight: usize,
    /// Calls waiting for a place, woken one per freed place (in no particular order).
    waiting: Vec<Waker>,
}

impl Gate {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, GateState> {
        // Counters and wakers only: consistent after any panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place, or registers `cx` to be woken when one frees up.
    fn take(&self, cx: &Context<'_>) -> bool {
        let mut state = self.state();
        if state.in_flight < self.limit {
            state.in_flight += 1;
            true
        } else {
            if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiting.push(cx.waker().clone());
            }
            false
        }
    }

    /// Takes a place even at the limit.
    fn take_always(&self) {
        self.state().in_flight += 1;
    }

    fn give_back(&self) {
        let wake = {
            let mut state = self.state();
            state.in_flight = state.in_flight.saturating_sub(1);
            state.waiting.pop()
        };
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// Calls in flight now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.state().in_flight
    }
}

/// A call that goes out only once its gate lets it: the inner future is not polled (so, by the
/// backend contract, nothing is sent) before then.
pub(crate) struct Gated<'g, F> {
    permit: Permit<'g>,
    /// Passes even at the limit (releases, see the module doc).
    always: bool,
    /// Got through the gate (stays true after the call finished).
    passed: bool,
    fut: F,
}

/// A place at the gate, taken or not; given back when dropped.
struct Permit<'g> {
    gate: Option<&'g Gate>,
    holds: bool,
}

impl<'g, F> Gated<'g, F> {
    pub(crate) fn new(gate: Option<&'g Gate>, fut: F) -> Self {
        Self {
            permit: Permit { gate, holds: false },
            always: false,
            passed: false,
            fut,
        }
    }

    /// A call that is counted by `gate` but never held back by it.
    pub(crate) fn always(gate: Option<&'g Gate>, fut: F) -> Self {
        let mut gated = Self::new(gate, fut);
        gated.always = true;
        gated
    }

    /// Whether the call went out (it was polled past its gate at least once).
    pub(crate) fn sent(&self) -> bool {
        self.passed
    }

    /// The call without its place at the gate, to be finished where the round no longer waits
    /// for it: like an abandoned call, it stops counting against the limit.
    pub(crate) fn into_inner(self) -> F {
        let Self { permit, fut, .. } = self;
        drop(permit);
        fut
    }
}

impl<F: Future + Unpin> Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Some(gate) = this.permit.gate {
            if !this.permit.holds && !this.passed {
                if this.always {
                    gate.take_always();
                } else if !gate.take(cx) {
                    return Poll::Pending;
                }
                this.permit.holds = true;
            }
        }
        this.passed = true;
        let out = Pin::new(&mut this.fut).poll(cx);
        if out.is_ready() {
            this.permit.release();
        }
        out
    }
}

impl Permit<'_> {
    fn release(&mut self) {
        if std::mem::take(&mut self.holds) {
            if let Some(gate) = self.gate {
                gate.give_back();
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A call abandoned after it went out still frees its place: the backend bounds it with
        // its own timeout, and the manager no longer waits for it.
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::{pending, ready, FutureExt};

    #[test]
    fn at_most_the_limit_goes_out_and_a_freed_place_is_taken() {
        let gate = Gate::new(2);
        let mut a = Gated::new(Some(&gate), pending::<()>().boxed());
        let mut b = Gated::new(Some(&gate), pending::<()>().boxed());
        let mut c = Gated::new(Some(&gate), ready(7).boxed());
        assert!((&mut a).now_or_never().is_none() && a.sent());
        assert!((&mut b).now_or_never().is_none() && b.sent());
        assert_eq!((&mut c).now_or_never(), None);
        assert!(!c.sent(), "the third waits, unsent");
        assert_eq!(gate.in_flight(), 2);
        drop(a);
        assert_eq!((&mut c).now_or_never(), Some(7));
        assert_eq!(gate.in_flight(), 1, "a finished call gives its place back");
        drop(b);
        assert_eq!(gate.in_flight(), 0);
    }

    #[test]
    fn a_release_passes_at_the_limit_and_is_counted() {
        let gate = Gate::new(1);
        let mut a = Gated::new(Some(&gate), pending::<()>().boxed());
        assert!((&mut a).now_or_never().is_none() && a.sent());
        let mut release = Gated::always(Some(&gate), pending::<()>().boxed());
        assert!((&mut release).now_or_never().is_none());
        assert!(release.sent(), "not held back at the limit");
        assert_eq!(gate.in_flight(), 2);
        let mut c = Gated::new(Some(&gate), ready(1).boxed());
        assert_eq!((&mut c).now_or_never(), None, "a limited call still waits");
        drop((a, release));
        assert_eq!((&mut c).now_or_never(), Some(1));
        assert!(c.sent());
        assert_eq!(gate.in_flight(), 0);
    }
}
