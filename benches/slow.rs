//! One of N instances (N = 3 and 5) answering 20 ms late: lock latency and whole-cycle rate next
//! to the healthy case, for redlock, the peer rslock and the raw-fred floor (which, like rslock,
//! waits for all N).
//!
//! ```text
//! cargo bench --bench slow                        # full run
//! REDLOCK_BENCH_QUICK=1 cargo bench --bench slow  # smoke run
//! ```
//!
//! The slow instance sits behind a delaying TCP proxy run by this bench on a thread of its own:
//! requests pass straight through, and every chunk of replies leaves the proxy 20 ms after it
//! arrived from the server (a delay line: replies stay in order and pipelining is not
//! serialised). A constant delay is steadier to measure than `DEBUG SLEEP` pulses.
//! `REDLOCK_BENCH_ONLY` (subjects `floor`, `rslock`, `redlock`), `REDLOCK_BENCH_N` and
//! `REDLOCK_BENCH_FLAVOUR` restrict a run.

mod common;

use std::collections::VecDeque;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    header, instance_counts, manager, manager_rs, ms, ports, print_failures, quantile, quick,
    rslock, selected, seq_paced, start_servers, warm_up, Flavour, Floor, Seq, Subject,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DELAY: Duration = Duration::from_millis(20);

/// Starts a proxy to `upstream` that delays replies by `delay`; returns its port. It lives until
/// the process ends.
fn delaying_proxy(upstream: u16, delay: Duration) -> u16 {
    let listener = StdListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
    let port = listener.local_addr().expect("local addr").port();
    assert_ne!(port, 6379, "the shared redis port");
    listener.set_nonblocking(true).expect("non-blocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(proxy_connection(client, upstream, delay));
            }
        });
    });
    port
}

async fn proxy_connection(client: TcpStream, upstream: u16, delay: Duration) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = server_read.read(&mut buf).await {
            if tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    // Everything due by the time the proxy wakes leaves in one write: one wake-up per timer
    // tick instead of one per reply chunk, so the proxy's own CPU (on the same two cores as
    // the client and the servers) stays small next to what is measured.
    let mut line: VecDeque<(tokio::time::Instant, Vec<u8>)> = VecDeque::new();
    let mut out = Vec::new();
    loop {
        if line.is_empty() {
            match rx.recv().await {
                Some(chunk) => line.push_back(chunk),
                None => break,
            }
        }
        // A chunk already due (always, undelayed) is not put through the timer: tokio rounds a
        // deadline up to its next millisecond tick, which would delay it by up to 1 ms.
        if let Some((due, _)) = line.front() {
            if *due > tokio::time::Instant::now() {
                tokio::time::sleep_until(*due).await;
            }
        }
        while let Ok(chunk) = rx.try_recv() {
            line.push_back(chunk);
        }
        let now = tokio::time::Instant::now();
        out.clear();
        while line.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, chunk)) = line.pop_front() {
                out.extend_from_slice(&chunk);
            }
        }
        if client_write.write_all(&out).await.is_err() {
            break;
        }
    }
}

struct Row {
    n: usize,
    case: &'static str,
    subject: &'static str,
    seq: Seq,
}

#[derive(Clone, Copy)]
enum Unlock {
    /// Each cycle awaits its unlock, idle for this long before the next cycle.
    Awaited(Duration),
    /// Each unlock runs in a task of its own; the next lock starts at once.
    Detached,
}

async fn measure(
    n: usize,
    ports: &[u16],
    case: &'static str,
    (cycles, slow_cycles): (u64, u64),
    unlock: Unlock,
    warm: u64,
    tag: &str,
) -> Vec<Row> {
    let mut subjects = Vec::new();
    if selected("floor") {
        let floor = Floor::connect(ports).await;
        subjects.push(("floor", Arc::new(Subject::Floor(floor))));
    }
    if selected("rslock") {
        subjects.push(("rslock", Arc::new(Subject::Rslock(rslock(ports)))));
    }
    if selected("redlock") {
        subjects.push(("redlock", Arc::new(Subject::Redlock(manager(ports, true)))));
    }
    if selected("redlock-rs") {
        subjects.push((
            "redlock-rs",
            Arc::new(Subject::Redlock(manager_rs(ports, true))),
        ));
    }
    let mut rows = Vec::new();
    for (name, subject) in &subjects {
        // The subjects whose unlock waits for every instance take 20 ms a cycle with the slow
        // one: fewer cycles keep their rows to seconds. The others run as many as healthy.
        let cycles = if case.starts_with("1 slow") && matches!(*name, "floor" | "rslock") {
            cycles.min(slow_cycles)
        } else {
            cycles
        };
        let prefix = format!("{tag}:{case}:{name}");
        warm_up(subject, &prefix, warm).await;
        let seq = match unlock {
            Unlock::Awaited(pause) => seq_paced(subject, &prefix, cycles, pause).await,
            Unlock::Detached => {
                let mut seq = Seq {
                    cycles,
                    ..Seq::default()
                };
                let start = Instant::now();
                for i in 0..cycles {
                    match subject.lock_detached(&format!("{prefix}:{i}"), 0, i).await {
                        Ok(took) => seq.lock.push(took),
                        Err(e) => seq.failures.add(e),
                    }
                }
                seq.elapsed = start.elapsed();
                // Let the last unlocks finish before the connections close.
                tokio::time::sleep(DELAY * 5).await;
                seq
            }
        };
        rows.push(Row {
            n,
            case,
            subject: name,
            seq,
        });
    }
    for (_, subject) in &subjects {
        subject.close().await;
    }
    rows
}

fn main() {
    let quick = quick();
    let (healthy_cycles, slow_cycles, warm) = if quick { (20, 8, 3) } else { (2000, 400, 50) };
    header(
        "slow-instance bench: N = 3 and 5, one instance behind a proxy that delays its replies by \
         20 ms",
        quick,
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for n in instance_counts(&[3, 5]) {
        let servers = start_servers(n);
        let healthy = ports(&servers);
        let mut slow = healthy.clone();
        slow[0] = delaying_proxy(healthy[0], DELAY);
        // The same proxy without the delay: what the proxy itself costs on this machine, to
        // tell it apart from what the slow instance costs.
        let mut proxied = healthy.clone();
        proxied[0] = delaying_proxy(healthy[0], Duration::ZERO);
        for flavour in Flavour::selected() {
            let runtime = flavour.runtime();
            let tag = format!("{n}:{}", flavour.name());
            let back_to_back = Unlock::Awaited(Duration::ZERO);
            let cases = [
                (&healthy, "healthy", healthy_cycles, back_to_back),
                (&proxied, "proxied", healthy_cycles, back_to_back),
                (&healthy, "paced", slow_cycles, Unlock::Awaited(DELAY)),
                (&slow, "1 slow", healthy_cycles, back_to_back),
                (&healthy, "healthy/d", healthy_cycles, Unlock::Detached),
                (&slow, "1 slow/d", healthy_cycles, Unlock::Detached),
            ];
            let mut rows = Vec::new();
            for (ports, case, cycles, unlock) in cases {
                rows.extend(runtime.block_on(measure(
                    n,
                    ports,
                    case,
                    (cycles, slow_cycles),
                    unlock,
                    warm,
                    &tag,
                )));
            }
            results.push((flavour, rows));
        }
    }

    println!();
    println!(
        "one task, lock + unlock cycles on distinct resources. healthy: {healthy_cycles} cycles \
         back to back; proxied: the same with one instance behind the proxy, undelayed (what \
         the proxy costs); paced: {slow_cycles} healthy cycles, each after {DELAY:?} idle (the \
         peers' cycles with the slow instance are, since their unlock waits for it); 1 slow: \
         {healthy_cycles} cycles with the slow instance ({slow_cycles} for floor and rslock, \
         whose cycles wait for it); /d: the same, with each unlock in a task of its own, so \
         locks follow each other without idle gaps. baseline: 1 slow vs paced, 1 slow/d vs \
         healthy/d; vs proxied: the rate against the undelayed proxy's ({:.0} s in all)",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:>2} {:<15} {:<9} {:<8} {:>9} {:>9} {:>10} {:>11} {:>11} {:>9} {:>10} {:>10}",
        "N",
        "runtime",
        "case",
        "subject",
        "lock p50",
        "lock p99",
        "vs healthy",
        "vs baseline",
        "unlock p50",
        "cycles/s",
        "vs healthy",
        "vs proxied"
    );
    println!("{:>46} {:>9} {:>34}", "(ms)", "(ms)", "(ms)");
    for (flavour, rows) in &results {
        for row in rows {
            let of = |case: &str| {
                rows.iter()
                    .find(|r| r.case == case && r.subject == row.subject)
                    .map(|r| &r.seq)
            };
            let p50_of = |case: &str| {
                of(case)
                    .map(|s| quantile(&s.lock, 0.5).as_secs_f64())
                    .unwrap_or(f64::NAN)
            };
            let baseline = match row.case {
                "1 slow" => p50_of("paced"),
                "1 slow/d" => p50_of("healthy/d"),
                _ => p50_of("healthy"),
            };
            let p50 = quantile(&row.seq.lock, 0.5).as_secs_f64();
            let unlock = if row.seq.unlock.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.3}", ms(quantile(&row.seq.unlock, 0.5)))
            };
            let healthy_rate = of("healthy").map(Seq::per_sec).unwrap_or(f64::NAN);
            let proxied_rate = of("proxied").map(Seq::per_sec).unwrap_or(f64::NAN);
            println!(
                "{:>2} {:<15} {:<9} {:<8} {:>9.3} {:>9.3} {:>9.2}x {:>10.2}x {unlock:>11} {:>9.0} {:>9.2}x {:>9.2}x",
                row.n,
                flavour.name(),
                row.case,
                row.subject,
                p50 * 1e3,
                ms(quantile(&row.seq.lock, 0.99)),
                p50 / p50_of("healthy"),
                p50 / baseline,
                row.seq.per_sec(),
                row.seq.per_sec() / healthy_rate,
                row.seq.per_sec() / proxied_rate,
            );
        }
    }
    print_failures(results.iter().flat_map(|(flavour, rows)| {
        rows.iter().map(move |r| {
            (
                format!("N={} {} {} {}", r.n, flavour.name(), r.case, r.subject),
                &r.seq.failures,
            )
        })
    }));
    println!(
        "targets: redlock lock p50 with one slow instance within 1.5x of healthy (an attempt \
         returns once a quorum answered); issue 12: whole cycles (1 slow, cycles/s) at least \
         0.60x the healthy rate (unlock returns at a quorum; its delete to the slow instance \
         finishes in the background); vs proxied shows the same without the proxy's own cost"
    );
}
