//! Every setting the builder accepts works: a seeded sweep over builder settings (zero, one
//! nanosecond, boundary values, `Duration::MAX`, NaN) and over dead and hung instances. Each
//! setting either fails `build()` with `InvalidInput` or gives a manager whose every call returns
//! within its documented bound on virtual time. Nothing may panic.

mod common;

use std::time::Duration;

use common::{ms, Cluster};
use redlock_lease::{
    AutoExtend, Error, RandomSource, SeededRandom, MAX_FAIR_GRACE, MAX_RETRY_DELAY, MAX_TTL,
};

const CASES: u64 = 2_000;

const DURATIONS: &[Duration] = &[
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(3),
    Duration::from_millis(100),
    Duration::from_secs(10),
    MAX_FAIR_GRACE,
    MAX_RETRY_DELAY,
    MAX_TTL,
    Duration::MAX,
];

fn pick<T: Copy>(rng: &SeededRandom, from: &[T]) -> T {
    from[usize::try_from(rng.next_u64() % from.len() as u64).unwrap()]
}

/// Half the time a workable value, otherwise an edge, so that most managers build and the edges
/// still meet each other.
fn setting(rng: &SeededRandom, workable: Duration) -> Duration {
    if rng.next_u64().is_multiple_of(2) {
        workable
    } else {
        nudge(rng, pick(rng, DURATIONS))
    }
}

fn nudge(rng: &SeededRandom, d: Duration) -> Duration {
    // Just above or below a boundary, as often as on it.
    match rng.next_u64() % 3 {
        0 => d.saturating_add(Duration::from_nanos(1)),
        1 => d.saturating_sub(Duration::from_nanos(1)),
        _ => d,
    }
}

#[derive(Debug, Clone, Copy)]
enum Instance {
    Up,
    Down,
    Hung,
}

#[test]
fn every_accepted_setting_works_within_its_bound() {
    let mut built = 0;
    for seed in 0..CASES {
        let rng = SeededRandom::new(seed);
        let n = usize::try_from(1 + rng.next_u64() % 5).unwrap();
        let c = Cluster::new(n);
        let states: Vec<Instance> = (0..n)
            .map(|_| {
                pick(
                    &rng,
                    &[Instance::Up, Instance::Up, Instance::Down, Instance::Hung],
                )
            })
            .collect();
        let retry_count = pick(&rng, &[0, 1, 2, 3, 7]);
        let delay_a = setting(&rng, ms(100));
        let delay_b = setting(&rng, ms(300));
        let timeout = setting(&rng, ms(100));
        let internal = setting(&rng, ms(10_000));
        let drift = pick(&rng, &[0.01, 0.01, 0.0, 0.5, 0.999, 1.0, -0.5, f64::NAN]);
        let wake = !rng.next_u64().is_multiple_of(4);
        let fair = rng
            .next_u64()
            .is_multiple_of(3)
            .then(|| setting(&rng, ms(20)));
        let ttl = setting(&rng, ms(1_000));
        let mut builder = c
            .builder(seed)
            .spawner(c.sim.spawner())
            .retry_count(retry_count)
            .retry_delay(delay_a.min(delay_b), delay_a.max(delay_b))
            .instance_timeout(timeout)
            .internal_lock_timeout(internal)
            .drift_factor(drift)
            .wake_on_release(wake);
        if let Some(grace) = fair {
            builder = builder.fair(grace);
        }
        let case = format!(
            "seed {seed}: N={n} {states:?} retry_count={retry_count} delay={delay_a:?}/{delay_b:?} \
             timeout={timeout:?} internal={internal:?} drift={drift} wake={wake} fair={fair:?} \
             ttl={ttl:?}"
        );
        let manager = match builder.build() {
            Ok(m) => m,
            Err(Error::InvalidInput(_)) => continue,
            Err(e) => panic!("{case}: build failed with {e:?}"),
        };
        built += 1;
        let config = manager.config().clone();
        for (f, state) in c.faults.iter().zip(&states) {
            match state {
                Instance::Up => {}
                Instance::Down => f.set_down(true),
                Instance::Hung => f.set_hang(true),
            }
        }
        let (min, max) = config.retry_delay();
        assert!(min <= max && max <= MAX_RETRY_DELAY, "{case}");
        let timeout = config.instance_timeout();
        // The documented bounds.
        let attempt_bound = timeout
            .saturating_mul(2)
            .saturating_add(max)
            .saturating_mul(config.retry_count());
        let lock_bound = attempt_bound.saturating_add(config.fair().unwrap_or_default());
        let round_bound = timeout;

        let start = c.now();
        let locked = c.sim.run(manager.lock("r", ttl));
        let took = c.now() - start;
        assert!(
            took <= lock_bound,
            "{case}: lock took {took:?} > {lock_bound:?}"
        );
        let lock = match locked {
            Ok(lock) => Some(lock),
            Err(Error::InvalidInput(_)) => None,
            Err(e) => {
                assert!(e.is_retryable(), "{case}: {e:?}");
                None
            }
        };

        let start = c.now();
        let _ = c.sim.run(manager.is_locked("r"));
        assert!(c.now() - start <= round_bound, "{case}: is_locked");

        if let Some(lock) = lock {
            let start = c.now();
            let _ = c.sim.run(lock.extend());
            assert!(c.now() - start <= round_bound, "{case}: extend");
            let start = c.now();
            let _ = c.sim.run(manager.get_lock("r", lock.token()));
            assert!(c.now() - start <= round_bound, "{case}: get_lock");
            let start = c.now();
            let _ = c.sim.run(lock.release());
            assert!(c.now() - start <= round_bound, "{case}: release");
        }

        // The scoped form: acquiring within the lock bound, then the work (one short step),
        // then a release round.
        let clock = std::sync::Arc::clone(&c.clock);
        let start = c.now();
        let scoped = c.sim.run(manager.with_lock_opts(
            "s",
            AutoExtend::default().with_max_renewals(2),
            |_watch| async move { clock.sleep(ms(5)).await },
        ));
        let bound = lock_bound.saturating_add(ms(5)).saturating_add(round_bound);
        assert!(c.now() - start <= bound, "{case}: with_lock {scoped:?}");

        let start = c.now();
        let _ = c.sim.run(manager.close());
        assert!(
            c.now() - start <= round_bound,
            "{case}: close (releases in parallel, one round)"
        );
    }
    eprintln!("{built} of {CASES} settings built");
    // The sweep must exercise working managers, not only refusals.
    assert!(built > CASES / 10, "only {built} of {CASES} settings built");
}

#[test]
fn settings_that_used_to_panic_or_hang_are_refused_at_build() {
    let c = Cluster::new(3);
    let refused =
        |b: redlock_lease::LockManagerBuilder| matches!(b.build(), Err(Error::InvalidInput(_)));
    assert!(refused(
        c.builder(1).retry_delay(Duration::MAX, Duration::MAX)
    ));
    assert!(refused(
        c.builder(1).retry_delay(ms(0), MAX_RETRY_DELAY + ms(1))
    ));
    assert!(refused(c.builder(1).fair(Duration::MAX)));
    assert!(refused(c.builder(1).fair(MAX_FAIR_GRACE + ms(1))));
    assert!(refused(c.builder(1).instance_timeout(Duration::MAX)));
    // The validity of the default 10 s internal lease is 9 898 ms.
    assert!(refused(c.builder(1).instance_timeout(ms(9_898))));
    assert!(!refused(c.builder(1).instance_timeout(ms(9_897))));
    // Fair mode without wake-on-release would silently do nothing.
    assert!(refused(c.builder(1).wake_on_release(false).fair(ms(20))));
    assert!(!refused(c.builder(1).fair(ms(20))));
    assert!(!refused(
        c.builder(1).retry_delay(MAX_RETRY_DELAY, MAX_RETRY_DELAY)
    ));
    assert!(!refused(c.builder(1).fair(MAX_FAIR_GRACE)));
}
