//! The scoped form's promise on real servers: once the lock may be someone else's, the work is
//! no longer polled.
//!
//! Three servers. The holder reaches them through proxies, the rival directly. Right after the
//! holder's work starts (once its grant is on all three), the holder's links to two servers
//! stall: its renewals cannot reach a majority, the keys there expire at the end of the lease,
//! and the rival, trying every 1–3 ms, acquires. The work's last poll must come before the
//! rival's successful call started. The holder's deadline is its lease less the drift allowance,
//! so a work stopped at the deadline leaves about that allowance (12 ms for 1 s, 22 ms for 2 s)
//! as margin; a renewal round that runs past the deadline eats it. The margin and the distance
//! of the last poll from the holder's deadline are printed per trial
//! (`cargo test -p redlock-fred --test real_deadline -- --nocapture`).
//!
//! `REDLOCK_DEADLINE_TRIALS` sets the trials per lease (default 5).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use redlock_core::{AutoExtend, Error, LockManager, LockWatch};
use redlock_testkit::{require_redis, Proxy, RedisServer};

const DEFAULT_TRIALS: usize = 5;

/// Bound of every wait for a condition (a hang guard, never reached when things work).
const WAIT: Duration = Duration::from_secs(10);

fn trials() -> usize {
    std::env::var("REDLOCK_DEADLINE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_TRIALS)
}

/// When the work was polled.
#[derive(Debug, Default, Clone, Copy)]
struct Polls {
    last: Option<Instant>,
    count: u64,
}

/// Records `Instant::now()` at every poll of the future it wraps.
struct Recorded<F> {
    inner: Pin<Box<F>>,
    polls: Arc<Mutex<Polls>>,
}

impl<F: Future> Future for Recorded<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let now = Instant::now();
        {
            let mut polls = self.polls.lock().unwrap_or_else(PoisonError::into_inner);
            polls.last = Some(now);
            polls.count += 1;
        }
        self.inner.as_mut().poll(cx)
    }
}

/// Signed milliseconds from `from` to `to`.
fn ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1e3
    } else {
        -(from - to).as_secs_f64() * 1e3
    }
}

/// One trial's figures.
#[derive(Debug)]
struct Trial {
    /// What `with_lock_opts` returned.
    outcome: Result<(), String>,
    /// Rival's successful call start − the work's last poll (ms; must be > 0).
    margin: f64,
    /// The work's last poll − the holder's deadline (ms).
    after_deadline: f64,
    /// Rival's successful call start − the holder's deadline (ms).
    rival_after_deadline: f64,
    polls: u64,
    rival_attempts: u32,
}

/// Tries to take `resource` every 1–3 ms until it succeeds; returns when the successful call
/// started and how many calls were made.
async fn rival_loop(
    rival: &LockManager,
    resource: &str,
    seed: u64,
    give_up: Instant,
) -> (Instant, u32) {
    let mut rng = seed | 1;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let start = Instant::now();
        match rival.lock(resource, Duration::from_secs(10)).await {
            Ok(lock) => {
                lock.release().await.expect("the rival releases");
                return (start, attempts);
            }
            Err(Error::Contended(_) | Error::Unavailable(_) | Error::ValidityExpired(_)) => {}
            Err(other) => panic!("rival: {other:?}"),
        }
        assert!(
            Instant::now() < give_up,
            "the rival never acquired {resource} ({attempts} attempts)"
        );
        // xorshift: a jittered 1–3 ms without a dependency.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(1 + rng % 3)).await;
    }
}

/// The holder's work: notes its deadline, stalls the holder's links to servers 0 and 1 once
/// its grant is on all three, lets the rival start, then runs until it is stopped.
async fn work(
    watch: LockWatch,
    servers: &[RedisServer],
    proxies: &[Proxy],
    deadline: Arc<Mutex<Option<Instant>>>,
    started: oneshot::Sender<()>,
) {
    *deadline.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(Instant::now() + watch.remaining());
    // The acquire returns at a quorum: a grant still on its way to a server about to stall would
    // never land, that server would be free, and a release after the loss could then hand the
    // rival a majority before any key expired. Each key must last its full TTL.
    let since = Instant::now();
    while !servers
        .iter()
        .all(|s| s.get(watch.resource()).as_deref() == Some(watch.token()))
    {
        assert!(since.elapsed() < WAIT, "the grant never landed everywhere");
        tokio::task::yield_now().await;
    }
    proxies[0].stall();
    proxies[1].stall();
    let _ = started.send(());
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn trial(servers: &[RedisServer], lease: Duration, n: usize) -> Trial {
    let resource = format!("deadline-{}-{n}", lease.as_millis());
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.port())).collect();
    let holder = redlock_fred::manager(proxies.iter().map(Proxy::url))
        .wake_on_release(false)
        .build()
        .expect("config");
    let rival = redlock_fred::manager(servers.iter().map(RedisServer::url))
        .retry_count(1)
        .wake_on_release(false)
        .build()
        .expect("config");
    // Both connected before the trial: a holder connecting during its acquire would set the
    // keys later than its deadline is counted from, and give the rival extra time.
    assert!(!rival.is_locked(&resource).await.expect("rival connects"));
    assert!(!holder.is_locked(&resource).await.expect("holder connects"));

    let (started_tx, started_rx) = oneshot::channel::<()>();
    let rival_task = {
        let resource = resource.clone();
        let give_up = Instant::now() + lease * 10 + Duration::from_secs(5);
        tokio::spawn(async move {
            started_rx.await.expect("the work started");
            let won = rival_loop(&rival, &resource, n as u64 + 1, give_up).await;
            rival.close().await.expect("close");
            won
        })
    };

    let polls = Arc::new(Mutex::new(Polls::default()));
    let deadline = Arc::new(Mutex::new(None::<Instant>));
    let scoped = holder.with_lock_opts(
        &resource,
        AutoExtend::default().with_lease(lease),
        |watch| Recorded {
            polls: Arc::clone(&polls),
            inner: Box::pin(work(
                watch,
                servers,
                &proxies,
                Arc::clone(&deadline),
                started_tx,
            )),
        },
    );
    // A hang guard only: with two of three links stalled no renewal can succeed.
    let outcome = tokio::time::timeout(lease * 5 + WAIT, scoped)
        .await
        .expect("with_lock_opts ends once the lock is lost");
    let polls = *polls.lock().unwrap_or_else(PoisonError::into_inner);
    let last = polls
        .last
        .unwrap_or_else(|| panic!("the work never ran: {outcome:?}"));
    let (rival_start, rival_attempts) = rival_task.await.expect("rival task");
    holder.close().await.expect("close");
    drop(proxies);

    let deadline = deadline
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .expect("the work recorded its deadline");
    Trial {
        outcome: match outcome {
            Err(Error::Lost(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
        margin: ms(last, rival_start),
        after_deadline: ms(deadline, last),
        rival_after_deadline: ms(deadline, rival_start),
        polls: polls.count,
        rival_attempts,
    }
}

async fn run(lease: Duration) {
    require_redis();
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let mut failures = Vec::new();
    let mut margins = Vec::new();
    for n in 0..trials() {
        let t = trial(&servers, lease, n).await;
        println!(
            "lease {lease:?} trial {n}: rival call start − last poll = {:+.2} ms, last poll − \
             deadline = {:+.2} ms, rival call start − deadline = {:+.2} ms ({} polls, {} rival \
             attempts, outcome {:?})",
            t.margin,
            t.after_deadline,
            t.rival_after_deadline,
            t.polls,
            t.rival_attempts,
            t.outcome
        );
        margins.push(t.margin);
        if t.outcome.is_err() || t.margin <= 0.0 {
            failures.push(t);
        }
    }
    let (min, max) = margins
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &m| {
            (lo.min(m), hi.max(m))
        });
    println!(
        "lease {lease:?}: rival call start − last poll from {min:+.2} to {max:+.2} ms over {} \
         trials, {} failed",
        margins.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "lease {lease:?}: the work was polled after the rival's successful call started, or \
         with_lock did not report the loss: {failures:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_not_polled_after_a_rival_acquires_lease_1s() {
    run(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_not_polled_after_a_rival_acquires_lease_2s() {
    run(Duration::from_secs(2)).await;
}
