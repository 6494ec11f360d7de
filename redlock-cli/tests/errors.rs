//! Bad arguments, bad instances, unreachable and stopped servers, secrets: always one line on
//! stderr, a documented non-zero status, no panic, no hang (every run is bounded by
//! `common::WAIT`, and the attempts made against dead servers are counted).

mod common;

use std::net::TcpListener;

use common::{bare, code, describe, redlock, servers, status, stderr, urls, Scratch};
use redlock_testkit::{RedisServer, ServerOptions};

/// Exactly one line on stderr, `redlock: ` first, and no panic.
fn one_line(out: &std::process::Output) -> String {
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{}", describe(out));
    assert!(err.starts_with("redlock: "), "{}", describe(out));
    assert!(!err.contains("panicked"), "{}", describe(out));
    err
}

/// A loopback port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn bad_arguments_give_one_line_and_status_64() {
    let url = format!("redis://127.0.0.1:{}", dead_port());
    let cases: &[&[&str]] = &[
        &[],
        &["bogus"],
        &["exec"],
        &["exec", "r"],
        &["exec", "--bogus", "r", "--", "true"],
        &["exec", "--ttl", "abc", "r", "--", "true"],
        &["exec", "--ttl", "0", "r", "--", "true"],
        &["exec", "--ttl", "2d", "r", "--", "true"],
        &["exec", "-n", "-t", "1s", "r", "--", "true"],
        &["exec", "--grace", "-1s", "r", "--", "true"],
        &["exec", "--fair=61s", "r", "--", "true"],
        &["exec", "-E", "256", "r", "--", "true"],
        &["exec", "", "--", "true"],
        &["status"],
        &["status", ""],
        &["lock", "r", "--ttl", "-1s"],
        &["extend", "r"],
        &["extend", "r", "--token", ""],
        &["unlock", "r"],
        &["--instance-timeout", "0", "status", "r"],
        &[
            "--redis",
            "redis://127.0.0.1:1",
            "--config",
            "/dev/null",
            "status",
            "r",
        ],
    ];
    for args in cases {
        let out = common::output(redlock(std::slice::from_ref(&url), args));
        assert_eq!(code(&out), status::USAGE, "{args:?}: {}", describe(&out));
        one_line(&out);
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
    }
}

#[test]
fn help_and_version_succeed() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["--version"],
        &["exec", "--help"],
        &["status", "--help"],
        &["lock", "--help"],
        &["extend", "--help"],
        &["unlock", "--help"],
    ] {
        let out = common::output(bare().args(args));
        assert_eq!(code(&out), 0, "{args:?}: {}", describe(&out));
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    // Every subcommand's manual has examples and the exit statuses.
    for sub in ["exec", "lock", "extend", "unlock"] {
        let out = common::output(bare().args([sub, "--help"]));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("EXAMPLES:"), "{sub}");
        assert!(
            text.contains("EXIT STATUS:") && text.contains(" 79 "),
            "{sub}"
        );
    }
    let out = common::output(bare().args(["status", "--help"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("EXAMPLES:") && text.contains("\"ttl_ms\""));
}

#[test]
fn no_instances_is_a_usage_error() {
    let out = common::output(bare().args(["status", "r"]));
    assert_eq!(code(&out), status::USAGE, "{}", describe(&out));
    let err = one_line(&out);
    assert!(
        err.contains("--redis") && err.contains("REDLOCK_URLS"),
        "{err}"
    );

    let out = common::output(bare().args(["status", "r"]).env("REDLOCK_URLS", " , "));
    assert_eq!(code(&out), status::USAGE, "{}", describe(&out));
    one_line(&out);

    let out = common::output(
        bare()
            .args(["status", "r"])
            .env("REDLOCK_CONFIG", "/nonexistent/redlock.conf"),
    );
    assert_eq!(code(&out), status::USAGE, "{}", describe(&out));
    one_line(&out);
}

#[test]
fn bad_urls_are_refused_without_echoing_passwords() {
    let port = dead_port();
    let cases = [
        format!("redis://:hunter2@127.0.0.1:{port}/999"),
        "redis://user:hunter2@[::1/0".to_owned(),
        format!("redis://127.0.0.1:{port}/0?master=m&sentinelPassword=hunter2&db=x"),
        format!("redis://:hunter2@127.0.0.1:{port}/0?bogus=1"),
        format!("ftp://:hunter2@127.0.0.1:{port}"),
    ];
    for url in &cases {
        let out = common::output(redlock(std::slice::from_ref(url), &["status", "r"]));
        assert_eq!(code(&out), status::USAGE, "{url}: {}", describe(&out));
        let err = one_line(&out);
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
    // The same server twice is refused: a quorum of one server is a lie.
    let url = format!("redis://127.0.0.1:{port}");
    let same = format!("redis://localhost:{port}");
    let out = common::output(redlock(&[url, same], &["status", "r"]));
    assert_eq!(code(&out), status::USAGE, "{}", describe(&out));
    one_line(&out);
}

/// How many acquire calls `-v` logged for `instance`.
fn acquires(err: &str, instance: &str) -> usize {
    let needle = format!("{instance} acquire:");
    err.lines().filter(|l| l.contains(&needle)).count()
}

#[test]
fn unreachable_servers_fail_after_the_documented_attempts() {
    let ports: Vec<u16> = (0..3).map(|_| dead_port()).collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let scratch = Scratch::new();
    let ran = scratch.file("ran");
    for wait in ["--wait", "--no-wait"] {
        let out =
            common::output(redlock(&urls, &["-v", "exec", wait, "r", "--", "touch"]).arg(&ran));
        assert_eq!(
            code(&out),
            status::UNAVAILABLE,
            "{wait}: {}",
            describe(&out)
        );
        let err = stderr(&out);
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("redlock: cannot lock"), "{err}");
        for port in &ports {
            assert!(last.contains(&format!("127.0.0.1:{port}")), "{last}");
        }
        // Four attempts while waiting (two manager calls of two), one with --no-wait.
        let expected = if wait == "--wait" { 4 } else { 1 };
        assert_eq!(
            acquires(&err, &format!("127.0.0.1:{}", ports[0])),
            expected,
            "{err}"
        );
        assert!(!ran.exists(), "the command ran without a lock");
    }
    for args in [
        &["lock", "r"][..],
        &["extend", "r", "--token", "t"],
        &["unlock", "r", "--token", "t"],
    ] {
        let out = common::output(redlock(&urls, args));
        assert_eq!(
            code(&out),
            status::UNAVAILABLE,
            "{args:?}: {}",
            describe(&out)
        );
        one_line(&out);
    }
    let out = common::output(redlock(&urls, &["status", "--json", "r"]));
    assert_eq!(code(&out), status::UNAVAILABLE, "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["resources"][0]["state"], "unknown");
}

#[test]
fn stopped_servers_fail_within_the_bound_too() {
    let servers = servers(3);
    let urls = urls(&servers);
    for s in &servers {
        s.pause();
    }
    let out = common::output(redlock(&urls, &["-v", "exec", "r", "--", "true"]));
    let err = stderr(&out);
    for s in &servers {
        s.resume();
    }
    assert_eq!(code(&out), status::UNAVAILABLE, "{}", describe(&out));
    assert_eq!(
        acquires(&err, &format!("127.0.0.1:{}", servers[0].port())),
        4,
        "{err}"
    );
    // A stopped server accepts the TCP connection (the kernel does) but never answers the
    // handshake: the reason names that, or a timeout once connected.
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("timed out") || last.contains("not connected yet"),
        "{err}"
    );
}

#[test]
fn passwords_never_appear_in_output() {
    let server = RedisServer::start_with(ServerOptions::new().password("s3cret-pw"));
    let good = format!("redis://:s3cret-pw@127.0.0.1:{}", server.port());
    let out = common::output(redlock(
        std::slice::from_ref(&good),
        &["-v", "exec", "pw", "--", "true"],
    ));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(!describe(&out).contains("s3cret-pw"), "{}", describe(&out));

    let wrong = format!("redis://:wr0ng-pw@127.0.0.1:{}", server.port());
    let out = common::output(redlock(&[wrong], &["-v", "exec", "-n", "pw", "--", "true"]));
    assert_eq!(code(&out), status::UNAVAILABLE, "{}", describe(&out));
    assert!(!describe(&out).contains("wr0ng-pw"), "{}", describe(&out));
    assert!(!describe(&out).contains("s3cret-pw"), "{}", describe(&out));

    // From the environment too.
    let out = common::output(
        bare()
            .args(["-v", "status", "pw"])
            .env("REDLOCK_URLS", &good),
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(!stderr(&out).contains("s3cret-pw"), "{}", describe(&out));
}

#[test]
fn instances_from_the_environment_and_a_configuration_file() {
    let servers = servers(3);
    let urls = urls(&servers);
    let scratch = Scratch::new();
    let config = scratch.file("redlock.conf");
    std::fs::write(
        &config,
        format!(
            "# the lock servers\n{}\n\n  {}  \n# {}\n{}\n",
            urls[0], urls[1], "redis://127.0.0.1:1", urls[2]
        ),
    )
    .expect("write the configuration");
    let dead = format!("redis://127.0.0.1:{}", dead_port());

    let sources: Vec<(&str, std::process::Command)> = vec![
        ("REDLOCK_URLS", {
            let mut c = bare();
            c.env("REDLOCK_URLS", urls.join(","));
            c
        }),
        ("--config", {
            let mut c = bare();
            c.arg("--config").arg(&config).env("REDLOCK_URLS", &dead);
            c
        }),
        ("REDLOCK_CONFIG", {
            let mut c = bare();
            c.env("REDLOCK_CONFIG", &config);
            c
        }),
        ("--redis over REDLOCK_URLS", {
            let mut c = redlock(&urls, &[] as &[&str]);
            c.env("REDLOCK_URLS", &dead);
            c
        }),
    ];
    for (source, mut cmd) in sources {
        let out = common::output(cmd.args(["status", "--json", "src"]));
        assert_eq!(code(&out), 0, "{source}: {}", describe(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let ids: Vec<String> = json["resources"][0]["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| i["instance"].as_str().unwrap_or_default().to_owned())
            .collect();
        let expected: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        assert_eq!(ids, expected, "{source}");
    }
}
