//! The multi-process row: the bench starts copies of itself, each running one row of its own
//! (its own manager and connections) against the same servers, all starting at the same instant.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::row::{self, Mode, Spec};

/// Set in a child's environment: what to run (see [`child_main`]).
pub const CHILD_ENV: &str = "REDLOCK_OVERLOAD_CHILD";
const REPORT: &str = "OVERLOAD-CHILD";
const DONE: &str = "OVERLOAD-DONE";

/// One process's figures, as reported on its standard output.
#[derive(Debug, Clone, Default)]
pub struct ChildReport {
    pub acquisitions: u64,
    pub span_ms: u64,
    pub served: u64,
    pub tasks: u64,
    pub min_per_task: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub rss_start_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_after_kib: u64,
    pub errors: u64,
    pub keys_left: u64,
    pub ghosts: u64,
    pub channels: u64,
}

/// In a child: runs the row described by the environment and prints its report. Returns
/// `false` when this process is not a child.
pub fn child_main() -> bool {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return false;
    };
    let fields: Vec<&str> = spec.split(';').collect();
    let [mode, tasks, resources, span_ms, start_at, tag, ports] = fields[..] else {
        panic!("{CHILD_ENV}: expected 7 fields, got {spec:?}");
    };
    let parse = |v: &str| {
        v.parse::<u64>()
            .unwrap_or_else(|_| panic!("{CHILD_ENV}: {v:?}"))
    };
    let spec = Spec {
        mode: Mode::parse(mode).expect("mode"),
        tasks: parse(tasks) as usize,
        resources: parse(resources) as usize,
        span: Duration::from_millis(parse(span_ms)),
        tag: tag.to_owned(),
    };
    let ports: Vec<u16> = ports.split(',').map(|p| parse(p) as u16).collect();
    // Tell the parent this process's tasks ended, and look only once it says all have.
    let sync = || {
        println!("{DONE}");
        std::io::stdout().flush().expect("stdout");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("stdin");
    };
    let out = row::run(&spec, &ports, Some(parse(start_at)), Some(&sync));
    let us = |d: Duration| d.as_micros() as u64;
    println!(
        "{REPORT} acquisitions={} span_ms={} served={} tasks={} min_per_task={} p50_us={} \
         p99_us={} max_us={} rss_start_kib={} rss_peak_kib={} rss_after_kib={} errors={} \
         keys_left={} ghosts={} channels={}",
        out.acquisitions,
        out.span.as_millis(),
        out.served,
        spec.tasks,
        out.min_per_task,
        us(out.latency.quantile(0.5)),
        us(out.latency.quantile(0.99)),
        us(out.latency.max()),
        out.rss_start_kib,
        out.rss_peak_kib,
        out.rss_after_kib,
        out.errors,
        out.left.keys_left,
        out.left.ghosts,
        out.left.channels,
    );
    if let Some(e) = out.first_error {
        println!("first error: {e}");
    }
    true
}

/// Runs `processes` copies of this bench, each with `spec` (its tag made distinct per process
/// only for the tokens: the resources are shared), starting together.
pub fn run(spec: &Spec, processes: usize, ports: &[u16]) -> Vec<ChildReport> {
    let exe = std::env::current_exe().expect("the bench's own path");
    // Long enough for every child to start, connect and warm up.
    let start_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
        + 3_000;
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut children: Vec<_> = (0..processes)
        .map(|_| {
            let env = format!(
                "{};{};{};{};{};{};{}",
                spec.mode.name(),
                spec.tasks,
                spec.resources,
                spec.span.as_millis(),
                start_at,
                spec.tag,
                ports.join(",")
            );
            Command::new(&exe)
                .env(CHILD_ENV, env)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a child process")
        })
        .collect();
    let mut outputs: Vec<BufReader<_>> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for child in &mut children {
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).expect("child stdout") == 0 {
                panic!("a child ended before its tasks did:\n{text}");
            }
            if line.trim() == DONE {
                break;
            }
            text.push_str(&line);
        }
        outputs.push(out);
        texts.push(text);
    }
    // Every process's tasks have ended: let each look at what is left.
    for child in &mut children {
        let stdin = child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"check\n").expect("child stdin");
        stdin.flush().expect("child stdin");
    }
    children
        .into_iter()
        .zip(outputs)
        .zip(texts)
        .map(|((mut child, mut out), mut text)| {
            out.read_to_string(&mut text).expect("child stdout");
            let status = child.wait().expect("child process");
            assert!(status.success(), "child failed: {status}\n{text}");
            parse(&text).unwrap_or_else(|| panic!("no report from a child:\n{text}"))
        })
        .collect()
}

fn parse(text: &str) -> Option<ChildReport> {
    let line = text.lines().find_map(|l| l.strip_prefix(REPORT))?;
    let mut r = ChildReport::default();
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        let slot = match k {
            "acquisitions" => &mut r.acquisitions,
            "span_ms" => &mut r.span_ms,
            "served" => &mut r.served,
            "tasks" => &mut r.tasks,
            "min_per_task" => &mut r.min_per_task,
            "p50_us" => &mut r.p50_us,
            "p99_us" => &mut r.p99_us,
            "max_us" => &mut r.max_us,
            "rss_start_kib" => &mut r.rss_start_kib,
            "rss_peak_kib" => &mut r.rss_peak_kib,
            "rss_after_kib" => &mut r.rss_after_kib,
            "errors" => &mut r.errors,
            "keys_left" => &mut r.keys_left,
            "ghosts" => &mut r.ghosts,
            "channels" => &mut r.channels,
            _ => continue,
        };
        *slot = v;
    }
    Some(r)
}
