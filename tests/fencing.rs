//! Fencing tokens: opt-in per manager and per call, strictly increasing per resource across
//! grants (also when the instances' counters diverge), two more rounds counted in the validity,
//! kept across extends, and refused inputs that touch no instance.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ms, Cluster, TTL};
use redlock_lease::{
    async_trait, fence_key, BackendError, Error, InvalidInput, KeyState, LockBackend, LockManager,
    LockOptions, FENCE_KEY_PREFIX,
};
use redlock_mock::MemoryBackend;

fn invalid(e: &Error) -> &InvalidInput {
    match e {
        Error::InvalidInput(what) => what,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn fences_grow_per_resource_and_only_fenced_locks_have_one() {
    let c = Cluster::new(5);
    let fenced = c.builder(1).fenced(true).build().unwrap();
    let plain = c.manager(2);
    c.sim.run(async {
        let a = fenced.lock("r", TTL).await.unwrap();
        assert_eq!(a.fence(), Some(1));
        a.release().await.unwrap();
        let b = fenced.lock("r", TTL).await.unwrap();
        assert_eq!(b.fence(), Some(2));
        b.release().await.unwrap();
        // Another resource has its own counter.
        let other = fenced.lock("s", TTL).await.unwrap();
        assert_eq!(other.fence(), Some(1));
        other.release().await.unwrap();
        // Plain locks leave the counter alone and carry no fence.
        let p = plain.lock("r", TTL).await.unwrap();
        assert_eq!(p.fence(), None);
        p.release().await.unwrap();
        let opted_out = fenced
            .lock_opts("r", LockOptions::new(TTL).fenced(false))
            .await
            .unwrap();
        assert_eq!(opted_out.fence(), None);
        opted_out.release().await.unwrap();
        let opted_in = plain
            .lock_opts("r", LockOptions::new(TTL).fenced(true))
            .await
            .unwrap();
        assert_eq!(opted_in.fence(), Some(3));
        opted_in.release().await.unwrap();
    });
    for m in &c.memories {
        assert_eq!(m.get(&fence_key(b"r")), Some(b"3".to_vec()));
        assert_eq!(
            m.inspect_now(&fence_key(b"r")).unwrap().unwrap().ttl,
            None,
            "counters have no expiry"
        );
    }
}

#[test]
fn a_fenced_acquire_costs_two_more_rounds_within_its_validity() {
    let c = Cluster::new(5);
    c.set_latency(ms(20));
    let fenced = c.builder(1).fenced(true).build().unwrap();
    let plain = c.manager(2);
    let lock = c.sim.run(plain.lock("p", TTL)).unwrap();
    assert_eq!(c.now(), ms(20));
    assert_eq!(lock.validity(), TTL - ms(20) - ms(102));
    let start = c.now();
    let lock = c.sim.run(fenced.lock("f", TTL)).unwrap();
    assert_eq!(c.now() - start, ms(60), "acquire, next_fence, raise_fence");
    assert_eq!(lock.validity(), TTL - ms(60) - ms(102));
}

#[test]
fn three_rounds_that_outlast_the_validity_grant_nothing_and_clean_up() {
    let c = Cluster::new(3);
    // TTL 100 ms: drift 3 ms, so 97 ms of validity at most. One 40 ms round fits, three do not.
    c.set_latency(ms(40));
    let fenced = c.builder(1).fenced(true).retry_count(1).build().unwrap();
    let err = c.sim.run(fenced.lock("r", ms(100))).unwrap_err();
    assert!(matches!(err, Error::ValidityExpired(_)), "{err:?}");
    assert_eq!(c.with_key(b"r"), 0, "the failed attempt was released");
}

#[test]
fn the_fence_survives_extends_and_shows_on_the_watch() {
    let c = Cluster::new(3);
    let fenced = c.builder(1).fenced(true).build().unwrap();
    c.sim.run(async {
        let lock = fenced.lock("r", TTL).await.unwrap();
        lock.extend().await.unwrap();
        assert_eq!(lock.fence(), Some(1));
        // Rehydrated handles do not know the fence (it is not stored with the lock).
        let again = fenced.get_lock("r", lock.token()).await.unwrap();
        assert_eq!(again.fence(), None);
        drop(again);
        lock.release().await.unwrap();
        let seen = fenced
            .with_lock("r", |watch| async move { watch.fence() })
            .await
            .unwrap();
        assert_eq!(seen, Some(2));
    });
}

/// The issue's example, N = 3: grants on {1,2}, {1,3}, {1,2}, then {2,3}. Without the raise
/// round the counters diverge and the last two grants get the same fence; with it, every fence
/// is larger than the one before.
fn fences_over_divergent_quorums(raise: bool) -> Vec<u64> {
    let c = Cluster::new(3);
    let mut builder = c.builder(1).fenced(true).retry_count(1);
    if !raise {
        builder = builder.without_fence_raise();
    }
    let manager = builder.build().unwrap();
    let mut fences = Vec::new();
    for left_out in [2, 1, 2, 0] {
        c.faults[left_out].set_down(true);
        let lock = c.sim.run(manager.lock("r", TTL)).unwrap();
        fences.push(lock.fence().unwrap());
        c.sim.run(lock.release()).unwrap();
        c.faults[left_out].set_down(false);
    }
    fences
}

#[test]
fn fences_grow_when_each_grant_reaches_a_different_quorum() {
    let fences = fences_over_divergent_quorums(true);
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    // The test-only knob brings the single-round bug back: the check above would catch it.
    let broken = fences_over_divergent_quorums(false);
    assert_eq!(broken, [1, 2, 3, 3]);
}

#[test]
fn counter_keys_are_reserved_fenced_or_not() {
    let c = Cluster::new(3);
    let plain = c.manager(1);
    let mut reserved = FENCE_KEY_PREFIX.to_vec();
    reserved.extend_from_slice(b"r");
    c.sim.run(async {
        let err = plain.lock(&reserved, TTL).await.unwrap_err();
        assert_eq!(invalid(&err), &InvalidInput::ReservedKey);
        let err = plain.is_locked(&reserved).await.unwrap_err();
        assert_eq!(invalid(&err), &InvalidInput::ReservedKey);
        let err = plain.get_lock(&reserved, "t").await.unwrap_err();
        assert_eq!(invalid(&err), &InvalidInput::ReservedKey);
    });
    // The prefix counts whole: a key prefix that makes up part of it is refused too.
    let prefixed = c
        .builder(2)
        .key_prefix(b"\xffredlock".to_vec())
        .build()
        .unwrap();
    let err = c.sim.run(prefixed.lock("-fence:r", TTL)).unwrap_err();
    assert_eq!(invalid(&err), &InvalidInput::ReservedKey);
    // A name that merely contains it is an ordinary key.
    let lock = c.sim.run(plain.lock(b"x\xffredlock-fence:r", TTL)).unwrap();
    c.sim.run(lock.release()).unwrap();
    assert_eq!(
        c.calls(),
        2 * 3,
        "only the last lock and its release reached the instances"
    );
}

/// A backend without fencing counters (the trait's default).
#[derive(Debug)]
struct NoCounters(MemoryBackend);

#[async_trait]
impl LockBackend for NoCounters {
    fn id(&self) -> &str {
        self.0.id()
    }
    async fn acquire(&self, k: &[u8], t: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.0.acquire(k, t, ttl).await
    }
    async fn extend(&self, k: &[u8], t: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.0.extend(k, t, ttl).await
    }
    async fn release(&self, k: &[u8], t: &[u8]) -> Result<bool, BackendError> {
        self.0.release(k, t).await
    }
    async fn inspect(&self, k: &[u8]) -> Result<Option<KeyState>, BackendError> {
        self.0.inspect(k).await
    }
}

#[test]
fn fenced_locks_need_counters_on_every_instance() {
    let c = Cluster::new(3);
    let mut instances: Vec<Arc<dyn LockBackend>> = c.backends.clone();
    let bare = MemoryBackend::new("bare", Arc::clone(&c.clock));
    instances[1] = Arc::new(NoCounters(bare.clone()));
    let err = LockManager::builder(Arc::clone(&c.clock))
        .instances(instances.clone())
        .fenced(true)
        .build()
        .unwrap_err();
    assert_eq!(invalid(&err), &InvalidInput::NoFencing("bare".into()));
    let plain = LockManager::builder(Arc::clone(&c.clock))
        .instances(instances)
        .build()
        .unwrap();
    let err = c
        .sim
        .run(plain.lock_opts("r", LockOptions::new(TTL).fenced(true)))
        .unwrap_err();
    assert_eq!(invalid(&err), &InvalidInput::NoFencing("bare".into()));
    assert!(err.to_string().contains("bare"), "{err}");
    assert_eq!(c.calls(), 0);
    assert!(bare.is_empty());
    // Plain locks still work there.
    let lock = c.sim.run(plain.lock("r", TTL)).unwrap();
    assert_eq!(lock.fence(), None);
}

#[test]
fn the_fence_is_drawn_above_the_counters_of_instances_that_gave_none() {
    // A majority restarted empty: instances 0–2 lost their counters, 3 and 4 kept theirs (the
    // last fence handed out, 100) and still hold the old holder's key, so they give no
    // increment. Their counters are read, and the new fence is drawn above them.
    let c = Cluster::new(5);
    for m in &c.memories[3..] {
        m.put(&fence_key(b"r"), b"100");
        m.put(b"r", b"the old holder's token");
    }
    let fenced = c.builder(1).fenced(true).build().unwrap();
    let lock = c.sim.run(fenced.lock("r", TTL)).unwrap();
    assert_eq!(lock.fence(), Some(101));
    for m in &c.memories {
        assert_eq!(
            m.get(&fence_key(b"r")),
            Some(b"101".to_vec()),
            "raised everywhere"
        );
    }
    c.sim.run(lock.release()).unwrap();
    for m in &c.memories[3..] {
        m.delete(b"r");
    }
    // With every instance holding our key, nothing is read: the fence is the increment.
    let next = c.sim.run(fenced.lock("r", TTL)).unwrap();
    assert_eq!(next.fence(), Some(102));
}
