//! A hot lock under overload (issue 10), on three real `redis-server` processes: K tasks on R
//! resources, each doing lock → yield → unlock with a 1 s lease until the row ends, when every
//! waiter still waiting is dropped at once. Next to the same load on a raw-fred loop, in the
//! same run.
//!
//! ```text
//! cargo bench -p redlock-benches --bench overload                 # 10 s rows, a few minutes
//! REDLOCK_OVERLOAD_LONG=1 cargo bench -p redlock-benches --bench overload  # acceptance rows 60 s
//! REDLOCK_BENCH_QUICK=1 cargo bench -p redlock-benches --bench overload    # smoke run
//! ```
//!
//! `REDLOCK_OVERLOAD_ROWS=lock-10000x100,raw-fred-10000x100` runs only the named rows (names as
//! printed); `REDLOCK_OVERLOAD_SECS` sets every row's length.
//!
//! Modes: `lock` is `lock_opts(resource, LockOptions::new(1 s).patience(UntilCancelled))` on a
//! manager with the defaults, shared by every task of the process; `fair` the same with fair
//! mode on; `lock-rs` and `fair-rs` the same on the redis-rs backend (`redlock-redis`);
//! `rslock` is the peer, rslock with its defaults looping on `acquire_no_guard`, then `unlock`;
//! `raw-fred` is `SET key token NX PX 1000` on the three servers at once, a quorum wins,
//! otherwise the keys it got are given back (compare-and-delete) and it retries at once;
//! released with the compare-and-delete script. Latency: from the call to the acquisition
//! (including every retry of the raw loop). Per row: acquisitions/s, p50/p99/max latency,
//! successes per task (the smallest, and how many tasks were served at least once), client RSS
//! at the start, peak (VmHWM, reset at the row's start) and after, commands the servers executed
//! per acquisition (INFO commandstats), and what was left: keys at the stop, whether they were
//! all gone within 500 ms (by release: the lease is 1 s), keys showing up after that, and
//! release channels still subscribed within 6 s (looked at before the client closes).
//!
//! Multi-process rows start this bench again as child processes (`multi.rs`). The `try_lock`
//! rows: 1 000 tasks call `try_lock` on one key at once; exactly one must win.
//!
//! Under `cargo test --benches` (the smoke run) the rows are tiny and short, and the invariants
//! are still checked: nothing left on the servers, `try_lock` granted exactly once.

mod common;
#[path = "overload/multi.rs"]
mod multi;
#[path = "overload/row.rs"]
mod row;
#[path = "overload/stats.rs"]
mod stats;
#[path = "overload/try_lock.rs"]
mod try_lock;

use std::time::Duration;

use common::{header, load_average, ports, quick, start_servers};
use row::{Mode, Outcome, Spec};
use stats::mib;

/// One row of the plan: `processes` > 1 runs it in that many child processes.
#[derive(Debug, Clone)]
struct Plan {
    mode: Mode,
    tasks: usize,
    resources: usize,
    processes: usize,
    /// A 60 s row under `REDLOCK_OVERLOAD_LONG`.
    long: bool,
}

impl Plan {
    const fn new(mode: Mode, tasks: usize, resources: usize) -> Self {
        Self {
            mode,
            tasks,
            resources,
            processes: 1,
            long: false,
        }
    }

    const fn long(mut self) -> Self {
        self.long = true;
        self
    }

    const fn processes(mut self, n: usize) -> Self {
        self.processes = n;
        self
    }

    fn name(&self) -> String {
        if self.processes > 1 {
            format!(
                "{}-{}x{}x{}",
                self.mode.name(),
                self.processes,
                self.tasks,
                self.resources
            )
        } else {
            format!("{}-{}x{}", self.mode.name(), self.tasks, self.resources)
        }
    }
}

fn plan(quick: bool) -> Vec<Plan> {
    use Mode::{Fair, FairRs, Lock, LockRs, Raw, Rslock};
    if quick {
        return vec![
            Plan::new(Lock, 100, 100),
            Plan::new(Lock, 1_000, 10),
            Plan::new(Fair, 200, 1),
            Plan::new(Raw, 100, 10),
            Plan::new(Lock, 100, 10).processes(2),
            Plan::new(LockRs, 1_000, 10),
            Plan::new(FairRs, 200, 1),
            Plan::new(Rslock, 100, 10),
        ];
    }
    vec![
        Plan::new(Lock, 100, 100).long(),
        Plan::new(Lock, 1_000, 100),
        Plan::new(Lock, 10_000, 100).long(),
        Plan::new(Fair, 10_000, 100),
        Plan::new(Raw, 100, 100),
        Plan::new(Raw, 10_000, 100).long(),
        Plan::new(Lock, 1, 1),
        Plan::new(Lock, 100, 1),
        Plan::new(Lock, 10_000, 1),
        Plan::new(Lock, 50_000, 1).long(),
        Plan::new(Fair, 1_000, 1),
        Plan::new(Lock, 2_500, 100).processes(4).long(),
        Plan::new(Fair, 2_500, 100).processes(4),
        // The redis-rs backend under the same loads as the acceptance rows above.
        Plan::new(LockRs, 10_000, 100).long(),
        Plan::new(LockRs, 10_000, 1),
        Plan::new(LockRs, 50_000, 1).long(),
        // Four times the acceptance load, to see where it gives (BENCHMARKS.md run 19).
        Plan::new(LockRs, 200_000, 1),
        Plan::new(FairRs, 1_000, 1),
        Plan::new(LockRs, 2_500, 100).processes(4).long(),
        // The peer under the heaviest loads of both shapes.
        Plan::new(Rslock, 10_000, 100),
        Plan::new(Rslock, 10_000, 1),
    ]
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0")
}

fn span(plan: &Plan, quick: bool) -> Duration {
    if let Some(secs) = std::env::var("REDLOCK_OVERLOAD_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Duration::from_secs_f64(secs);
    }
    if quick {
        Duration::from_millis(700)
    } else if plan.long && env_flag("REDLOCK_OVERLOAD_LONG") {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(10)
    }
}

fn chosen(name: &str) -> bool {
    std::env::var("REDLOCK_OVERLOAD_ROWS")
        .map(|only| only.split(',').any(|s| s.trim() == name))
        .unwrap_or(true)
}

/// A row's figures, one process or several merged.
struct Row {
    name: String,
    per_sec: f64,
    span: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    min_per_task: u64,
    served: u64,
    tasks: u64,
    rss: (f64, f64, f64),
    cmds_per_acq: f64,
    left: String,
    clean: bool,
    /// A peer's or the raw loop's row: what it leaves is a finding, not a failure.
    baseline: bool,
    errors: u64,
    /// Share of each process (multi-process rows).
    shares: Vec<f64>,
}

fn from_outcome(p: &Plan, o: &Outcome) -> Row {
    Row {
        name: p.name(),
        baseline: p.mode.is_baseline(),
        per_sec: o.per_sec(),
        span: o.span,
        p50: o.latency.quantile(0.5),
        p99: o.latency.quantile(0.99),
        max: o.latency.max(),
        min_per_task: o.min_per_task,
        served: o.served as u64,
        tasks: p.tasks as u64,
        rss: (
            mib(o.rss_start_kib),
            mib(o.rss_peak_kib),
            mib(o.rss_after_kib),
        ),
        cmds_per_acq: o.commands as f64 / o.acquisitions.max(1) as f64,
        left: format!(
            "{} at stop, {}; {} late; {} ch",
            o.left.at_stop,
            o.left
                .cleared_after
                .map_or(format!("{} after 500 ms", o.left.keys_left), |d| format!(
                    "0 in {} ms",
                    d.as_millis()
                )),
            o.left.ghosts,
            o.left.channels
        ),
        clean: o.left.clean(),
        errors: o.errors,
        shares: Vec::new(),
    }
}

fn run_plan(p: &Plan, quick: bool, ports: &[u16], index: usize) -> Row {
    let spec = Spec {
        mode: p.mode,
        tasks: p.tasks,
        resources: p.resources,
        span: span(p, quick),
        tag: format!("ov{index}"),
    };
    if p.processes <= 1 {
        let out = row::run(&spec, ports, None, None);
        if let Some(e) = &out.first_error {
            println!("  {}: {} failed calls (first: {e})", p.name(), out.errors);
        }
        return from_outcome(p, &out);
    }
    let mut servers = stats::Servers::connect(ports);
    let before = servers.commands();
    let reports = multi::run(&spec, p.processes, ports);
    let commands = servers.commands() - before;
    let total: u64 = reports.iter().map(|r| r.acquisitions).sum();
    let span_ms = reports.iter().map(|r| r.span_ms).max().unwrap_or(1).max(1);
    let us = Duration::from_micros;
    let max_of = |f: fn(&multi::ChildReport) -> u64| reports.iter().map(f).max().unwrap_or(0);
    let kib_max = |f: fn(&multi::ChildReport) -> u64| mib(max_of(f));
    let keys_left = max_of(|r| r.keys_left);
    let ghosts = max_of(|r| r.ghosts);
    let channels = max_of(|r| r.channels);
    Row {
        name: p.name(),
        baseline: p.mode.is_baseline(),
        per_sec: total as f64 / (span_ms as f64 / 1000.0),
        span: Duration::from_millis(span_ms),
        // Per-process quantiles: the worst process's.
        p50: us(max_of(|r| r.p50_us)),
        p99: us(max_of(|r| r.p99_us)),
        max: us(max_of(|r| r.max_us)),
        min_per_task: reports.iter().map(|r| r.min_per_task).min().unwrap_or(0),
        served: reports.iter().map(|r| r.served).sum(),
        tasks: reports.iter().map(|r| r.tasks).sum(),
        rss: (
            kib_max(|r| r.rss_start_kib),
            kib_max(|r| r.rss_peak_kib),
            kib_max(|r| r.rss_after_kib),
        ),
        cmds_per_acq: commands as f64 / total.max(1) as f64,
        left: format!("{keys_left} after 500 ms; {ghosts} late; {channels} ch (worst process)"),
        clean: keys_left == 0 && ghosts == 0 && channels == 0,
        errors: reports.iter().map(|r| r.errors).sum(),
        shares: reports
            .iter()
            .map(|r| r.acquisitions as f64 / total.max(1) as f64)
            .collect(),
    }
}

fn print_row(r: &Row) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{:<22} {:>9.0} {:>5.0}s {:>8.1} {:>8.1} {:>8.1} {:>6} {:>13} {:>5.1}/{:>5.1}/{:>5.1} {:>7.2} {:>6}  {}",
        r.name,
        r.per_sec,
        r.span.as_secs_f64(),
        ms(r.p50),
        ms(r.p99),
        ms(r.max),
        r.min_per_task,
        format!("{}/{}", r.served, r.tasks),
        r.rss.0,
        r.rss.1,
        r.rss.2,
        r.cmds_per_acq,
        r.errors,
        r.left,
    );
    if !r.shares.is_empty() {
        let shares: Vec<String> = r
            .shares
            .iter()
            .map(|s| format!("{:.1}%", s * 100.0))
            .collect();
        println!("{:<22} process shares: {}", "", shares.join(" "));
    }
}

fn main() {
    if multi::child_main() {
        return;
    }
    let quick = quick();
    header(
        "overload bench (issue 10): K tasks on R resources, lock -> yield -> unlock, 1 s lease, 3 servers",
        quick,
    );
    let servers = start_servers(3);
    let ports = ports(&servers);
    println!(
        "{:<22} {:>9} {:>6} {:>8} {:>8} {:>8} {:>6} {:>13} {:>17} {:>7} {:>6}  left (keys at stop, cleared; late keys; channels)",
        "row", "acq/s", "span", "p50 ms", "p99 ms", "max ms", "min/t", "served/tasks", "RSS MiB st/pk/aft", "cmd/acq", "errors"
    );
    let mut rows: Vec<Row> = Vec::new();
    for (i, p) in plan(quick).iter().enumerate() {
        if !chosen(&p.name()) {
            continue;
        }
        let row = run_plan(p, quick, &ports, i);
        print_row(&row);
        rows.push(row);
    }
    let mut failed = Vec::new();
    for r in &rows {
        if !r.clean && !r.baseline {
            failed.push(format!("{}: left {}", r.name, r.left));
        }
    }
    if chosen("try_lock") {
        for managers in [1, 10] {
            let t = try_lock::run(1_000, managers, &ports, &format!("try{managers}"));
            println!(
                "try_lock: {} tasks over {} manager(s) at once: {} won, {} Contended (slowest refusal {:.1} ms), {} other; left {} keys, {} late, {} ch",
                t.tasks,
                t.managers,
                t.won,
                t.contended,
                t.slowest_refusal.as_secs_f64() * 1e3,
                t.other,
                t.left.keys_left,
                t.left.ghosts,
                t.left.channels
            );
            if t.won != 1 || t.contended + t.won != t.tasks || !t.left.clean() {
                failed.push(format!(
                    "try_lock over {managers} manager(s): {} won, {} contended, {} other",
                    t.won, t.contended, t.other
                ));
            }
        }
    }
    ratios(&rows);
    println!("load average (1 min) at the end: {}", load_average());
    assert!(
        failed.is_empty(),
        "invariants broken:\n{}",
        failed.join("\n")
    );
}

/// The acceptance ratios of issue 10 among the rows run.
fn ratios(rows: &[Row]) {
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    if let (Some(big), Some(small)) = (find("lock-10000x100"), find("lock-100x100")) {
        println!(
            "lock 10000x100 / 100x100: {:.0}%",
            big.per_sec / small.per_sec * 100.0
        );
        if let Some(raw) = find("raw-fred-10000x100") {
            println!(
                "lock 10000x100 / raw-fred 10000x100: {:.2}x",
                big.per_sec / raw.per_sec
            );
        }
    }
    if let (Some(big), Some(one)) = (find("lock-50000x1"), find("lock-1x1")) {
        println!(
            "lock 50000x1 / 1x1 (the single-resource cycle rate): {:.0}%; commands per acquisition {:.2} vs {:.2}",
            big.per_sec / one.per_sec * 100.0,
            big.cmds_per_acq,
            one.cmds_per_acq
        );
    }
}
