//! The operations' spans follow the subscriber in place at each call. Nobody is made to pay for
//! spans nobody reads: an operation builds its `DEBUG` span, times itself and wraps its call only
//! when the current level lets `DEBUG` through (or the `metrics` feature is on). That check is
//! made per call, so a subscriber installed after the manager was built, or a level raised at
//! run time, is seen by the next call.
//!
//! CI also runs this file with `tracing` alone (`--no-default-features --features
//! tracing,mock`), the one build where the level decides; with `metrics` on, every operation is
//! observed and the same assertions hold.

mod common;

use std::sync::{Arc, Mutex};

use common::{Cluster, TTL};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The names of the spans opened, and the outcomes recorded into them, in order.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(&'static str, String)>>>);

struct Index(usize);

struct Outcome<'a>(&'a mut String);

impl tracing::field::Visit for Outcome<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "outcome" {
            *self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "outcome" {
            value.clone_into(self.0);
        }
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut log = self.0.lock().unwrap();
        log.push((attrs.metadata().name(), String::new()));
        let index = log.len() - 1;
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(index));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(&Index(index)) = span.extensions().get::<Index>() else {
            return;
        };
        values.record(&mut Outcome(&mut self.0.lock().unwrap()[index].1));
    }
}

impl Capture {
    fn take(&self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A lock, extend, check and release of `resource`.
fn cycle(c: &Cluster, manager: &redlock_lease::LockManager, resource: &str) {
    c.sim.run(async {
        let lock = manager.lock(resource, TTL).await.expect("free");
        lock.extend_for(TTL).await.expect("extend");
        lock.check().await.expect("held");
        lock.release().await.expect("release");
    });
}

fn spans_at(
    level: LevelFilter,
    c: &Cluster,
    manager: &redlock_lease::LockManager,
) -> Vec<(&'static str, String)> {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(level)
        .with(capture.clone());
    tracing::subscriber::with_default(subscriber, || cycle(c, manager, "job"));
    capture.take()
}

#[test]
fn a_subscriber_at_debug_sees_every_operation_even_one_installed_after_the_manager_was_used() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    // Used first with nothing listening on this thread.
    cycle(&c, &manager, "before");
    // Exactly DEBUG: a check for any level above it (TRACE) would find nothing enabled and
    // leave the spans out.
    let spans = spans_at(LevelFilter::DEBUG, &c, &manager);
    let expected = [
        ("redlock.lock", "acquired"),
        ("redlock.extend", "extended"),
        ("redlock.check", "held"),
        ("redlock.release", "released"),
    ];
    let got: Vec<(&str, &str)> = spans.iter().map(|(n, o)| (*n, o.as_str())).collect();
    assert_eq!(got, expected);
}

#[test]
fn below_debug_no_operation_span_is_made_and_the_locks_work_the_same() {
    let c = Cluster::new(3);
    let manager = c.manager(1);
    for level in [LevelFilter::INFO, LevelFilter::OFF] {
        let spans = spans_at(level, &c, &manager);
        assert!(
            spans.iter().all(|(name, _)| !name.starts_with("redlock.")),
            "{level}: {spans:?}"
        );
    }
    // And back at DEBUG on the same manager: seen again.
    let spans = spans_at(LevelFilter::DEBUG, &c, &manager);
    assert_eq!(spans.len(), 4, "{spans:?}");
}
