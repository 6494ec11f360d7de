//! `lock`, `extend`, `unlock` and `status` on real servers: a lock managed by a script across
//! steps, checked on the servers themselves, and the JSON formats parsed.

mod common;

use serde_json::Value;

use common::{code, describe, redlock, servers, status, stderr, urls};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)))
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_lock_across_steps_lock_extend_unlock() {
    let servers = servers(3);
    let urls = urls(&servers);

    let out = common::output(redlock(&urls, &["lock", "--ttl", "5s", "steps"]));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let token = text(&out).trim_end().to_owned();
    assert_eq!(text(&out), format!("{token}\n"), "one line");
    assert!(!token.is_empty());
    for server in &servers {
        assert_eq!(server.get("steps"), Some(token.clone().into_bytes()));
        let pttl = server.pttl("steps");
        assert!(pttl > 0 && pttl <= 5000, "PTTL {pttl}");
    }

    // Held: another client cannot take it, and -E picks the status.
    let out = common::output(redlock(&urls, &["lock", "-n", "steps"]));
    assert_eq!(code(&out), status::NOT_ACQUIRED, "{}", describe(&out));
    let out = common::output(redlock(&urls, &["lock", "-n", "-E", "9", "steps"]));
    assert_eq!(code(&out), 9, "{}", describe(&out));

    let out = common::output(redlock(
        &urls,
        &[
            "extend", "steps", "--token", &token, "--ttl", "30s", "--json",
        ],
    ));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let extended = json(&out);
    assert_eq!(extended["resource"], "steps");
    assert_eq!(extended["token"], token.as_str());
    assert_eq!(extended["ttl_ms"], 30_000);
    let validity = extended["validity_ms"].as_u64().expect("validity_ms");
    assert!(validity > 5000 && validity < 30_000, "validity {validity}");
    for server in &servers {
        assert!(server.pttl("steps") > 5000, "extended on every server");
    }

    // A wrong token holds nothing.
    let out = common::output(redlock(&urls, &["extend", "steps", "--token", "not-mine"]));
    assert_eq!(code(&out), status::LOST, "{}", describe(&out));
    assert_eq!(stderr(&out).lines().count(), 1);
    let out = common::output(redlock(&urls, &["unlock", "steps", "--token", "not-mine"]));
    assert_eq!(code(&out), status::LOST, "{}", describe(&out));
    assert_eq!(servers[0].get("steps"), Some(token.clone().into_bytes()));

    let out = common::output(redlock(
        &urls,
        &["unlock", "steps", "--token", &token, "--json"],
    ));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(
        json(&out),
        serde_json::json!({"resource": "steps", "released": true})
    );
    for server in &servers {
        assert_eq!(server.get("steps"), None);
    }

    // Gone: unlocking or extending again says the lock is not held (79).
    for args in [
        &["unlock", "steps", "--token", &token][..],
        &["extend", "steps", "--token", &token],
    ] {
        let out = common::output(redlock(&urls, args));
        assert_eq!(code(&out), status::LOST, "{args:?}: {}", describe(&out));
        assert_eq!(stderr(&out).lines().count(), 1);
    }
}

#[test]
fn lock_json_reports_the_token_and_validity() {
    let servers = servers(3);
    let urls = urls(&servers);
    let out = common::output(redlock(&urls, &["lock", "--json", "--ttl", "4s", "j"]));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lock = json(&out);
    assert_eq!(lock["resource"], "j");
    assert_eq!(lock["ttl_ms"], 4000);
    let validity = lock["validity_ms"].as_u64().expect("validity_ms");
    assert!(validity > 0 && validity < 4000, "{validity}");
    let token = lock["token"].as_str().expect("token");
    assert_eq!(servers[1].get("j"), Some(token.as_bytes().to_vec()));
}

#[test]
fn status_json_is_the_documented_format() {
    let servers = servers(3);
    let urls = urls(&servers);
    let out = common::output(redlock(&urls, &["lock", "--ttl", "20s", "taken"]));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let token = text(&out).trim_end().to_owned();
    servers[2].pause();

    let out = common::output(redlock(&urls, &["status", "--json", "taken", "free"]));
    servers[2].resume();
    assert_eq!(code(&out), 0, "decided by a quorum: {}", describe(&out));
    let status = json(&out);
    assert_eq!(status["version"], 1);
    let resources = status["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 2);

    let taken = &resources[0];
    assert_eq!(taken["resource"], "taken");
    assert_eq!(taken["state"], "held");
    assert_eq!(taken["quorum"], 2);
    assert_eq!(taken["holding"], 2);
    assert_eq!(taken["token"], token.as_str());
    let instances = taken["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 3);
    for (i, server) in servers.iter().enumerate() {
        let instance = &instances[i];
        assert_eq!(instance["instance"], format!("127.0.0.1:{}", server.port()));
        if i < 2 {
            assert_eq!(instance["state"], "held");
            assert_eq!(instance["token"], token.as_str());
            let ttl = instance["ttl_ms"].as_u64().expect("ttl_ms");
            assert!(ttl > 0 && ttl <= 20_000, "{ttl}");
            assert_eq!(instance["error"], Value::Null);
        } else {
            assert_eq!(instance["state"], "error");
            assert_eq!(instance["token"], Value::Null);
            assert_eq!(instance["ttl_ms"], Value::Null);
            assert!(instance["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }

    let free = &resources[1];
    assert_eq!(free["resource"], "free");
    assert_eq!(free["state"], "free");
    assert_eq!(free["holding"], 0);
    assert_eq!(free["token"], Value::Null);
    assert_eq!(free["instances"][0]["state"], "free");

    // With two of three stopped, nothing can be decided: "unknown", and status 69.
    servers[1].pause();
    servers[2].pause();
    let out = common::output(redlock(&urls, &["status", "--json", "taken"]));
    servers[1].resume();
    servers[2].resume();
    assert_eq!(code(&out), status::UNAVAILABLE, "{}", describe(&out));
    assert_eq!(json(&out)["resources"][0]["state"], "unknown");
}

#[test]
fn status_text_and_verbose_timings() {
    let servers = servers(3);
    let urls = urls(&servers);
    let out = common::output(redlock(&urls, &["-v", "status", "plain"]));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let shown = text(&out);
    assert!(shown.starts_with("\"plain\": free"), "{shown}");
    let err = stderr(&out);
    for server in &servers {
        let id = format!("127.0.0.1:{}", server.port());
        assert!(shown.contains(&id), "{shown}");
        // One timed inspect per instance.
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("{id} inspect")) && l.contains(" ms")),
            "{err}"
        );
    }
    let quiet = common::output(redlock(&urls, &["status", "plain"]));
    assert!(quiet.stderr.is_empty(), "{}", describe(&quiet));
}
