//! The optional hand-off capability of a backend: waiters queue on the instance, and a release
//! hands the key to the first of them instead of waking every waiter.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use super::BackendError;

/// The reserved prefix of every key the library keeps beside a lock key (fencing counters,
/// hand-off queues): `0xFF` then `redlock-`. The manager refuses lock keys that start with it.
pub const RESERVED_KEY_PREFIX: &[u8] = b"\xffredlock-";

/// The prefix of a lock key's waiter queue (see [`queue_keys`]).
pub const QUEUE_KEY_PREFIX: &[u8] = b"\xffredlock-queue:";

/// The prefix of a lock key's waiter table (see [`queue_keys`]).
pub const WAITERS_KEY_PREFIX: &[u8] = b"\xffredlock-waiters:";

/// The two keys of lock key `key`'s hand-off queue on an instance: the order of the waiters
/// ([`QUEUE_KEY_PREFIX`] + `key`) and, per waiter token, until when it waits, how long a key
/// handed to it stays reserved, and where it listens ([`WAITERS_KEY_PREFIX`] + `key`). Both
/// expire when the last waiter would have.
#[must_use]
pub fn queue_keys(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let with = |prefix: &[u8]| {
        let mut k = Vec::with_capacity(prefix.len() + key.len());
        k.extend_from_slice(prefix);
        k.extend_from_slice(key);
        k
    };
    (with(QUEUE_KEY_PREFIX), with(WAITERS_KEY_PREFIX))
}

/// How a queued waiter asks to be treated, sent with each refused acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePlace {
    /// How long the place lasts without a new attempt; a waiter that stopped trying (its call
    /// gave up, its process died) is skipped after this. Each refused attempt renews it.
    pub stay: Duration,
    /// How long a key handed to this waiter stays reserved for it: the time it has to turn the
    /// hand-off into its own acquire before the key expires and anyone may take it. The
    /// manager asks for an instance timeout, or for the lock's TTL where hand-offs are grants
    /// ([`Handoff::grants_by_hand_off`]).
    pub reserve: Duration,
}

/// Optional capability of a backend: a fair, cheap hand-off under contention.
///
/// Without it every release wakes every waiter of every process (through [`ReleaseNotify`]),
/// and each runs a full attempt that all but one lose: N requests per waiter per release. With
/// it a refused acquire leaves the waiter's token in a queue on the instance, and the release
/// script, instead of deleting the key, sets it to the first live waiter's token (for that
/// waiter's `reserve`) and tells that waiter alone. The waiter then runs an ordinary acquire
/// attempt, which finds its own token on the instances that handed it over (rule 2 of the
/// [`LockBackend`] contract: the expiry is reset from the attempt, so validity is computed as
/// for any acquire), or, where the backend promises rule 6, takes a quorum of hand-offs as its
/// acquisition. A rival's acquire meanwhile is refused, so a release is not taken back by the
/// process that made it while the waiter it named is on its way.
///
/// # Contract
///
/// 1. [`acquire_or_queue`](Self::acquire_or_queue) is [`LockBackend::acquire`], and when it is
///    refused (the key holds another token) it also puts `token` at the end of the key's queue
///    on this instance, or, if it is queued already, renews its place without moving it. A
///    granted call removes `token` from the queue.
/// 2. [`release_and_hand_off`](Self::release_and_hand_off) is [`LockBackend::release`] (same
///    token check); with `leaving` it also gives up `token`'s own place in the queue, if it has
///    one (a waiter that stops waiting leaves with this call), and without it a place is kept
///    (a waiter cleaning up a failed attempt is still waiting). When the key held `token`, it takes waiters from the head of the queue,
///    skipping those whose stay ran out or that nobody listens for, and sets the key to the first
///    other one's token with that waiter's reserve as expiry, telling its listener. With no such
///    waiter it deletes the key, and announces the release as
///    [`ReleaseNotify::release_and_notify`] does if the backend has that capability. Returns
///    `(released, told)`: whether the key held `token`, and whether a waiter was handed the key
///    or a subscriber heard the release.
/// 3. [`listen`](Self::listen) returns once hand-offs to `token` on this instance will be
///    delivered; its stream yields one item per hand-off. A hand-off to a token that no
///    listener of the process waits for (its call ended) is passed on at once, so a waiter
///    that went away costs its successors nothing; the pass-on releases the key only while it
///    is still a reservation that its token has not claimed (by an acquire), since a hand-off
///    message can arrive after the acquire it led to. Dropping the stream stops listening.
/// 4. Unless the backend [grants by hand-off](Self::grants_by_hand_off), hand-offs are a hint
///    for speed and order only: the manager never trusts one for safety, and the key it finds
///    reserved is an ordinary acquire's "already ours".
/// 5. The queue lives in keys named by [`queue_keys`], under [`RESERVED_KEY_PREFIX`]; a key that
///    holds application data of another type answers `WrongType` as in rule 8 of
///    [`LockBackend`].
/// 6. A backend whose [`grants_by_hand_off`](Self::grants_by_hand_off) is `true` promises
///    more: each item of a [`listen`](Self::listen) stream follows a write, on this instance, of
///    the key to `token` with the waiter's `reserve` as expiry, made after the
///    [`acquire_or_queue`](Self::acquire_or_queue) that queued `token` here. Never an item
///    without that write (not on a reconnect, not as a "check again" wake-up); losing items is
///    allowed. The manager then asks for its lock's TTL as the reserve and counts a quorum of
///    hand-offs as an acquisition (see [`grants_by_hand_off`](Self::grants_by_hand_off)).
///
/// [`LockBackend`]: super::LockBackend
/// [`LockBackend::acquire`]: super::LockBackend::acquire
/// [`LockBackend::release`]: super::LockBackend::release
/// [`ReleaseNotify`]: super::ReleaseNotify
/// [`ReleaseNotify::release_and_notify`]: super::ReleaseNotify::release_and_notify
#[async_trait]
pub trait Handoff: Send + Sync {
    /// Starts listening for hand-offs to `token` on this instance.
    ///
    /// # Errors
    /// [`BackendError`] when the instance's hand-off channel could not be subscribed.
    async fn listen(&self, token: &[u8]) -> Result<BoxStream<'static, ()>, BackendError>;

    /// [`LockBackend::acquire`](super::LockBackend::acquire) that queues `token` on a refusal
    /// (rule 1).
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer.
    async fn acquire_or_queue(
        &self,
        key: &[u8],
        token: &[u8],
        ttl: Duration,
        place: QueuePlace,
    ) -> Result<bool, BackendError>;

    /// Releases `key` if it holds `token`, handing it to the first live waiter (rule 2); with
    /// `leaving`, also gives up `token`'s place in the queue when the key does not hold it (a
    /// call that stops waiting).
    ///
    /// # Errors
    /// [`BackendError`] when the instance gave no answer.
    async fn release_and_hand_off(
        &self,
        key: &[u8],
        token: &[u8],
        leaving: bool,
    ) -> Result<(bool, bool), BackendError>;

    /// Whether a hand-off is a grant (rule 6): `false` unless the backend keeps that promise.
    ///
    /// With `true` on every instance, a waiting call's queue places ask for the lock's TTL as
    /// their reserve, and a quorum of hand-offs is the call's acquisition, with no round of its
    /// own: the key is set on each of those instances after the call first queued, so it lasts
    /// at least the TTL from the start of that round, which is where the lease's validity is
    /// measured from. The manager counts only instances to which the call sent no release of
    /// the key (a cleanup could still land after a hand-off and undo it), and only while the
    /// lease would not be due for renewal yet; otherwise the hand-off wakes an ordinary attempt
    /// as under rule 4. The cost: a key handed to a waiter that does not take it (its process
    /// hangs while connected, or the message is lost after its call ended) stays with it for
    /// the TTL rather than a short reserve.
    fn grants_by_hand_off(&self) -> bool {
        false
    }
}
