//! Lock, extend, check and unlock, as in aioredlock's README.
//!
//! ```text
//! cargo run --example quickstart                       # three in-memory instances
//! cargo run --example quickstart -- redis://127.0.0.1:7001 redis://127.0.0.1:7002 redis://127.0.0.1:7003
//! ```

use std::sync::Arc;
use std::time::Duration;

use redlock::fred::{TokioClock, TokioSpawner};
use redlock::mock::MemoryBackend;
use redlock::{Clock, Error, LockBackend, LockManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    let clock: Arc<dyn Clock> = Arc::new(TokioClock);
    let instances: Vec<Arc<dyn LockBackend>> = if urls.is_empty() {
        println!("using 3 in-memory instances (pass redis:// URLs to use Redis)");
        MemoryBackend::cluster(3, &clock)
    } else {
        redis_instances(&urls)?
    };
    let manager = LockManager::builder(clock)
        .spawner(Arc::new(TokioSpawner))
        .instances(instances)
        .build()?;

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

    let report = manager.close().await?;
    println!("closed ({} locks released on close)", report.released);
    Ok(())
}

fn redis_instances(
    urls: &[String],
) -> Result<Vec<Arc<dyn LockBackend>>, Box<dyn std::error::Error>> {
    Err(format!("Redis support is not wired into this example yet: {urls:?}").into())
}
