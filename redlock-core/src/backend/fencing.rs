//! The optional fencing-counter capability of a backend.

use async_trait::async_trait;

use super::BackendError;

/// The reserved prefix of fencing-counter keys: `0xFF` then `redlock-fence:`.
///
/// The counter of a lock key `k` (key prefix + resource name) is `FENCE_KEY_PREFIX ++ k`. The
/// byte `0xFF` never occurs in UTF-8, so no client that names its locks with strings
/// (aioredlock, redlock-py, node-redlock) can use such a key, and the manager refuses any lock
/// key that starts with this prefix, fenced or not.
pub const FENCE_KEY_PREFIX: &[u8] = b"\xffredlock-fence:";

/// The counter key of lock key `key` (see [`FENCE_KEY_PREFIX`]).
#[must_use]
pub fn fence_key(key: &[u8]) -> Vec<u8> {
    let mut counter = Vec::with_capacity(FENCE_KEY_PREFIX.len() + key.len());
    counter.extend_from_slice(FENCE_KEY_PREFIX);
    counter.extend_from_slice(key);
    counter
}

/// Optional capability of a backend: per-resource fencing counters (see
/// [`LockManagerBuilder::fenced`](crate::LockManagerBuilder::fenced)).
///
/// A fenced acquire runs two more rounds after the ordinary one granted the lock: a quorum of
/// [`next_fence`](Self::next_fence) (each instance where the key still holds our token
/// increments its counter), then a quorum of [`raise_fence`](Self::raise_fence) with the
/// largest value seen, before the lock is handed out with that value as its fence.
///
/// # Contract
///
/// 1. **Atomic.** Each method is one atomic step on the instance (one Lua script on Redis).
/// 2. **next_fence** increments `counter` by one and returns the new value **only if** `key`
///    holds exactly `token` (and has not expired); otherwise it changes nothing and returns
///    `Ok(None)`. An absent counter counts as 0.
/// 3. **raise_fence** sets `counter = max(counter, value)` and returns the counter afterwards:
///    it never lowers a counter. An absent counter counts as 0.
/// 4. **No expiry.** Counters are created without a time to live, and neither method sets one
///    (a counter that expired would restart at 0 and break monotonicity).
/// 5. **Wrong type.** When `key` or `counter` holds a value of another type (application data),
///    the call returns `Err` of kind [`WrongType`](super::BackendErrorKind::WrongType) and
///    changes nothing. A counter holding a string that is not a decimal `u64` is an `Err` too
///    (any kind), with nothing changed.
/// 6. **Readable.** A counter is an ordinary string key holding its value in decimal ASCII, so
///    [`LockBackend::inspect`](super::LockBackend::inspect) reads it: the manager reads the
///    counters of the instances that gave no increment and draws the fence above them.
/// 7. The rules of [`LockBackend`](super::LockBackend) 7 to 12 apply (bytes, "no" is not an
///    error, on its way after the first poll, one attempt per call).
///
/// The monotonicity of the fences the manager hands out rests on the counters never going
/// back: an instance that loses them (a restart without persistence, even a delayed one) can
/// hand out a fence again. See the crate docs, "Fencing tokens".
#[async_trait]
pub trait Fencing: Send + Sync {
    /// If `key` holds `token`: increments `counter` and returns the new value; otherwise
    /// `None`, nothing changed.
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer, or a key holds a value of another
    /// type.
    async fn next_fence(
        &self,
        key: &[u8],
        token: &[u8],
        counter: &[u8],
    ) -> Result<Option<u64>, BackendError>;

    /// `counter = max(counter, value)`; returns the counter afterwards.
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer, or the counter holds a value of
    /// another type.
    async fn raise_fence(&self, counter: &[u8], value: u64) -> Result<u64, BackendError>;
}
