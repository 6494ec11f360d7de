//! Running the real `redlock` binary against real `redis-server` processes.

#![allow(dead_code)] // Each test file uses its own part of these helpers.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redlock_testkit::{require_redis, RedisServer};

/// Bound of every wait for a condition or a process: a hang guard, never reached when things
/// work.
pub const WAIT: Duration = Duration::from_secs(30);

/// The exit statuses the manual documents.
pub mod status {
    pub const USAGE: i32 = 64;
    pub const UNAVAILABLE: i32 = 69;
    pub const NOT_ACQUIRED: i32 = 75;
    pub const LOST: i32 = 79;
    pub const CANNOT_RUN: i32 = 126;
    pub const NOT_FOUND: i32 = 127;
}

/// `n` fresh servers.
pub fn servers(n: usize) -> Vec<RedisServer> {
    require_redis();
    (0..n).map(|_| RedisServer::start()).collect()
}

/// The servers' URLs.
pub fn urls(servers: &[RedisServer]) -> Vec<String> {
    servers.iter().map(RedisServer::url).collect()
}

/// `redlock --redis URL… ARGS…`, with a clean environment (no `REDLOCK_*` from outside).
pub fn redlock<S: AsRef<OsStr>>(urls: &[String], args: &[S]) -> Command {
    let mut cmd = bare();
    for url in urls {
        cmd.arg("--redis").arg(url);
    }
    cmd.args(args);
    cmd
}

/// `redlock` with no arguments and a clean environment.
pub fn bare() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redlock"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("REDLOCK_") {
            cmd.env_remove(&name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion (at most [`WAIT`]) and returns its output.
///
/// # Panics
/// When it does not exit within [`WAIT`] (it is killed first).
pub fn output(mut cmd: impl std::borrow::BorrowMut<Command>) -> Output {
    let child = cmd
        .borrow_mut()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redlock");
    finish(child)
}

/// Waits (at most [`WAIT`]) for a child started with piped output.
///
/// # Panics
/// When it does not exit within [`WAIT`] (it is killed first).
pub fn finish(mut child: Child) -> Output {
    let status = wait(&mut child);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_end(&mut stderr);
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Waits (at most [`WAIT`]) for `child` to exit.
///
/// # Panics
/// When it does not exit in time (it is killed first).
pub fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redlock (pid {}) still running after {WAIT:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `condition` every 5 ms until it holds.
///
/// # Panics
/// When it does not hold within [`WAIT`].
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` (e.g. `"TERM"`) to `pid` with kill(1).
pub fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Whether process `pid` runs: it exists and is not a zombie (an orphan's zombie waits for
/// init to reap it, which may take a while).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// The exit code, or a panic naming the output when there is none (killed by a signal).
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("no exit code: {}", describe(out)))
}

/// stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Scratch {
    /// Creates it.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "redlock-cli-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Self(path)
    }

    /// A path inside it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines of `path` (empty when it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether `key` exists on each server.
pub fn held_on(servers: &[RedisServer], key: &str) -> Vec<bool> {
    servers.iter().map(|s| s.get(key).is_some()).collect()
}
