//! Lock, extend, check and unlock, as in aioredlock's README.
//!
//! ```text
//! cargo run --example quickstart                       # three in-memory instances
//! cargo run --example quickstart -- redis://127.0.0.1:7001 redis://127.0.0.1:7002 redis://127.0.0.1:7003
//! cargo run --example quickstart --no-default-features # in-memory only: no Redis client, no TLS
//! ```
//!
//! The in-memory instances run on `redlock-mock`'s virtual time: the run is instant and prints
//! the same figures every time. In your own project they come from the `mock` feature
//! (`redlock_lease::mock`) or from `redlock-mock` as a dev-dependency.

use std::sync::Arc;
use std::time::Duration;

use redlock_lease::{Error, LockManager};
use redlock_mock::{MemoryBackend, Simulation};

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        println!("using 3 in-memory instances (pass redis:// URLs to use Redis)");
        let sim = Simulation::new();
        let clock = sim.clock_arc();
        let manager = LockManager::builder(Arc::clone(&clock))
            .spawner(sim.spawner())
            .instances(MemoryBackend::cluster(3, &clock))
            .build()?;
        Ok(sim.try_run(demo(manager))??)
    } else {
        redis(urls)
    }
}

#[cfg(feature = "fred")]
fn redis(urls: Vec<String>) -> Result<(), Failure> {
    println!("using {} Redis instance(s)", urls.len());
    // The Redis backend runs on tokio; its calls need a runtime with timers (`enable_all`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Every aioredlock connection form works here: redis://, rediss://, unix sockets,
        // aioredlock's Sentinel URLs (redis://host:26379/4?master=leader), redis-sentinel://.
        let manager = redlock_lease::fred::manager(urls).build()?;
        Ok(demo(manager).await?)
    })
}

#[cfg(not(feature = "fred"))]
fn redis(_urls: Vec<String>) -> Result<(), Failure> {
    Err("built without the `fred` feature (on by default): no Redis backend".into())
}

async fn demo(manager: LockManager) -> Result<(), Error> {
    assert!(!manager.is_locked("resource_name").await?);

    let lock = match manager.lock("resource_name", Duration::from_secs(10)).await {
        Ok(lock) => lock,
        Err(e) => {
            println!("Lock not acquired: {e}");
            return Err(e);
        }
    };
    println!(
        "locked {:?} with token {}: validity {:?}",
        String::from_utf8_lossy(lock.resource()),
        String::from_utf8_lossy(lock.token()),
        lock.validity()
    );
    assert!(lock.is_valid());
    assert!(manager.is_locked("resource_name").await?);

    manager.extend(&lock, Duration::from_secs(10)).await?;
    println!("extended: validity {:?}", lock.validity());

    manager.unlock(&lock).await?;
    assert!(!lock.is_valid());
    assert!(!manager.is_locked("resource_name").await?);
    println!("unlocked; is_locked = false");

    // A second release reports that the handle is already released.
    assert!(matches!(lock.release().await, Err(Error::Released)));

    // The scoped form (aioredlock's `async with`): renewed while the work runs, released after.
    let rows = manager
        .with_lock("resource_name", |lock| async move {
            println!("in the scoped form: {:?} left", lock.remaining());
            42
        })
        .await?;
    println!(
        "scoped work returned {rows}; is_locked = {}",
        manager.is_locked("resource_name").await?
    );

    let report = manager.close().await?;
    println!("closed ({} locks released on close)", report.released);
    Ok(())
}
