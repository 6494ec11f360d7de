//! Retries: `retry_count` is the total number of attempts, attempts are separated by a random
//! delay drawn from `[retry_delay_min, retry_delay_max]` (reproducible from the seed), and a
//! lock won on a later attempt has its validity measured from that attempt.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ms, times_of, CallLog, Cluster, Recorder, TTL};
use redlock_lease::{Error, LockManager, SeededRandom};

const RIVAL: &[u8] = b"rival-token";

/// A manager over the cluster's instances whose calls are logged with their virtual time.
fn recorded_manager(
    c: &Cluster,
    seed: u64,
    attempts: u32,
    delay: (Duration, Duration),
) -> (LockManager, CallLog) {
    recorded_manager_with(c, seed, attempts, delay, true)
}

fn recorded_manager_with(
    c: &Cluster,
    seed: u64,
    attempts: u32,
    delay: (Duration, Duration),
    wake_on_release: bool,
) -> (LockManager, CallLog) {
    let (backends, log) = Recorder::wrap(&c.backends, &c.clock);
    let manager = LockManager::builder(Arc::clone(&c.clock))
        .instances(backends)
        .random(Arc::new(SeededRandom::new(seed)))
        .retry_count(attempts)
        .retry_delay(delay.0, delay.1)
        .wake_on_release(wake_on_release)
        .build()
        .expect("config");
    (manager, log)
}

/// Start times of every attempt of one acquire that never succeeds (a rival holds all five
/// instances for good).
fn attempt_times(seed: u64, attempts: u32, delay: (Duration, Duration)) -> Vec<Duration> {
    attempt_times_with(seed, attempts, delay, true).0
}

/// [`attempt_times`], and how many subscriptions to release announcements were made.
fn attempt_times_with(
    seed: u64,
    attempts: u32,
    delay: (Duration, Duration),
    wake_on_release: bool,
) -> (Vec<Duration>, usize) {
    let c = Cluster::new(5);
    c.occupy(0..5, b"res", RIVAL);
    let (manager, log) = recorded_manager_with(&c, seed, attempts, delay, wake_on_release);
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("held by the rival");
    assert!(matches!(err, Error::Contended(_)), "{err:?}");
    assert_eq!(common::failure(&err).attempts, attempts);
    let times = times_of(&log, "acquire");
    let per_attempt = log
        .lock()
        .expect("log")
        .iter()
        .filter(|call| call.op == "acquire")
        .count();
    assert_eq!(
        per_attempt,
        attempts as usize * 5,
        "one acquire per instance per attempt"
    );
    let subscriptions = log
        .lock()
        .expect("log")
        .iter()
        .filter(|call| call.op == "subscribe")
        .count();
    (times, subscriptions)
}

fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn retry_count_is_the_total_number_of_attempts() {
    for attempts in [1, 2, 3, 7] {
        let times = attempt_times(1, attempts, (ms(100), ms(300)));
        assert_eq!(times.len(), attempts as usize);
    }
}

#[test]
fn delays_stay_in_range_and_vary() {
    let times = attempt_times(42, 12, (ms(100), ms(300)));
    let delays = gaps(&times);
    assert_eq!(delays.len(), 11);
    for d in &delays {
        assert!(
            (ms(100)..=ms(300)).contains(d),
            "delay {d:?} outside [100 ms, 300 ms]: {delays:?}"
        );
    }
    let mut distinct = delays.clone();
    distinct.sort();
    distinct.dedup();
    // Eleven uniform draws from a 200 ms range: lock-step clients would see one value.
    assert!(distinct.len() >= 8, "delays barely vary: {delays:?}");
}

#[test]
fn delays_are_reproducible_from_the_seed() {
    let delay = (ms(100), ms(300));
    let a = attempt_times(7, 6, delay);
    let b = attempt_times(7, 6, delay);
    let other = attempt_times(8, 6, delay);
    assert_eq!(a, b, "same seed, same virtual timestamps");
    assert_ne!(a, other, "another seed, another schedule");
}

#[test]
fn announcements_leave_the_schedule_alone_when_nothing_is_released() {
    // The rival never lets go: a waiter listening for releases hears none, and retries on the
    // same jittered schedule as one that only polls.
    let delay = (ms(100), ms(300));
    let (listening, subscriptions) = attempt_times_with(42, 6, delay, true);
    let (polling, none) = attempt_times_with(42, 6, delay, false);
    assert_eq!(
        subscriptions, 5,
        "one subscription per instance for the whole call"
    );
    assert_eq!(none, 0);
    assert_eq!(listening, polling);
}

#[test]
fn zero_delay_range_retries_at_once() {
    let times = attempt_times(1, 5, (Duration::ZERO, Duration::ZERO));
    // All five attempts at virtual time zero, and no panic from an empty range.
    assert_eq!(times, vec![Duration::ZERO]);
}

#[test]
fn equal_bounds_give_a_fixed_delay() {
    let times = attempt_times(1, 5, (ms(50), ms(50)));
    assert_eq!(gaps(&times), vec![ms(50); 4]);
}

#[test]
fn a_tiny_range_still_stays_inside_it() {
    // One nanosecond of spread: the draw must not overflow or escape the range.
    let delay = (ms(10), ms(10) + Duration::from_nanos(1));
    for d in gaps(&attempt_times(3, 6, delay)) {
        assert!(d == delay.0 || d == delay.1, "{d:?}");
    }
}

#[test]
fn validity_is_measured_from_the_successful_attempt() {
    let c = Cluster::new(5);
    c.set_latency(ms(20));
    // The rival's keys on a majority run out at 500 ms: attempts before then are refused.
    for m in &c.memories[..3] {
        assert!(m.acquire_now(b"res", RIVAL, ms(500)).expect("set"));
    }
    let (manager, log) = recorded_manager(&c, 5, 20, (ms(100), ms(300)));
    let lock = c
        .sim
        .run(manager.lock("res", TTL))
        .expect("wins once the rival's keys expire");
    let attempts = times_of(&log, "acquire");
    assert!(
        attempts.len() >= 2,
        "several attempts expected: {attempts:?}"
    );
    let last = *attempts.last().expect("an attempt");
    assert!(
        last >= ms(480),
        "the winning attempt lands after 500 ms: {last:?}"
    );
    assert_eq!(
        c.now(),
        last + ms(20),
        "returns when the winning round does"
    );
    // Measured from the first attempt it would have been 9 878 − last or less.
    assert_eq!(lock.validity(), ms(9_878));
    assert_eq!(lock.remaining(), ms(9_878));
    assert_eq!(c.holding(b"res", lock.token()), 5);
}

#[test]
fn every_attempt_uses_the_same_token() {
    // The token is fixed for one acquire, so a late reply from an earlier attempt and the
    // release after it can never be confused with another lock of ours.
    let c = Cluster::new(5);
    c.occupy(0..3, b"res", RIVAL);
    let (manager, log) = recorded_manager(&c, 9, 4, (ms(10), ms(20)));
    let err = c
        .sim
        .run(manager.lock("res", TTL))
        .expect_err("rival holds a majority");
    assert_eq!(common::failure(&err).attempts, 4);
    assert_eq!(times_of(&log, "acquire").len(), 4);
    // While it waits, the manager also subscribes to release announcements and looks at the
    // key once (calls without a token); the releases after failed attempts announce.
    let mut tokens: Vec<Vec<u8>> = log
        .lock()
        .expect("log")
        .iter()
        .filter(|call| matches!(call.op, "acquire" | "release" | "release_and_notify"))
        .map(|call| call.token.clone())
        .collect();
    // The three instances the rival holds said no: nothing of ours there, nothing to release.
    assert_eq!(
        tokens.len(),
        4 * 5 + 4 * 2,
        "an acquire per instance per attempt, a release where it may have landed"
    );
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "one token throughout");
    // Two instances were ours after each attempt and released every time.
    assert_eq!(c.with_key(b"res"), 3);
    assert_eq!(c.holding(b"res", RIVAL), 3);
}
