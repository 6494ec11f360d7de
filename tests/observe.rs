//! What the `tracing` and `metrics` features report for a lock cycle, a contended acquire, a
//! loss (found by a renewal, in the scoped form and in `lock_auto`'s background task), a fair
//! yield and a cancelled acquire: on virtual time, captured by a recording layer and the
//! `metrics` debugging recorder, so every figure is exact and checked against the API's own.
//! redlock-fred's connection events need a real server: redlock-testkit's tests/real_observe.rs.

mod capture;
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capture::{Capture, Log};
use common::{ms, Cluster, TTL};
use futures::future::{select, Either};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use redlock_lease::mock::MemoryBackend;
use redlock_lease::{
    AutoExtend, BackendErrorKind, Error, InstanceOutcome, LockBackend, LockManager, LockOptions,
    LossReason, Patience, SeededRandom,
};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

/// The metrics recorded: (name, sorted labels) to value.
type Metrics = BTreeMap<(String, Vec<(String, String)>), DebugValue>;

/// Runs `f` with the capturing layer and the debugging recorder installed on this thread (the
/// simulation, and a current-thread tokio runtime, run every task on the thread that calls it).
fn observe<T>(f: impl FnOnce(&Capture) -> T) -> (T, Log, Metrics) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let out = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || f(&capture))
    });
    let metrics = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_kind, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect();
    let log = std::mem::take(&mut *capture.0.lock().unwrap());
    (out, log, metrics)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

fn counter(m: &Metrics, name: &str, pairs: &[(&str, &str)]) -> u64 {
    match m.get(&(name.to_owned(), labels(pairs))) {
        None => 0,
        Some(DebugValue::Counter(n)) => *n,
        Some(other) => panic!("{name} is not a counter: {other:?}"),
    }
}

fn histogram(m: &Metrics, name: &str, pairs: &[(&str, &str)]) -> Vec<f64> {
    match m.get(&(name.to_owned(), labels(pairs))) {
        None => Vec::new(),
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        Some(other) => panic!("{name} is not a histogram: {other:?}"),
    }
}

/// The metrics with a given name, whatever their labels.
fn named<'a>(m: &'a Metrics, name: &'a str) -> impl Iterator<Item = &'a Vec<(String, String)>> {
    m.keys().filter(move |(n, _)| n == name).map(|(_, l)| l)
}

fn token_prefix(token: &[u8]) -> String {
    String::from_utf8_lossy(&token[..8]).into_owned()
}

#[test]
fn a_lock_cycle_is_four_spans_with_their_outcomes_and_no_warning() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let ((token, granted, extended, remaining), log, m) = observe(|_| {
        c.sim.run(async {
            let lock = manager.lock("job", TTL).await.expect("free");
            let granted = lock.validity();
            // Another lease, so that the extend's validity cannot be mistaken for the first.
            lock.extend_for(TTL / 2).await.expect("extend");
            let extended = lock.validity();
            let remaining = lock.check().await.expect("held");
            let token = lock.token().to_vec();
            lock.release().await.expect("release");
            (token, granted, extended, remaining)
        })
    });

    let [lock] = log.spans("redlock.lock")[..] else {
        panic!("{:?}", log.spans)
    };
    assert!(lock.closed);
    assert_eq!(lock.get("resource"), "job");
    assert_eq!(lock.get("token"), token_prefix(&token));
    assert!(token.len() > 8, "the whole token is never shown");
    assert_eq!(lock.get("ttl_ms"), TTL.as_millis().to_string());
    assert_eq!(lock.get("attempts"), "1");
    assert_eq!(lock.get("outcome"), "acquired");
    assert_eq!(lock.get("validity_ms"), granted.as_millis().to_string());
    assert_eq!(lock.get("elapsed_us"), "0");
    assert!(lock.lacks("instances") && lock.lacks("reason"));

    let [extend] = log.spans("redlock.extend")[..] else {
        panic!("{:?}", log.spans)
    };
    assert_eq!(extend.get("outcome"), "extended");
    assert_ne!(extended, granted);
    assert_eq!(extend.get("validity_ms"), extended.as_millis().to_string());
    assert_eq!(extend.get("token"), token_prefix(&token));

    let [check] = log.spans("redlock.check")[..] else {
        panic!("{:?}", log.spans)
    };
    assert_eq!(check.get("outcome"), "held");
    assert_eq!(check.get("remaining_ms"), remaining.as_millis().to_string());

    let [release] = log.spans("redlock.release")[..] else {
        panic!("{:?}", log.spans)
    };
    assert_eq!(release.get("outcome"), "released");
    assert!(log.spans.iter().all(|s| s.closed));
    assert!(log.at_least(Level::INFO).is_empty(), "{:?}", log.events);

    let acquired = [("outcome", "acquired")];
    assert_eq!(counter(&m, "redlock_acquisitions_total", &acquired), 1);
    assert_eq!(counter(&m, "redlock_acquire_attempts_total", &acquired), 1);
    assert_eq!(
        histogram(&m, "redlock_acquire_duration_seconds", &acquired),
        [0.0]
    );
    for quiet in [
        "redlock_losses_total",
        "redlock_renewal_failures_total",
        "redlock_instance_errors_total",
    ] {
        assert_eq!(named(&m, quiet).count(), 0, "{quiet}: {m:?}");
    }
}

#[test]
fn a_contended_acquire_shows_each_attempt_and_each_instance() {
    let c = Cluster::new(3);
    let holder = c.manager(1);
    let waiter = c.builder(2).retry_count(2).build().expect("valid");
    let (error, log, m) = observe(|_| {
        c.sim.run(async {
            let _held = holder.lock("job", TTL).await.expect("free");
            // The waiter's view of one instance is down: it counts as an error, not a refusal.
            c.faults[2].set_down(true);
            waiter.lock("job", TTL).await.expect_err("held")
        })
    });
    assert!(matches!(error, Error::Contended(_)), "{error:?}");
    let failure = error.failure().expect("report");
    let down = match &failure.instances[2].outcome {
        InstanceOutcome::Failed(e) => e.kind(),
        other => panic!("{other:?}"),
    };
    assert_eq!(down, BackendErrorKind::Connection);

    let spans = log.spans("redlock.lock");
    let [_, contended] = spans[..] else {
        panic!("{spans:?}")
    };
    assert_eq!(contended.get("outcome"), "contended");
    assert_eq!(contended.get("attempts"), failure.attempts.to_string());
    assert_eq!(failure.attempts, 2);
    assert_eq!(
        contended.get("instances"),
        "mem-0=refused mem-1=refused mem-2=connection"
    );
    assert!(contended.lacks("validity_ms"));
    let elapsed = Duration::from_micros(contended.get("elapsed_us").parse().unwrap());
    assert!(elapsed > Duration::ZERO, "a retry delay passed");

    let attempts = log.events("acquire attempt failed");
    let numbers: Vec<&str> = attempts
        .iter()
        .map(|e| e.fields["attempt"].as_str())
        .collect();
    assert_eq!(numbers, ["1", "2"]);
    for e in &attempts {
        assert_eq!(e.level, Level::DEBUG);
        assert_eq!(e.span, Some("redlock.lock"));
        assert_eq!(e.fields["outcome"], "contended");
    }
    // Each attempt and its cleanup reached the down instance: one error per round.
    let no_answer = log.events("instance gave no answer");
    assert!(!no_answer.is_empty());
    assert!(no_answer
        .iter()
        .all(|e| e.fields["instance"] == "mem-2" && e.fields["kind"] == "connection"));

    let contended_outcome = [("outcome", "contended")];
    assert_eq!(
        counter(&m, "redlock_acquisitions_total", &contended_outcome),
        1
    );
    assert_eq!(
        counter(&m, "redlock_acquisitions_total", &[("outcome", "acquired")]),
        1
    );
    assert_eq!(
        counter(&m, "redlock_acquire_attempts_total", &contended_outcome),
        2
    );
    // The span shows whole microseconds, the histogram the exact duration.
    let [seconds] = histogram(&m, "redlock_acquire_duration_seconds", &contended_outcome)[..]
    else {
        panic!("{m:?}")
    };
    assert!(
        (seconds - elapsed.as_secs_f64()).abs() < 1e-6,
        "{seconds} {elapsed:?}"
    );
    assert_eq!(
        counter(
            &m,
            "redlock_instance_errors_total",
            &[("instance", "mem-2"), ("kind", "connection")]
        ),
        u64::try_from(no_answer.len()).unwrap()
    );
    assert_eq!(named(&m, "redlock_instance_errors_total").count(), 1);
}

/// Takes `resource` from its holder on every instance, as a rival would after the keys expired.
fn steal(memories: &[MemoryBackend], resource: &[u8]) {
    for m in memories {
        m.put(resource, b"rival");
    }
}

#[test]
fn a_loss_found_by_the_renewal_is_reported_once_with_its_reason() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let lease = ms(1_000);
    let (result, log, m) = observe(|_| {
        c.sim.run(manager.with_lock_opts(
            "job",
            AutoExtend::default().with_lease(lease),
            |_watch| async {
                steal(&c.memories, b"job");
                futures::future::pending::<()>().await;
            },
        ))
    });
    match result {
        Err(Error::Lost(loss)) => assert_eq!(loss.reason, LossReason::NotHeld),
        other => panic!("{other:?}"),
    }

    let [lost] = log.events("lock lost")[..] else {
        panic!("{:?}", log.events)
    };
    assert_eq!(lost.level, Level::WARN);
    assert_eq!(lost.fields["reason"], "not_held");
    assert_eq!(lost.fields["resource"], "job");
    assert_eq!(
        lost.fields["instances"],
        "mem-0=refused mem-1=refused mem-2=refused"
    );
    assert_eq!(lost.span, Some("redlock.extend"));

    let [renewal] = log.events("lock renewal failed")[..] else {
        panic!("{:?}", log.events)
    };
    assert_eq!(renewal.level, Level::WARN);
    assert_eq!(renewal.fields["outcome"], "lost");
    assert_eq!(renewal.fields["retrying"], "false");

    let [extend] = log.spans("redlock.extend")[..] else {
        panic!("{:?}", log.spans)
    };
    assert_eq!(extend.get("outcome"), "lost");
    assert_eq!(extend.get("reason"), "not_held");
    // The scoped form releases after the loss: the release says lost, and is not a second loss.
    let [release] = log.spans("redlock.release")[..] else {
        panic!("{:?}", log.spans)
    };
    assert_eq!(release.get("outcome"), "lost");

    assert_eq!(
        counter(&m, "redlock_losses_total", &[("reason", "not_held")]),
        1
    );
    assert_eq!(named(&m, "redlock_losses_total").count(), 1);
    assert_eq!(
        counter(&m, "redlock_renewal_failures_total", &[("error", "lost")]),
        1
    );
}

#[test]
fn a_loss_found_at_release_is_reported_and_expiry_has_its_own_reason() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let (results, log, m) = observe(|_| {
        c.sim.run(async {
            let stolen = manager.lock("a", TTL).await.expect("free");
            steal(&c.memories, b"a");
            let expired = manager.lock("b", ms(500)).await.expect("free");
            c.clock.sleep(ms(600)).await;
            (stolen.release().await, expired.release().await)
        })
    });
    for (result, reason) in [
        (results.0, LossReason::NotHeld),
        (results.1, LossReason::Expired),
    ] {
        match result {
            Err(Error::Lost(loss)) => assert_eq!(loss.reason, reason),
            other => panic!("{other:?}"),
        }
    }
    let reasons: Vec<&str> = log
        .events("lock lost")
        .iter()
        .map(|e| e.fields["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["not_held", "expired"]);
    assert_eq!(
        counter(&m, "redlock_losses_total", &[("reason", "not_held")]),
        1
    );
    assert_eq!(
        counter(&m, "redlock_losses_total", &[("reason", "expired")]),
        1
    );
}

#[test]
fn a_background_renewal_that_ends_in_a_loss_is_not_silent() {
    let c = Cluster::new(3);
    let manager = c
        .builder(1)
        .spawner(c.sim.spawner())
        .internal_lock_timeout(ms(1_000))
        .build()
        .expect("valid");
    let (reason, log, m) = observe(|_| {
        c.sim.run(async {
            let lock = manager.lock_auto("job").await.expect("free");
            steal(&c.memories, b"job");
            lock.lost().await
        })
    });
    assert_eq!(reason, LossReason::NotHeld);
    let [stopped] = log.events("background renewal stopped")[..] else {
        panic!("{:?}", log.events)
    };
    assert_eq!(stopped.level, Level::WARN);
    assert_eq!(stopped.fields["outcome"], "lost");
    assert!(
        stopped.span.is_none(),
        "the spawned task has no caller's span"
    );
    assert_eq!(log.events("lock lost").len(), 1);
    assert_eq!(
        counter(&m, "redlock_renewal_failures_total", &[("error", "lost")]),
        1
    );
}

#[test]
fn an_unavailable_renewal_is_a_warning_that_says_it_retries() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    let (outcome, log, m) = observe(|_| {
        c.sim.run(async {
            let lock = manager.lock("job", ms(1_000)).await.expect("free");
            for f in &c.faults {
                f.set_down(true);
            }
            // One renewal round fails; then the instances come back and the next one succeeds.
            let renew = std::pin::pin!(lock.keep_alive());
            let first_failure = async {
                while c.faults.iter().all(|f| f.calls() < 2) {
                    c.clock.sleep(ms(1)).await;
                }
                for f in &c.faults {
                    f.heal();
                }
                lock.release().await
            };
            let released = match select(renew, std::pin::pin!(first_failure)).await {
                Either::Left((renewed, _)) => panic!("renewal ended: {renewed:?}"),
                Either::Right((released, _)) => released,
            };
            released
        })
    });
    assert!(outcome.is_ok(), "{outcome:?}");
    let failed = log.events("lock renewal failed");
    assert!(!failed.is_empty());
    for e in &failed {
        assert_eq!(e.fields["outcome"], "unavailable");
        assert_eq!(e.fields["retrying"], "true");
    }
    assert_eq!(
        counter(
            &m,
            "redlock_renewal_failures_total",
            &[("error", "unavailable")]
        ),
        u64::try_from(failed.len()).unwrap()
    );
    assert!(log.events("lock lost").is_empty());
}

#[test]
fn a_fair_yield_is_an_event_with_its_wait() {
    let c = Cluster::new(3);
    let grace = ms(20);
    let releaser = LockManager::builder(Arc::clone(&c.clock))
        .instances(c.memories.iter().map(|m| Arc::new(m.clone()) as _))
        .random(Arc::new(SeededRandom::new(3)))
        .fair(grace)
        .build()
        .expect("valid");
    let ((), log, m) = observe(|_| {
        c.sim.run(async {
            let lock = releaser.lock("r", TTL).await.expect("free");
            // A waiter that subscribed and never takes its turn.
            let mut subscriptions = Vec::new();
            for i in &c.memories {
                let notify = i.release_notify().expect("announces");
                subscriptions.push(notify.subscribe(b"r").await.expect("subscribed"));
            }
            lock.release().await.expect("release");
            let again = releaser.lock("r", TTL).await.expect("after the grace");
            again.release().await.expect("release");
        })
    });
    let [yielded] = log.events("fair mode: letting a waiter go first")[..] else {
        panic!("{:?}", log.events)
    };
    assert_eq!(yielded.fields["wait_ms"], grace.as_millis().to_string());
    assert_eq!(yielded.span, Some("redlock.lock"));
    assert_eq!(counter(&m, "redlock_fair_yields_total", &[]), 1);
}

#[test]
fn a_dropped_acquire_is_recorded_as_cancelled() {
    const WAITED: Duration = Duration::from_millis(50);
    let c = Cluster::new(3);
    let holder = c.manager(1);
    let waiter = c.manager(2);
    let (timed_out, log, m) = observe(|_| {
        c.sim.run(async {
            let _held = holder.lock("job", TTL).await.expect("free");
            let options = LockOptions::new(TTL).patience(Patience::UntilCancelled);
            let attempt = std::pin::pin!(waiter.lock_opts("job", options));
            matches!(
                select(attempt, c.clock.sleep(WAITED)).await,
                Either::Right(_)
            )
        })
    });
    assert!(timed_out);
    let spans = log.spans("redlock.lock");
    let [_, dropped] = spans[..] else {
        panic!("{spans:?}")
    };
    assert!(dropped.closed);
    assert_eq!(dropped.get("outcome"), "cancelled");
    assert_eq!(dropped.get("elapsed_us"), WAITED.as_micros().to_string());
    assert_eq!(
        counter(
            &m,
            "redlock_acquisitions_total",
            &[("outcome", "cancelled")]
        ),
        1
    );
}

#[test]
fn an_acquisition_by_hand_offs_is_an_event_and_a_count() {
    let c = Cluster::new(3);
    let manager = |seed| {
        LockManager::builder(Arc::clone(&c.clock))
            .instances(
                c.memories
                    .iter()
                    .map(|m| Arc::new(m.clone().hand_off(true)) as Arc<dyn LockBackend>),
            )
            .random(Arc::new(SeededRandom::new(seed)))
            .build()
            .expect("valid")
    };
    let (holder, waiter) = (manager(1), manager(2));
    let (got_at, log, m) = observe(|_| {
        c.sim.run(async {
            let held = holder.lock("r", TTL).await.expect("free");
            let clock = Arc::clone(&c.clock);
            let release = async move {
                clock.sleep(ms(50)).await;
                held.release().await.expect("release");
            };
            let take = async {
                let lock = waiter.lock("r", TTL).await.expect("handed over");
                let at = c.clock.now();
                lock.release().await.expect("release");
                at
            };
            futures::future::join(release, take).await.1
        })
    });
    assert_eq!(got_at, ms(50), "taken at the release");
    let [handed] = log.events("acquired by hand-off")[..] else {
        panic!("{:?}", log.events)
    };
    assert_eq!(handed.fields["instances"], "3");
    assert_eq!(handed.span, Some("redlock.lock"));
    assert_eq!(counter(&m, "redlock_handed_over_total", &[]), 1);
    // Its attempts (one refused plain one, one that queued) are counted as such; the hand-off
    // is not an attempt.
    assert_eq!(
        counter(
            &m,
            "redlock_acquire_attempts_total",
            &[("outcome", "contended")]
        ),
        2
    );
    assert_eq!(
        counter(&m, "redlock_acquisitions_total", &[("outcome", "acquired")]),
        2
    );
}
