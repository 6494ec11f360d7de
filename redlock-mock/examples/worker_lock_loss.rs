//! How to test your own job under lock loss: "my worker stops writing when its lock is lost".
//!
//! The worker below takes a lock, then writes batches to a shared store, checking the lock's
//! remaining validity before each write and extending it now and then. The test harness is a
//! simulated world (5 instances, 2 clients, virtual time): while the worker runs, it crashes
//! and restarts instances, cuts the worker off from a majority, and pauses its process for
//! longer than the TTL. Afterwards it checks that no write of the worker happened outside a
//! window in which it held the lock, and that the checker saw no two holders.
//!
//! ```text
//! cargo run -p redlock-mock --example worker_lock_loss
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redlock_core::Error;
use redlock_mock::{Latency, TracedClient, World};

const TTL: Duration = Duration::from_millis(500);

/// The job under test: writes `(client, true time)` to `store` while it believes it holds the
/// lock, and stops at the first sign of loss.
async fn worker(world: World, me: TracedClient, store: Arc<Mutex<Vec<(usize, Duration)>>>) {
    let lock = loop {
        match me.lock("report:daily", TTL).await {
            Ok(lock) => break lock,
            Err(e) if e.is_retryable() => world.sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    };
    for batch in 0..40u32 {
        // The check that matters: never write on a lease that may have run out. Leave room
        // for the write itself (here: 10 ms).
        if lock.remaining() < Duration::from_millis(10) {
            println!(
                "c{}: validity ran out before batch {batch}: stopping",
                me.index()
            );
            return;
        }
        store.lock().unwrap().push((me.index(), world.now()));
        world.sleep(Duration::from_millis(10)).await;
        if batch % 10 == 9 {
            match lock.extend().await {
                Ok(()) => {}
                Err(Error::Lost(loss)) => {
                    println!("c{}: lock lost ({}): stopping", me.index(), loss.reason);
                    return;
                }
                // Not lost, just unconfirmed: keep going on the old deadline.
                Err(e) => println!("c{}: extend failed: {e}", me.index()),
            }
        }
    }
    let _ = lock.release().await;
}

fn main() {
    for seed in 0..20 {
        let world = World::builder()
            .seed(seed)
            .instances(5)
            .clients(2)
            .latency(Latency::Uniform {
                min: Duration::ZERO,
                max: Duration::from_millis(2),
            })
            .configure(|b| b.instance_timeout(Duration::from_millis(20)))
            .build()
            .expect("valid world");
        let store = Arc::new(Mutex::new(Vec::new()));

        // The fault script, in true time. Every fault stays within the Redlock assumptions
        // (a crashed instance stays down longer than the TTL), so the lock itself stays safe;
        // what is tested is whether the worker notices.
        let w = world.clone();
        world
            .spawn(async move {
                w.sleep(Duration::from_millis(60)).await;
                w.restart_after(0, TTL * 2);
                w.sleep(Duration::from_millis(40)).await;
                w.partition(0, 1);
                w.partition(0, 2);
                w.sleep(Duration::from_millis(30)).await;
                // A GC pause longer than the TTL, while the worker holds the lock.
                w.pause(0, TTL + TTL / 2);
                w.sleep(TTL).await;
                w.heal_all();
            })
            .detach();

        let jobs: Vec<_> = (0..2)
            .map(|c| {
                let job = worker(world.clone(), world.traced(c), Arc::clone(&store));
                world.spawn_client(c, job)
            })
            .collect();
        world.run(futures::future::join_all(jobs));

        // 1. The lock itself: never two holders, losses reported, nothing left behind.
        let report = world.check();
        assert!(report.is_clean(), "seed {seed}: {:?}", report.violations);
        // 2. The job: every write happened inside one of its writer's windows.
        let writes = store.lock().unwrap().clone();
        for (client, at) in &writes {
            let inside = report
                .windows
                .iter()
                .any(|w| w.client == *client && w.start <= *at && *at < w.end);
            assert!(
                inside,
                "seed {seed}: c{client} wrote at {at:?} without holding the lock"
            );
        }
        println!(
            "seed {seed}: {} writes, all inside their writer's lock window",
            writes.len()
        );
    }
}
