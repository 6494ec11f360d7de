//! Lock, extend, check and unlock, as in aioredlock's README.
//!
//! ```text
//! cargo run --example quickstart                       # three in-memory instances
//! cargo run --example quickstart -- redis://127.0.0.1:7001 redis://127.0.0.1:7002 redis://127.0.0.1:7003
//! ```

use std::sync::Arc;
use std::time::Duration;

use redlock_lease::fred::{TokioClock, TokioSpawner};
use redlock_lease::mock::MemoryBackend;
use redlock_lease::{Clock, Error, LockManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    let manager = if urls.is_empty() {
        println!("using 3 in-memory instances (pass redis:// URLs to use Redis)");
        let clock: Arc<dyn Clock> = Arc::new(TokioClock);
        LockManager::builder(Arc::clone(&clock))
            .spawner(Arc::new(TokioSpawner))
            .instances(MemoryBackend::cluster(3, &clock))
            .build()?
    } else {
        println!("using {} Redis instance(s)", urls.len());
        // Every aioredlock connection form works here: redis://, rediss://, unix sockets,
        // aioredlock's Sentinel URLs (redis://host:26379/4?master=leader), redis-sentinel://.
        redlock_lease::fred::manager(urls).build()?
    };

    assert!(!manager.is_locked("resource_name").await?);

    let lock = match manager.lock("resource_name", Duration::from_secs(10)).await {
        Ok(lock) => lock,
        Err(e) => {
            println!("Lock not acquired: {e}");
            return Err(e.into());
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
