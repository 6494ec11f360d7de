//! Connection events of one backend, through `tracing` (feature `tracing`) and `metrics`
//! (feature `metrics`). Without either feature these functions are empty.

/// A connection came up; `earlier` is how many came up before it on this backend (a
/// reconnection when above zero).
#[inline]
pub(crate) fn connected(instance: &str, earlier: u64) {
    #[cfg(feature = "tracing")]
    if earlier == 0 {
        tracing::debug!(instance, "connected");
    } else {
        tracing::info!(instance, reconnections = earlier, "reconnected");
    }
    #[cfg(feature = "metrics")]
    if earlier > 0 {
        metrics::counter!("redlock_backend_reconnects_total", "instance" => instance.to_owned())
            .increment(1);
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (instance, earlier);
}

/// A connection broke (`established`) or an attempt to make one failed; `why` is already free
/// of secrets.
#[inline]
pub(crate) fn failed(instance: &str, established: bool, why: &str) {
    #[cfg(feature = "tracing")]
    if established {
        tracing::warn!(instance, error = why, "connection lost; reconnecting");
    } else {
        tracing::debug!(instance, error = why, "connection attempt failed");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (instance, established, why);
}
