//! Sequence number, timestamp and VP8 picture number rewriting, so that a subscriber sees one
//! continuous RTP stream even though the SFU switches between simulcast layers (different
//! SSRCs, unrelated sequence, timestamp and picture number spaces) underneath it.
//!
//! Everything is kept as 64-bit "extended" values (`ext_*`, as LiveKit names them) so wrap-around
//! of the 16-bit sequence and 32-bit timestamp never needs special cases in the arithmetic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::codec::Vp8Numbers;

/// Unwraps a `BITS`-bit counter (sequence number, timestamp, picture ID) into a 64-bit one,
/// relative to the highest seen so far. Starts at 2^48 so that the first values can still be
/// "older" without going below zero.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unwrapper<const BITS: u32> {
    highest: Option<u64>,
}

pub type SeqUnwrapper = Unwrapper<16>;
pub type TimestampUnwrapper = Unwrapper<32>;

impl<const BITS: u32> Unwrapper<BITS> {
    const MODULUS: u64 = 1 << BITS;

    pub fn unwrap(&mut self, value: u64) -> u64 {
        let value = value & (Self::MODULUS - 1);
        let Some(highest) = self.highest else {
            let ext = (1 << 48) + value;
            self.highest = Some(ext);
            return ext;
        };
        let ahead = value.wrapping_sub(highest) & (Self::MODULUS - 1);
        let ext = if ahead < Self::MODULUS / 2 {
            highest + ahead
        } else {
            highest.saturating_sub(Self::MODULUS - ahead)
        };
        self.highest = Some(highest.max(ext));
        ext
    }
}

/// `out = in - offset`, where the offset grows by one from each input dropped (a frame of a
/// temporal layer the subscriber does not get): the output stays free of gaps a receiver would
/// take for losses. Each growth applies from the input after the one dropped on, so an input
/// that arrives late keeps the offset of its place, and its frame keeps its numbers.
#[derive(Debug, Clone, Default)]
struct Offsets {
    /// `(from, offset)`, oldest first; the first applies to everything before the others.
    changes: VecDeque<(u64, u64)>,
}

/// Offset changes remembered for late inputs: a second of 30 fps frames dropped.
const KEPT_OFFSETS: usize = 32;

impl Offsets {
    fn start(offset: u64) -> Self {
        Self {
            changes: VecDeque::from([(0, offset)]),
        }
    }

    fn at(&self, input: u64) -> u64 {
        self.changes
            .iter()
            .rev()
            .find(|(from, _)| *from <= input)
            .or(self.changes.front())
            .map_or(0, |(_, offset)| *offset)
    }

    /// `input` is not sent: the ones after it move down by one.
    fn drop_one(&mut self, input: u64) {
        self.shift_after(input, 1);
    }

    /// A packet of the SFU's own goes out after `input`: the ones after it move up by one.
    fn insert_after(&mut self, input: u64) {
        self.shift_after(input, 1u64.wrapping_neg());
    }

    fn shift_after(&mut self, input: u64, by: u64) {
        let offset = self.changes.back().map_or(0, |(_, o)| *o);
        self.changes.push_back((input + 1, offset.wrapping_add(by)));
        if self.changes.len() > KEPT_OFFSETS {
            self.changes.pop_front();
        }
    }
}

/// A counter carried in the payload (VP8's picture ID and TL0PICIDX) made continuous the same
/// way: each input segment is shifted to follow the highest value sent before it, and the
/// values of frames dropped within it are taken out.
#[derive(Debug, Clone, Default)]
struct Renumber<const BITS: u32> {
    input: Unwrapper<BITS>,
    /// `None` until the segment's first value.
    offsets: Option<Offsets>,
    highest_out: Option<u64>,
}

impl<const BITS: u32> Renumber<BITS> {
    /// Forgets the input's numbering: its next value follows the highest one sent.
    fn start_segment(&mut self) {
        self.input = Unwrapper::default();
        self.offsets = None;
    }

    fn map(&mut self, value: u16) -> u16 {
        let ext = self.input.unwrap(u64::from(value));
        let offsets = self.offsets.get_or_insert_with(|| {
            let out = self.highest_out.map_or(ext, |highest| highest + 1);
            Offsets::start(ext.wrapping_sub(out))
        });
        let out = ext.wrapping_sub(offsets.at(ext));
        self.highest_out = Some(self.highest_out.map_or(out, |h| h.max(out)));
        (out & (Unwrapper::<BITS>::MODULUS - 1)) as u16
    }

    /// A value of a dropped frame (any of its packets): counted once, and only when newer
    /// than every value seen, so a gap the publisher left stays a gap.
    fn skip(&mut self, value: u16) {
        let before = self.input.highest;
        let ext = self.input.unwrap(u64::from(value));
        if let Some(offsets) = &mut self.offsets
            && before.is_some_and(|highest| ext > highest)
        {
            offsets.drop_one(ext);
        }
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
    /// Highest input sequence number of the segment, forwarded or dropped.
    highest_in: u64,
    /// `out = in - offset` for the current segment (wrapping arithmetic in u64 space).
    seq_offsets: Offsets,
    ts_offset: u64,
    last_out: Option<LastOut>,
    picture_id: Renumber<15>,
    tl0_pic_idx: Renumber<8>,
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
    /// VP8 picture numbers to write into the payload, for packets that carry them.
    pub vp8: Option<Vp8Numbers>,
}

impl Rewriter {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            input_seq: SeqUnwrapper::default(),
            input_ts: TimestampUnwrapper::default(),
            segment_start: 0,
            highest_in: 0,
            seq_offsets: Offsets::default(),
            ts_offset: 0,
            last_out: None,
            picture_id: Renumber::default(),
            tl0_pic_idx: Renumber::default(),
        }
    }

    /// Starts a new input segment (first packet, or a switch to another layer) at this packet:
    /// its output sequence number follows the last one sent, and its output timestamp advances
    /// by the wall-clock time since the last packet sent (at least one tick), so the receiver's
    /// jitter buffer sees neither a gap nor a jump.
    pub fn start_segment(&mut self, seq: u16, timestamp: u32, now: Instant) -> Rewritten {
        self.input_seq = SeqUnwrapper::default();
        self.input_ts = TimestampUnwrapper::default();
        self.picture_id.start_segment();
        self.tl0_pic_idx.start_segment();
        let ext_seq = self.input_seq.unwrap(u64::from(seq));
        let ext_ts = self.input_ts.unwrap(u64::from(timestamp));
        self.segment_start = ext_seq;
        self.highest_in = ext_seq;
        let (out_seq, out_ts) = match self.last_out {
            None => (ext_seq, ext_ts),
            Some(last) => {
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = ticks(elapsed, self.clock_rate).max(1);
                (last.ext_seq + 1, last.ext_ts + ticks)
            }
        };
        self.seq_offsets = Offsets::start(ext_seq.wrapping_sub(out_seq));
        self.ts_offset = ext_ts.wrapping_sub(out_ts);
        self.record(out_seq, out_ts, now)
    }

    /// Rewrites a packet of the current segment. `None` if it predates the segment.
    pub fn rewrite(&mut self, seq: u16, timestamp: u32, now: Instant) -> Option<Rewritten> {
        let ext_seq = self.input_seq.unwrap(u64::from(seq));
        let ext_ts = self.input_ts.unwrap(u64::from(timestamp));
        if ext_seq < self.segment_start {
            return None;
        }
        self.highest_in = self.highest_in.max(ext_seq);
        let out_seq = ext_seq.wrapping_sub(self.seq_offsets.at(ext_seq));
        let out_ts = ext_ts.wrapping_sub(self.ts_offset);
        Some(self.record(out_seq, out_ts, now))
    }

    /// A packet of the current segment that is not forwarded (its frame's temporal layer is
    /// not wanted): the packets after it close up, so the receiver sees no loss. A dropped
    /// packet that arrives after later ones leaves a gap between two frames, which costs a
    /// NACK that cannot be served but no picture.
    pub fn skip(&mut self, seq: u16, picture_id: Option<u16>) {
        let ext_seq = self.input_seq.unwrap(u64::from(seq));
        if ext_seq > self.highest_in {
            self.highest_in = ext_seq;
            self.seq_offsets.drop_one(ext_seq);
        }
        if let Some(id) = picture_id {
            self.picture_id.skip(id);
        }
    }

    /// The output timestamp of input timestamp `timestamp` in the current segment (for a
    /// publisher's sender report, which names a timestamp no packet may carry).
    pub fn output_timestamp(&self, timestamp: u32) -> u32 {
        timestamp.wrapping_sub(self.ts_offset as u32)
    }

    /// The next output sequence number, for a packet the SFU adds to the stream after the
    /// packets sent so far (an FEC packet after a frame): the segment's later packets move up
    /// by one, and a late packet of before keeps its number. `None` before the first packet.
    pub fn reserve(&mut self) -> Option<u16> {
        let last = self.last_out.as_mut()?;
        last.ext_seq += 1;
        self.seq_offsets.insert_after(self.highest_in);
        Some(last.ext_seq as u16)
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
            vp8: None,
        }
    }

    /// The VP8 picture numbers a forwarded packet of the current segment goes out with: the
    /// segment's first picture follows the last one sent. Call it only for packets forwarded.
    pub fn renumber_vp8(&mut self, numbers: Vp8Numbers) -> Vp8Numbers {
        Vp8Numbers {
            picture_id: numbers.picture_id.map(|id| self.picture_id.map(id)),
            tl0_pic_idx: numbers
                .tl0_pic_idx
                .map(|tl0| self.tl0_pic_idx.map(u16::from(tl0)) as u8),
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
        let b = t.unwrap(u64::from(u32::MAX - 10));
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

    fn numbers(picture_id: u16, tl0_pic_idx: u8) -> Vp8Numbers {
        Vp8Numbers {
            picture_id: Some(picture_id),
            tl0_pic_idx: Some(tl0_pic_idx),
        }
    }

    #[test]
    fn vp8_picture_numbers_continue_across_segments_and_wrap() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        r.start_segment(1, 0, t0);
        // The first segment keeps its numbers; a frame's packets share them.
        assert_eq!(r.renumber_vp8(numbers(32766, 255)), numbers(32766, 255));
        assert_eq!(r.renumber_vp8(numbers(32766, 255)), numbers(32766, 255));
        assert_eq!(r.renumber_vp8(numbers(32767, 255)), numbers(32767, 255));
        assert_eq!(r.renumber_vp8(numbers(0, 0)), numbers(0, 0), "both wrap");
        // Another layer numbered far behind (and then ahead) continues after the last sent.
        r.start_segment(900, 0, t0);
        assert_eq!(r.renumber_vp8(numbers(100, 3)), numbers(1, 1));
        assert_eq!(r.renumber_vp8(numbers(101, 3)), numbers(2, 1));
        assert_eq!(r.renumber_vp8(numbers(102, 4)), numbers(3, 2));
        r.start_segment(5, 0, t0);
        assert_eq!(r.renumber_vp8(numbers(20000, 200)), numbers(4, 3));
        // A gap the publisher left stays a gap: the receiver must know a picture is missing.
        assert_eq!(r.renumber_vp8(numbers(20003, 201)), numbers(7, 4));
        // Packets without numbers stay without.
        assert_eq!(r.renumber_vp8(Vp8Numbers::default()), Vp8Numbers::default());
    }

    #[test]
    fn reserved_numbers_sit_between_frames_and_late_packets_keep_theirs() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        assert_eq!(r.reserve(), None, "nothing sent yet");
        let a = r.start_segment(100, 0, t0).seq;
        let c = r.rewrite(102, 0, t0).unwrap().seq;
        assert_eq!(c, a.wrapping_add(2));
        assert_eq!(r.reserve(), Some(a.wrapping_add(3)));
        assert_eq!(r.reserve(), Some(a.wrapping_add(4)));
        assert_eq!(
            r.rewrite(101, 0, t0).unwrap().seq,
            a.wrapping_add(1),
            "late"
        );
        assert_eq!(r.rewrite(103, 3000, t0).unwrap().seq, a.wrapping_add(5));
        // A frame dropped after a reserved number closes up as before.
        r.skip(104, None);
        assert_eq!(r.rewrite(105, 6000, t0).unwrap().seq, a.wrapping_add(6));
        assert_eq!(r.reserve(), Some(a.wrapping_add(7)));
        assert_eq!(
            r.start_segment(9, 0, t0).seq,
            a.wrapping_add(8),
            "next segment follows"
        );
    }

    #[test]
    fn a_timestamp_maps_as_the_segment_s_packets_do() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000);
        r.start_segment(1, 100, t0);
        let switched = r.start_segment(500, u32::MAX - 10, t0 + Duration::from_millis(40));
        let later = r.rewrite(501, 2_990, t0).unwrap();
        assert_eq!(r.output_timestamp(u32::MAX - 10), switched.timestamp);
        assert_eq!(
            r.output_timestamp(2_990),
            later.timestamp,
            "across the wrap"
        );
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
