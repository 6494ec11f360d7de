//! The in-memory backend meets the LockBackend contract.

use std::sync::Arc;

use redlock_core::{conformance, LockBackend};
use redlock_mock::{MemoryBackend, Simulation};

#[test]
fn memory_backend_passes_the_conformance_suite() {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let backend = MemoryBackend::new("mem-0", Arc::clone(&clock));
    sim.run(conformance::run_all(
        &backend,
        clock.as_ref(),
        b"conformance:",
    ));
    assert!(backend.is_empty(), "the suite cleans up after itself");
}

#[test]
fn a_list_under_the_key_is_a_wrongtype_error() {
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let backend = MemoryBackend::new("mem-0", clock);
    backend.put_list(b"app:data");
    sim.run(async {
        for result in [
            backend
                .acquire(b"app:data", b"t", std::time::Duration::from_secs(1))
                .await,
            backend
                .extend(b"app:data", b"t", std::time::Duration::from_secs(1))
                .await,
            backend.release(b"app:data", b"t").await,
        ] {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), redlock_core::BackendErrorKind::WrongType);
        }
        assert!(backend.inspect(b"app:data").await.is_err());
    });
}
