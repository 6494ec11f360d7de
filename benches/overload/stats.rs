//! What the bench measures outside the tasks: constant-memory latency histograms, the client's
//! resident memory, and the servers' command counts, keys and channels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redlock_testkit::{Conn, Reply};

/// Sub-buckets per doubling: bucket bounds are within 9 % of each other.
const STEPS: f64 = 8.0;
const BUCKETS: usize = 8 * 40;

/// A latency histogram in logarithmic buckets of microseconds, shared by every task of a row:
/// constant memory however many acquisitions are recorded (a sample per acquisition would be
/// tens of MiB over a long row and show up in the very RSS figure the bench reports).
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let i = ((us as f64).log2() * STEPS) as usize;
        self.buckets[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The upper bound of the bucket holding quantile `p`.
    pub fn quantile(&self, p: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                let upper = 2f64.powf((i + 1) as f64 / STEPS);
                return Duration::from_micros(upper as u64).min(self.max());
            }
        }
        self.max()
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }
}

/// `VmRSS` and `VmHWM` (the peak since the last reset) of this process, in KiB.
pub fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS (Linux: writing 5 to `clear_refs`), so that the peak read
/// at the end of a row is that row's own.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One admin connection per server, for figures the servers alone know.
pub struct Servers {
    conns: Vec<Conn>,
}

/// Commands counted by `INFO commandstats` that the bench itself sends to measure.
const OWN: [&str; 4] = ["info", "dbsize", "pubsub", "client"];

impl Servers {
    pub fn connect(ports: &[u16]) -> Self {
        Self {
            conns: ports
                .iter()
                .map(|&p| Conn::connect(p, None).expect("admin connection"))
                .collect(),
        }
    }

    /// Commands executed so far over all servers (the bench's own measuring ones left out).
    pub fn commands(&mut self) -> u64 {
        let mut total = 0;
        for c in &mut self.conns {
            let info = c.cmd(&["INFO", "commandstats"]).expect("INFO commandstats");
            let text = info.as_text().unwrap_or_default();
            for line in text.lines() {
                let Some((name, rest)) = line
                    .strip_prefix("cmdstat_")
                    .and_then(|l| l.split_once(':'))
                else {
                    continue;
                };
                if OWN
                    .iter()
                    .any(|o| name == *o || name.starts_with(&format!("{o}|")))
                {
                    continue;
                }
                total += rest
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        total
    }

    /// Keys over all servers (`DBSIZE`).
    pub fn keys(&mut self) -> u64 {
        self.conns
            .iter_mut()
            .map(|c| match c.cmd(&["DBSIZE"]) {
                Ok(Reply::Int(n)) => u64::try_from(n).unwrap_or(0),
                other => panic!("DBSIZE: {other:?}"),
            })
            .sum()
    }

    /// Release-announcement channels subscribed over all servers (`PUBSUB CHANNELS`).
    pub fn channels(&mut self) -> u64 {
        self.conns
            .iter_mut()
            .map(
                |c| match c.cmd(&["PUBSUB", "CHANNELS", "redlock:released:*"]) {
                    Ok(r) => r.items().len() as u64,
                    Err(e) => panic!("PUBSUB CHANNELS: {e}"),
                },
            )
            .sum()
    }

    /// What is left once the client's work settled: keys at the stop, whether they all went
    /// within `within` (shorter than the lease, so by release, not by expiry), keys that showed
    /// up after that (requests written after their callers left), and channels left once the
    /// unsubscriptions had `channels_within` to go.
    pub fn leftovers(&mut self, within: Duration, channels_within: Duration) -> Leftovers {
        let start = Instant::now();
        let at_stop = self.keys();
        let mut cleared_after = None;
        while start.elapsed() < within {
            if self.keys() == 0 {
                cleared_after = Some(start.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let keys_left = self.keys();
        // A late request would land within one more instance timeout or so: look for a while.
        let mut ghosts = 0;
        let look_until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < look_until {
            ghosts = ghosts.max(self.keys());
            std::thread::sleep(Duration::from_millis(10));
        }
        let channels_until = start + channels_within;
        let mut channels = self.channels();
        while channels > 0 && Instant::now() < channels_until {
            std::thread::sleep(Duration::from_millis(20));
            channels = self.channels();
        }
        Leftovers {
            at_stop,
            cleared_after,
            keys_left,
            ghosts: if cleared_after.is_some() { ghosts } else { 0 },
            channels,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Leftovers {
    pub at_stop: u64,
    pub cleared_after: Option<Duration>,
    /// Keys still there when `within` ran out.
    pub keys_left: u64,
    /// Keys that appeared after every key had gone.
    pub ghosts: u64,
    pub channels: u64,
}

impl Leftovers {
    pub fn clean(&self) -> bool {
        self.keys_left == 0 && self.ghosts == 0 && self.channels == 0
    }
}
