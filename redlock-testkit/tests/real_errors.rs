//! Failures a person can act on: each kind of failure, provoked for real, comes back with its own
//! `BackendErrorKind` and a message that says what happened, from the backend, from a lock
//! round's per-instance report, and from the manager's start-up `connect`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use redlock_core::{BackendError, BackendErrorKind, Error, InstanceOutcome, LockBackend};
use redlock_fred::{ConnectionOptions, RedisBackend, RedisConfig};
use redlock_testkit::{require_redis, RedisServer, ServerOptions};

const TTL: Duration = Duration::from_secs(10);

/// A port nothing listens on (bound a moment ago, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The kind of each instance's failure in a round's report (`None`: it did not fail).
fn kinds(error: &Error) -> Vec<Option<BackendErrorKind>> {
    error
        .failure()
        .expect("a per-instance report")
        .instances
        .iter()
        .map(|r| match &r.outcome {
            InstanceOutcome::Failed(e) => Some(e.kind()),
            _ => None,
        })
        .collect()
}

fn failed(error: &Error, index: usize) -> &BackendError {
    match &error.failure().expect("a per-instance report").instances[index].outcome {
        InstanceOutcome::Failed(e) => e,
        other => panic!("instance {index}: {other:?} in {error:?}"),
    }
}

fn assert_says(error: &BackendError, kind: BackendErrorKind, needle: &str) {
    assert_eq!(error.kind(), kind, "{error:?}");
    let shown = error.to_string();
    assert!(shown.contains(needle), "`{needle}` not in: {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_authentication_with_the_servers_reply() {
    require_redis();
    let server = RedisServer::start_with(ServerOptions::new().password("right-pw-4e1"));
    let wrong = RedisConfig::new("127.0.0.1", server.port()).with_password("wrong-pw-93c");
    let backend = RedisBackend::new(wrong.clone()).expect("valid");
    let error = backend.connect().await.expect_err("AUTH refused");
    assert_says(&error, BackendErrorKind::Auth, "authentication refused");
    assert!(error.to_string().contains("WRONGPASS"), "{error}");

    // The same reason reaches a lock's per-instance report, not a timeout.
    let manager = redlock_fred::manager([wrong])
        .retry_count(1)
        .build()
        .expect("valid");
    let error = manager.lock("k", TTL).await.expect_err("AUTH refused");
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    assert_says(failed(&error, 0), BackendErrorKind::Auth, "WRONGPASS");
    let text = format!("{error:?}");
    assert!(!text.contains("wrong-pw-93c"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_password_is_refused_authentication_noauth() {
    require_redis();
    let server = RedisServer::start_with(ServerOptions::new().password("needed-pw-0b7"));
    let backend = RedisBackend::new(server.url()).expect("valid");
    let error = backend.connect().await.expect_err("NOAUTH");
    assert_says(&error, BackendErrorKind::Auth, "NOAUTH");
    let error = backend
        .acquire(b"k", b"t", TTL)
        .await
        .expect_err("not authenticated");
    assert_says(&error, BackendErrorKind::Auth, "NOAUTH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_connection_refused() {
    let backend = RedisBackend::new(("127.0.0.1", closed_port())).expect("valid");
    let error = backend.connect().await.expect_err("refused");
    assert_says(&error, BackendErrorKind::Connection, "connection refused");
    let error = backend.acquire(b"k", b"t", TTL).await.expect_err("refused");
    assert_says(&error, BackendErrorKind::Connection, "connection refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_timed_out_connecting() {
    require_redis();
    let server = RedisServer::start();
    // SIGSTOP: the kernel still accepts the TCP connection, the handshake gets no answer (a
    // dead host, on loopback).
    server.pause();
    let options = ConnectionOptions::new().with_connection_timeout(Duration::from_millis(300));
    let backend = RedisBackend::with_options(server.url(), &options).expect("valid");
    let error = backend.connect().await.expect_err("no handshake");
    server.resume();
    assert_says(&error, BackendErrorKind::Connection, "timed out connecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_server_that_stops_answering_is_a_command_timeout() {
    require_redis();
    let server = RedisServer::start();
    let backend = RedisBackend::new(server.url()).expect("valid");
    backend.connect().await.expect("connects");
    server.pause();
    let error = backend
        .acquire(b"k", b"t", TTL)
        .await
        .expect_err("no reply");
    server.resume();
    assert_says(
        &error,
        BackendErrorKind::Timeout,
        "no reply within the command timeout",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_older_than_7_is_incompatible_with_its_version() {
    let fake = FakeServer::start(Mode::Version("6.2.14"));
    let backend = RedisBackend::new(("127.0.0.1", fake.port)).expect("valid");
    let error = backend.connect().await.expect_err("too old");
    assert_says(&error, BackendErrorKind::Incompatible, "Redis 6.2.14");
    assert!(error.to_string().contains("7.0 or later"), "{error}");
    let error = backend.acquire(b"k", b"t", TTL).await.expect_err("too old");
    assert_says(&error, BackendErrorKind::Incompatible, "Redis 6.2.14");
    // A fresh backend whose very first call is a lock command says the same.
    let backend = RedisBackend::new(("127.0.0.1", fake.port)).expect("valid");
    let error = backend.acquire(b"k", b"t", TTL).await.expect_err("too old");
    assert_says(&error, BackendErrorKind::Incompatible, "Redis 6.2.14");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_is_not_resp_is_a_protocol_error() {
    let fake = FakeServer::start(Mode::Garbage);
    let backend = RedisBackend::new(("127.0.0.1", fake.port)).expect("valid");
    backend
        .connect()
        .await
        .expect("the handshake is well-formed");
    let error = backend.acquire(b"k", b"t", TTL).await.expect_err("garbage");
    assert_says(&error, BackendErrorKind::Protocol, "protocol error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_reports_every_instance_at_start_up() {
    require_redis();
    let good = RedisServer::start();
    let locked = RedisServer::start_with(ServerOptions::new().password("pw-c4a"));
    let old = FakeServer::start(Mode::Version("5.0.7"));
    let manager = redlock_fred::manager([
        redlock_fred::Instance::from(good.url()),
        RedisConfig::new("127.0.0.1", locked.port())
            .with_password("not-it")
            .into(),
        ("127.0.0.1", closed_port()).into(),
        ("127.0.0.1", old.port).into(),
    ])
    .build()
    .expect("valid");
    let error = manager.connect().await.expect_err("three cannot serve");
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    assert_eq!(
        kinds(&error),
        [
            None,
            Some(BackendErrorKind::Auth),
            Some(BackendErrorKind::Connection),
            Some(BackendErrorKind::Incompatible)
        ]
    );
    let failure = error.failure().expect("report");
    assert_eq!(failure.unreachable().count(), 3);
    // Fixed: the same manager connects once the instances are right.
    let manager = redlock_fred::manager([good.url()]).build().expect("valid");
    manager.connect().await.expect("connects");
}

/// What a [`FakeServer`] answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// A well-behaved handshake reporting this version, `ERR` to everything else (what an old
    /// server says to `SET … NX GET` and to scripts with flags).
    Version(&'static str),
    /// A well-behaved handshake (Redis 7.2.0), then bytes that are not RESP.
    Garbage,
}

/// A RESP server on loopback speaking just enough for fred's handshake (`PING`, `CLIENT ID`,
/// `INFO`), for what a real Redis 7 cannot show: an old version, a broken protocol.
struct FakeServer {
    port: u16,
}

impl FakeServer {
    fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // The thread ends with the test process; it holds nothing else.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve(stream, mode));
            }
        });
        Self { port }
    }
}

fn serve(stream: TcpStream, mode: Mode) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(command) = read_command(&mut reader) {
        let name = command
            .first()
            .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
            .unwrap_or_default();
        let version = match mode {
            Mode::Version(v) => v,
            Mode::Garbage => "7.2.0",
        };
        let reply: Vec<u8> = match (name.as_str(), mode) {
            ("PING", _) => b"+PONG\r\n".to_vec(),
            ("CLIENT", _) => b":1\r\n".to_vec(),
            ("SELECT" | "AUTH", _) => b"+OK\r\n".to_vec(),
            ("INFO", _) => {
                let body = format!("# Server\r\nredis_version:{version}\r\n");
                format!("${}\r\n{body}\r\n", body.len()).into_bytes()
            }
            ("QUIT", _) => return,
            (_, Mode::Version(_)) => b"-ERR syntax error\r\n".to_vec(),
            (_, Mode::Garbage) => b"Znot resp at all\r\n".to_vec(),
        };
        if writer.write_all(&reply).is_err() {
            return;
        }
    }
}

/// One RESP request (an array of bulk strings), or `None` at the end of the stream.
fn read_command(reader: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let count = read_header(reader, b'*')?;
    (0..count)
        .map(|_| {
            let len = read_header(reader, b'$')?;
            let mut arg = vec![0; len + 2];
            reader.read_exact(&mut arg).ok()?;
            arg.truncate(len);
            Some(arg)
        })
        .collect()
}

fn read_header(reader: &mut impl BufRead, marker: u8) -> Option<usize> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    let text = line.strip_prefix(&[marker])?;
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}
