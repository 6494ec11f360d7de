//! A TCP proxy in front of one server, for faults of the network rather than of the process.
//!
//! [`RedisServer::pause`](super::RedisServer::pause) stops a server for every client; a
//! [`Proxy`] stalls or filters only the connections that go through it, so one client can lose
//! its links to some servers while another still reaches them directly.
//!
//! Plain threads, no runtime: like the rest of the harness it must work from any test and
//! inside `Drop`. Each connection has one thread per direction; a thread reads a chunk, then
//! waits (on the shared state) until that chunk may move, so held bytes stay in the proxy and,
//! behind them, in the kernel's socket buffers: nothing is lost and no connection is closed.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Chunk size of one read; a chunk is held or forwarded whole.
const CHUNK: usize = 16 * 1024;

/// Requests (client to server) and replies (server to client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up = 0,
    Down = 1,
}

/// Bytes per direction (indexed by [`Direction`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    read: [u64; 2],
    written: [u64; 2],
    dropped: [u64; 2],
}

#[derive(Debug, Default)]
struct State {
    stalled: bool,
    /// Connections stalled one by one ([`Proxy::stall_connections`]).
    held: HashSet<u64>,
    drop_replies: bool,
    shutdown: bool,
    /// Threads between deciding to write a chunk and finishing the write: `stall` waits for
    /// them, so that once it returns not one more byte is delivered.
    writing: usize,
    /// Open connections, with their sockets, so that dropping the proxy can close them.
    conns: HashMap<u64, (TcpStream, TcpStream)>,
    next_id: u64,
    threads: Vec<JoinHandle<()>>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking pump thread leaves the state consistent (every update is one statement).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A TCP proxy on a free loopback port in front of `127.0.0.1:upstream_port`, with fault verbs
/// that act on the network between a client and one server: [`stall`](Self::stall) /
/// [`resume`](Self::resume) and [`drop_replies`](Self::drop_replies).
///
/// Each accepted connection gets its own connection to the upstream; bytes are forwarded as
/// they come, in both directions. Dropping the proxy closes the listener and every connection
/// and joins its threads.
///
/// ```no_run
/// use redlock_testkit::{Proxy, RedisServer};
///
/// let server = RedisServer::start();
/// let proxy = Proxy::start(server.port());
/// let url = format!("redis://127.0.0.1:{}", proxy.port()); // give this to the client
/// proxy.stall(); // the client's link to this server hangs, connections stay open
/// proxy.resume(); // the held bytes are delivered
/// proxy.drop_replies(true); // requests reach the server, the replies are lost
/// ```
pub struct Proxy {
    port: u16,
    upstream: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state();
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .field("upstream", &self.upstream)
            .field("stalled", &state.stalled)
            .field("drop_replies", &state.drop_replies)
            .field("connections", &state.conns.len())
            .field("counters", &state.counters)
            .finish()
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `127.0.0.1:upstream_port`. The upstream need not be up yet: a connection accepted while
    /// it is down is closed at once.
    ///
    /// # Panics
    /// When no loopback port can be bound or the accepting thread cannot be started.
    #[must_use]
    pub fn start(upstream_port: u16) -> Self {
        let listener = loop {
            let listener =
                TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port for the proxy");
            let port = listener.local_addr().expect("local addr").port();
            // Those ports belong to a shared server the harness never touches.
            if port != 6379 && port != 26379 {
                break listener;
            }
        };
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{port}-accept"))
                .spawn(move || accept_loop(&listener, upstream_port, &shared))
                .expect("start the proxy's accepting thread")
        };
        Self {
            port,
            upstream: upstream_port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port clients connect to.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on no byte moves in either direction, on open connections and on connections
    /// accepted later: bytes are held (in the proxy and the kernel's buffers), not dropped, and
    /// every connection stays open. A closed end is held too: the other side sees it only
    /// after [`resume`](Self::resume).
    ///
    /// Returns once no write is under way, so nothing is delivered after it returns. A write
    /// under way finishes first; that only waits if a peer stopped reading.
    pub fn stall(&self) {
        let mut state = self.shared.state();
        state.stalled = true;
        while state.writing > 0 {
            state = self.shared.wait(state);
        }
    }

    /// [`stall`](Self::stall) for the given connections only (ids from
    /// [`connection_ids`](Self::connection_ids)); the others keep flowing. Lets a test hold
    /// one of a client's connections (say its pub/sub one) while it uses another.
    pub fn stall_connections(&self, ids: &[u64]) {
        let mut state = self.shared.state();
        state.held.extend(ids);
        while state.writing > 0 {
            state = self.shared.wait(state);
        }
    }

    /// The ids of the open connections, in the order they were accepted.
    #[must_use]
    pub fn connection_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.shared.state().conns.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Ends a [`stall`](Self::stall) or [`stall_connections`](Self::stall_connections): the
    /// held bytes are delivered, in order, and new ones flow again.
    pub fn resume(&self) {
        let mut state = self.shared.state();
        state.stalled = false;
        state.held.clear();
        drop(state);
        self.shared.changed.notify_all();
    }

    /// While `on`, requests are still forwarded to the server but every reply from it is
    /// discarded (a lost reply: the server acted, the client never hears). Applies to the
    /// replies the proxy would deliver from now on, also held ones delivered after a
    /// [`resume`](Self::resume).
    pub fn drop_replies(&self, on: bool) {
        self.shared.state().drop_replies = on;
    }

    /// How many client connections are open now (accepted, connected upstream, and not yet
    /// closed by either end).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.state().conns.len()
    }

    #[cfg(test)]
    fn counters(&self) -> Counters {
        self.shared.state().counters
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let threads = {
            let mut state = self.shared.state();
            state.shutdown = true;
            for (client, server) in state.conns.values() {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut state.threads)
        };
        self.shared.changed.notify_all();
        // The accepting thread blocks in accept(): one last connection wakes it.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Threads started after the take above (none once shutdown is set, but a pump thread
        // registered just before it is in `threads`).
        let late = std::mem::take(&mut self.shared.state().threads);
        for thread in threads.into_iter().chain(late) {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: u16, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.state().shutdown {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], upstream)),
            Duration::from_secs(2),
        ) else {
            // Upstream down: the client sees its connection closed, as it would without us.
            continue;
        };
        if let Err(e) = connect(client, server, shared) {
            // Out of threads or descriptors: this connection is refused, the proxy goes on.
            eprintln!("proxy: dropping a connection: {e}");
        }
    }
}

/// Registers one connection and starts its two pump threads.
fn connect(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    // Small request/reply chunks must not wait for Nagle.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let up = (client.try_clone()?, server.try_clone()?);
    let down = (server.try_clone()?, client.try_clone()?);
    let id = {
        let mut state = shared.state();
        if state.shutdown {
            return Ok(());
        }
        let id = state.next_id;
        state.next_id += 1;
        state.conns.insert(id, (client, server));
        id
    };
    // Created outside the lock: its last drop takes the lock.
    let conn = Arc::new(Registered {
        id,
        shared: Arc::clone(shared),
    });
    let mut started = Vec::with_capacity(2);
    for (direction, (from, to)) in [(Direction::Up, up), (Direction::Down, down)] {
        let conn = Arc::clone(&conn);
        let spawned = std::thread::Builder::new()
            .name(format!("proxy-conn-{id}-{direction:?}"))
            .spawn(move || pump(direction, from, to, &conn));
        match spawned {
            Ok(thread) => started.push(thread),
            Err(e) => {
                // A pump already started ends when its sockets are shut down.
                let removed = shared.state().conns.remove(&id);
                if let Some((client, server)) = removed {
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                }
                return Err(e);
            }
        }
    }
    let mut state = shared.state();
    // Threads of closed connections need not be joined later.
    state.threads.retain(|t| !t.is_finished());
    state.threads.extend(started);
    Ok(())
}

/// One open connection; unregistered when both of its pumps have ended.
struct Registered {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.state().conns.remove(&self.id);
    }
}

/// Moves chunks from `from` to `to` until either end closes or the proxy is dropped, holding
/// them while stalled and discarding replies while asked to.
fn pump(direction: Direction, mut from: TcpStream, mut to: TcpStream, conn: &Registered) {
    let shared = &conn.shared;
    let d = direction as usize;
    let mut buf = vec![0; CHUNK];
    loop {
        // 0 is the end of the stream (or an error): held like data, then passed on as a close.
        let n = from.read(&mut buf).unwrap_or(0);
        let mut state = shared.state();
        state.counters.read[d] += n as u64;
        while (state.stalled || state.held.contains(&conn.id)) && !state.shutdown {
            state = shared.wait(state);
        }
        if state.shutdown || n == 0 {
            break;
        }
        if direction == Direction::Down && state.drop_replies {
            state.counters.dropped[d] += n as u64;
            continue;
        }
        state.writing += 1;
        drop(state);
        let written = to.write_all(&buf[..n]).is_ok();
        let mut state = shared.state();
        state.writing -= 1;
        if written {
            state.counters.written[d] += n as u64;
        }
        drop(state);
        shared.changed.notify_all();
        if !written {
            break;
        }
    }
    // Closing both sockets ends the other direction's pump too (its read returns).
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::{Direction, Proxy};
    use crate::wait_until;

    const WAIT: Duration = Duration::from_secs(10);
    const UP: usize = Direction::Up as usize;
    const DOWN: usize = Direction::Down as usize;

    /// An upstream whose every accepted connection is handed to the test, which then plays the
    /// server by hand.
    fn upstream() -> (u16, mpsc::Receiver<TcpStream>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                if tx.send(conn).is_err() {
                    return;
                }
            }
        });
        (port, rx)
    }

    /// A client connection through `proxy` and the server's end of it.
    fn pair(proxy: &Proxy, accepted: &mpsc::Receiver<TcpStream>) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(("127.0.0.1", proxy.port())).expect("connect");
        let server = accepted
            .recv_timeout(WAIT)
            .expect("the proxy connects upstream");
        // Only a guard against a hung test: every read below expects bytes that must come.
        for s in [&client, &server] {
            s.set_read_timeout(Some(WAIT)).expect("timeout");
        }
        (client, server)
    }

    fn read_exactly(from: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        from.read_exact(&mut buf).expect("the bytes arrive");
        buf
    }

    fn nothing_to_read(s: &mut TcpStream) -> bool {
        s.set_nonblocking(true).expect("nonblocking");
        let empty = matches!(s.read(&mut [0; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
        s.set_nonblocking(false).expect("blocking");
        empty
    }

    #[test]
    fn bytes_pass_stall_holds_them_resume_delivers_them() {
        let (port, accepted) = upstream();
        let proxy = Proxy::start(port);
        let (mut a, mut a_server) = pair(&proxy, &accepted);
        a.write_all(b"hello").expect("write");
        assert_eq!(read_exactly(&mut a_server, 5), b"hello");
        a_server.write_all(b"world").expect("write");
        assert_eq!(read_exactly(&mut a, 5), b"world");

        proxy.stall();
        a.write_all(b"up").expect("write");
        a_server.write_all(b"down").expect("write");
        // A connection made during the stall is held as well.
        let (mut b, mut b_server) = pair(&proxy, &accepted);
        b.write_all(b"new").expect("write");
        wait_until(WAIT, "the proxy to read the held bytes", || {
            let c = proxy.counters();
            c.read[UP] == 5 + 2 + 3 && c.read[DOWN] == 5 + 4
        });
        assert_eq!(proxy.counters().written, [5, 5], "{proxy:?}");
        assert!(nothing_to_read(&mut a_server) && nothing_to_read(&mut a));
        assert!(nothing_to_read(&mut b_server));
        assert_eq!(proxy.connections(), 2, "connections stay open");

        proxy.resume();
        assert_eq!(read_exactly(&mut a_server, 2), b"up");
        assert_eq!(read_exactly(&mut a, 4), b"down");
        assert_eq!(read_exactly(&mut b_server, 3), b"new");

        drop(b);
        wait_until(WAIT, "the closed connection to be counted", || {
            proxy.connections() == 1
        });
        assert!(
            matches!(b_server.read(&mut [0; 1]), Ok(0)),
            "the close is passed on"
        );
    }

    #[test]
    fn replies_are_dropped_while_asked_and_requests_still_pass() {
        let (port, accepted) = upstream();
        let proxy = Proxy::start(port);
        let (mut a, mut a_server) = pair(&proxy, &accepted);
        proxy.drop_replies(true);
        a.write_all(b"request").expect("write");
        assert_eq!(read_exactly(&mut a_server, 7), b"request", "forwarded");
        a_server.write_all(b"lost").expect("write");
        wait_until(WAIT, "the reply to be discarded", || {
            proxy.counters().dropped[DOWN] == 4
        });
        proxy.drop_replies(false);
        a_server.write_all(b"kept").expect("write");
        // The first bytes the client sees are the second reply: the first one is gone.
        assert_eq!(read_exactly(&mut a, 4), b"kept");
    }

    #[test]
    fn dropping_the_proxy_closes_its_connections_and_listener() {
        let (port, accepted) = upstream();
        let proxy = Proxy::start(port);
        let port = proxy.port();
        let (mut a, mut a_server) = pair(&proxy, &accepted);
        proxy.stall();
        drop(proxy);
        // Closed, not merely silent: a silent socket would end the read with a timeout error.
        assert!(matches!(a.read(&mut [0; 1]), Ok(0)));
        assert!(matches!(a_server.read(&mut [0; 1]), Ok(0)));
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
