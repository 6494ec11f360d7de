//! Mutual exclusion through the real binary: in each run two `redlock exec` processes start at
//! once on the same resource, with a command that appends `start ID` and `end ID` to one file.
//! Appends to a file are ordered, so the commands' intervals never overlap exactly when the file
//! reads `start A, end A, start B, end B, …`.
//!
//! Even runs wait (both commands run, one after the other); odd runs use `--no-wait` (the loser
//! exits 75 without running, unless the winner was already done). `REDLOCK_OVERLAP_RUNS` sets the
//! number of runs (default 100).

mod common;

use std::process::Stdio;

use common::{describe, lines, redlock, servers, status, urls, Scratch};

const DEFAULT_RUNS: usize = 100;

fn runs() -> usize {
    std::env::var("REDLOCK_OVERLAP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_RUNS)
}

const CRITICAL: &str = r#"echo "start $ID" >> "$1"; sleep 0.005; echo "end $ID" >> "$1""#;

#[test]
fn intervals_never_overlap() {
    let servers = servers(3);
    let urls = urls(&servers);
    let scratch = Scratch::new();
    let file = scratch.file("intervals");
    let mut expected_lines = 0;
    let mut lost_races = 0;
    for run in 0..runs() {
        let no_wait = run % 2 == 1;
        let children: Vec<_> = ["a", "b"]
            .iter()
            .map(|who| {
                let mut cmd = redlock(&urls, &["exec", "--ttl", "2s"]);
                if no_wait {
                    cmd.arg("--no-wait");
                }
                cmd.args(["overlap", "--", "sh", "-c", CRITICAL, "sh"])
                    .arg(&file)
                    .env("ID", format!("{run}{who}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start redlock")
            })
            .collect();
        let mut ran = 0;
        for child in children {
            let out = common::finish(child);
            match out.status.code() {
                Some(0) => ran += 1,
                Some(status::NOT_ACQUIRED) if no_wait => lost_races += 1,
                _ => panic!("run {run}: {}", describe(&out)),
            }
        }
        assert!(ran >= 1, "run {run}: nobody ran");
        if !no_wait {
            assert_eq!(ran, 2, "run {run}: a waiting command did not run");
        }
        expected_lines += 2 * ran;
    }
    let record = lines(&file);
    assert_eq!(record.len(), expected_lines, "{record:?}");
    for pair in record.chunks(2) {
        let start = pair[0].strip_prefix("start ");
        let end = pair[1].strip_prefix("end ");
        assert!(
            start.is_some() && start == end,
            "overlapping intervals: {pair:?} in {record:?}"
        );
    }
    // The no-wait runs did race: some loser gave up (otherwise they tested nothing).
    assert!(lost_races > 0, "no --no-wait run had a loser");
}
