//! Redlock on real `redis-server` processes (N = 3 and N = 5), next to a raw-fred floor run in
//! the same process on the same runtime: `seq` (one task, lock + unlock on distinct resources)
//! and `conc` (64 tasks on distinct resources), on a multi-thread and a current-thread runtime.
//!
//! ```text
//! cargo bench --bench redis                      # full run
//! REDLOCK_BENCH_QUICK=1 cargo bench --bench redis  # smoke run (also what `cargo test --benches` does)
//! ```
//!
//! Subjects, alternated round by round so drift in the machine's load hits all of them alike:
//! `floor` (raw fred, no algorithm), `rslock` (the peer: rslock on redis-rs, its defaults),
//! `floor-lua` (the floor, but acquiring with the fred backend's Lua script instead of
//! `SET NX`: what running a script on the server costs), `backends` (the fred backends' acquire
//! and release sent to all N at once, no manager: separates the backend's cost from the core's),
//! `redlock` (defaults: wake-on-release on), `redlock-nowake` (wake-on-release off, to price
//! what announcing releases costs when nobody waits), `redlock-fenced` (the defaults with
//! fencing tokens: two more rounds per lock, to price them against `redlock`) and `redlock-rs`
//! (the same manager, defaults, on the redis-rs backend `redlock-redis` instead of fred), and
//! `redlock-rs-nowake` (that with wake-on-release off, and so without hand-offs: the release is
//! the plain compare-and-delete script rslock runs, to price what announcing releases and the
//! hand-off queue's check cost an uncontended cycle).
//! `floor-del`, run only when named in
//! `REDLOCK_BENCH_ONLY`, is a cost probe and not a lock: the floor releasing with a plain `DEL`,
//! which fred batches like any built-in command, where a script forces a write of its own; what a
//! built-in compare-and-delete (Redis 8.4 `DELEX ... IFEQ`) would cost on servers without one.
//!
//! To pin a run to one subject and a fixed amount of work (for an instruction-count profile
//! under callgrind, say): `REDLOCK_BENCH_ONLY=redlock` (subjects, comma-separated),
//! `REDLOCK_BENCH_N=3`, `REDLOCK_BENCH_FLAVOUR=multi-thread`, `REDLOCK_BENCH_ROUNDS`,
//! `REDLOCK_BENCH_SEQ_CYCLES`, `REDLOCK_BENCH_CONC_CYCLES` (per task) and
//! `REDLOCK_BENCH_WARM_UP`. Ratios need the floor and rslock in the selection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    backends, conc, env_count, fenced_manager, header, instance_counts, manager, manager_rs,
    median, ms, pids, ports, print_failures, quantile, quick, ratio, rslock, selected, seq,
    start_servers, us, warm_up, Conc, Flavour, Floor, Seq, Subject,
};

/// In the order of `measure`'s subjects; the first two are the references of the ratios.
const SUBJECTS: [&str; 10] = [
    "floor",
    "rslock",
    "floor-lua",
    "backends",
    "redlock",
    "redlock-nowake",
    "redlock-fenced",
    "redlock-rs",
    "floor-del",
    "redlock-rs-nowake",
];
const FLOOR: usize = 0;
const RSLOCK: usize = 1;

const TASKS: u64 = 64;

/// Whether a subject runs: `floor-del` is a cost probe, not a lock, so only when named.
fn chosen(subject: &str) -> bool {
    if subject == "floor-del" {
        std::env::var("REDLOCK_BENCH_ONLY")
            .is_ok_and(|only| only.split(',').any(|s| s.trim() == subject))
    } else {
        selected(subject)
    }
}

struct Plan {
    rounds: usize,
    seq_cycles: u64,
    conc_per_task: u64,
    warm_up: u64,
}

struct Figures {
    seq: Vec<Vec<Seq>>,
    conc: Vec<Vec<Conc>>,
}

async fn measure(ports: &[u16], pids: &[u32], plan: &Plan, tag: &str) -> Figures {
    let floor = Floor::connect(ports).await;
    let floor_del = floor.clone();
    let subjects: Vec<Arc<Subject>> = vec![
        Arc::new(Subject::Floor(floor.clone())),
        Arc::new(Subject::Rslock(rslock(ports))),
        Arc::new(Subject::FloorLua(floor)),
        Arc::new(Subject::Backends(backends(ports))),
        Arc::new(Subject::Redlock(manager(ports, true))),
        Arc::new(Subject::Redlock(manager(ports, false))),
        Arc::new(Subject::Redlock(fenced_manager(ports))),
        Arc::new(Subject::Redlock(manager_rs(ports, true))),
        Arc::new(Subject::FloorDel(floor_del)),
        Arc::new(Subject::Redlock(manager_rs(ports, false))),
    ];
    for (s, subject) in subjects
        .iter()
        .enumerate()
        .filter(|(s, _)| chosen(SUBJECTS[*s]))
    {
        warm_up(subject, &format!("{tag}:{s}"), plan.warm_up).await;
    }
    let mut figures = Figures {
        seq: vec![Vec::new(); subjects.len()],
        conc: vec![Vec::new(); subjects.len()],
    };
    for round in 0..plan.rounds {
        for (s, subject) in subjects
            .iter()
            .enumerate()
            .filter(|(s, _)| chosen(SUBJECTS[*s]))
        {
            let prefix = format!("{tag}:seq:{round}:{s}");
            figures.seq[s].push(seq(subject, &prefix, plan.seq_cycles).await);
        }
        for (s, subject) in subjects
            .iter()
            .enumerate()
            .filter(|(s, _)| chosen(SUBJECTS[*s]))
        {
            let prefix = format!("{tag}:conc:{round}:{s}");
            figures.conc[s].push(conc(subject, &prefix, TASKS, plan.conc_per_task, pids).await);
        }
    }
    for subject in &subjects {
        subject.close().await;
    }
    figures
}

fn print_seq(n: usize, flavour: Flavour, figures: &Figures) {
    let rate_of = |runs: &[Seq]| median(&mut runs.iter().map(Seq::per_sec).collect::<Vec<_>>());
    let p50_of = |runs: &[Seq]| quantile(&pooled(runs, |s| &s.lock), 0.5).as_secs_f64();
    let (floor_rate, floor_p50) = (rate_of(&figures.seq[FLOOR]), p50_of(&figures.seq[FLOOR]));
    let (peer_rate, peer_p50) = (rate_of(&figures.seq[RSLOCK]), p50_of(&figures.seq[RSLOCK]));
    for (s, name) in SUBJECTS
        .iter()
        .enumerate()
        .filter(|(s, _)| !figures.seq[*s].is_empty())
    {
        let rate = rate_of(&figures.seq[s]);
        let lock = pooled(&figures.seq[s], |s| &s.lock);
        let unlock = pooled(&figures.seq[s], |s| &s.unlock);
        let p50 = p50_of(&figures.seq[s]);
        println!(
            "{n:>2} {:<15} {name:<15} {rate:>9.0} {:>8} {:>8} {:>9.3} {:>8} {:>8} {:>9.3} {:>10.3}",
            flavour.name(),
            ratio(rate, floor_rate),
            ratio(rate, peer_rate),
            p50 * 1e3,
            ratio(p50, floor_p50),
            ratio(p50, peer_p50),
            ms(quantile(&lock, 0.99)),
            ms(quantile(&unlock, 0.5)),
        );
    }
}

fn print_conc(n: usize, flavour: Flavour, figures: &Figures) {
    let rate_of = |runs: &[Conc]| median(&mut runs.iter().map(Conc::per_sec).collect::<Vec<_>>());
    let cpu_of = |runs: &[Conc]| {
        median(
            &mut runs
                .iter()
                .map(|c| us(c.cpu_per_cycle()))
                .collect::<Vec<_>>(),
        )
    };
    let (floor_rate, floor_cpu) = (rate_of(&figures.conc[FLOOR]), cpu_of(&figures.conc[FLOOR]));
    let (peer_rate, peer_cpu) = (
        rate_of(&figures.conc[RSLOCK]),
        cpu_of(&figures.conc[RSLOCK]),
    );
    for (s, name) in SUBJECTS
        .iter()
        .enumerate()
        .filter(|(s, _)| !figures.conc[*s].is_empty())
    {
        let rate = rate_of(&figures.conc[s]);
        let cpu = cpu_of(&figures.conc[s]);
        let server = median(
            &mut figures.conc[s]
                .iter()
                .map(|c| us(c.server_cpu_per_cycle()))
                .collect::<Vec<_>>(),
        );
        let sys = median(
            &mut figures.conc[s]
                .iter()
                .map(Conc::sys_percent)
                .collect::<Vec<_>>(),
        );
        let spread = spread(
            &figures.conc[s]
                .iter()
                .map(Conc::per_sec)
                .collect::<Vec<_>>(),
        );
        println!(
            "{n:>2} {:<15} {name:<15} {rate:>9.0} {:>8} {:>8} {cpu:>7.1} {sys:>4.0}% {:>8} {:>8} {server:>9.1} {spread:>7.1}%",
            flavour.name(),
            ratio(rate, floor_rate),
            ratio(rate, peer_rate),
            ratio(cpu, floor_cpu),
            ratio(cpu, peer_cpu),
        );
    }
}

fn pooled<'a>(runs: &'a [Seq], pick: impl Fn(&'a Seq) -> &'a Vec<Duration>) -> Vec<Duration> {
    runs.iter().flat_map(|r| pick(r).iter().copied()).collect()
}

/// (max − min) / median of a subject's rounds, in percent: the noise within one run.
fn spread(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / median(&mut values.to_vec()) * 100.0
}

fn main() {
    let quick = quick();
    let plan = if quick {
        Plan {
            rounds: 1,
            seq_cycles: 100,
            conc_per_task: 4,
            warm_up: 20,
        }
    } else {
        Plan {
            rounds: 3,
            seq_cycles: 2000,
            conc_per_task: 600,
            warm_up: 500,
        }
    };
    let plan = Plan {
        rounds: env_count("REDLOCK_BENCH_ROUNDS", plan.rounds as u64) as usize,
        seq_cycles: env_count("REDLOCK_BENCH_SEQ_CYCLES", plan.seq_cycles),
        conc_per_task: env_count("REDLOCK_BENCH_CONC_CYCLES", plan.conc_per_task),
        warm_up: env_count("REDLOCK_BENCH_WARM_UP", plan.warm_up),
    };
    header(
        "redis bench: lock + unlock cycles on real redis-server processes, next to a raw-fred floor",
        quick,
    );
    println!(
        "floor = per cycle SET NX PX to all N at once, then compare-and-delete EVALSHA to all N \
         at once; rslock = rslock (redis-rs) with its defaults; ratios are to the floor and to \
         rslock in the same run and runtime flavour; {} rounds per \
         subject, alternated; seq {} cycles/round, conc {TASKS} tasks x {} cycles/round",
        plan.rounds, plan.seq_cycles, plan.conc_per_task
    );
    let mut results = Vec::new();
    for n in instance_counts(&[3, 5]) {
        let servers = start_servers(n);
        let ports = ports(&servers);
        let pids = pids(&servers);
        for flavour in Flavour::selected() {
            let runtime = flavour.runtime();
            let tag = format!("{n}:{}", flavour.name());
            let figures = runtime.block_on(measure(&ports, &pids, &plan, &tag));
            drop(runtime);
            results.push((n, flavour, figures));
        }
    }

    println!();
    println!("seq: one task; cycles/s = median of rounds; lock latencies pooled over rounds");
    println!(
        "{:>2} {:<15} {:<15} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>10}",
        "N",
        "runtime",
        "subject",
        "cycles/s",
        "vs floor",
        "vs rslock",
        "lock p50",
        "vs floor",
        "vs rslock",
        "lock p99",
        "unlock p50"
    );
    println!("{:>77} {:>28}", "(ms)", "(ms)       (ms)");
    for (n, flavour, figures) in &results {
        print_seq(*n, *flavour, figures);
    }
    print_failures(results.iter().flat_map(|(n, flavour, figures)| {
        figures.seq.iter().enumerate().flat_map(move |(s, runs)| {
            runs.iter().map(move |r| {
                (
                    format!("seq N={n} {} {}", flavour.name(), SUBJECTS[s]),
                    &r.failures,
                )
            })
        })
    }));
    println!("targets (issue 12): redlock (or redlock-rs) lock p50 at most 1.00x rslock");

    println!();
    println!(
        "conc: {TASKS} tasks; cycles/s, client CPU (user + sys, whole process) per cycle, its \
         system share, and the \
         redis-servers' CPU per cycle (all N, 10 ms ticks) = median of rounds; spread = (max - \
         min) / median of the rounds' cycles/s"
    );
    println!(
        "{:>2} {:<15} {:<15} {:>9} {:>8} {:>8} {:>7} {:>5} {:>8} {:>8} {:>9} {:>8}",
        "N",
        "runtime",
        "subject",
        "cycles/s",
        "vs floor",
        "vs rslock",
        "CPU us",
        "sys",
        "vs floor",
        "vs rslock",
        "server us",
        "spread"
    );
    for (n, flavour, figures) in &results {
        print_conc(*n, *flavour, figures);
    }
    print_failures(results.iter().flat_map(|(n, flavour, figures)| {
        figures.conc.iter().enumerate().flat_map(move |(s, runs)| {
            runs.iter().map(move |r| {
                (
                    format!("conc N={n} {} {}", flavour.name(), SUBJECTS[s]),
                    &r.failures,
                )
            })
        })
    }));
    println!(
        "targets (issue 12): redlock (or redlock-rs) cycles/s at least 1.00x rslock with at most \
         1.00x its CPU per cycle; redlock (wake-on-release) within 5% of redlock-nowake"
    );
}
