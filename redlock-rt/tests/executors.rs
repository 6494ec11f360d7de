//! The core behaviour on real executors and real time, with the in-memory backend: lock,
//! is_locked, extend, release, the scoped form (with a loss), `lock_auto` and the release of a
//! dropped lock, on tokio (both flavours), on smol's executor, and on
//! `futures::executor::block_on` without a spawner (where `lock_auto` is refused and a dropped
//! lock is left to its TTL).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redlock_core::{Clock, Error, LockBackend, LockManager, LossReason, Spawner};
use redlock_mock::MemoryBackend;
use redlock_rt::smol::{SmolClock, SmolSpawner};
use redlock_rt::tokio::{TokioClock, TokioSpawner};

const TTL: Duration = Duration::from_secs(10);
/// The lease of `lock_auto`: renewed 60 % in, so a renewal comes within the test, with 400 ms
/// to spare before the deadline on a busy machine.
const LEASE: Duration = Duration::from_millis(1_000);
/// How long a condition that must come soon may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// How often a condition is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(5);

struct Env {
    clock: Arc<dyn Clock>,
    memories: Vec<MemoryBackend>,
    manager: LockManager,
    spawns: bool,
}

fn env(clock: Arc<dyn Clock>, spawner: Option<Arc<dyn Spawner>>) -> Env {
    let memories: Vec<MemoryBackend> = (0..3)
        .map(|i| MemoryBackend::new(format!("mem-{i}"), Arc::clone(&clock)))
        .collect();
    let mut builder = LockManager::builder(Arc::clone(&clock))
        .instances(
            memories
                .iter()
                .map(|m| Arc::new(m.clone()) as Arc<dyn LockBackend>),
        )
        .internal_lock_timeout(LEASE);
    let spawns = spawner.is_some();
    if let Some(spawner) = spawner {
        builder = builder.spawner(spawner);
    }
    Env {
        manager: builder.build().expect("valid"),
        clock,
        memories,
        spawns,
    }
}

impl Env {
    /// How many instances hold `token` under `key`.
    fn holding(&self, key: &[u8], token: &[u8]) -> usize {
        self.memories
            .iter()
            .filter(|m| m.get(key).as_deref() == Some(token))
            .count()
    }

    /// Waits on the manager's clock until `done()`; fails the test after [`PATIENCE`].
    async fn until(&self, what: &str, done: impl Fn() -> bool) {
        let start = self.clock.now();
        while !done() {
            assert!(
                self.clock.now() - start < PATIENCE,
                "still waiting for {what}"
            );
            self.clock.sleep(LOOK_EVERY).await;
        }
    }
}

/// Sets its flag when dropped: tells whether the scoped form dropped the work.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn core_cases(env: Env) {
    let m = &env.manager;

    // lock, is_locked, extend, release.
    assert!(!m.is_locked("a").await.expect("answered"));
    let lock = m.lock("a", TTL).await.expect("free");
    assert!(lock.is_valid());
    assert!(m.is_locked("a").await.expect("answered"));
    assert_eq!(env.holding(b"a", lock.token()), 3);
    lock.extend_for(TTL * 2).await.expect("extended");
    assert!(
        lock.remaining() > TTL,
        "only an extend gives more than the first lease"
    );
    let token = lock.token().to_vec();
    lock.release().await.expect("released");
    assert_eq!(env.holding(b"a", &token), 0);
    assert!(!m.is_locked("a").await.expect("answered"));

    // The scoped form: the work's output, and the lock released after it.
    let out = m
        .with_lock("b", |watch| async move { watch.is_valid() })
        .await;
    assert!(matches!(out, Ok(true)), "{out:?}");
    assert!(env.memories.iter().all(|mem| mem.get(b"b").is_none()));

    // The scoped form with a loss: a rival takes the keys, a check finds it, the work is dropped.
    let dropped = Arc::new(AtomicBool::new(false));
    let (memories, flag) = (env.memories.clone(), Arc::clone(&dropped));
    let lost = m
        .with_lock("c", |watch| async move {
            let _guard = Dropped(flag);
            for mem in &memories {
                mem.put(b"c", b"rival");
            }
            let checked = watch.check().await;
            assert!(matches!(checked, Err(Error::Lost(_))), "{checked:?}");
            futures::future::pending::<()>().await;
        })
        .await;
    match lost {
        Err(Error::Lost(loss)) => assert_eq!(loss.reason, LossReason::NotHeld),
        other => panic!("{other:?}"),
    }
    assert!(dropped.load(Ordering::SeqCst), "the work was stopped");
    assert!(env
        .memories
        .iter()
        .all(|mem| mem.get(b"c").as_deref() == Some(b"rival")));

    if env.spawns {
        // Still valid once its first lease has run out: renewed in the background. Then
        // released when dropped.
        let lock = m.lock_auto("d").await.expect("free");
        let first_deadline = env.clock.now() + lock.remaining();
        env.until("the end of the first lease", || {
            env.clock.now() > first_deadline
        })
        .await;
        assert!(lock.is_valid(), "renewed before its first deadline");
        let token = lock.token().to_vec();
        assert_eq!(env.holding(b"d", &token), 3);
        drop(lock);
        env.until("the release of the dropped lock", || {
            env.holding(b"d", &token) == 0
        })
        .await;
    } else {
        let refused = m.lock_auto("d").await;
        assert!(
            matches!(refused, Err(Error::InvalidInput(_))),
            "{refused:?}"
        );
        // Nothing can release a dropped lock in the background: its keys wait for the TTL.
        let lock = m.lock("d", TTL).await.expect("free");
        let token = lock.token().to_vec();
        drop(lock);
        assert_eq!(env.holding(b"d", &token), 3);
    }
}

#[test]
fn on_tokio_current_thread() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(core_cases(env(
        Arc::new(TokioClock),
        Some(Arc::new(TokioSpawner)),
    )));
}

#[test]
fn on_tokio_multi_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(core_cases(env(
        Arc::new(TokioClock),
        Some(Arc::new(TokioSpawner)),
    )));
}

#[test]
fn on_smol() {
    let executor = Arc::new(async_executor::Executor::new());
    let spawner = SmolSpawner::new(Arc::clone(&executor));
    let env = env(Arc::new(SmolClock::new()), Some(Arc::new(spawner)));
    async_io::block_on(executor.run(core_cases(env)));
}

#[test]
fn on_futures_block_on_without_a_spawner() {
    futures::executor::block_on(core_cases(env(Arc::new(SmolClock::new()), None)));
}

/// Runs tasks on another spawner and records whether any of them panicked (smol's executor
/// would swallow the panic).
#[derive(Debug)]
struct PanicWatch {
    inner: SmolSpawner,
    panicked: Arc<AtomicBool>,
}

impl Spawner for PanicWatch {
    fn spawn(&self, task: futures::future::BoxFuture<'static, ()>) {
        use futures::FutureExt;
        let panicked = Arc::clone(&self.panicked);
        self.inner.spawn(
            std::panic::AssertUnwindSafe(task)
                .catch_unwind()
                .map(move |r| {
                    if r.is_err() {
                        panicked.store(true, Ordering::SeqCst);
                    }
                })
                .boxed(),
        );
    }
}

#[test]
fn a_release_that_ran_out_of_time_leaves_its_stragglers_to_a_fresh_timer() {
    // Two of three instances hang: the release round runs out of time with their deletes still
    // pending, and hands them to a background task bounded by a timer. The round's own timer
    // has fired by then; a background task that polled it again would panic on smol's clock
    // (its finished sleep may not be polled again).
    let executor = Arc::new(async_executor::Executor::new());
    let panicked = Arc::new(AtomicBool::new(false));
    let spawner = PanicWatch {
        inner: SmolSpawner::new(Arc::clone(&executor)),
        panicked: Arc::clone(&panicked),
    };
    let clock: Arc<dyn Clock> = Arc::new(SmolClock::new());
    let faulty: Vec<redlock_mock::FaultyBackend<MemoryBackend>> = (0..3)
        .map(|i| {
            redlock_mock::FaultyBackend::new(
                MemoryBackend::new(format!("mem-{i}"), Arc::clone(&clock)),
                Arc::clone(&clock),
            )
        })
        .collect();
    let manager = LockManager::builder(Arc::clone(&clock))
        .instances(
            faulty
                .iter()
                .map(|f| Arc::new(f.clone()) as Arc<dyn LockBackend>),
        )
        .instance_timeout(Duration::from_millis(20))
        .spawner(Arc::new(spawner))
        .build()
        .expect("valid");
    async_io::block_on(executor.run(async {
        let lock = manager.lock("hung", TTL).await.expect("lock");
        faulty[1].faults().set_hang(true);
        faulty[2].faults().set_hang(true);
        let error = lock.release().await.expect_err("two of three hang");
        assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
        // The background deletes end by their timer, so close waits for them and returns.
        manager.close().await.expect("closes");
    }));
    assert!(
        !panicked.load(Ordering::SeqCst),
        "a background task panicked"
    );
}
