//! The core's runtime traits on tokio (from `redlock-rt`), and the check that turns a missing
//! runtime into an error saying what this backend needs.
//!
//! fred panics when used outside a tokio runtime, or in one built without its time driver;
//! [`check_context`] finds both before any fred call.

use redlock_rt::tokio::{context, ContextProblem};
pub use redlock_rt::tokio::{TokioClock, TokioSpawner};

/// What is wrong with the calling context, for an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Problem(ContextProblem);

impl Problem {
    pub(crate) fn message(self) -> &'static str {
        match self.0 {
            ContextProblem::NoRuntime => {
                "called outside a tokio runtime: redlock-fred runs on tokio; call it from a task of a tokio runtime built with enable_all() (futures::executor::block_on and other executors cannot drive it)"
            }
            // `ContextProblem` is non-exhaustive: anything else is a runtime without timers too.
            _ => {
                "the tokio runtime has no timer driver: build it with enable_all() (or enable_time() and enable_io())"
            }
        }
    }
}

/// Checks that the calling context can drive fred: a tokio runtime with timers.
pub(crate) fn check_context() -> Result<(), Problem> {
    context().map_err(Problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_says_what_to_do() {
        assert!(check_context()
            .expect_err("no runtime here")
            .message()
            .contains("outside a tokio runtime"));
        let untimed = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let problem = untimed
            .block_on(async { check_context() })
            .expect_err("no timers");
        assert!(problem.message().contains("enable_all"));
    }
}
