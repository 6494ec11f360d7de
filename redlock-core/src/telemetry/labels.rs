//! The words used for outcomes, reasons and error kinds, in span fields and metric labels
//! alike. Each match is exhaustive (these enums are only non-exhaustive outside this crate), so
//! a new variant cannot go out without its label; the table in the crate docs lists them all.

use crate::backend::BackendErrorKind;
use crate::error::{Error, InstanceOutcome, LossReason};

/// The outcome of a failed operation.
pub(super) fn error(e: &Error) -> &'static str {
    match e {
        Error::InvalidInput(_) => "invalid_input",
        Error::Contended(_) => "contended",
        Error::Unavailable(_) => "unavailable",
        Error::ValidityExpired(_) => "validity_expired",
        Error::Lost(_) => "lost",
        Error::Released => "already_released",
        Error::Closed => "closed",
    }
}

pub(super) fn reason(r: LossReason) -> &'static str {
    match r {
        LossReason::Expired => "expired",
        LossReason::NotHeld => "not_held",
        LossReason::InstancesLost => "instances_lost",
    }
}

pub(super) fn kind(k: BackendErrorKind) -> &'static str {
    match k {
        BackendErrorKind::Connection => "connection",
        BackendErrorKind::Timeout => "timeout",
        BackendErrorKind::WrongType => "wrong_type",
        BackendErrorKind::Server => "server",
        BackendErrorKind::Auth => "auth",
        BackendErrorKind::Incompatible => "incompatible",
        BackendErrorKind::Protocol => "protocol",
        BackendErrorKind::Closed => "closed",
        BackendErrorKind::Other => "other",
    }
}

/// What one instance did in a round; `None` for an answer, yes or no.
pub(super) fn instance_error(o: &InstanceOutcome) -> Option<&'static str> {
    match o {
        InstanceOutcome::Succeeded | InstanceOutcome::Refused | InstanceOutcome::NotAwaited => None,
        InstanceOutcome::Failed(e) => Some(kind(e.kind())),
        InstanceOutcome::TimedOut => Some("timed_out"),
        InstanceOutcome::Saturated => Some("saturated"),
    }
}

/// What one instance did in a round, for a span field.
#[cfg(feature = "tracing")]
pub(super) fn instance(o: &InstanceOutcome) -> &'static str {
    match o {
        InstanceOutcome::Succeeded => "succeeded",
        InstanceOutcome::Refused => "refused",
        InstanceOutcome::NotAwaited => "not_awaited",
        other => instance_error(other).unwrap_or("other"),
    }
}
