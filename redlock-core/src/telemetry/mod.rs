//! What the manager tells the outside world: spans and events through `tracing` (feature
//! `tracing`), counters and a histogram through `metrics` (feature `metrics`). The names are
//! documented in the crate docs ("Observing it").
//!
//! The manager calls the hooks of this module from a few places. With both features off, `off`
//! provides the same hooks as empty inline functions, and every wrapper hands back the very
//! future it was given: nothing of this is left in the build.

#[cfg(any(feature = "tracing", feature = "metrics"))]
mod labels;
#[cfg(not(any(feature = "tracing", feature = "metrics")))]
mod off;
#[cfg(any(feature = "tracing", feature = "metrics"))]
mod on;
#[cfg(feature = "tracing")]
mod shown;

#[cfg(not(any(feature = "tracing", feature = "metrics")))]
pub(crate) use off::*;
#[cfg(any(feature = "tracing", feature = "metrics"))]
pub(crate) use on::*;

/// Awaits `$call` as operation `$op` (an [`Op`] constructor call) when anything may observe it
/// ([`watched`]), and plainly otherwise: an operation nobody observes neither builds its span nor
/// reads the clock for its timings, and its call future is not wrapped (or moved into a
/// wrapper). `$call` is evaluated once, in the branch taken.
macro_rules! observed {
    ($op:expr, $call:expr) => {
        if $crate::telemetry::watched() {
            $op.finish($call).await
        } else {
            $call.await
        }
    };
}
pub(crate) use observed;
