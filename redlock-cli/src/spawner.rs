//! A spawner whose tasks the tool waits for before it exits.
//!
//! The manager spawns the release of a lock whose acquire was abandoned (a `--timeout` that ran
//! out mid-attempt, a signal) or whose handle was dropped. A process that exits right after would
//! kill those tasks and leave keys behind until their TTL: a lock nobody holds, blocking others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use redlock_core::Spawner;
use tokio::task::JoinHandle;

/// Spawns on the current tokio runtime and remembers the tasks.
#[derive(Debug, Clone, Default)]
pub struct TrackedSpawner {
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TrackedSpawner {
    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        // A Vec of handles stays usable whatever panicked while it was locked.
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for every task spawned so far (and those they spawn), for at most `bound`.
    pub async fn drain(&self, bound: Duration) {
        let wait = async {
            loop {
                let batch: Vec<_> = std::mem::take(&mut *self.tasks());
                if batch.is_empty() {
                    return;
                }
                for task in batch {
                    // A task that panicked has nothing left to clean up.
                    drop(task.await);
                }
            }
        };
        drop(tokio::time::timeout(bound, wait).await);
    }
}

impl Spawner for TrackedSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let join = handle.spawn(task);
            let mut tasks = self.tasks();
            tasks.retain(|t| !t.is_finished());
            tasks.push(join);
        }
    }
}
