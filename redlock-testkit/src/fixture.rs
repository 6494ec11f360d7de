//! The conformance suite's [`Fixture`] for a [`RedisServer`]: it plants and checks application
//! data of another type (a list) through an administrative connection.

use redlock_core::conformance::Fixture;

use super::resp::Reply;
use super::server::RedisServer;

/// What the list planted by [`ServerFixture`] holds.
const LIST: [&[u8]; 2] = [b"app", b"data"];

/// Direct access to one server's database `db`, for
/// [`conformance::run_all`](redlock_core::conformance::run_all) against a backend on that
/// database. Its calls block the calling thread for a loopback round trip.
#[derive(Debug, Clone, Copy)]
pub struct ServerFixture<'a> {
    server: &'a RedisServer,
    db: u8,
}

impl<'a> ServerFixture<'a> {
    /// The fixture for database `db` of `server`.
    #[must_use]
    pub fn new(server: &'a RedisServer, db: u8) -> Self {
        Self { server, db }
    }

    fn cmd(&self, args: &[&[u8]]) -> Reply {
        let port = self.server.port();
        let mut conn = self
            .server
            .admin()
            .unwrap_or_else(|e| panic!("redis-server on port {port}: {e}"));
        let db = self.db.to_string();
        match conn.cmd(&[b"SELECT".as_slice(), db.as_bytes()]) {
            Ok(Reply::Simple(ok)) if ok == "OK" => {}
            other => panic!("SELECT {db} on port {port}: {other:?}"),
        }
        conn.cmd(args)
            .unwrap_or_else(|e| panic!("redis-server on port {port}: {e}"))
    }
}

#[redlock_core::async_trait]
impl Fixture for ServerFixture<'_> {
    async fn plant_other_type(&self, key: &[u8]) {
        self.cmd(&[b"DEL", key]);
        let reply = self.cmd(&[b"RPUSH", key, LIST[0], LIST[1]]);
        assert_eq!(reply, Reply::Int(2), "RPUSH");
    }

    async fn other_type_intact(&self, key: &[u8]) -> bool {
        let items = LIST
            .iter()
            .map(|item| Reply::Bulk(Some(item.to_vec())))
            .collect();
        self.cmd(&[b"TYPE", key]) == Reply::Simple("list".into())
            && self.cmd(&[b"LRANGE", key, b"0", b"-1"]) == Reply::Array(Some(items))
            && self.cmd(&[b"PTTL", key]) == Reply::Int(-1)
    }

    async fn delete(&self, key: &[u8]) {
        self.cmd(&[b"DEL", key]);
    }

    fn announces_releases(&self) -> bool {
        true
    }

    fn keeps_fence_counters(&self) -> bool {
        true
    }

    fn hands_off(&self) -> bool {
        true
    }
}
