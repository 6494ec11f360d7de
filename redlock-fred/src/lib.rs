//! Redis and Sentinel backend for `redlock-core` on the `fred` client, and the core's runtime
//! traits on tokio.

mod runtime;

pub use runtime::{TokioClock, TokioSpawner};
