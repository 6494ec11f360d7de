//! Fencing tokens on real Redis: 5 `redis-server` with AOF and `appendfsync always`, several
//! client processes taking fenced locks on a few resources, and a nemesis that SIGKILLs up to two
//! servers at a time and restarts them on the same port with the same data directory. The
//! parent process is the referee: every child prints each grant (resource, token, fence, when
//! its call started and when the lock was handed out, on the host's wall clock), and for every
//! two grants of a resource where one was handed out before the other's call started, the later
//! fence must be strictly greater.
//!
//! The CI run makes `REDLOCK_FENCE_GRANTS` (default 400) grants, to stay within a minute; the
//! acceptance run makes 5 000: `REDLOCK_FENCE_GRANTS=5000 cargo test --release -p redlock-testkit --test real_fencing
//! -- --nocapture`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redlock_core::{LockOptions, OsRandom, Patience, RandomSource};
use redlock_testkit::{require_redis, Proxy, RedisServer, Reply, ServerOptions};

const CHILDREN: usize = 4;
const RESOURCES: u64 = 3;
const CHILD_ENV: &str = "REDLOCK_FENCE_CHILD_URLS";
const CHILD_GRANTS_ENV: &str = "REDLOCK_FENCE_CHILD_GRANTS";

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn random_below(n: u64) -> u64 {
    OsRandom.next_u64() % n.max(1)
}

/// One grant as a child reported it.
#[derive(Debug, Clone)]
struct Grant {
    child: usize,
    resource: String,
    token: String,
    fence: u64,
    /// Wall-clock nanoseconds when the `lock` call started.
    start: u128,
    /// When the lock was handed out (the call returned).
    end: u128,
}

fn parse(child: usize, line: &str) -> Option<Grant> {
    // The first line of a child follows libtest's "test ... " on the same line.
    let at = line.find("GRANT ")?;
    let mut parts = line[at + "GRANT ".len()..].split(' ');
    let resource = parts.next()?.to_owned();
    let token = parts.next()?.to_owned();
    let fence = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    let end = parts.next()?.parse().ok()?;
    Some(Grant {
        child,
        resource,
        token,
        fence,
        start,
        end,
    })
}

/// The referee: every grant handed out before another's call started has the smaller fence.
/// Returns the offending pairs (earlier, later).
fn referee(grants: &[Grant]) -> Vec<(Grant, Grant)> {
    let mut by_resource: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in grants {
        by_resource.entry(&g.resource).or_default().push(g);
    }
    let mut bad = Vec::new();
    for list in by_resource.values() {
        let mut handed_out = list.clone();
        handed_out.sort_by_key(|g| g.end);
        let mut later = list.clone();
        later.sort_by_key(|g| g.start);
        let mut best: Option<&Grant> = None;
        let mut next = 0;
        for b in later {
            while next < handed_out.len() && handed_out[next].end < b.start {
                if best.is_none_or(|x| handed_out[next].fence > x.fence) {
                    best = Some(handed_out[next]);
                }
                next += 1;
            }
            if let Some(a) = best {
                if b.fence <= a.fence {
                    bad.push((a.clone(), b.clone()));
                }
            }
        }
    }
    bad
}

#[test]
fn the_referee_catches_a_fence_that_does_not_grow() {
    let grant = |fence, start, end| Grant {
        child: 0,
        resource: "r".into(),
        token: format!("t{fence}"),
        fence,
        start,
        end,
    };
    assert!(referee(&[grant(1, 0, 10), grant(2, 20, 30)]).is_empty());
    assert_eq!(referee(&[grant(2, 0, 10), grant(2, 20, 30)]).len(), 1);
    // Overlapping calls are not ordered.
    assert!(referee(&[grant(2, 0, 25), grant(1, 20, 30)]).is_empty());
}

/// A client process: takes fenced locks on random resources until it made its share of grants,
/// printing each grant on stdout for the referee.
#[test]
#[ignore = "a client process of fenced_grants_grow_across_processes_and_server_crashes, which runs it"]
fn fencing_client_process() {
    let urls = std::env::var(CHILD_ENV).expect("run by the parent test, which sets the servers");
    let target: usize = std::env::var(CHILD_GRANTS_ENV)
        .expect("the number of grants")
        .parse()
        .expect("a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let manager = redlock_fred::manager(urls.split(','))
            .fenced(true)
            .retry_delay(Duration::from_millis(2), Duration::from_millis(20))
            .reconnect_max_delay(Duration::from_millis(50))
            .build()
            .expect("valid configuration");
        let mut made = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        while made < target {
            assert!(Instant::now() < deadline, "{made} grants in 10 minutes");
            let resource = format!("fence-r{}", random_below(RESOURCES));
            let start = wall_ns();
            let options = LockOptions::new(Duration::from_millis(500))
                .patience(Patience::For(Duration::from_secs(1)));
            let Ok(lock) = manager.lock_opts(&resource, options).await else {
                continue;
            };
            let end = wall_ns();
            let fence = lock.fence().expect("a fenced lock has a fence");
            let token = String::from_utf8_lossy(lock.token()).into_owned();
            println!("GRANT {resource} {token} {fence} {start} {end}");
            made += 1;
            if random_below(4) == 0 {
                tokio::time::sleep(Duration::from_millis(random_below(3))).await;
            }
            // A failed release (servers down) leaves the keys to their TTL: the next grant of
            // the resource waits, which the fences must order all the same.
            let _ = lock.release().await;
        }
        let _ = manager.close().await;
    });
}

#[test]
fn fenced_grants_grow_across_processes_and_server_crashes() {
    require_redis();
    let target: usize = std::env::var("REDLOCK_FENCE_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut servers: Vec<RedisServer> = (0..5)
        .map(|_| RedisServer::start_with(ServerOptions::new().persistence()))
        .collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let urls = urls.join(",");
    let exe = std::env::current_exe().expect("the test binary");
    let lines: Arc<Mutex<Vec<Grant>>> = Arc::default();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for k in 0..CHILDREN {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "fencing_client_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &urls)
            .env(CHILD_GRANTS_ENV, target.div_ceil(CHILDREN).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a client process");
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = Arc::clone(&lines);
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(grant) = parse(k, &line) {
                    sink.lock().unwrap().push(grant);
                }
            }
        }));
        children.push(child);
    }
    // The nemesis: while the clients run, SIGKILL one or two servers, restart them on the same
    // port with the same data directory, and do it again.
    let mut crashes = 0;
    let mut crashes_during_grants = 0;
    let started = Instant::now();
    while children
        .iter_mut()
        .any(|c| c.try_wait().expect("a child's status").is_none())
    {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the clients did not finish"
        );
        let before = lines.lock().unwrap().len();
        let first = usize::try_from(random_below(5)).unwrap_or(0);
        let mut victims = vec![first];
        if random_below(2) == 0 {
            victims.push((first + 1 + usize::try_from(random_below(4)).unwrap_or(0)) % 5);
        }
        for &v in &victims {
            servers[v].kill();
            crashes += 1;
        }
        std::thread::sleep(Duration::from_millis(20 + random_below(200)));
        for &v in &victims {
            servers[v].restart(true);
        }
        std::thread::sleep(Duration::from_millis(20 + random_below(200)));
        if lines.lock().unwrap().len() > before {
            crashes_during_grants += victims.len();
        }
    }
    for mut child in children {
        assert!(child.wait().expect("a child's status").success());
    }
    for reader in readers {
        reader.join().expect("a reader thread");
    }
    let grants = lines.lock().unwrap().clone();
    let bad = referee(&grants);
    let per_child: Vec<usize> = (0..CHILDREN)
        .map(|k| grants.iter().filter(|g| g.child == k).count())
        .collect();
    eprintln!(
        "{} grants by {CHILDREN} processes {per_child:?} over {RESOURCES} resources in {:?}; \
         {crashes} SIGKILLs ({crashes_during_grants} while grants were being made); \
         {} fence regressions",
        grants.len(),
        started.elapsed(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "fences did not grow, e.g. {:?}",
        bad.first()
    );
    assert!(grants.len() >= target, "{} grants", grants.len());
    let mut tokens: Vec<&str> = grants.iter().map(|g| g.token.as_str()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), grants.len(), "every grant has its own token");
    assert!(
        crashes_during_grants > 0,
        "no server was killed while grants were being made"
    );
}

/// The README's resource-side check, verbatim: between the README's ```lua fence and the
/// closing one.
fn readme_cas_script() -> String {
    let readme = include_str!("../../README.md");
    let start = readme.find("```lua\n").expect("the README's Lua example") + "```lua\n".len();
    let len = readme[start..].find("```").expect("its end");
    readme[start..start + len].to_owned()
}

/// Writes `value` to the resource's "report" through the README's script, with `fence`: 1 when
/// the resource took it, 0 when it refused a fence lower than the highest it has seen.
fn cas_write(resource: &RedisServer, script: &str, fence: u64, value: &str) -> Reply {
    let fence = fence.to_string();
    resource.cmd(&[
        "EVAL",
        script,
        "2",
        "report",
        "report:fence",
        fence.as_str(),
        value,
    ])
}

/// The README's worked example: a second Redis is the protected resource, written through the
/// README's compare-and-set script. A holder whose lease ran out (it was paused) keeps writing
/// with its old fence after a newer holder wrote: every such write is refused, and the data is
/// the newer holder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_resource_refuses_a_holder_whose_lease_ran_out() {
    require_redis();
    let servers: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::start_with(ServerOptions::new().persistence()))
        .collect();
    let resource = RedisServer::start();
    let script = readme_cas_script();
    let write = |fence: u64, value: &str| cas_write(&resource, &script, fence, value);
    let manager = redlock_fred::manager(servers.iter().map(RedisServer::url))
        .fenced(true)
        .build()
        .expect("valid configuration");
    let stale = manager
        .lock("report", Duration::from_millis(300))
        .await
        .expect("lock");
    let old = stale.fence().expect("fenced");
    assert_eq!(write(old, "from the first holder"), Reply::Int(1));
    // The first holder is "paused" past its lease; meanwhile another client takes the lock.
    tokio::time::sleep(stale.remaining() + Duration::from_millis(20)).await;
    assert!(!stale.is_valid());
    let rival = redlock_fred::manager(servers.iter().map(RedisServer::url))
        .fenced(true)
        .build()
        .expect("valid configuration");
    let current = rival
        .lock("report", Duration::from_secs(10))
        .await
        .expect("the expired lock is free");
    let new = current.fence().expect("fenced");
    assert!(new > old, "{new} > {old}");
    assert_eq!(write(new, "from the second holder"), Reply::Int(1));
    // The first holder wakes and writes as if it still held the lock: refused, every time.
    for _ in 0..3 {
        assert_eq!(write(old, "late write"), Reply::Int(0));
    }
    // The current holder can keep writing with its fence.
    assert_eq!(write(new, "again from the second holder"), Reply::Int(1));
    assert_eq!(
        resource.get("report"),
        Some(b"again from the second holder".to_vec())
    );
    assert!(matches!(
        stale.release().await,
        Err(redlock_core::Error::Lost(_))
    ));
    current.release().await.expect("release");
}

/// Issue 14's second acceptance, on five servers without persistence: a fenced lock is held,
/// three servers are SIGKILLed and restarted empty, and a rival takes the lock on them before
/// the holder can reach them again (its links to them go through proxies, stalled until the
/// rival is done). The two servers that kept their counters give the rival no increment (they
/// still hold the old key), but their counters are read, so the rival's fence is above the
/// holder's; the resource takes the rival's write and refuses every late write of the old
/// holder; and once the holder reaches the restarted servers again it is told `Lost` at once,
/// long before its renewal would have found out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_restarted_empty_the_old_holder_is_lost_and_refused() {
    require_redis();
    let mut servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
    let proxies: Vec<Proxy> = servers[..3]
        .iter()
        .map(|s| Proxy::start(s.port()))
        .collect();
    let holder_urls: Vec<String> = proxies
        .iter()
        .map(Proxy::url)
        .chain(servers[3..].iter().map(RedisServer::url))
        .collect();
    let resource = RedisServer::start();
    let script = readme_cas_script();
    let write = |fence: u64, value: &str| cas_write(&resource, &script, fence, value);
    let holder = redlock_fred::manager(holder_urls)
        .fenced(true)
        .build()
        .expect("valid configuration");
    // A few grants first: the counters are well past what a restarted server starts from.
    let mut fences = Vec::new();
    for _ in 0..5 {
        let lock = holder
            .lock("report", Duration::from_secs(10))
            .await
            .expect("lock");
        fences.push(lock.fence().expect("fenced"));
        lock.release().await.expect("release");
    }
    assert_eq!(fences, [1, 2, 3, 4, 5], "one increment per grant");
    // A 30 s lease: its renewal would come 18 s in, far beyond anything below.
    let held = holder
        .lock("report", Duration::from_secs(30))
        .await
        .expect("lock");
    let old = held.fence().expect("fenced");
    assert_eq!(write(old, "from the first holder"), Reply::Int(1));
    let counter = redlock_core::fence_key(b"report");
    redlock_testkit::wait_until(Duration::from_secs(5), "the raise on every server", || {
        servers
            .iter()
            .all(|s| s.get(&counter) == Some(old.to_string().into_bytes()))
    });

    for proxy in &proxies {
        proxy.stall();
    }
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            for server in &mut servers[..3] {
                scope.spawn(move || server.restart(false));
            }
        });
    });
    for s in &servers[..3] {
        assert_eq!(s.get(&counter), None, "restarted empty");
    }
    let rival = redlock_fred::manager(servers.iter().map(RedisServer::url))
        .fenced(true)
        .build()
        .expect("valid configuration");
    let current = rival
        .lock("report", Duration::from_secs(10))
        .await
        .expect("the restarted majority is free");
    let new = current.fence().expect("fenced");
    assert!(
        new > old,
        "the survivors' counters keep the fences growing: {new} > {old}"
    );
    assert_eq!(write(new, "from the rival"), Reply::Int(1));
    for _ in 0..3 {
        assert_eq!(
            write(old, "late write"),
            Reply::Int(0),
            "the old holder is refused"
        );
    }

    // The holder reaches the restarted servers again: told Lost by the re-check.
    let back = Instant::now();
    for proxy in &proxies {
        proxy.resume();
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), held.lost())
        .await
        .expect("told Lost well before the renewal");
    println!(
        "fence {old} -> rival {new}; holder told Lost ({reason:?}) {:?} after the restarted \
         servers were reachable",
        back.elapsed()
    );
    assert_eq!(reason, redlock_core::LossReason::InstancesLost);
    assert!(!held.is_valid());
    assert_eq!(write(old, "late write"), Reply::Int(0));
    assert_eq!(resource.get("report"), Some(b"from the rival".to_vec()));
    current.release().await.expect("release");
}
