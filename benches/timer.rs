//! How long a 1 ms `tokio::time::sleep` takes when the runtime is woken during it, by nothing
//! but one wake-up from outside, `d` after the sleep starts. No library and no Redis: this is
//! the yardstick for the `contend` hold (`handoff` bench), where a fair queue's work lands
//! inside the next holder's sleep.
//!
//! Tokio's timer counts whole milliseconds. When its runtime goes to park, it parks for
//! `deadline tick - floor(now in ms)` whole milliseconds, so every time the runtime wakes during
//! a sleep and parks again, the sleep's end is counted afresh from the millisecond of that
//! wake-up. On a current-thread runtime the sleeping task's own thread is the one woken; on a
//! multi-thread runtime another worker takes the wake-up and the sleeper's worker stays parked.
//!
//! For each runtime flavour and each `d` (none, then 50 µs to 900 µs), `SAMPLES` sleeps, each
//! with a helper thread that waits `d` after the sleep's start and then wakes a task on the
//! runtime (`Notify`). Printed: the sleep's p50 and p99 and the p50 of when the wake-up task
//! actually ran, after the start.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::quantile;
use tokio::sync::Notify;

const SLEEP: Duration = Duration::from_millis(1);

/// One sleep of `SLEEP`, woken into (or not) `d` after its start: (sleep, when the wake-up ran).
async fn sample(d: Option<Duration>) -> (Duration, Option<Duration>) {
    let Some(d) = d else {
        let start = Instant::now();
        tokio::time::sleep(SLEEP).await;
        return (start.elapsed(), None);
    };
    let notify = Arc::new(Notify::new());
    let (go, wait) = mpsc::channel::<Instant>();
    let waker = {
        let notify = Arc::clone(&notify);
        std::thread::spawn(move || {
            let start = wait.recv().expect("start");
            std::thread::sleep(d.saturating_sub(start.elapsed()));
            notify.notify_one();
        })
    };
    let woken = {
        let notify = Arc::clone(&notify);
        tokio::spawn(async move {
            notify.notified().await;
            Instant::now()
        })
    };
    // Lets the wake-up task register before anything is timed.
    tokio::task::yield_now().await;
    let start = Instant::now();
    go.send(start).expect("waker thread");
    tokio::time::sleep(SLEEP).await;
    let slept = start.elapsed();
    let ran = woken.await.expect("wake-up task").duration_since(start);
    waker.join().expect("waker thread");
    (slept, Some(ran))
}

fn main() {
    let samples = if std::env::args().any(|a| a == "--bench") {
        400
    } else {
        // `cargo test --benches` runs this as a smoke test.
        10
    };
    println!(
        "timer bench: a {SLEEP:?} tokio sleep with one wake-up of its runtime from outside, d \
         after the sleep starts; {samples} samples per row; sleep p50 / p99, and when the \
         wake-up task ran (p50)"
    );
    println!(
        "{:<15} {:>8} {:>10} {:>10} {:>10}",
        "runtime", "d us", "sleep p50", "sleep p99", "woke p50"
    );
    let ds = [
        None,
        Some(50),
        Some(100),
        Some(200),
        Some(400),
        Some(700),
        Some(900),
    ];
    for multi in [false, true] {
        let runtime = if multi {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        .expect("runtime");
        for d in ds {
            let (slept, woke) = runtime.block_on(async {
                let (mut slept, mut woke) = (Vec::new(), Vec::new());
                for _ in 0..samples {
                    let (s, w) = sample(d.map(Duration::from_micros)).await;
                    slept.push(s);
                    woke.extend(w);
                }
                (slept, woke)
            });
            let ms = |x: Duration| x.as_secs_f64() * 1e3;
            println!(
                "{:<15} {:>8} {:>10.3} {:>10.3} {:>10}",
                if multi {
                    "multi-thread"
                } else {
                    "current-thread"
                },
                d.map_or("none".to_owned(), |d| d.to_string()),
                ms(quantile(&slept, 0.5)),
                ms(quantile(&slept, 0.99)),
                if woke.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{:.3}", ms(quantile(&woke, 0.5)))
                },
            );
        }
    }
}
