//! One `redis-server` process and its fault verbs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::resp::{Conn, Reply};
use super::tls::TlsFiles;
use super::{binary, free_port, signal, wait_until, TempDir};

/// `text` as one double-quoted argument of redis.conf, every byte but letters and digits
/// escaped, so passwords with spaces, quotes, `#` or any byte survive the config parser.
fn conf_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() * 4 + 2);
    quoted.push('"');
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() {
            quoted.push(char::from(b));
        } else {
            let _ = write!(quoted, "\\x{b:02x}");
        }
    }
    quoted.push('"');
    quoted
}

/// How to start a [`RedisServer`].
///
/// # Default
/// Plaintext, no password, no persistence.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ServerOptions {
    persistence: bool,
    password: Option<String>,
    acl_user: Option<(String, String)>,
    tls: bool,
    replica_of: Option<(u16, Option<String>)>,
}

impl ServerOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps keys across [`RedisServer::restart`] (append-only file, fsync on every write).
    pub fn persistence(mut self) -> Self {
        self.persistence = true;
        self
    }

    /// `requirepass`: the default user needs `password`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// An ACL user `user` with `password` and every permission; the default user is disabled.
    pub fn acl_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.acl_user = Some((user.into(), password.into()));
        self
    }

    /// Also listens with TLS on [`RedisServer::tls_port`], with certificates made for this run
    /// (the CA is [`RedisServer::tls_ca_pem`]). The plaintext port stays open for the harness.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts as a replica of the server on `port` (authenticating with `master_password`).
    pub(crate) fn replica_of(mut self, port: u16, master_password: Option<String>) -> Self {
        self.replica_of = Some((port, master_password));
        self
    }
}

/// A `redis-server` on a free loopback port, in its own temporary directory.
///
/// Dropping it kills the process (also when a test panics) and removes the directory. Every
/// method panics with a message naming the server when the server does not do what was asked:
/// these are test helpers, and a failed precondition must fail the test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    tls_port: Option<u16>,
    options: ServerOptions,
    dir: TempDir,
    tls_files: Option<TlsFiles>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a plaintext server without persistence and waits until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed (the message says what to install) or the server
    /// does not come up.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(ServerOptions::new())
    }

    /// Starts a server with `options` and waits until it answers `PING`.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with(options: ServerOptions) -> Self {
        let dir = TempDir::new("redis");
        let tls_files = options.tls.then(|| TlsFiles::generate(dir.path()));
        let mut last_error = String::new();
        // A free port can be taken by someone else between our probe and the server's bind.
        for _ in 0..5 {
            let mut server = Self {
                port: free_port(),
                tls_port: options.tls.then(free_port),
                options: options.clone(),
                dir: dir.clone_handle(),
                tls_files: tls_files.clone(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    server.child = None;
                }
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn conf(&self) -> String {
        let mut c = String::new();
        let dir = self.dir.path().display();
        let _ = writeln!(
            c,
            "port {}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}",
            self.port
        );
        let _ = writeln!(c, "logfile {dir}/redis.log\ndaemonize no\nsave \"\"");
        let _ = writeln!(
            c,
            "unixsocket {}\nunixsocketperm 700",
            self.unix_socket().display()
        );
        let _ = writeln!(c, "enable-debug-command yes\nrepl-diskless-sync-delay 0");
        if self.options.persistence {
            let _ = writeln!(c, "appendonly yes\nappendfsync always");
        } else {
            let _ = writeln!(c, "appendonly no");
        }
        if let Some(password) = &self.options.password {
            let password = conf_quote(password);
            let _ = writeln!(c, "requirepass {password}\nmasterauth {password}");
        }
        if let Some((user, password)) = &self.options.acl_user {
            let _ = writeln!(
                c,
                "user default off\nuser {} on {} ~* &* +@all",
                conf_quote(user),
                conf_quote(&format!(">{password}"))
            );
        }
        if let (Some(tls_port), Some(files)) = (self.tls_port, &self.tls_files) {
            let _ = writeln!(
                c,
                "tls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no",
                files.cert.display(),
                files.key.display(),
                files.ca.display()
            );
        }
        if let Some((port, master_password)) = &self.options.replica_of {
            let _ = writeln!(c, "replicaof 127.0.0.1 {port}");
            if let Some(pw) = master_password {
                let _ = writeln!(c, "masterauth {}", conf_quote(pw));
            }
        }
        c
    }

    fn spawn(&mut self) -> Result<(), String> {
        let conf_path = self.dir.path().join("redis.conf");
        std::fs::write(&conf_path, self.conf()).map_err(|e| format!("writing config: {e}"))?;
        let child = Command::new(binary("redis-server"))
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning redis-server: {e}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "port {}: exited with {status}; log:\n{}",
                        self.port,
                        self.log_tail()
                    ));
                }
            }
            // CONFIG GET dir proves the answer comes from our process, not a stranger on the port.
            if let Ok(mut conn) = self.admin() {
                if let Ok(reply) = conn.cmd(&["CONFIG", "GET", "dir"]) {
                    let ours = reply
                        .items()
                        .get(1)
                        .and_then(Reply::as_text)
                        .is_some_and(|d| Path::new(&d) == self.dir.path());
                    // Redis 7 writes its first AOF base in the background; a kill before that
                    // ends loses the writes made meanwhile (the manifest does not list them yet).
                    if ours && (!self.options.persistence || self.aof_settled(&mut conn)) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "port {}: no answer within 10 s; log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn aof_settled(&self, conn: &mut Conn) -> bool {
        conn.cmd(&["INFO", "persistence"])
            .ok()
            .and_then(|r| r.as_text())
            .is_some_and(|info| {
                info.contains("aof_enabled:1")
                    && info.contains("aof_rewrite_in_progress:0")
                    && info.contains("aof_rewrite_scheduled:0")
            })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// A fresh administrative connection (authenticated as configured).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub fn admin(&self) -> std::io::Result<Conn> {
        let auth = match (&self.options.acl_user, &self.options.password) {
            (Some((u, p)), _) => Some((Some(u.as_str()), p.as_str())),
            (None, Some(p)) => Some((None, p.as_str())),
            (None, None) => None,
        };
        Conn::connect(self.port, auth)
    }

    /// Runs one command on a fresh connection.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Reply {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis-server on port {}: {e}", self.port))
    }

    /// Like [`cmd`](Self::cmd), returning the connection error instead of panicking (a server
    /// in the middle of a role change closes its clients' connections).
    ///
    /// # Errors
    /// When the server cannot be reached or the connection is reset.
    pub fn try_cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> std::io::Result<Reply> {
        self.admin().and_then(|mut c| c.cmd(args))
    }

    /// The server's log so far (for failure messages).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The plaintext port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, for a server started with [`ServerOptions::tls`].
    #[must_use]
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The PEM of the CA that signed the TLS certificate.
    #[must_use]
    pub fn tls_ca_pem(&self) -> Option<Vec<u8>> {
        self.tls_files
            .as_ref()
            .and_then(|f| std::fs::read(&f.ca).ok())
    }

    /// Path of the CA file (for `ssl_ca_certs=` in URLs).
    #[must_use]
    pub fn tls_ca_file(&self) -> Option<PathBuf> {
        self.tls_files.as_ref().map(|f| f.ca.clone())
    }

    /// The unix socket the server also listens on.
    #[must_use]
    pub fn unix_socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis://127.0.0.1:PORT`
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The value under `key`, or `None`.
    #[must_use]
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        match self.cmd(&[b"GET".as_slice(), key.as_ref()]) {
            Reply::Bulk(v) => v,
            other => panic!("GET on port {}: {other:?}", self.port),
        }
    }

    /// `PTTL key` in milliseconds (-2 absent, -1 no expiry).
    #[must_use]
    pub fn pttl(&self, key: impl AsRef<[u8]>) -> i64 {
        match self.cmd(&[b"PTTL".as_slice(), key.as_ref()]) {
            Reply::Int(v) => v,
            other => panic!("PTTL on port {}: {other:?}", self.port),
        }
    }

    /// Kills the process with SIGKILL (a crash). [`restart`](Self::restart) brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its connections and accepts new ones, but answers nothing.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal("STOP", pid);
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal("CONT", pid);
        }
    }

    /// Kills the server if it runs and starts it again on the same port. With `keep_data`
    /// the keys survive (needs [`ServerOptions::persistence`]); without, it comes back empty.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&mut self, keep_data: bool) {
        self.kill();
        if !keep_data {
            for name in ["appendonly.aof", "dump.rdb", "appendonlydir"] {
                let path = self.dir.path().join(name);
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        // The port was ours a moment ago; retry briefly in case the kernel is slow to free it.
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    self.kill();
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        panic!("redis-server on port {} did not restart: {last}", self.port);
    }

    /// Brings a killed server back with its data (when persistent) — `restart(true)`.
    pub fn start_again(&mut self) {
        self.restart(true);
    }

    /// `SCRIPT FLUSH`: empties the script cache, as a restart or failover does.
    pub fn script_flush(&self) {
        assert_eq!(
            self.cmd(&["SCRIPT", "FLUSH"]),
            Reply::Simple("OK".into()),
            "SCRIPT FLUSH on port {}",
            self.port
        );
    }

    /// `CLIENT KILL TYPE normal`: resets every client connection except the harness's own.
    /// Returns how many were killed.
    pub fn client_kill(&self) -> i64 {
        match self.cmd(&["CLIENT", "KILL", "TYPE", "normal"]) {
            Reply::Int(n) => n,
            other => panic!("CLIENT KILL on port {}: {other:?}", self.port),
        }
    }

    /// `DEBUG SLEEP`: the server blocks for `duration`. Returns once the server has started
    /// sleeping; join the handle to wait for the end.
    #[must_use]
    pub fn debug_sleep(&self, duration: Duration) -> JoinHandle<()> {
        let mut conn = self
            .admin()
            .unwrap_or_else(|e| panic!("redis-server on port {}: {e}", self.port));
        let seconds = format!("{:.3}", duration.as_secs_f64());
        conn.set_read_timeout(duration + Duration::from_secs(10))
            .expect("set timeout");
        conn.send(&["DEBUG", "SLEEP", seconds.as_str()])
            .expect("send DEBUG SLEEP");
        let port = self.port;
        // The server is asleep once a second client gets no PING answer in time.
        wait_until(Duration::from_secs(5), "DEBUG SLEEP to start", || {
            Conn::connect(port, None)
                .and_then(|mut c| {
                    c.set_read_timeout(Duration::from_millis(20))?;
                    c.cmd(&["PING"])
                })
                .is_err()
        });
        std::thread::spawn(move || {
            let _ = conn.read_reply();
        })
    }

    /// Role line of `INFO replication` (`master` or `slave`).
    #[must_use]
    pub fn role(&self) -> String {
        // Empty while the server cannot answer: callers poll it through a role change, during
        // which Sentinel kills client connections.
        let info = self
            .try_cmd(&["INFO", "replication"])
            .ok()
            .and_then(|r| r.as_text())
            .unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("role:"))
            .unwrap_or("")
            .trim()
            .to_owned()
    }

    /// Whether the process is running (not killed).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Resume first: a stopped process that is killed still dies, but resuming is harmless.
        self.resume();
        self.kill();
    }
}
