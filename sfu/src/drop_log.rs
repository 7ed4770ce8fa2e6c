//! A summary, in the log, of the datagrams the SFU drops.
//!
//! Anyone can send datagrams to the media port. Logging each dropped one would let a flood
//! of garbage fill the disk (an outside test wrote 4 MB of log from 20,000 packets), while
//! not logging them at all hides a misconfigured client. So the first drop is logged at once
//! and later ones are counted and logged as one line at most every [`INTERVAL`], naming the
//! source that sent the most.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::warn;

/// At most one summary line this often.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Sources tracked between two lines; past this, new sources are only counted in the total.
const MAX_SOURCES: usize = 1024;

/// See the module docs.
#[derive(Debug, Default)]
pub struct DropLog {
    next_line: Option<Instant>,
    total: u64,
    by_source: HashMap<SocketAddr, (u64, &'static str)>,
}

/// What one summary line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub dropped: u64,
    pub sources: usize,
    pub top_source: SocketAddr,
    pub top_count: u64,
    pub reason: &'static str,
}

impl DropLog {
    /// Counts one dropped datagram; logs (and returns) a summary when one is due.
    pub fn count(&mut self, now: Instant, from: SocketAddr, why: &'static str) -> Option<Summary> {
        self.total += 1;
        if self.by_source.len() < MAX_SOURCES || self.by_source.contains_key(&from) {
            let entry = self.by_source.entry(from).or_insert((0, why));
            *entry = (entry.0 + 1, why);
        }
        if self.next_line.is_some_and(|at| now < at) {
            return None;
        }
        self.next_line = Some(now + INTERVAL);
        let (top_source, (top_count, reason)) = self
            .by_source
            .iter()
            .max_by_key(|(_, (n, _))| *n)
            .map(|(a, v)| (*a, *v))
            .unwrap_or((from, (1, why)));
        let summary = Summary {
            dropped: self.total,
            sources: self.by_source.len(),
            top_source,
            top_count,
            reason,
        };
        warn!(
            dropped = summary.dropped,
            sources = summary.sources,
            top_source = %summary.top_source,
            top_count = summary.top_count,
            reason = summary.reason,
            "dropped datagrams on the media port (summarized; see aula_udp_unroutable_datagrams_total)"
        );
        self.total = 0;
        self.by_source.clear();
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_costs_one_line_per_interval() {
        let t0 = Instant::now();
        let mut log = DropLog::default();
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:2000".parse().unwrap();
        let first = log
            .count(t0, a, "from an unknown address")
            .expect("first is logged");
        assert_eq!(first.dropped, 1);
        let mut lines = 0;
        for i in 0..20_000u32 {
            let at = t0 + Duration::from_micros(u64::from(i) * 100); // 2 s of flood
            let from = if i % 4 == 0 { a } else { b };
            lines += usize::from(log.count(at, from, "integrity").is_some());
        }
        assert_eq!(lines, 0);
        let summary = log.count(t0 + INTERVAL, b, "integrity").expect("due");
        assert_eq!(summary.dropped, 20_001);
        assert_eq!((summary.sources, summary.top_source), (2, b));
        assert_eq!(summary.top_count, 15_001);
    }

    #[test]
    fn sources_tracked_are_bounded() {
        let t0 = Instant::now();
        let mut log = DropLog::default();
        log.count(t0, "192.0.2.1:1".parse().unwrap(), "x");
        for port in 0..5_000u16 {
            log.count(t0, SocketAddr::from(([192, 0, 2, 9], port)), "x");
        }
        assert!(log.by_source.len() <= MAX_SOURCES);
        let summary = log.count(t0 + INTERVAL, "192.0.2.1:1".parse().unwrap(), "x");
        assert_eq!(summary.unwrap().dropped, 5_001);
    }
}
