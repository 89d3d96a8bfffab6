//! The agent's limits, pure: how many captures and probe runs at once, how much disk, how many
//! requests per second from one source. The core asks these before it starts anything; the
//! shell feeds in the disk figures it measured. Time is the caller's (`now`), so tests use
//! synthetic time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Each a flag of `tc ovoc serve`, with its default there (README: limits).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Live tcpdumps (starting, running or stopping).
    pub max_captures: usize,
    /// New captures are refused when DIR's filesystem has less free than this.
    pub min_free: u64,
    /// New captures are refused when DIR's capture files and one more capture's largest ring
    /// would pass this (None: no budget).
    pub disk_budget: Option<u64>,
    /// The most one capture may write: ring files x ring size.
    pub capture_bytes: u64,
    /// Requests per second from one source address, and the burst allowed above it.
    pub rate: u32,
    pub burst: u32,
    /// VERIFY probe runs at once, and new runs per second (all sources together).
    pub max_verifies: usize,
    pub verify_rate: u32,
}

impl Limits {
    /// The command line's defaults (cli.rs), for tests.
    #[cfg(test)]
    pub fn defaults() -> Limits {
        Limits {
            max_captures: 1024,
            min_free: 1 << 30,
            disk_budget: None,
            capture_bytes: 30_000_000,
            rate: 1000,
            burst: 2000,
            max_verifies: 32,
            verify_rate: 10,
        }
    }

    /// Why a new capture may not start given what runs and what the disk holds, if so.
    pub fn capture_refusal(&self, live: usize, disk: &Disk) -> Option<String> {
        if live >= self.max_captures {
            return Some(format!(
                "limit: {live} captures running (--max-captures {})",
                self.max_captures
            ));
        }
        if let Some(free) = disk.free.filter(|f| *f < self.min_free) {
            return Some(format!(
                "disk: {} free in DIR, less than --min-free {}",
                bytes(free),
                bytes(self.min_free)
            ));
        }
        // Running captures count at their largest: what they may still write is as good as
        // written (evidence is never deleted to make room).
        let may_write = self.capture_bytes.saturating_mul(live as u64 + 1);
        if let Some(budget) = self
            .disk_budget
            .filter(|b| disk.used.saturating_add(may_write) > *b)
        {
            return Some(format!(
                "disk: DIR's captures use {}, and {live} running plus this one may write {} each, \
                 over --disk-budget {}",
                bytes(disk.used),
                bytes(self.capture_bytes),
                bytes(budget)
            ));
        }
        None
    }
}

/// Human sizes in the refusals: exact bytes are noise in an error line.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// What the shell last measured of DIR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// Bytes free for the agent on DIR's filesystem (None: not measured).
    pub free: Option<u64>,
    /// Bytes in DIR's capture files (tmp_ and OVOC_).
    pub used: u64,
}

/// A token bucket: `rate` per second, at most `burst` saved up. Integer micro-tokens, so that
/// the arithmetic is exact (a token refills in exactly 1/rate s).
#[derive(Debug, Clone)]
pub struct Bucket {
    micro: u128,
    at: Instant,
    /// Over the limit since the last admitted request (for one event per state change).
    limited: bool,
}

const MICRO: u128 = 1_000_000;

impl Bucket {
    pub fn new(now: Instant, burst: u32) -> Bucket {
        Bucket {
            micro: u128::from(burst) * MICRO,
            at: now,
            limited: false,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let dt = now.saturating_duration_since(self.at).as_micros();
        self.micro = (self.micro + dt * u128::from(rate)).min(u128::from(burst) * MICRO);
        self.at = self.at.max(now);
    }

    pub fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        if self.micro >= MICRO {
            self.micro -= MICRO;
            true
        } else {
            false
        }
    }

    fn full(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        self.micro >= u128::from(burst) * MICRO
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the limit; `first` is the first refusal since the source was last admitted.
    No {
        first: bool,
    },
}

/// Sources tracked at most: past this (a spoofing flood over a wide --allow), new sources share
/// one bucket rather than grow the table.
const MAX_SOURCES: usize = 65_536;

/// One bucket per source address (not per port: a controller's ports are all one sender).
#[derive(Debug, Default)]
pub struct Rates {
    sources: HashMap<IpAddr, Bucket>,
    overflow: Option<Bucket>,
}

impl Rates {
    pub fn admit(&mut self, now: Instant, ip: IpAddr, rate: u32, burst: u32) -> Admit {
        let full = self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&ip);
        let b = if full {
            self.overflow.get_or_insert_with(|| Bucket::new(now, burst))
        } else {
            self.sources
                .entry(ip)
                .or_insert_with(|| Bucket::new(now, burst))
        };
        admit_bucket(b, now, rate, burst)
    }

    /// Forget sources whose bucket has refilled: they are as new.
    pub fn prune(&mut self, now: Instant, rate: u32, burst: u32) {
        self.sources.retain(|_, b| !b.full(now, rate, burst));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sources.len()
    }
}

/// Take a token from `b`, saying when it first runs dry.
pub fn admit_bucket(b: &mut Bucket, now: Instant, rate: u32, burst: u32) -> Admit {
    if b.take(now, rate, burst) {
        b.limited = false;
        Admit::Yes
    } else {
        let first = !b.limited;
        b.limited = true;
        Admit::No { first }
    }
}

/// Starts of VERIFY probe runs: a bucket for all sources together.
pub fn verify_bucket(now: Instant, l: &Limits) -> Bucket {
    Bucket::new(now, l.max_verifies as u32)
}

/// How often the shell prunes the rate table.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_refusals() {
        let l = Limits {
            max_captures: 2,
            min_free: 1000,
            disk_budget: Some(10_000),
            capture_bytes: 3000,
            ..Limits::defaults()
        };
        let disk = |free, used| Disk {
            free: Some(free),
            used,
        };
        let t: &[(usize, Disk, Option<&str>)] = &[
            (0, disk(5000, 0), None),
            (1, disk(1000, 3000), None),
            (
                1,
                disk(1000, 4001),
                Some("disk: DIR's captures use 3.9 KiB, and 1 running plus this one may write 2.9 KiB each, over --disk-budget 9.8 KiB"),
            ),
            (2, disk(5000, 0), Some("limit: 2 captures running (--max-captures 2)")),
            (0, disk(999, 0), Some("disk: 999 B free in DIR, less than --min-free 1000 B")),
            (
                0,
                disk(5000, 7001),
                Some("disk: DIR's captures use 6.8 KiB, and 0 running plus this one may write 2.9 KiB each, over --disk-budget 9.8 KiB"),
            ),
            (0, Disk::default(), None),
        ];
        for (live, d, want) in t {
            assert_eq!(
                l.capture_refusal(*live, d).as_deref(),
                *want,
                "{live} {d:?}"
            );
        }
    }

    #[test]
    fn per_source_buckets_with_one_event_per_state_change() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Rates::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        // rate 10/s, burst 3
        let got: Vec<Admit> = (0..5).map(|_| r.admit(t0, a, 10, 3)).collect();
        assert_eq!(
            got,
            [
                Admit::Yes,
                Admit::Yes,
                Admit::Yes,
                Admit::No { first: true },
                Admit::No { first: false }
            ]
        );
        assert_eq!(
            r.admit(t0, b, 10, 3),
            Admit::Yes,
            "another source has its own"
        );
        assert_eq!(r.admit(t0 + ms(99), a, 10, 3), Admit::No { first: false });
        assert_eq!(r.admit(t0 + ms(100), a, 10, 3), Admit::Yes);
        assert_eq!(r.admit(t0 + ms(100), a, 10, 3), Admit::No { first: true });
        r.prune(t0 + ms(200), 10, 3);
        assert_eq!(r.len(), 1, "b has refilled, a has not");
        r.prune(t0 + ms(500), 10, 3);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
