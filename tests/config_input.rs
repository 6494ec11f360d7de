//! Configuration and input: every bad value is a clear `InvalidInput` before anything is sent
//! (no instance sees a call), nothing panics or wraps, and the edge values that are valid work.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ms, Cluster, TTL};
use redlock_lease::{Error, InvalidInput, LockBackend, LockManager, MAX_KEY_LEN, MAX_TTL};
use redlock_mock::{MemoryBackend, Simulation};

fn invalid<T: std::fmt::Debug>(result: Result<T, Error>) -> InvalidInput {
    match result {
        Err(Error::InvalidInput(what)) => what,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

// ---------------------------------------------------------------- configuration

#[test]
fn no_instances() {
    let sim = Simulation::new();
    let what = invalid(LockManager::builder(sim.clock_arc()).build());
    assert_eq!(what, InvalidInput::NoInstances);
}

#[test]
fn the_same_server_twice() {
    let c = Cluster::new(3);
    // The same backend object twice, and a second object for the same server.
    let again = Arc::clone(&c.backends[1]);
    let what = invalid(c.builder(1).instance(again).build());
    assert_eq!(what, InvalidInput::DuplicateInstance("mem-1".into()));
    let twin: Arc<dyn LockBackend> = Arc::new(MemoryBackend::new("mem-2", Arc::clone(&c.clock)));
    let what = invalid(c.builder(1).instance(twin).build());
    assert_eq!(what, InvalidInput::DuplicateInstance("mem-2".into()));
    assert_eq!(c.calls(), 0);
}

#[test]
fn zero_attempts() {
    let c = Cluster::new(3);
    assert_eq!(
        invalid(c.builder(1).retry_count(0).build()),
        InvalidInput::ZeroRetryCount
    );
}

#[test]
fn retry_delay_min_above_max() {
    let c = Cluster::new(3);
    assert_eq!(
        invalid(c.builder(1).retry_delay(ms(300), ms(100)).build()),
        InvalidInput::RetryDelayRange {
            min: ms(300),
            max: ms(100)
        }
    );
    // Zero and equal bounds are fine.
    for (min, max) in [(Duration::ZERO, Duration::ZERO), (ms(5), ms(5))] {
        c.builder(1)
            .retry_delay(min, max)
            .build()
            .expect("valid range");
    }
}

#[test]
fn drift_factors_outside_zero_to_one() {
    let c = Cluster::new(3);
    for bad in [-0.01, 1.0, 2.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let what = invalid(c.builder(1).drift_factor(bad).build());
        assert!(
            matches!(what, InvalidInput::DriftFactor(_)),
            "{bad}: {what:?}"
        );
    }
    for good in [0.0, 0.01, 0.5, 0.999] {
        // 0.999 leaves 8 ms of a 10 s lease: the instance timeout must fit in it.
        c.builder(1)
            .drift_factor(good)
            .instance_timeout(Duration::from_millis(5))
            .build()
            .expect("valid factor");
    }
}

#[test]
fn zero_instance_timeout() {
    let c = Cluster::new(3);
    assert_eq!(
        invalid(c.builder(1).instance_timeout(Duration::ZERO).build()),
        InvalidInput::ZeroInstanceTimeout
    );
}

#[test]
fn unusable_internal_lock_timeout() {
    let c = Cluster::new(3);
    for bad in [Duration::ZERO, ms(2), MAX_TTL + ms(1), Duration::MAX] {
        let what = invalid(c.builder(1).internal_lock_timeout(bad).build());
        assert!(
            matches!(what, InvalidInput::Ttl { .. }),
            "{bad:?}: {what:?}"
        );
    }
}

#[test]
fn building_touches_no_instance() {
    let c = Cluster::new(5);
    drop(c.builder(1).build().expect("config"));
    drop(c.builder(1).retry_count(0).build());
    assert_eq!(c.calls(), 0);
}

#[test]
fn defaults_are_aioredlocks() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let config = manager.config();
    assert_eq!(config.retry_count(), 3);
    assert_eq!(config.retry_delay(), (ms(100), ms(300)));
    assert!((config.drift_factor() - 0.01).abs() < f64::EPSILON);
    assert_eq!(config.internal_lock_timeout(), Duration::from_secs(10));
    assert!(config.key_prefix().is_empty());
    assert_eq!(config.drift(TTL), ms(102));
}

// ---------------------------------------------------------------- TTLs

/// Asserts that locking with `ttl` is refused as a bad TTL without any call.
fn ttl_refused(ttl: Duration) {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let what = invalid(c.sim.run(manager.lock("res", ttl)));
    assert!(
        matches!(what, InvalidInput::Ttl { ttl: t, .. } if t == ttl),
        "{ttl:?}: {what:?}"
    );
    assert_eq!(c.calls(), 0, "{ttl:?}: nothing may be sent");
    assert_eq!(c.now(), Duration::ZERO);
}

#[test]
fn ttls_that_can_never_leave_validity_are_refused() {
    // 1 and 2 ms are eaten by the 2 ms drift floor; below 1 ms is below Redis' resolution.
    for ttl in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(999),
        ms(1),
        ms(2),
        Duration::from_micros(2_999),
    ] {
        ttl_refused(ttl);
    }
}

#[test]
fn ttls_above_the_maximum_are_refused_without_wrapping() {
    for ttl in [
        MAX_TTL + Duration::from_nanos(1),
        MAX_TTL + ms(1),
        Duration::from_secs(u64::MAX / 2),
        Duration::MAX,
    ] {
        ttl_refused(ttl);
    }
}

#[test]
fn three_ms_leaves_one_ms() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c
        .sim
        .run(manager.lock("res", ms(3)))
        .expect("3 ms is usable");
    assert_eq!(lock.validity(), ms(1));
    assert_eq!(lock.remaining(), ms(1));
    c.advance(ms(1));
    assert!(!lock.is_valid(), "gone one millisecond later");
}

#[test]
fn sub_millisecond_parts_are_rounded_down() {
    // Rounding up would promise validity the instances never grant.
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let lock = c
        .sim
        .run(manager.lock("res", Duration::from_micros(10_999)))
        .expect("10.999 ms");
    assert_eq!(lock.ttl(), ms(10));
    assert_eq!(lock.validity(), ms(8));
}

#[test]
fn the_maximum_ttl_works() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c
        .sim
        .run(manager.lock("res", MAX_TTL))
        .expect("MAX_TTL is allowed");
    assert_eq!(lock.validity(), MAX_TTL - manager.config().drift(MAX_TTL));
    let state = c.memories[0]
        .inspect_now(b"res")
        .expect("inspect")
        .expect("key set");
    assert_eq!(state.ttl, Some(MAX_TTL));
    c.sim.run(lock.release()).expect("release");
}

#[test]
fn extend_with_a_bad_ttl_sends_nothing() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("res", TTL)).expect("lock");
    let before = c.calls();
    let remaining = lock.remaining();
    for ttl in [Duration::ZERO, ms(1), ms(2), Duration::MAX] {
        let what = invalid(c.sim.run(lock.extend_for(ttl)));
        assert!(
            matches!(what, InvalidInput::Ttl { .. }),
            "{ttl:?}: {what:?}"
        );
        let what = invalid(c.sim.run(manager.extend(&lock, ttl)));
        assert!(
            matches!(what, InvalidInput::Ttl { .. }),
            "{ttl:?}: {what:?}"
        );
    }
    assert_eq!(c.calls(), before);
    assert_eq!(lock.remaining(), remaining);
    assert!(lock.is_valid(), "a refused argument does not cost the lock");
}

// ---------------------------------------------------------------- resource names

#[test]
fn an_empty_name_is_refused_everywhere() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    assert_eq!(
        invalid(c.sim.run(manager.lock("", TTL))),
        InvalidInput::EmptyResource
    );
    assert_eq!(
        invalid(c.sim.run(manager.is_locked(""))),
        InvalidInput::EmptyResource
    );
    assert_eq!(
        invalid(c.sim.run(manager.get_lock("", "token"))),
        InvalidInput::EmptyResource
    );
    assert_eq!(c.calls(), 0);
}

#[test]
fn binary_names_with_nul_work() {
    let c = Cluster::new(5);
    let manager = c.manager(1);
    let names: [&[u8]; 3] = [b"\xff\xfe\x00lock", b"\x00", b"caf\xc3\xa9 \x00\x01\x02"];
    for name in names {
        let lock = c.sim.run(manager.lock(name, TTL)).expect("bytes are names");
        assert_eq!(lock.resource(), name);
        assert_eq!(c.holding(name, lock.token()), 5);
        assert!(c.sim.run(manager.is_locked(name)).expect("query"));
    }
    // Names that differ only after a NUL are different locks.
    assert!(!c.sim.run(manager.is_locked(b"\x00x")).expect("query"));
}

#[test]
fn a_name_of_max_key_len_works_and_one_byte_more_does_not() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let longest = vec![b'a'; MAX_KEY_LEN];
    let lock = c
        .sim
        .run(manager.lock(&longest, TTL))
        .expect("MAX_KEY_LEN bytes");
    assert_eq!(c.holding(&longest, lock.token()), 3);
    let calls = c.calls();
    let too_long = vec![b'a'; MAX_KEY_LEN + 1];
    assert_eq!(
        invalid(c.sim.run(manager.lock(&too_long, TTL))),
        InvalidInput::ResourceTooLong(MAX_KEY_LEN + 1)
    );
    assert_eq!(c.calls(), calls);
}

#[test]
fn the_prefix_counts_towards_the_key_length() {
    let c = Cluster::new(3);
    let manager = c.builder(1).key_prefix("app:").build().expect("config");
    let fits = vec![b'a'; MAX_KEY_LEN - 4];
    let _held = c
        .sim
        .run(manager.lock(&fits, TTL))
        .expect("prefix + name = MAX_KEY_LEN");
    let over = vec![b'a'; MAX_KEY_LEN - 3];
    assert_eq!(
        invalid(c.sim.run(manager.lock(&over, TTL))),
        InvalidInput::ResourceTooLong(MAX_KEY_LEN + 1)
    );
}

#[test]
fn without_a_prefix_the_key_is_the_resource_name() {
    // So a Python aioredlock client and this one exclude each other on the same servers.
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let lock = c.sim.run(manager.lock("invoice:42", TTL)).expect("lock");
    for m in &c.memories {
        assert_eq!(m.keys_holding(lock.token()), vec![b"invoice:42".to_vec()]);
    }
}

#[test]
fn the_prefix_is_put_in_front_of_the_name() {
    let c = Cluster::new(3);
    let manager = c
        .builder(1)
        .key_prefix(&b"locks:"[..])
        .build()
        .expect("config");
    let lock = c.sim.run(manager.lock("invoice:42", TTL)).expect("lock");
    assert_eq!(
        lock.resource(),
        b"invoice:42",
        "the handle shows the bare name"
    );
    for m in &c.memories {
        assert_eq!(
            m.keys_holding(lock.token()),
            vec![b"locks:invoice:42".to_vec()]
        );
    }
    assert_eq!(manager.active_locks()[0].resource, b"invoice:42".to_vec());
    // A client without the prefix does not see it: different keys, different locks.
    let bare = c.manager(2);
    assert!(!c.sim.run(bare.is_locked("invoice:42")).expect("query"));
    assert!(c.sim.run(manager.is_locked("invoice:42")).expect("query"));
}

#[test]
fn bad_rehydration_tokens_are_refused() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    assert!(matches!(
        invalid(c.sim.run(manager.get_lock("res", ""))),
        InvalidInput::Token(_)
    ));
    let long = vec![b't'; redlock_lease::MAX_TOKEN_LEN + 1];
    assert!(matches!(
        invalid(c.sim.run(manager.get_lock("res", &long))),
        InvalidInput::Token(_)
    ));
    assert_eq!(c.calls(), 0);
}
