//! aioredlock's README usage block against real Redis.
//!
//! ```sh
//! # three instances, and optionally a Sentinel-managed one (aioredlock's Sentinel URL form):
//! cargo run --example redis -- redis://127.0.0.1:7001 redis://127.0.0.1:7002 redis://127.0.0.1:7003 \
//!     'redis://127.0.0.1:26379/4?master=leader&encoding=utf-8'
//! ```
//!
//! Any instance form works as an argument: `redis://`, `rediss://` (TLS), `redis+unix:///path`,
//! `redis-sentinel://host:26379?sentinelServiceName=leader`, or `host:port`.

use std::time::Duration;

use redlock_lease::fred::{Instance, RedisConfig};
use redlock_lease::Error;

fn instance(arg: &str) -> Instance {
    // `host:port` is the `(host, port)` tuple form; anything else is a URL.
    match arg.rsplit_once(':') {
        Some((host, port)) if !arg.contains("://") => match port.parse::<u16>() {
            Ok(port) => RedisConfig::new(host, port).into(),
            Err(_) => arg.into(),
        },
        _ => arg.into(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!(
            "usage: redis URL... (e.g. redis://127.0.0.1:7001 redis://127.0.0.1:7002 redis://127.0.0.1:7003)"
        );
        std::process::exit(2);
    }

    // Define a list of connections to your Redis instances, and create a lock manager:
    let lock_manager = redlock_lease::fred::manager(args.iter().map(|a| instance(a))).build()?;

    // Check whether a resource is acquired by any other redlock instance:
    assert!(!lock_manager.is_locked("resource_name").await?);

    // Try to acquire the lock:
    let lock = match lock_manager
        .lock("resource_name", Duration::from_secs(10))
        .await
    {
        Ok(lock) => lock,
        Err(e) => {
            println!("Lock not acquired: {e}");
            return Err(e);
        }
    };

    // Now the lock is acquired:
    assert!(lock.is_valid());
    assert!(lock_manager.is_locked("resource_name").await?);
    println!("locked, valid for {:?}", lock.remaining());

    // Extend lifetime of the lock (an error if a majority of instances cannot extend it):
    lock_manager.extend(&lock, Duration::from_secs(10)).await?;
    println!("extended, valid for {:?}", lock.remaining());

    // Release the lock (an error if a majority of instances cannot release it):
    lock_manager.unlock(&lock).await?;

    // The released lock becomes invalid:
    assert!(!lock.is_valid());
    assert!(!lock_manager.is_locked("resource_name").await?);
    println!("released");

    // The `async with` form: hold, extend, release.
    let lock = lock_manager
        .lock("resource_name", Duration::from_secs(10))
        .await?;
    assert!(lock.is_valid());
    lock.extend().await?; // alias for lock_manager.extend(lock)
    lock.release().await?;
    assert!(!lock.is_valid());

    // Clear the connections with Redis:
    lock_manager.close().await?;
    Ok(())
}
