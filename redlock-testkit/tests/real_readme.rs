//! aioredlock's README usage block, line by line, against a mixed instance list: a
//! `(host, port)` pair, a config struct with a db, a URL, a TLS URL with a password, a
//! `Sentinel` built from an address, and aioredlock's Sentinel URL.
//!
//! aioredlock's last entry, a `rediss://` *Sentinel* URL, needs TLS sentinels; here its TLS and
//! password parts run against a direct TLS server (the Sentinel URL form itself is covered by the
//! URL parsing tests and by `real_sentinel.rs`).

use std::time::Duration;

use redlock_core::Error;
use redlock_fred::{Instance, RedisConfig, Sentinel};
use redlock_testkit::{require_redis, RedisServer, SentinelGroup, ServerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_usage_against_mixed_instances() -> Result<(), Error> {
    require_redis();
    let plain: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let tls = RedisServer::start_with(ServerOptions::new().tls().password("password"));
    let group_a = SentinelGroup::start();
    let group_b = SentinelGroup::start();

    // Define a list of connections to your Redis instances:
    let redis_instances: Vec<Instance> = vec![
        ("localhost", plain[0].port()).into(),
        RedisConfig::new("localhost", plain[1].port())
            .with_db(1)
            .into(),
        format!("redis://localhost:{}/2", plain[2].port()).into(),
        Sentinel::new([("localhost", group_a.sentinels[0].port())], "leader")
            .with_db(3)
            .into(),
        Sentinel::from_url(&format!(
            "redis://localhost:{}/4?master=leader&encoding=utf-8",
            group_b.sentinels[0].port()
        ))?
        .into(),
        format!(
            "rediss://:password@localhost:{}/5?encoding=utf-8&ssl_cert_reqs=CERT_NONE",
            tls.tls_port().expect("tls port")
        )
        .into(),
    ];

    // Create a lock manager:
    let lock_manager = redlock_fred::manager(redis_instances).build()?;

    // Check whether a resource is acquired by any other redlock instance:
    assert!(!lock_manager.is_locked("resource_name").await?);

    // Try to acquire the lock:
    let lock = match lock_manager
        .lock("resource_name", Duration::from_secs(10))
        .await
    {
        Ok(lock) => lock,
        Err(e) => panic!("Lock not acquired: {e:?}"),
    };

    // Now the lock is acquired:
    assert!(lock.is_valid());
    assert!(lock_manager.is_locked("resource_name").await?);
    // ... on at least a quorum of the instances, whichever way each was configured (the call
    // may return as soon as a quorum answered):
    let holding = plain
        .iter()
        .chain([&tls, group_a.master(), group_b.master()])
        .filter(|server| {
            (0..6).any(|db| {
                let db = db.to_string();
                server
                    .admin()
                    .and_then(|mut c| {
                        c.cmd(&["SELECT", db.as_str()])?;
                        c.cmd(&["GET", "resource_name"])
                    })
                    .is_ok_and(|r| r == redlock_testkit::Reply::Bulk(Some(lock.token().to_vec())))
            })
        })
        .count();
    assert!(
        holding >= lock_manager.quorum(),
        "{holding} servers hold the token"
    );

    // Extend lifetime of the lock:
    lock_manager.extend(&lock, Duration::from_secs(10)).await?;

    // Release the lock:
    lock_manager.unlock(&lock).await?;

    // The released lock becomes invalid:
    assert!(!lock.is_valid());
    assert!(!lock_manager.is_locked("resource_name").await?);

    // The `async with` block: hold, extend (lock.extend() is lock_manager.extend(lock)), release.
    {
        let lock = lock_manager
            .lock("resource_name", Duration::from_secs(10))
            .await?;
        assert!(lock.is_valid());
        // Do your stuff having the lock
        lock.extend().await?;
        // Do more stuff having the lock
        lock.release().await?;
        assert!(!lock.is_valid());
    }

    // Clear the connections with Redis:
    let report = lock_manager.close().await?;
    assert!(
        report.failed.is_empty() && report.backend_errors.is_empty(),
        "{report:?}"
    );
    Ok(())
}
