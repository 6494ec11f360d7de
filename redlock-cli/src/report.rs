//! Library errors as one line each, with the per-instance reasons, and the exit status for each.

use std::fmt::Write as _;

use redlock_core::{Error, Failure as Round, InstanceOutcome};

use crate::exit::{self, Failure};

/// `e` on one line, followed by what each instance did in the last round, if there was one.
pub fn error_text(e: &Error) -> String {
    let mut text = e.to_string();
    if let Some(round) = e.failure() {
        let _ = write!(text, " ({})", instances_text(round));
    }
    text
}

/// `quorum 2 of 3: 10.0.0.1:6379 refused; 10.0.0.2:6379 timed out; ...`
pub fn instances_text(round: &Round) -> String {
    let mut text = format!("quorum {} of {}", round.quorum, round.instances.len());
    for (i, report) in round.instances.iter().enumerate() {
        text.push_str(if i == 0 { ": " } else { "; " });
        let outcome = outcome_text(&report.outcome);
        let outcome = without_id(&report.instance, &outcome);
        let _ = write!(text, "{} {outcome}", report.instance);
    }
    text
}

fn outcome_text(outcome: &InstanceOutcome) -> String {
    match outcome {
        InstanceOutcome::Succeeded => "ok".into(),
        InstanceOutcome::Refused => "refused".into(),
        InstanceOutcome::Failed(e) => format!("failed: {}", with_causes(e)),
        InstanceOutcome::TimedOut => "timed out".into(),
        InstanceOutcome::NotAwaited => "not awaited".into(),
        _ => "unknown outcome".into(),
    }
}

/// `e`, then each of its causes after a colon: a backend's message says what it was doing, its
/// cause why it failed.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            let _ = write!(text, ": {more}");
        }
        cause = c.source();
    }
    text
}

/// `text` without the `ID: ` a backend puts before its messages, when it comes next to the id.
pub fn without_id(id: &str, text: &str) -> String {
    text.replace(&format!("{id}: "), "")
}

/// The exit status and message for a library error met by `what` (e.g. `cannot lock "x"`).
pub fn failure(what: &str, e: &Error) -> Failure {
    let status = match e {
        Error::InvalidInput(_) => exit::USAGE,
        Error::Contended(_) => exit::NOT_ACQUIRED,
        Error::Unavailable(_) | Error::ValidityExpired(_) => exit::UNAVAILABLE,
        Error::Lost(_) => exit::LOST,
        _ => exit::INTERNAL,
    };
    Failure::new(status, format!("{what}: {}", error_text(e)))
}

/// A resource name for messages: quoted, lossy UTF-8.
pub fn quoted(resource: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(resource))
}
