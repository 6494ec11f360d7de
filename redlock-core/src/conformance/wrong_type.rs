//! Rule 8 of the contract for a key that holds application data of another type.

use std::fmt::Debug;

use super::{key, Fixture, LONG};
use crate::backend::{BackendError, BackendErrorKind, LockBackend};

fn expect_wrong_type<T: Debug>(what: &str, result: Result<T, BackendError>) {
    match result {
        Err(e) if e.kind() == BackendErrorKind::WrongType => {}
        Err(e) => panic!("{what} on a key of another type: {e:?}, not WrongType"),
        Ok(v) => panic!("{what} on a key of another type answered {v:?}, not a WrongType error"),
    }
}

/// Every method on a key that holds a value of another type answers `Err` of kind
/// [`WrongType`](BackendErrorKind::WrongType), and the value is left as it was: neither
/// overwritten, deleted, nor given an expiry.
pub async fn another_type_is_an_error_and_left_alone(
    backend: &dyn LockBackend,
    fixture: &dyn Fixture,
    namespace: &[u8],
) {
    let k = key(namespace, b"wrong-type");
    fixture.plant_other_type(&k).await;
    expect_wrong_type("acquire", backend.acquire(&k, b"tok-a", LONG).await);
    expect_wrong_type("extend", backend.extend(&k, b"tok-a", LONG).await);
    expect_wrong_type("release", backend.release(&k, b"tok-a").await);
    expect_wrong_type("inspect", backend.inspect(&k).await);
    if let Some(notify) = backend.release_notify() {
        expect_wrong_type(
            "release_and_notify",
            notify.release_and_notify(&k, b"tok-a").await,
        );
    }
    let intact = fixture.other_type_intact(&k).await;
    fixture.delete(&k).await;
    assert!(intact, "the value of another type was modified");
}
