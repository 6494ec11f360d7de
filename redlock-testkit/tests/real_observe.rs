//! redlock-fred's `tracing` events and `metrics` counter against a real server: a connection
//! reset by the server is a warning, and the reconnection that follows is reported and counted.
//! (The core's spans, events and metrics are asserted on virtual time by the facade's
//! tests/observe.rs; this one needs a real server, so it lives with the harness.)

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use redlock_testkit::{require_redis, RedisServer};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One event: level, message and fields (all values as text).
#[derive(Debug, Clone)]
struct EventRec {
    level: Level,
    message: String,
    fields: BTreeMap<String, String>,
}

/// A layer that records every event.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<EventRec>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        self.0.lock().unwrap().push(EventRec {
            level: *event.metadata().level(),
            message,
            fields,
        });
    }
}

impl Capture {
    fn saw(&self, message: &str) -> bool {
        self.0.lock().unwrap().iter().any(|e| e.message == message)
    }

    fn events(&self, message: &str) -> Vec<EventRec> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.message == message)
            .cloned()
            .collect()
    }
}

#[test]
fn a_lost_connection_and_its_reconnection_are_events() {
    require_redis();
    let server = RedisServer::start();
    let instance = format!("127.0.0.1:{}", server.port());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let manager = redlock_fred::manager([server.url()])
        .build()
        .expect("valid");
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The current-thread runtime runs every task on this thread, where both are installed.
    tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                manager.connect().await.expect("connected");
                assert!(
                    server.client_kill() >= 1,
                    "the backend's connection was reset"
                );
                let start = Instant::now();
                while !capture.saw("reconnected") {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "no reconnection: {:?}",
                        capture.0.lock().unwrap()
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let lock = manager
                    .lock("job", Duration::from_secs(10))
                    .await
                    .expect("works again");
                lock.release().await.expect("released");
            });
        });
    });

    let all = capture.0.lock().unwrap().clone();
    let [connected] = &capture.events("connected")[..] else {
        panic!("{all:?}")
    };
    assert_eq!(connected.level, Level::DEBUG);
    assert_eq!(connected.fields["instance"], instance);
    let [lost] = &capture.events("connection lost; reconnecting")[..] else {
        panic!("{all:?}")
    };
    assert_eq!(lost.level, Level::WARN);
    assert_eq!(lost.fields["instance"], instance);
    let [reconnected] = &capture.events("reconnected")[..] else {
        panic!("{all:?}")
    };
    assert_eq!(reconnected.level, Level::INFO);
    assert_eq!(reconnected.fields["instance"], instance);
    assert_eq!(reconnected.fields["reconnections"], "1");

    let reconnects: Vec<(Vec<(String, String)>, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "redlock_backend_reconnects_total")
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (labels, value)
        })
        .collect();
    assert_eq!(
        reconnects,
        [(
            vec![("instance".to_owned(), instance.clone())],
            DebugValue::Counter(1)
        )]
    );
    runtime.block_on(manager.close()).expect("closed once");
}
