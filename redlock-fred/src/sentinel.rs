//! A Sentinel-managed master as one lock instance.
//!
//! The backend asks the sentinels for the master's address, connects to it, checks that it
//! really is a master (`ROLE`), and starts over from the sentinels whenever the connection drops
//! or the server answers `READONLY` (it was demoted by a failover). While no sentinel answers,
//! calls fail within the command timeout: the instance counts as one failed vote, it never hangs
//! the manager.
//!
//! A failover can lose the lock keys written to the old master but not yet replicated: the new
//! master then does not hold our token. The manager's extend and release report that as a loss
//! when a quorum is affected; see the core crate's notes on servers that lose keys.

use redlock_core::Error;

use crate::config::{check_address, config_error, tcp_id, Instance};
use crate::secret::Secret;

/// The master of a Sentinel group, found through one or more sentinels.
///
/// `Debug` never shows passwords (they are [`Secret`]s).
///
/// ```
/// use redlock_fred::Sentinel;
///
/// // aioredlock: Sentinel(('localhost', 26379), master='leader', db=3)
/// let s = Sentinel::new([("localhost", 26379)], "leader").with_db(3);
/// assert_eq!(s.master, "leader");
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Sentinel {
    /// Sentinel addresses, tried in order.
    pub sentinels: Vec<(String, u16)>,
    /// The master (service) name the sentinels monitor.
    pub master: String,
    /// Database index selected on the master.
    pub db: u8,
    /// ACL user name on the master.
    pub username: Option<String>,
    /// Password on the master.
    pub password: Option<Secret>,
    /// ACL user name on the sentinels.
    pub sentinel_username: Option<String>,
    /// Password on the sentinels (`requirepass` in the sentinel configuration).
    pub sentinel_password: Option<Secret>,
    /// TLS, used towards the sentinels and the master alike.
    pub tls: Option<crate::Tls>,
}

impl Sentinel {
    /// The master `master`, found through `sentinels`.
    #[must_use]
    pub fn new<H: Into<String>>(
        sentinels: impl IntoIterator<Item = (H, u16)>,
        master: impl Into<String>,
    ) -> Self {
        Self {
            sentinels: sentinels.into_iter().map(|(h, p)| (h.into(), p)).collect(),
            master: master.into(),
            db: 0,
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            tls: None,
        }
    }

    /// Parses aioredlock's Sentinel URL (`redis://host:26379/4?master=leader`) or fred's
    /// (`redis-sentinel://host:26379/4?sentinelServiceName=leader`); see
    /// [`Instance::parse`] for the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the URL is malformed or does not name a master.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        match Instance::parse(url)? {
            Instance::Sentinel(s) => Ok(s),
            _ => Err(config_error(format!(
                "`{}` is not a Sentinel URL: add master=NAME (or use redis-sentinel://…?sentinelServiceName=NAME)",
                crate::parse::redact_url(url)
            ))),
        }
    }

    /// Selects database `db` on the master.
    #[must_use]
    pub fn with_db(mut self, db: u8) -> Self {
        self.db = db;
        self
    }

    /// Authenticates to the master with `password` (default user).
    #[must_use]
    pub fn with_password(mut self, password: impl Into<Secret>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Authenticates to the master as ACL user `username`.
    #[must_use]
    pub fn with_auth(mut self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Authenticates to the sentinels (`username` `None` for the default user).
    #[must_use]
    pub fn with_sentinel_auth(
        mut self,
        username: Option<String>,
        password: impl Into<Secret>,
    ) -> Self {
        self.sentinel_username = username;
        self.sentinel_password = Some(password.into());
        self
    }

    /// Uses TLS towards the sentinels and the master.
    #[must_use]
    pub fn with_tls(mut self, tls: crate::Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The failure domain: the master name and the sorted sentinel addresses. Two entries naming
    /// the same master through different sentinel lists are not recognized as one server.
    pub(crate) fn id(&self) -> String {
        let mut addrs: Vec<String> = self.sentinels.iter().map(|(h, p)| tcp_id(h, *p)).collect();
        addrs.sort();
        addrs.dedup();
        format!("sentinel:{}@{}", self.master, addrs.join(","))
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.sentinels.is_empty() {
            return Err(config_error(format!(
                "Sentinel for master `{}` names no sentinel address",
                self.master
            )));
        }
        if self.master.is_empty() {
            return Err(config_error("Sentinel master name is empty"));
        }
        for (host, port) in &self.sentinels {
            check_address(
                host,
                *port,
                &format!("a sentinel of master `{}`", self.master),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ignores_order_and_loopback_spelling() {
        let a = Sentinel::new([("localhost", 26379), ("127.0.0.1", 26380)], "m");
        let b = Sentinel::new([("127.0.0.1", 26380), ("127.0.0.1", 26379)], "m");
        assert_eq!(a.id(), b.id());
        let c = Sentinel::new([("127.0.0.1", 26379)], "other");
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn from_url_refuses_a_plain_url() {
        assert!(Sentinel::from_url("redis://:pw@localhost:6379/1").is_err());
        let message = Sentinel::from_url("redis://:pw@localhost:6379/1")
            .expect_err("not sentinel")
            .to_string();
        assert!(!message.contains("pw@"), "{message}");
    }

    #[test]
    fn debug_hides_passwords() {
        let s = Sentinel::new([("h", 1)], "m")
            .with_password("hunter2")
            .with_sentinel_auth(None, "hunter3");
        let text = format!("{s:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
    }
}
