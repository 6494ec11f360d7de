//! Test support for the redlock-lease workspace: real `redis-server` and Sentinel processes,
//! a fault-injecting TCP proxy and the conformance suite's fixture for them. Not published:
//! it spawns processes and panics by design, which no library crate should ship.
//!
//! This crate's own `tests/` hold every test that needs a real server (`cargo test -p
//! redlock-testkit`); the published crates' tests run without it.
//!
//! Every process listens on a free loopback port (never 6379, where a shared server may run),
//! lives in its own temporary directory, and is killed by pid when its handle drops, also when
//! the test panics. Readiness is polled (`PING` answered by *our* process), never slept for.
//!
//! Without `redis-server` on `PATH` every constructor panics with the install command: a test
//! that cannot run must fail, not skip.
//!
//! ```no_run
//! use redlock_testkit::RedisServer;
//!
//! let mut server = RedisServer::start();
//! let url = server.url();
//! server.pause(); // SIGSTOP: connections stay open, nothing answers
//! server.resume();
//! server.script_flush();
//! server.restart(false); // back on the same port, empty
//! ```
//!
//! Fault verbs: [`RedisServer::kill`], [`pause`](RedisServer::pause) /
//! [`resume`](RedisServer::resume), [`restart`](RedisServer::restart) with or without data,
//! [`script_flush`](RedisServer::script_flush), [`client_kill`](RedisServer::client_kill),
//! [`debug_sleep`](RedisServer::debug_sleep), [`SentinelGroup::failover`],
//! [`SentinelGroup::kill_sentinels`]. Network faults between one client and one server go
//! through a [`Proxy`]: [`stall`](Proxy::stall) / [`resume`](Proxy::resume) and
//! [`drop_replies`](Proxy::drop_replies).

mod fixture;
mod proxy;
mod resp;
mod sentinel;
mod server;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use fixture::ServerFixture;
pub use proxy::Proxy;
pub use resp::{Conn, Reply};
pub use sentinel::{GroupOptions, SentinelGroup, SentinelProcess};
pub use server::{RedisServer, ServerOptions};

const INSTALL_HINT: &str = "install it with `apt-get install redis-server redis-sentinel` \
    (Debian/Ubuntu, as root) or your system's package manager";

pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The path of `name` on `PATH`.
///
/// # Panics
/// When it is not installed; the message says how to install it.
pub(crate) fn binary(name: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|| {
        panic!("`{name}` is not on PATH: these tests need real Redis servers; {INSTALL_HINT}")
    })
}

/// Panics unless `redis-server` is installed, with the install command. Call it first in a
/// test to fail early and clearly.
///
/// # Panics
/// When `redis-server` is missing.
pub fn require_redis() {
    let _ = binary("redis-server");
}

/// A port that was free a moment ago. Never 6379.
pub(crate) fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        if port != 6379 && port != 26379 {
            return port;
        }
    }
}

/// Sends `kill -SIG pid` (through the `kill` command: this crate forbids `unsafe`).
pub(crate) fn signal(sig: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Polls `condition` every 10 ms until it holds.
///
/// # Panics
/// When it does not hold within `timeout`; the message names `what`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A temporary directory, removed when the last handle drops.
#[derive(Debug)]
pub(crate) struct TempDir(Arc<PathBuf>);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    pub(crate) fn new(kind: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "redlock-{kind}-{}-{}-{nanos}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        // Sentinel rewrites its config with a relative rename; an absolute, canonical path keeps
        // CONFIG GET dir comparable.
        let path = path.canonicalize().unwrap_or(path);
        Self(Arc::new(path))
    }

    pub(crate) fn clone_handle(&self) -> Self {
        Self(Arc::clone(&self.0))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) == 1 {
            let _ = std::fs::remove_dir_all(&*self.0);
        }
    }
}
