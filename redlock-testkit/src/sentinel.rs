//! A master, a replica and three sentinels watching them.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::resp::{Conn, Reply};
use super::server::{RedisServer, ServerOptions};
use super::{binary, free_port, wait_until, TempDir};
use redlock_fred::Sentinel;

/// How to start a [`SentinelGroup`].
///
/// # Default
/// Master name `leader`, no passwords.
#[derive(Debug, Clone)]
#[must_use]
pub struct GroupOptions {
    master_name: String,
    master_password: Option<String>,
    sentinel_password: Option<String>,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            master_name: "leader".to_owned(),
            master_password: None,
            sentinel_password: None,
        }
    }
}

impl GroupOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = name.into();
        self
    }

    /// `requirepass` on master and replica (sentinels get `auth-pass`).
    pub fn master_password(mut self, password: impl Into<String>) -> Self {
        self.master_password = Some(password.into());
        self
    }

    /// `requirepass` on the sentinels themselves.
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }
}

/// One sentinel process.
#[derive(Debug)]
pub struct SentinelProcess {
    port: u16,
    _dir: TempDir,
    child: Option<Child>,
}

impl SentinelProcess {
    /// The sentinel's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two redis-servers (master and replica) and three sentinels on free loopback ports.
///
/// Dropping it stops every process.
#[derive(Debug)]
pub struct SentinelGroup {
    options: GroupOptions,
    /// The servers; which one is master changes with [`failover`](Self::failover).
    pub servers: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<SentinelProcess>,
}

impl SentinelGroup {
    /// Starts the group with default options and waits until the sentinels know the master and
    /// the replica is in sync.
    ///
    /// # Panics
    /// When a binary is missing or a process does not come up.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(GroupOptions::new())
    }

    /// Starts the group with `options`.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with(options: GroupOptions) -> Self {
        let server_options = || match &options.master_password {
            Some(pw) => ServerOptions::new().password(pw.clone()),
            None => ServerOptions::new(),
        };
        let master = RedisServer::start_with(server_options());
        let replica = RedisServer::start_with(
            server_options().replica_of(master.port(), options.master_password.clone()),
        );
        let mut group = Self {
            options,
            servers: vec![master, replica],
            sentinels: Vec::new(),
        };
        // Sentinels learn replicas from the master's INFO, polled every 10 s; a replica already
        // in sync shows up in the very first poll.
        wait_until(Duration::from_secs(20), "the replica to sync", || {
            group.servers[1]
                .cmd(&["INFO", "replication"])
                .as_text()
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        for _ in 0..3 {
            let s = group.spawn_sentinel();
            group.sentinels.push(s);
        }
        let replica_port = group.servers[1].port();
        wait_until(
            Duration::from_secs(20),
            "the sentinels to see the master and the replica",
            || {
                (0..group.sentinels.len()).all(|i| {
                    group
                        .sentinel_cmd(i, &["SENTINEL", "REPLICAS", &group.options.master_name])
                        .is_some_and(|r| {
                            r.items().iter().any(|replica| {
                                let fields = flat_map(replica);
                                fields.get("port").map(String::as_str)
                                    == Some(replica_port.to_string().as_str())
                                    && fields.get("flags").map(String::as_str) == Some("slave")
                            })
                        })
                })
            },
        );
        group
    }

    fn spawn_sentinel(&self) -> SentinelProcess {
        let dir = TempDir::new("sentinel");
        let port = free_port();
        let name = &self.options.master_name;
        let mut conf = String::new();
        let _ = writeln!(
            conf,
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\nlogfile {}/sentinel.log",
            dir.path().display(),
            dir.path().display()
        );
        let _ = writeln!(
            conf,
            "sentinel monitor {name} 127.0.0.1 {} 2",
            self.servers[0].port()
        );
        let _ = writeln!(conf, "sentinel down-after-milliseconds {name} 1000");
        let _ = writeln!(conf, "sentinel failover-timeout {name} 10000");
        if let Some(pw) = &self.options.master_password {
            let _ = writeln!(conf, "sentinel auth-pass {name} {pw}");
        }
        if let Some(pw) = &self.options.sentinel_password {
            let _ = writeln!(conf, "requirepass {pw}\nsentinel sentinel-pass {pw}");
        }
        let conf_path = dir.path().join("sentinel.conf");
        std::fs::write(&conf_path, conf).expect("write sentinel.conf");
        // The redis-sentinel binary when installed; otherwise redis-server in sentinel mode
        // (the same program).
        let mut command = match super::find_binary("redis-sentinel") {
            Some(path) => {
                let mut c = Command::new(path);
                c.arg(&conf_path);
                c
            }
            None => {
                let mut c = Command::new(binary("redis-server"));
                c.arg(&conf_path).arg("--sentinel");
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning a sentinel: {e}"));
        let mut process = SentinelProcess {
            port,
            _dir: dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Reply::Simple(pong)) = self
                .sentinel_conn(port)
                .and_then(|mut c| c.cmd(&["PING"]).ok())
            {
                if pong == "PONG" {
                    return process;
                }
            }
            if let Some(child) = process.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("sentinel on port {port} exited with {status}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "sentinel on port {port} did not answer"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn sentinel_conn(&self, port: u16) -> Option<Conn> {
        let auth = self
            .options
            .sentinel_password
            .as_deref()
            .map(|pw| (None, pw));
        Conn::connect(port, auth).ok()
    }

    /// Runs a command on sentinel `index`; `None` when it cannot be reached.
    pub fn sentinel_cmd(&self, index: usize, args: &[&str]) -> Option<Reply> {
        let port = self.sentinels.get(index)?.port;
        self.sentinel_conn(port)?.cmd(args).ok()
    }

    /// The master name.
    #[must_use]
    pub fn master_name(&self) -> &str {
        &self.options.master_name
    }

    /// The master's port according to sentinel `index`.
    #[must_use]
    pub fn master_port_seen_by(&self, index: usize) -> Option<u16> {
        let reply = self.sentinel_cmd(
            index,
            &[
                "SENTINEL",
                "GET-MASTER-ADDR-BY-NAME",
                &self.options.master_name,
            ],
        )?;
        reply.items().get(1)?.as_text()?.parse().ok()
    }

    /// The server that is master now (according to the first sentinel).
    ///
    /// # Panics
    /// When the sentinel names no server of this group.
    #[must_use]
    pub fn master(&self) -> &RedisServer {
        let port = self
            .master_port_seen_by(0)
            .expect("sentinel 0 names a master");
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .expect("the master is one of the group's servers")
    }

    /// The server that is replica now.
    ///
    /// # Panics
    /// As [`master`](Self::master).
    #[must_use]
    pub fn replica(&self) -> &RedisServer {
        let master = self.master().port();
        self.servers
            .iter()
            .find(|s| s.port() != master)
            .expect("two servers")
    }

    /// A [`Sentinel`] instance config for this group (sentinel 0 first, the others after).
    #[must_use]
    pub fn instance(&self) -> Sentinel {
        let mut s = Sentinel::new(
            self.sentinels.iter().map(|p| ("127.0.0.1", p.port)),
            self.options.master_name.clone(),
        );
        s.password = self.options.master_password.clone().map(Into::into);
        s.sentinel_password = self.options.sentinel_password.clone().map(Into::into);
        s
    }

    /// aioredlock's Sentinel URL for this group: `redis://127.0.0.1:PORT/DB?master=NAME`.
    #[must_use]
    pub fn url(&self, db: u8) -> String {
        format!(
            "redis://127.0.0.1:{}/{db}?master={}&encoding=utf-8",
            self.sentinels[0].port, self.options.master_name
        )
    }

    /// `SENTINEL FAILOVER` on sentinel 0, then waits until every live sentinel names the former
    /// replica as master and it reports the master role. Returns the new master's port.
    ///
    /// The old master is then demoted right away with `REPLICAOF` (Sentinel would do the same,
    /// but only after its next `INFO` poll, up to tens of seconds later). Its client connections
    /// stay open, so a client still talking to it gets `READONLY`.
    ///
    /// # Panics
    /// When the failover does not complete within 30 s.
    pub fn failover(&self) -> u16 {
        let old = self.master().port();
        let new = self.replica().port();
        let reply = self
            .sentinel_cmd(0, &["SENTINEL", "FAILOVER", &self.options.master_name])
            .expect("sentinel 0 reachable");
        assert_eq!(reply, Reply::Simple("OK".into()), "SENTINEL FAILOVER");
        wait_until(Duration::from_secs(30), "the failover to complete", || {
            let promoted = self
                .servers
                .iter()
                .find(|s| s.port() == new)
                .is_some_and(|s| s.role() == "master");
            let all_agree = (0..self.sentinels.len())
                .filter(|&i| self.sentinels[i].child.is_some())
                .all(|i| self.master_port_seen_by(i) == Some(new));
            promoted && all_agree
        });
        assert_ne!(old, new);
        let demoted = self
            .servers
            .iter()
            .find(|s| s.port() == old)
            .expect("old master");
        let port = new.to_string();
        // Sentinel may be reconfiguring the old master at the same time (and closing client
        // connections): ask until it is a replica.
        wait_until(
            Duration::from_secs(10),
            "the old master to be demoted",
            || {
                demoted.role() == "slave"
                    || demoted
                        .try_cmd(&["REPLICAOF", "127.0.0.1", port.as_str()])
                        .is_ok()
                        && demoted.role() == "slave"
            },
        );
        new
    }

    /// Kills every sentinel (the servers keep running).
    pub fn kill_sentinels(&mut self) {
        for s in &mut self.sentinels {
            s.kill();
        }
    }
}

/// A flat `[k1, v1, k2, v2, ...]` reply as a map.
fn flat_map(reply: &Reply) -> std::collections::HashMap<String, String> {
    reply
        .items()
        .chunks(2)
        .filter_map(|kv| Some((kv.first()?.as_text()?, kv.get(1)?.as_text()?)))
        .collect()
}
