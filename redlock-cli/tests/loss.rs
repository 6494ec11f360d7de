//! A command that outlives its lock: a majority of the servers is stopped with SIGSTOP, no
//! renewal can reach a quorum, and the lease runs out. The command must get SIGTERM no later
//! than the lease's deadline, SIGKILL after the grace, and redlock must exit with 79.
//!
//! Times are compared on the wall clock (`$EPOCHREALTIME` in the command, `SystemTime` here);
//! these are bounds the manual promises, not speed. The deadline of the last lease granted is
//! before `P + ttl − drift`, where `P` is when the pause returned: any round that reached a
//! majority started before the servers stopped. The drift allowance (12 ms for a 1 s lease)
//! plus the time between the last grant and `P` is the room left for the signal's delivery.

mod common;

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{describe, lines, redlock, servers, status, urls, wait_for, Scratch};

const TTL: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_millis(500);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Records its start, SIGTERM, and a heartbeat; ignores SIGTERM unless `$2` is `obey`.
const STUBBORN: &str = r#"
f="$1"
if [ "$2" = obey ]; then
  trap 'echo "term $EPOCHREALTIME" >> "$f"; exit 0' TERM
else
  trap 'echo "term $EPOCHREALTIME" >> "$f"' TERM
fi
echo "start $EPOCHREALTIME $$" >> "$f"
while :; do sleep 0.02; echo "beat $EPOCHREALTIME" >> "$f"; done
"#;

fn stamp(lines: &[String], prefix: &str) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Runs the command under a lock, stops two of three servers once it started, and returns
/// (pause time, redlock's output, the command's records, when redlock's exit was seen).
fn lose_the_lock(mode: &str) -> (f64, std::process::Output, Vec<String>, f64) {
    let servers = servers(3);
    let scratch = Scratch::new();
    let file = scratch.file("record");
    let ttl = format!("{}ms", TTL.as_millis());
    let grace = format!("{}ms", GRACE.as_millis());
    let child = redlock(
        &urls(&servers),
        &[
            "exec", "--ttl", &ttl, "--grace", &grace, "lost", "--", "bash", "-c", STUBBORN, "sh",
        ],
    )
    .arg(&file)
    .arg(mode)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start redlock");
    wait_for("the command to start", || {
        !stamp(&lines(&file), "start ").is_empty()
    });
    servers[0].pause();
    servers[1].pause();
    let paused = now();
    let out = common::finish(child);
    let exited = now();
    servers[0].resume();
    servers[1].resume();
    (paused, out, lines(&file), exited)
}

#[test]
fn sigterm_by_the_deadline_then_sigkill_after_the_grace_and_status_79() {
    let (paused, out, record, exited) = lose_the_lock("ignore");
    assert_eq!(out.status.code(), Some(status::LOST), "{}", describe(&out));
    let term = stamp(&record, "term ");
    assert_eq!(term.len(), 1, "one SIGTERM: {record:?}");
    let term = term[0];
    // Printed for `--nocapture`: how much room the bound left.
    eprintln!(
        "SIGTERM {:.1} ms before pause + lease",
        (paused + TTL.as_secs_f64() - term) * 1e3
    );
    assert!(
        term < paused + TTL.as_secs_f64(),
        "SIGTERM at {term}, after the deadline (paused at {paused}, lease {TTL:?})"
    );
    // Still running after SIGTERM (it ignores it), then killed.
    assert!(
        stamp(&record, "beat ").iter().any(|&b| b > term),
        "no heartbeat after SIGTERM: {record:?}"
    );
    let pid: u32 = record
        .iter()
        .find_map(|l| {
            l.strip_prefix("start ")?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .expect("the command's pid");
    assert!(!common::alive(pid), "the command survived");
    let err = common::stderr(&out);
    assert!(err.contains("sent SIGTERM"), "{err}");
    assert!(err.contains("sent SIGKILL"), "{err}");
    assert!(
        err.contains("SIGKILL") && err.contains("status 79"),
        "{err}"
    );
    // SIGKILL waited for the grace: redlock sent SIGTERM before the command's trap ran, and
    // exited after the kill. A few milliseconds cover the trap's own delay.
    assert!(
        exited - term >= GRACE.as_secs_f64() - 0.05,
        "exited {:.3} s after SIGTERM, grace {GRACE:?}",
        exited - term
    );
}

#[test]
fn a_command_that_stops_on_sigterm_is_not_killed_and_the_status_still_says_lost() {
    let (paused, out, record, _) = lose_the_lock("obey");
    assert_eq!(out.status.code(), Some(status::LOST), "{}", describe(&out));
    let term = stamp(&record, "term ");
    assert_eq!(term.len(), 1, "{record:?}");
    assert!(term[0] < paused + TTL.as_secs_f64());
    let err = common::stderr(&out);
    assert!(err.contains("sent SIGTERM"), "{err}");
    assert!(!err.contains("SIGKILL"), "{err}");
}
