//! `redlock exec` against three real servers: what passes through to and from the command,
//! signals, contention and fair mode.

mod common;

use std::process::Stdio;

use redlock_testkit::Reply;

use common::{
    code, describe, held_on, lines, redlock, servers, signal, status, stderr, urls, wait_for,
    Scratch,
};

#[test]
fn status_and_output_of_the_command_pass_through_unchanged() {
    let servers = servers(3);
    let urls = urls(&servers);
    let out = common::output(&mut redlock(
        &urls,
        &[
            "exec",
            "job",
            "--",
            "sh",
            "-c",
            r"printf 'out\001\n'; printf 'err\n' >&2; exit 42",
        ],
    ));
    assert_eq!(code(&out), 42, "{}", describe(&out));
    assert_eq!(out.stdout, b"out\x01\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(held_on(&servers, "job"), [false; 3], "released");

    let out = common::output(&mut redlock(&urls, &["exec", "job", "--", "true"]));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        describe(&out)
    );
}

#[test]
fn timeout_bounds_the_wait_not_the_command() {
    let servers = servers(3);
    let out = common::output(redlock(
        &urls(&servers),
        &[
            "exec",
            "--timeout",
            "50ms",
            "slow",
            "--",
            "sh",
            "-c",
            "sleep 0.3; exit 7",
        ],
    ));
    assert_eq!(code(&out), 7, "{}", describe(&out));
}

#[test]
fn a_command_ended_by_a_signal_is_reported_as_a_shell_does() {
    let servers = servers(3);
    let out = common::output(&mut redlock(
        &urls(&servers),
        &["exec", "job", "--", "sh", "-c", "kill -KILL $$"],
    ));
    assert_eq!(code(&out), 128 + 9, "{}", describe(&out));
    assert_eq!(held_on(&servers, "job"), [false; 3]);
}

#[test]
fn a_command_that_cannot_run_gets_126_or_127_and_the_lock_is_released() {
    let servers = servers(3);
    let urls = urls(&servers);
    let scratch = Scratch::new();
    let not_executable = scratch.file("plain.txt");
    std::fs::write(&not_executable, "not a program").expect("write");

    let out = common::output(&mut redlock(
        &urls,
        &["exec", "job", "--", "/nonexistent/redlock-test-command"],
    ));
    assert_eq!(code(&out), status::NOT_FOUND, "{}", describe(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));

    let out = common::output(redlock(&urls, &["exec", "job", "--"]).arg(&not_executable));
    assert_eq!(code(&out), status::CANNOT_RUN, "{}", describe(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
    assert_eq!(held_on(&servers, "job"), [false; 3]);
}

#[test]
fn the_command_gets_the_resource_and_the_validity_but_no_stale_fencing_token() {
    let servers = servers(3);
    let out = common::output(
        redlock(
            &urls(&servers),
            &[
                "exec",
                "--ttl",
                "3s",
                "env-job",
                "--",
                "sh",
                "-c",
                "echo \"$REDLOCK_RESOURCE\"; echo \"$REDLOCK_TTL_MS\"; echo \"$REDLOCK_VALIDITY_MS\"; \
                 echo \"${REDLOCK_FENCING_TOKEN-unset}\"",
            ],
        )
        // As if an outer redlock had set it: this lock's command must not inherit it.
        .env("REDLOCK_FENCING_TOKEN", "stale"),
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), 4, "{text}");
    assert_eq!(got[0], "env-job");
    assert_eq!(got[1], "3000");
    let validity: u64 = got[2].parse().expect("a number of milliseconds");
    assert!(validity > 0 && validity < 3000, "validity {validity} ms");
    assert_eq!(got[3], "unset");
}

/// The command records the signal it got, and the pid of a process it started in the
/// background (which must get the signal too: it is in the command's process group).
const TRAPPING: &str = r#"
f="$1"
for s in INT TERM HUP; do trap "echo got-$s >> '$f'; exit 3" $s; done
sleep 300 &
echo "background $!" >> "$f"
echo ready >> "$f"
while :; do wait; done
"#;

#[test]
fn signals_reach_the_command_and_its_group_and_the_lock_is_released_after_it_exits() {
    let servers = servers(3);
    let urls = urls(&servers);
    for sig in ["TERM", "INT", "HUP"] {
        let scratch = Scratch::new();
        let file = scratch.file("signals");
        let mut child = redlock(
            &urls,
            &["exec", "sig-job", "--", "bash", "-c", TRAPPING, "sh"],
        )
        .arg(&file)
        // Not piped: the background process would hold a pipe open after redlock exits.
        .stdout(Stdio::null())
        .spawn()
        .expect("start redlock");
        wait_for("the command to be ready", || {
            lines(&file).iter().any(|l| l == "ready")
        });
        let holding = held_on(&servers, "sig-job").iter().filter(|&&h| h).count();
        assert!(
            holding >= 2,
            "{sig}: held on a majority while running ({holding})"
        );
        let background: u32 = lines(&file)
            .iter()
            .find_map(|l| l.strip_prefix("background ")?.parse().ok())
            .expect("the background pid");
        signal(sig, child.id());
        let status = common::wait(&mut child);
        assert_eq!(status.code(), Some(3), "{sig}");
        assert!(
            lines(&file).contains(&format!("got-{sig}")),
            "{sig}: {:?}",
            lines(&file)
        );
        if sig == "INT" {
            // A shell script's background commands ignore SIGINT (POSIX), so it stays.
            signal("KILL", background);
        } else {
            wait_for("the background process to end", || {
                !common::alive(background)
            });
        }
        assert_eq!(held_on(&servers, "sig-job"), [false; 3], "{sig}: released");
    }
}

/// A command that runs until `go` exists, after writing `ready`.
fn holder_script(dir: &Scratch) -> String {
    format!(
        "echo ready >> '{}'; while [ ! -e '{}' ]; do sleep 0.01; done",
        dir.file("ready").display(),
        dir.file("go").display()
    )
}

#[test]
fn no_wait_gives_up_at_once_while_the_holder_runs() {
    let servers = servers(3);
    let urls = urls(&servers);
    let dir = Scratch::new();
    let mut holder = redlock(&urls, &["exec", "busy", "--", "sh", "-c"])
        .arg(holder_script(&dir))
        .spawn()
        .expect("start the holder");
    wait_for("the holder's command", || dir.file("ready").exists());

    let ran = dir.file("loser-ran");
    let touch = format!("touch '{}'", ran.display());
    let out = common::output(&mut redlock(
        &urls,
        &["exec", "--no-wait", "busy", "--", "sh", "-c", &touch],
    ));
    assert_eq!(code(&out), status::NOT_ACQUIRED, "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("held by another client"), "{err}");

    // -E, as flock(1) has it; and --timeout ends the wait with the same status.
    let out = common::output(&mut redlock(
        &urls,
        &["exec", "-n", "-E", "0", "busy", "--", "sh", "-c", &touch],
    ));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let out = common::output(&mut redlock(
        &urls,
        &[
            "exec",
            "--timeout",
            "300ms",
            "busy",
            "--",
            "sh",
            "-c",
            &touch,
        ],
    ));
    assert_eq!(code(&out), status::NOT_ACQUIRED, "{}", describe(&out));

    // All three gave up while the holder still ran: none waited for it.
    assert!(
        holder.try_wait().expect("try_wait").is_none(),
        "holder still running"
    );
    assert!(!ran.exists(), "a loser's command ran");
    std::fs::write(dir.file("go"), "").expect("write");
    assert_eq!(common::wait(&mut holder).code(), Some(0));
    assert_eq!(held_on(&servers, "busy"), [false; 3]);
}

#[test]
fn fair_mode_lets_the_waiter_in_before_exiting() {
    let servers = servers(3);
    let urls = urls(&servers);
    let dir = Scratch::new();
    let mut holder = redlock(&urls, &["exec", "--fair=3s", "turn", "--", "sh", "-c"])
        .arg(holder_script(&dir))
        .spawn()
        .expect("start the holder");
    wait_for("the holder's command", || dir.file("ready").exists());
    let waiter_ran = dir.file("waiter-ran");
    let mut waiter = redlock(&urls, &["exec", "turn", "--", "touch"])
        .arg(&waiter_ran)
        .spawn()
        .expect("start the waiter");
    // The waiter listens for the release on every server before the holder lets go, so the
    // release is heard.
    wait_for("the waiter's subscriptions", || {
        servers.iter().all(|s| {
            matches!(s.cmd(&["PUBSUB", "CHANNELS"]), Reply::Array(Some(ref c)) if !c.is_empty())
        })
    });
    std::fs::write(dir.file("go"), "").expect("write");
    wait_for("the waiter's command", || waiter_ran.exists());
    assert!(
        holder.try_wait().expect("try_wait").is_none(),
        "the holder exited before the waiter's command ran"
    );
    assert_eq!(common::wait(&mut waiter).code(), Some(0));
    assert_eq!(common::wait(&mut holder).code(), Some(0));
}

#[test]
fn the_command_leads_its_own_process_group_unless_foreground() {
    let servers = servers(3);
    let urls = urls(&servers);
    let script = "read -r _ _ _ _ pgid _ < /proc/$$/stat; echo \"$$ $pgid\"";
    for (foreground, own_group) in [(false, true), (true, false)] {
        let mut cmd = redlock(&urls, &["exec", "pg"]);
        if foreground {
            cmd.arg("--foreground");
        }
        let out = common::output(cmd.args(["--", "bash", "-c", script]));
        assert_eq!(code(&out), 0, "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(ids.len(), 2, "{text}");
        assert_eq!(
            ids[0] == ids[1],
            own_group,
            "foreground {foreground}: {text}"
        );
    }
}

#[test]
fn the_command_gets_sigterm_when_redlock_is_killed() {
    let servers = servers(3);
    let dir = Scratch::new();
    let file = dir.file("record");
    let script = r#"trap 'echo term >> "$1"; exit 0' TERM; echo "pid $$" >> "$1"; echo ready >> "$1"; while :; do sleep 0.01; done"#;
    let mut child = redlock(
        &urls(&servers),
        &["exec", "orphan", "--", "bash", "-c", script, "sh"],
    )
    .arg(&file)
    .spawn()
    .expect("start redlock");
    wait_for("the command to be ready", || {
        lines(&file).iter().any(|l| l == "ready")
    });
    // Nothing renews the lock once redlock is gone: the command must not run on unlocked.
    signal("KILL", child.id());
    let _ = common::wait(&mut child);
    let deadline = std::time::Instant::now() + common::WAIT;
    while !lines(&file).iter().any(|l| l == "term") {
        if std::time::Instant::now() > deadline {
            // Not reaped by us, so the pid is still the command's (a zombie at worst).
            let pid = lines(&file)
                .iter()
                .find_map(|l| l.strip_prefix("pid ")?.parse::<u32>().ok());
            if let Some(pid) = pid {
                signal("KILL", pid);
            }
            panic!("the command did not get SIGTERM when redlock was killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
