//! Sequence number and timestamp rewriting, so that a subscriber sees one continuous RTP stream
//! even though the SFU switches between simulcast layers (different SSRCs, unrelated sequence
//! and timestamp spaces) underneath it.
//!
//! Everything is kept as 64-bit "extended" values (`ext_*`, as LiveKit names them) so wrap-around
//! of the 16-bit sequence and 32-bit timestamp never needs special cases in the arithmetic.

use std::time::{Duration, Instant};

/// Unwraps a 16-bit sequence number into a 64-bit one, relative to the highest seen so far.
/// Starts at 2^32 so that the first packets can still be "older" without going below zero.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqUnwrapper {
    highest: Option<u64>,
}

impl SeqUnwrapper {
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            let ext = (1 << 32) + u64::from(seq);
            self.highest = Some(ext);
            return ext;
        };
        let delta = seq.wrapping_sub(highest as u16) as i16;
        let ext = highest.saturating_add_signed(i64::from(delta));
        self.highest = Some(highest.max(ext));
        ext
    }
}

/// Same for 32-bit RTP timestamps.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimestampUnwrapper {
    highest: Option<u64>,
}

impl TimestampUnwrapper {
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        let Some(highest) = self.highest else {
            let ext = (1 << 40) + u64::from(ts);
            self.highest = Some(ext);
            return ext;
        };
        let delta = ts.wrapping_sub(highest as u32) as i32;
        let ext = highest.saturating_add_signed(i64::from(delta));
        self.highest = Some(highest.max(ext));
        ext
    }
}

/// Maps one input stream at a time onto the continuous output stream.
#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    input_seq: SeqUnwrapper,
    input_ts: TimestampUnwrapper,
    /// First input sequence number of the current input segment: anything older belongs to a
    /// stream we no longer forward and must not be sent (it would go backwards).
    segment_start: u64,
    /// `out = in - offset` for the current segment (wrapping arithmetic in u64 space).
    seq_offset: u64,
    ts_offset: u64,
    last_out: Option<LastOut>,
}

#[derive(Debug, Clone, Copy)]
struct LastOut {
    ext_seq: u64,
    ext_ts: u64,
    at: Instant,
}

/// The rewritten header fields of one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub seq: u16,
    pub timestamp: u32,
}

impl Rewriter {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            input_seq: SeqUnwrapper::default(),
            input_ts: TimestampUnwrapper::default(),
            segment_start: 0,
            seq_offset: 0,
            ts_offset: 0,
            last_out: None,
        }
    }

    /// Starts a new input segment (first packet, or a switch to another layer) at this packet:
    /// its output sequence number follows the last one sent, and its output timestamp advances
    /// by the wall-clock time since the last packet sent (at least one tick), so the receiver's
    /// jitter buffer sees neither a gap nor a jump.
    pub fn start_segment(&mut self, seq: u16, timestamp: u32, now: Instant) -> Rewritten {
        self.input_seq = SeqUnwrapper::default();
        self.input_ts = TimestampUnwrapper::default();
        let ext_seq = self.input_seq.unwrap(seq);
        let ext_ts = self.input_ts.unwrap(timestamp);
        self.segment_start = ext_seq;
        let (out_seq, out_ts) = match self.last_out {
            None => (ext_seq, ext_ts),
            Some(last) => {
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = ticks(elapsed, self.clock_rate).max(1);
                (last.ext_seq + 1, last.ext_ts + ticks)
            }
        };
        self.seq_offset = ext_seq.wrapping_sub(out_seq);
        self.ts_offset = ext_ts.wrapping_sub(out_ts);
        self.record(out_seq, out_ts, now)
    }

    /// Rewrites a packet of the current segment. `None` if it predates the segment.
    pub fn rewrite(&mut self, seq: u16, timestamp: u32, now: Instant) -> Option<Rewritten> {
        let ext_seq = self.input_seq.unwrap(seq);
        let ext_ts = self.input_ts.unwrap(timestamp);
        if ext_seq < self.segment_start {
            return None;
        }
        let out_seq = ext_seq.wrapping_sub(self.seq_offset);
        let out_ts = ext_ts.wrapping_sub(self.ts_offset);
        Some(self.record(out_seq, out_ts, now))
    }

    fn record(&mut self, out_seq: u64, out_ts: u64, now: Instant) -> Rewritten {
        let newer = self.last_out.is_none_or(|last| out_seq > last.ext_seq);
        if newer {
            self.last_out = Some(LastOut {
                ext_seq: out_seq,
                ext_ts: out_ts,
                at: now,
            });
        }
        Rewritten {
            seq: out_seq as u16,
            timestamp: out_ts as u32,
        }
    }
}

fn ticks(elapsed: Duration, clock_rate: u32) -> u64 {
    (elapsed.as_micros() * u128::from(clock_rate) / 1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrap_handles_wraparound_and_reordering() {
        let mut u = SeqUnwrapper::default();
        let a = u.unwrap(65534);
        assert_eq!(u.unwrap(65535), a + 1);
        assert_eq!(u.unwrap(0), a + 2);
        assert_eq!(u.unwrap(65535), a + 1, "late packet from before the wrap");
        assert_eq!(u.unwrap(1), a + 3);
        let mut t = TimestampUnwrapper::default();
        let b = t.unwrap(u32::MAX - 10);
        assert_eq!(t.unwrap(5), b + 16);
    }

    #[test]
    fn continuous_across_segments() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        let first = r.start_segment(1000, 5000, t0);
        assert_eq!(
            r.rewrite(1001, 8000, t0).unwrap().seq,
            first.seq.wrapping_add(1)
        );
        // Switch to another layer with unrelated numbering 33 ms later.
        let t1 = t0 + Duration::from_millis(33);
        let switched = r.start_segment(40000, 123_456_789, t1);
        assert_eq!(switched.seq, first.seq.wrapping_add(2), "no sequence gap");
        assert_eq!(
            switched.timestamp,
            first.timestamp.wrapping_add(3000 + 2970),
            "timestamp advances by the wall clock since the last packet"
        );
        let next = r.rewrite(40001, 123_456_789 + 3000, t1).unwrap();
        assert_eq!(next.seq, first.seq.wrapping_add(3));
        assert_eq!(next.timestamp, switched.timestamp.wrapping_add(3000));
        // A late packet of the new layer from before the switch is not sent.
        assert_eq!(r.rewrite(39999, 123_456_000, t1), None);
    }

    #[test]
    fn reordered_packets_keep_their_relative_numbers() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000);
        let a = r.start_segment(65535, 0, t0);
        let c = r.rewrite(1, 1920, t0).unwrap();
        let b = r.rewrite(0, 960, t0).unwrap();
        assert_eq!(b.seq, a.seq.wrapping_add(1));
        assert_eq!(c.seq, a.seq.wrapping_add(2));
        // The next segment continues after the highest, not the last, packet sent.
        let d = r.start_segment(7, 7, t0);
        assert_eq!(d.seq, a.seq.wrapping_add(3));
    }

    #[test]
    fn same_instant_switch_still_advances_timestamp() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        let a = r.start_segment(1, 100, t0);
        let b = r.start_segment(500, 9, t0);
        assert_eq!(b.timestamp, a.timestamp.wrapping_add(1));
    }
}
