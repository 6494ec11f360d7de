//! Managers, handles and errors cross threads, and every future the API returns is `Send`, so
//! they work on multi-threaded executors. These are compile-time checks: the file does not
//! build if one of them regresses.

use std::time::Duration;

use redlock_lease::{Error, Failure, Lock, LockManager, LockManagerBuilder, SeededRandom};
use redlock_mock::{FaultyBackend, MemoryBackend, Simulation, VirtualClock};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>(_: &T) {}

#[test]
fn handles_are_send_and_sync() {
    send_sync::<LockManager>();
    send_sync::<Lock>();
    send_sync::<Error>();
    send_sync::<Failure>();
    send_sync::<SeededRandom>();
    send_sync::<MemoryBackend>();
    send_sync::<FaultyBackend<MemoryBackend>>();
    send_sync::<VirtualClock>();
    send_sync::<Simulation>();
    fn builder_is_send<T: Send>() {}
    builder_is_send::<LockManagerBuilder>();
}

#[allow(dead_code)]
fn futures_are_send(manager: &LockManager, lock: &Lock) {
    let ttl = Duration::from_secs(1);
    send(&manager.lock("r", ttl));
    send(&manager.lock(vec![0u8, 1], ttl));
    send(&manager.extend(lock, ttl));
    send(&manager.unlock(lock));
    send(&manager.is_locked("r"));
    send(&manager.get_lock("r", "t"));
    send(&manager.close());
    send(&lock.extend());
    send(&lock.extend_for(ttl));
    send(&lock.release());
    send(&lock.check());
}

#[test]
fn a_lock_can_move_to_another_thread() {
    // The type checks above say so; this shows it working with a real thread.
    let sim = Simulation::new();
    let clock = sim.clock_arc();
    let manager = LockManager::builder(std::sync::Arc::clone(&clock))
        .instances(MemoryBackend::cluster(3, &clock))
        .build()
        .expect("config");
    let lock = sim
        .run(manager.lock("r", Duration::from_secs(1)))
        .expect("lock");
    let token = std::thread::spawn(move || lock.token().to_vec())
        .join()
        .expect("thread");
    let (random, suffix) = token.split_at(32);
    assert!(
        random.iter().all(u8::is_ascii_hexdigit),
        "128 random bits, hex-encoded, first"
    );
    assert!(
        suffix.starts_with(b"-"),
        "then the manager's and the lock's numbers"
    );
}
