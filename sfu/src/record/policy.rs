//! When the writer flushes, and when it closes a segment and starts the next. Pure: time is
//! passed in, nothing here reads the clock or does I/O.

use std::time::{Duration, Instant};

/// How long written data may wait before it is flushed, and how big a segment may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Data written is handed to the OS at most this long after it was written, so a crashed
    /// process (`kill -9`) loses at most this much.
    pub flush_interval: Duration,
    /// A segment holds at most this much record time, in microseconds.
    pub segment_duration_us: u64,
    /// A segment file is at most this many bytes (unless its one record is bigger).
    pub segment_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            flush_interval: Duration::from_secs(1),
            segment_duration_us: 10_000_000,
            segment_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The state of the open segment, as far as flushing and rotating go.
#[derive(Debug)]
pub struct SegmentPolicy {
    limits: Limits,
    /// The time of the segment's first record; `None` while it has none.
    first_time_us: Option<u64>,
    /// The segment file's size, header included.
    bytes: u64,
    /// When the oldest data not yet flushed was written.
    unflushed_since: Option<Instant>,
}

impl SegmentPolicy {
    pub fn new(limits: Limits) -> SegmentPolicy {
        SegmentPolicy {
            limits,
            first_time_us: None,
            bytes: 0,
            unflushed_since: None,
        }
    }

    /// A new segment was started with a header of `header_bytes`, written and flushed.
    pub fn started(&mut self, header_bytes: usize) {
        self.first_time_us = None;
        self.bytes = header_bytes as u64;
        self.unflushed_since = None;
    }

    /// Whether the segment must be closed, and the next one started, before a record of
    /// `record_bytes` at `time_us` is appended. A segment with no record yet takes any record.
    pub fn rotate_before(&self, time_us: u64, record_bytes: usize) -> bool {
        self.first_time_us.is_some_and(|first| {
            time_us.saturating_sub(first) >= self.limits.segment_duration_us
                || self.bytes + record_bytes as u64 > self.limits.segment_bytes
        })
    }

    /// A record of `record_bytes` at `time_us` was written at `now`.
    pub fn appended(&mut self, time_us: u64, record_bytes: usize, now: Instant) {
        self.first_time_us.get_or_insert(time_us);
        self.bytes += record_bytes as u64;
        self.unflushed_since.get_or_insert(now);
    }

    /// When the writer must flush next; `None` if everything written is flushed.
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.unflushed_since
            .map(|since| since + self.limits.flush_interval)
    }

    /// Whether the writer must flush at `now`.
    pub fn flush_due(&self, now: Instant) -> bool {
        self.flush_deadline()
            .is_some_and(|deadline| now >= deadline)
    }

    /// Everything written was flushed.
    pub fn flushed(&mut self) {
        self.unflushed_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn rotates_once_the_segment_holds_ten_seconds() {
        let now = Instant::now();
        let mut policy = SegmentPolicy::new(Limits::default());
        policy.started(100);
        assert!(
            !policy.rotate_before(50_000_000, 1200),
            "an empty segment takes any record"
        );
        policy.appended(3_000_000, 1200, now);
        assert!(!policy.rotate_before(12_999_999, 1200));
        assert!(policy.rotate_before(13_000_000, 1200));
        policy.started(100);
        assert!(!policy.rotate_before(13_000_000, 1200));
    }

    #[test]
    fn rotates_before_a_record_that_would_take_the_segment_past_8_mib() {
        let now = Instant::now();
        let mut policy = SegmentPolicy::new(Limits::default());
        policy.started(100);
        policy.appended(0, 8 * MIB - 1300, now);
        assert!(!policy.rotate_before(1, 1200));
        policy.appended(1, 1200, now);
        assert!(!policy.rotate_before(2, 0));
        assert!(policy.rotate_before(2, 1));
    }

    #[test]
    fn a_record_bigger_than_a_segment_gets_a_segment_of_its_own() {
        let now = Instant::now();
        let limits = Limits {
            segment_bytes: 1000,
            ..Limits::default()
        };
        let mut policy = SegmentPolicy::new(limits);
        policy.started(100);
        assert!(!policy.rotate_before(0, 5000));
        policy.appended(0, 5000, now);
        assert!(policy.rotate_before(0, 1));
    }

    #[test]
    fn flushes_one_second_after_the_oldest_unflushed_write() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut policy = SegmentPolicy::new(Limits::default());
        policy.started(100);
        assert_eq!(
            policy.flush_deadline(),
            None,
            "the header is flushed when written"
        );
        policy.appended(0, 100, at(0));
        policy.appended(1, 100, at(700));
        assert_eq!(policy.flush_deadline(), Some(at(1000)));
        assert!(!policy.flush_due(at(999)));
        assert!(policy.flush_due(at(1000)));
        policy.flushed();
        assert!(!policy.flush_due(at(5000)), "nothing to flush");
        policy.appended(2, 100, at(5000));
        assert_eq!(policy.flush_deadline(), Some(at(6000)));
    }
}
