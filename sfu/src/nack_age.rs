//! Which NACKed packets are still worth resending.
//!
//! A NACK responder resends anything still in its buffer (`rtc`'s: the last 1024 packets of a
//! stream; the SFU's `resend_history`: the last [`MAX_AGE`] and a margin), however long ago it
//! went out. On a congested link that is exactly the wrong thing:
//! a resend the receiver can no longer use only adds load, and the receiver will ask for a
//! keyframe anyway. [`SendLog`] remembers when each packet was first sent and trims a NACK down
//! to the sequence numbers sent at most [`MAX_AGE`] ago, before the responder sees it.
//!
//! It also leaves out packets sent before the stream's latest keyframe: the receiver decodes
//! from that keyframe on, and a frame before it can no longer be shown. This matters most when
//! the SFU has just switched a subscriber to a lower layer because its path overflowed: the
//! receiver asks for everything the overflow dropped, all of it from the layer given up, and
//! resending that would keep the path full.
//!
//! And it leaves out packets resent less than [`RESEND_GAP`] ago: every loss is asked for
//! twice, by the receiver's NACK and by its transport-wide feedback (see `feedback_loss`),
//! and the second request for the same loss must not resend it again.
//!
//! Pure: time is passed in, nothing here reads the clock or does I/O.

use std::time::{Duration, Instant};

use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};

use crate::codec::VideoCodec;

/// How old a packet may be and still be resent.
///
/// It has to be longer than a few round trips on a bad link: a receiver NACKs about once per
/// RTT and a resend may itself be lost, so on a 300 ms mobile RTT one second leaves room for
/// the first request and two retries. It has to be shorter than the time after which a
/// receiver gives up on the frame: libwebrtc (Chrome) asks for a keyframe after 3 s without a
/// decodable frame (`kMaxWaitForFrame`), and a resend arriving after that repairs nothing.
/// libwebrtc's own sender keeps packets for resending for max(1 s, 3 RTT), the same order.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// A packet resent less than this long ago is not resent again.
///
/// The receiver's NACK and its transport-wide feedback report the same loss within a few
/// milliseconds to one feedback interval of each other (Chromium's interval is 50–100 ms at a
/// class's bitrates); a receive-only Chromium repeats a NACK whose resend did not come only
/// after its assumed 100 ms round trip. Half of that separates the two: a duplicate request
/// within it is dropped, a retry after it is answered.
pub const RESEND_GAP: Duration = Duration::from_millis(50);

/// Slots a stream starts with, indexed by the low bits of the sequence number: 2.5 s of audio
/// or of a low video layer.
const MIN_RING: usize = 128;

/// Most slots per stream: as many as the responder keeps at most (`resend_history`). A ring
/// doubles (up to this) when a packet would take the slot of one sent less than [`MAX_AGE`]
/// ago, so it always holds every packet still worth resending, however fast the stream: sized
/// by the stream's rate, not for the worst case (issue 15: 24 KB per stream before, whatever
/// its rate).
const MAX_RING: usize = 16_384;

/// One slot: `(sent_ms + 1) << 16 | seq`, where `sent_ms` counts milliseconds since the log's
/// epoch; 0 means never written. Packed into one word so that recording a packet is a single
/// store (48 bits of milliseconds last 8,900 years).
type Slot = u64;

/// Send times of recent packets, per local stream.
///
/// A peer connection sends a handful of streams, so the streams are a short list scanned
/// linearly (cheaper than hashing for the few SSRCs there are), and each stream's ring is
/// allocated when it is bound and grows with the stream's rate (see [`MAX_RING`]): recording a
/// packet allocates nothing once the ring holds [`MAX_AGE`] of the stream.
#[derive(Default)]
pub struct SendLog {
    /// The instant send times are measured from: the first packet recorded.
    epoch: Option<Instant>,
    streams: Vec<Stream>,
}

struct Stream {
    ssrc: u32,
    /// The stream its resends go out on (RFC 4588 RTX), if it has one.
    rtx: Option<u32>,
    /// [`MIN_RING`] to [`MAX_RING`] slots, a power of two.
    ring: Box<[Slot]>,
    /// For each slot of `ring`: milliseconds since the epoch + 1 of its packet's latest
    /// resend, truncated to 32 bits (only differences under a second are ever compared); 0
    /// if it has not been resent.
    resent: Box<[u32]>,
    /// The codec to find keyframes in (video streams whose codec we can read).
    codec: Option<VideoCodec>,
    /// The first sequence number of the latest keyframe sent.
    keyframe: Option<u16>,
}

/// What to do with a NACK.
#[derive(Debug, PartialEq, Eq)]
pub enum Trim {
    /// Every sequence number it asks for is worth resending: pass it on unchanged.
    Keep,
    /// Pass on this smaller NACK instead; `skipped` sequence numbers were left out.
    Rewrite {
        nack: TransportLayerNack,
        skipped: u64,
    },
    /// Nothing in it is worth resending: drop it; it asked for `skipped` sequence numbers.
    Drop { skipped: u64 },
}

impl SendLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts recording a local stream, whose resends go out on `rtx` if it has an RTX stream
    /// and whose keyframes are found with `codec` if it is one we can read. Binding a stream
    /// already bound keeps its log.
    pub fn bind(&mut self, ssrc: u32, rtx: Option<u32>, codec: Option<VideoCodec>) {
        if self.stream(ssrc).is_none() {
            self.streams.push(Stream {
                ssrc,
                rtx,
                ring: vec![0; MIN_RING].into_boxed_slice(),
                resent: vec![0; MIN_RING].into_boxed_slice(),
                codec,
                keyframe: None,
            });
        }
    }

    /// Forgets a local stream, so that the log does not grow with streams that come and go.
    pub fn unbind(&mut self, ssrc: u32) {
        self.streams.retain(|stream| stream.ssrc != ssrc);
    }

    /// Whether stream `ssrc` is bound and resends on an RTX stream.
    pub fn has_rtx(&self, ssrc: u32) -> bool {
        self.stream(ssrc).is_some_and(|stream| stream.rtx.is_some())
    }

    fn stream(&self, ssrc: u32) -> Option<&Stream> {
        self.streams.iter().find(|stream| stream.ssrc == ssrc)
    }

    /// Records that `seq` of stream `ssrc`, carrying `payload`, is being sent now. Call it for
    /// first transmissions only, so that a packet's age counts from when it first went out.
    /// Packets of streams that are not bound are ignored.
    pub fn record(&mut self, ssrc: u32, seq: u16, payload: &[u8], now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let Some(stream) = self.streams.iter_mut().find(|stream| stream.ssrc == ssrc) else {
            return;
        };
        let sent_ms = millis_since(epoch, now);
        let max_age_ms = MAX_AGE.as_millis() as u64;
        // The slot holds another packet still worth resending: too few slots for this rate.
        while stream.ring.len() < MAX_RING && {
            let held = stream.ring[stream.index(seq)];
            held != 0
                && held as u16 != seq
                && sent_ms.saturating_sub((held >> 16) - 1) <= max_age_ms
        } {
            stream.grow();
        }
        let slot = stream.index(seq);
        stream.ring[slot] = ((sent_ms + 1) << 16) | Slot::from(seq);
        stream.resent[slot] = 0;
        if stream.codec.is_some_and(|codec| codec.is_keyframe(payload)) {
            stream.keyframe = Some(seq);
        }
    }

    /// The packet a resend of stream `ssrc`, numbered `seq`, carrying `payload`, repeats, as
    /// (stream, sequence number): itself, unless it went out on a bound stream's RTX stream,
    /// whose payload starts with the original sequence number (RFC 4588). `None` for a
    /// malformed RTX packet.
    pub fn original(&self, ssrc: u32, seq: u16, payload: &[u8]) -> Option<(u32, u16)> {
        match self.streams.iter().find(|stream| stream.rtx == Some(ssrc)) {
            Some(stream) => {
                let original = payload.get(..2)?;
                Some((stream.ssrc, u16::from_be_bytes([original[0], original[1]])))
            }
            None => Some((ssrc, seq)),
        }
    }

    /// Records that `seq` of stream `ssrc` (the original's numbers, see [`Self::original`]) is
    /// being resent now (see [`RESEND_GAP`]).
    pub fn record_resend(&mut self, ssrc: u32, seq: u16, now: Instant) {
        let Some(epoch) = self.epoch else { return };
        let Some(stream) = self.streams.iter_mut().find(|stream| stream.ssrc == ssrc) else {
            return;
        };
        let slot = stream.index(seq);
        if stream.ring[slot] as u16 == seq {
            stream.resent[slot] = (millis_since(epoch, now) as u32).wrapping_add(1).max(1);
        }
    }

    /// Trims `nack` to the sequence numbers sent at most [`MAX_AGE`] before `now`, not before
    /// the stream's latest keyframe and not resent in the last [`RESEND_GAP`] (see the module
    /// docs). Sequence
    /// numbers never sent, or sent so long ago that their slot has been reused, and NACKs for
    /// streams not bound, are left out too: the responder has nothing to resend for them.
    pub fn trim(&self, nack: &TransportLayerNack, now: Instant) -> Trim {
        let stream = self.stream(nack.media_ssrc);
        let index = |seq: u16| usize::from(seq) & stream.map_or(0, |s| s.ring.len() - 1);
        let ring = stream.map(|stream| &*stream.ring);
        let keyframe = stream.and_then(|stream| stream.keyframe);
        let superseded = |seq: u16| keyframe.is_some_and(|key| (key.wrapping_sub(seq) as i16) > 0);
        let now_ms = self.epoch.map_or(0, |epoch| millis_since(epoch, now));
        let max_age_ms = MAX_AGE.as_millis() as u64;
        let resent = stream.map(|stream| &*stream.resent);
        let just_resent = |seq: u16| {
            resent.is_some_and(|resent| {
                let at = resent[index(seq)];
                let since = (now_ms as u32).wrapping_add(1).wrapping_sub(at);
                at != 0 && u128::from(since) < RESEND_GAP.as_millis()
            })
        };
        let fresh = |seq: u16| {
            ring.is_some_and(|ring| {
                let slot = ring[index(seq)];
                let sent = slot >> 16;
                sent != 0
                    && slot as u16 == seq
                    && now_ms.saturating_sub(sent - 1) <= max_age_ms
                    && !superseded(seq)
                    && !just_resent(seq)
            })
        };
        trim_nack(nack, fresh)
    }
}

impl Stream {
    fn index(&self, seq: u16) -> usize {
        usize::from(seq) & (self.ring.len() - 1)
    }

    /// Doubles the ring, moving every packet to its slot in the new one.
    fn grow(&mut self) {
        let len = self.ring.len() * 2;
        let mut ring = vec![0; len].into_boxed_slice();
        let mut resent = vec![0; len].into_boxed_slice();
        for (slot, resent_at) in self.ring.iter().zip(self.resent.iter()) {
            if *slot != 0 {
                let at = usize::from(*slot as u16) & (len - 1);
                ring[at] = *slot;
                resent[at] = *resent_at;
            }
        }
        self.ring = ring;
        self.resent = resent;
    }
}

/// Whole milliseconds from `epoch` to `now`; 0 if `now` is earlier (time is passed in, and a
/// caller's instants need not be strictly ordered across the read and write legs).
fn millis_since(epoch: Instant, now: Instant) -> u64 {
    // 2^47 ms is 4,400 years: the cap only keeps the shift in `record` from overflowing.
    (now.saturating_duration_since(epoch).as_millis() as u64).min(1 << 47)
}

/// Cuts `nack` down to the sequence numbers `fresh` accepts (see [`Trim`]).
pub fn trim_nack(nack: &TransportLayerNack, fresh: impl Fn(u16) -> bool) -> Trim {
    // Bit 0 stands for the pair's `packet_id`, bit i + 1 for bit i of its bitmap.
    let wanted = |pair: &NackPair| 1 | u32::from(pair.lost_packets) << 1;
    let kept = |pair: &NackPair| {
        let wanted = wanted(pair);
        (0..17)
            .filter(|&bit| wanted & (1 << bit) != 0 && fresh(pair.packet_id.wrapping_add(bit)))
            .fold(0u32, |kept, bit| kept | 1 << bit)
    };
    let skipped = |pair: &NackPair| u64::from((wanted(pair) & !kept(pair)).count_ones());

    // Most NACKs on a healthy link are all fresh: decide that without allocating.
    let total_skipped: u64 = nack.nacks.iter().map(skipped).sum();
    if total_skipped == 0 {
        return Trim::Keep;
    }
    let nacks: Vec<NackPair> = nack
        .nacks
        .iter()
        .filter_map(|pair| {
            let kept = kept(pair);
            if kept == 0 {
                return None;
            }
            // The first sequence number kept becomes the pair's base; the rest shift down.
            let first = kept.trailing_zeros();
            Some(NackPair {
                packet_id: pair.packet_id.wrapping_add(first as u16),
                lost_packets: (kept >> first >> 1) as u16,
            })
        })
        .collect();
    if nacks.is_empty() {
        Trim::Drop {
            skipped: total_skipped,
        }
    } else {
        Trim::Rewrite {
            nack: TransportLayerNack {
                sender_ssrc: nack.sender_ssrc,
                media_ssrc: nack.media_ssrc,
                nacks,
            },
            skipped: total_skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234;
    const RTX: u32 = 0x5678;

    fn nack(seqs: &[u16]) -> TransportLayerNack {
        TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers(seqs),
        }
    }

    fn seqs(nack: &TransportLayerNack) -> Vec<u16> {
        nack.nacks
            .iter()
            .flat_map(|pair| pair.packet_list())
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A log with stream `SSRC` bound and `sent` recorded at `start`.
    fn log_with(start: Instant, sent: impl IntoIterator<Item = u16>) -> SendLog {
        let mut log = SendLog::new();
        log.bind(SSRC, None, Some(VideoCodec::Vp8));
        for seq in sent {
            log.record(SSRC, seq, &[], start);
        }
        log
    }

    #[test]
    fn fresh_seqs_are_kept_unchanged() {
        let t0 = Instant::now();
        let log = log_with(t0, 100..120);
        assert_eq!(log.trim(&nack(&[100, 105, 119]), t0 + ms(200)), Trim::Keep);
        assert_eq!(log.trim(&nack(&[100]), t0 + MAX_AGE), Trim::Keep);
    }

    #[test]
    fn old_seqs_are_dropped() {
        let t0 = Instant::now();
        let mut log = log_with(t0, 100..110);
        for seq in 110..120 {
            log.record(SSRC, seq, &[], t0 + ms(900));
        }
        let now = t0 + ms(1_500);
        assert_eq!(log.trim(&nack(&[100, 109]), now), Trim::Drop { skipped: 2 });
        // 100..=116 is one pair whose base is stale: the first fresh seq becomes the base.
        match log.trim(&nack(&[100, 105, 110, 116]), now) {
            Trim::Rewrite {
                nack: trimmed,
                skipped,
            } => {
                assert_eq!(skipped, 2);
                assert_eq!(seqs(&trimmed), vec![110, 116]);
                assert_eq!(trimmed.media_ssrc, SSRC);
                assert_eq!(trimmed.sender_ssrc, 1);
            }
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn seqs_never_sent_are_dropped() {
        let t0 = Instant::now();
        let log = log_with(t0, 100..110);
        match log.trim(&nack(&[99, 100, 110]), t0 + ms(10)) {
            Trim::Rewrite {
                nack: trimmed,
                skipped,
            } => {
                assert_eq!(skipped, 2);
                assert_eq!(seqs(&trimmed), vec![100]);
            }
            other => panic!("expected a rewrite, got {other:?}"),
        }
        // A slot holding another packet with the same low bits is not the one asked for.
        assert_eq!(
            log.trim(&nack(&[100 + MIN_RING as u16]), t0 + ms(10)),
            Trim::Drop { skipped: 1 }
        );
    }

    #[test]
    fn the_ring_grows_with_the_rate_and_keeps_every_packet_of_max_age() {
        let t0 = Instant::now();
        let mut log = SendLog::new();
        log.bind(SSRC, None, None);
        // 25 packets a second (audio, a low layer): the smallest ring holds them.
        for i in 0..100u16 {
            log.record(SSRC, i, &[], t0 + ms(40 * u64::from(i)));
        }
        assert_eq!(log.stream(SSRC).map(|s| s.ring.len()), Some(MIN_RING));
        // Then 1,500 a second: every packet of the last MAX_AGE can still be resent.
        let start = t0 + ms(4_000);
        for i in 0..3_000u16 {
            log.record(
                SSRC,
                100 + i,
                &[],
                start + Duration::from_micros(666 * u64::from(i)),
            );
        }
        let now = start + Duration::from_micros(666 * 2_999);
        let last_second: Vec<u16> = (3_100 - 1_500..3_100).collect();
        for chunk in last_second.chunks(100) {
            assert_eq!(log.trim(&nack(chunk), now), Trim::Keep);
        }
        let len = log.stream(SSRC).map_or(0, |s| s.ring.len());
        assert!((2_048..=4_096).contains(&len), "{len} slots");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut log = log_with(t0, 65_530..=65_535);
        for seq in 0..5 {
            log.record(SSRC, seq, &[], t0 + ms(800));
        }
        // One pair spans the wrap; its stale half (sent at t0) goes, the wrapped half stays.
        let now = t0 + ms(1_200);
        match log.trim(&nack(&[65_534, 65_535, 0, 3]), now) {
            Trim::Rewrite {
                nack: trimmed,
                skipped,
            } => {
                assert_eq!(skipped, 2);
                assert_eq!(seqs(&trimmed), vec![0, 3]);
            }
            other => panic!("expected a rewrite, got {other:?}"),
        }
        // After a full cycle of 65,536 packets a slot holds the newer packet of the same seq.
        for seq in (5..=u16::MAX).chain(0..3) {
            log.record(SSRC, seq, &[], t0 + ms(2_000));
        }
        assert_eq!(log.trim(&nack(&[65_530, 1]), t0 + ms(2_100)), Trim::Keep);
    }

    #[test]
    fn seqs_before_the_latest_keyframe_are_dropped() {
        let t0 = Instant::now();
        let mut log = log_with(t0, 65_530..=65_535);
        // Seq 2 starts a VP8 keyframe (S=1, P=0).
        for seq in 0..10 {
            let payload: &[u8] = if seq == 2 {
                &[0x10, 0x00]
            } else {
                &[0x10, 0x01]
            };
            log.record(SSRC, seq, payload, t0);
        }
        // Before the keyframe (across the wrap) goes; the keyframe and after it stay.
        match log.trim(&nack(&[65_534, 1, 2, 5]), t0 + ms(10)) {
            Trim::Rewrite {
                nack: trimmed,
                skipped,
            } => {
                assert_eq!(skipped, 2);
                assert_eq!(seqs(&trimmed), vec![2, 5]);
            }
            other => panic!("expected a rewrite, got {other:?}"),
        }
        assert_eq!(log.trim(&nack(&[2, 9]), t0 + ms(10)), Trim::Keep);
        // A keyframe on a stream not bound here changes nothing.
        log.record(SSRC + 1, 9, &[0x10, 0x00], t0);
        assert_eq!(log.trim(&nack(&[2, 9]), t0 + ms(10)), Trim::Keep);
    }

    #[test]
    fn unknown_or_unbound_streams_are_dropped() {
        let t0 = Instant::now();
        let mut log = SendLog::new();
        assert_eq!(log.trim(&nack(&[1, 2]), t0), Trim::Drop { skipped: 2 });
        log.bind(SSRC, None, None);
        log.record(SSRC, 1, &[], t0);
        log.record(SSRC + 1, 2, &[], t0);
        assert_eq!(
            log.trim(&nack(&[1, 2]), t0),
            Trim::Rewrite {
                nack: nack(&[1]),
                skipped: 1
            }
        );
        log.unbind(SSRC);
        assert!(log.streams.is_empty());
        assert_eq!(log.trim(&nack(&[1]), t0), Trim::Drop { skipped: 1 });
    }

    #[test]
    fn rebinding_keeps_the_log() {
        let t0 = Instant::now();
        let mut log = log_with(t0, [7]);
        log.bind(SSRC, None, None);
        assert_eq!(log.streams.len(), 1);
        assert_eq!(log.trim(&nack(&[7]), t0), Trim::Keep);
    }

    #[test]
    fn instants_before_the_epoch_count_as_fresh() {
        let t0 = Instant::now() + ms(10);
        let log = log_with(t0, [7]);
        assert_eq!(log.trim(&nack(&[7]), t0 - ms(10)), Trim::Keep);
    }

    #[test]
    fn a_second_request_for_a_packet_just_resent_is_dropped() {
        let t0 = Instant::now();
        let mut log = log_with(t0, [100, 101]);
        log.record_resend(SSRC, 100, t0 + ms(20));
        // The feedback's request for 100 comes 30 ms after the NACK's resend: dropped.
        assert_eq!(
            log.trim(&nack(&[100, 101]), t0 + ms(50)),
            Trim::Rewrite {
                nack: nack(&[101]),
                skipped: 1
            }
        );
        // The receiver's retry 100 ms later (the resend was lost): answered.
        assert_eq!(log.trim(&nack(&[100]), t0 + ms(120)), Trim::Keep);
        // 100's slot is taken by a new packet: its resend record goes with it.
        log.record(SSRC, 100 + MIN_RING as u16, &[], t0 + ms(130));
        log.record_resend(SSRC, 100, t0 + ms(130));
        assert_eq!(
            log.trim(&nack(&[100 + MIN_RING as u16]), t0 + ms(140)),
            Trim::Keep
        );
    }

    #[test]
    fn a_resend_on_an_rtx_stream_is_of_the_packet_its_payload_names() {
        let mut log = SendLog::new();
        log.bind(SSRC, Some(RTX), None);
        assert_eq!(
            log.original(RTX, 7, &[0x01, 0x02, 0xAA]),
            Some((SSRC, 0x0102))
        );
        assert_eq!(log.original(RTX, 7, &[0x01]), None, "too short for RTX");
        assert_eq!(log.original(SSRC, 7, &[]), Some((SSRC, 7)), "not RTX");
    }

    #[test]
    fn a_full_bitmap_is_trimmed_bit_by_bit() {
        let t0 = Instant::now();
        // 0..=16 in one pair; every other one fresh.
        let mut log = log_with(t0, (0..=16).filter(|s| s % 2 == 1));
        for seq in (0..=16).filter(|s| s % 2 == 0) {
            log.record(SSRC, seq, &[], t0 + ms(2_000));
        }
        let all: Vec<u16> = (0..=16).collect();
        match log.trim(&nack(&all), t0 + ms(2_500)) {
            Trim::Rewrite {
                nack: trimmed,
                skipped,
            } => {
                assert_eq!(skipped, 8);
                assert_eq!(trimmed.nacks.len(), 1);
                assert_eq!(seqs(&trimmed), (0..=16).step_by(2).collect::<Vec<_>>());
            }
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }
}
