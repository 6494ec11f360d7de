//! The runtime the algorithm needs, injected as traits: a monotonic clock that can sleep,
//! a source of randomness, and (optionally) a way to spawn background work.
//!
//! `redlock-core` depends on no async runtime. The tokio implementations live in
//! `redlock-fred`; the virtual-time ones (deterministic, seedable) live in `redlock-mock`.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// A monotonic clock that can also sleep.
///
/// All lock deadlines are computed on this clock, never on wall-clock time, so a jump of the
/// system clock cannot stretch a lock's validity.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time elapsed since an origin fixed for the life of this clock. It must never go backwards.
    fn now(&self) -> Duration;

    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// Runs a future in the background, detached from the caller.
///
/// Used for work that must outlive a dropped handle or a cancelled call (releasing a lock whose
/// guard was dropped). Without a spawner that work is skipped and the lock expires by its TTL.
pub trait Spawner: Send + Sync + fmt::Debug {
    /// Starts `task`; it runs to completion without anyone awaiting it. One such task lives as
    /// long as the manager (it runs the manager's background releases, and ends once the manager
    /// is dropped and they are done): a spawner that waits for its tasks should drop the
    /// manager first.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// A source of random bytes, for lock tokens and retry jitter.
pub trait RandomSource: Send + Sync + fmt::Debug {
    /// Fills `dest` with random bytes.
    fn fill_bytes(&self, dest: &mut [u8]);

    /// A random `u64`.
    fn next_u64(&self) -> u64 {
        let mut buf = [0u8; 8];
        self.fill_bytes(&mut buf);
        u64::from_le_bytes(buf)
    }
}

/// The default randomness: the operating system's CSPRNG (through `rand`'s thread-local,
/// OS-seeded ChaCha generator), so tokens cannot be guessed by another client.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill_bytes(&self, dest: &mut [u8]) {
        rand::rng().fill_bytes(dest);
    }

    fn next_u64(&self) -> u64 {
        rand::rng().next_u64()
    }
}

/// Deterministic randomness from a `u64` seed, for simulations: the same seed gives the same
/// tokens and the same retry delays. Not for production: tokens become predictable.
#[derive(Debug)]
pub struct SeededRandom {
    rng: Mutex<StdRng>,
}

impl SeededRandom {
    /// A generator whose whole output is derived from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl RandomSource for SeededRandom {
    fn fill_bytes(&self, dest: &mut [u8]) {
        // A poisoned lock only means another thread panicked mid-draw; the generator state is
        // still a valid generator state.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        rng.fill_bytes(dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_random_is_reproducible() {
        let a = SeededRandom::new(7);
        let b = SeededRandom::new(7);
        let c = SeededRandom::new(8);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn os_random_differs_between_draws() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        OsRandom.fill_bytes(&mut a);
        OsRandom.fill_bytes(&mut b);
        assert_ne!(a, b);
    }
}
