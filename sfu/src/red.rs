//! Audio RED (RFC 2198): Opus sent with copies of the previous frames in the same packet.
//!
//! Chrome offers `red/48000/2` with fmtp `111/111` (blocks of payload type 111, Opus) on the
//! audio m-line. A packet carries the current Opus frame (the *primary* block, last) after up to
//! a few older ones, so one lost packet costs nothing audible: the next one repeats it. For a
//! student on a lossy link that is worth the extra bitrate (one redundant block about doubles
//! the audio's).
//!
//! The SFU is the RED encoder for its subscribers: a publisher's audio is taken as plain Opus
//! (the primary block, if the publisher sent RED), and each subscriber that negotiated RED gets
//! it wrapped with the previous frames ([`Encoder`]); the others get plain Opus. This module
//! has the parser that finds the primary block without allocating, the encoder, and the codec
//! to register so RED is negotiated.
//!
//! Layout (RFC 2198 §3): one 4-byte header per redundant block, `F=1 | PT(7) | timestamp
//! offset(14) | length(10)`, then a 1-byte header for the primary block, `F=0 | PT(7)`, then
//! the blocks' data in the same order; the primary block runs to the end of the payload.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};

/// The MIME type `rtc` negotiates RED under; there is no constant for it in `rtc`.
pub const MIME_TYPE_RED: &str = "audio/red";

/// The payload type Aula offers RED on: the one Chrome uses, so that a publisher's answer and
/// a subscriber's offer number it alike.
pub const PAYLOAD_TYPE: u8 = 63;

/// The most blocks a packet may hold, primary included. Browsers send one or two redundant
/// blocks; libwebrtc's own receiver (NetEq) rejects more than 32 as malformed, and so do we, so
/// that a hostile packet of 4-byte headers cannot make us walk hundreds of them.
pub const MAX_BLOCKS: usize = 32;

/// One block of a RED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// The payload type of the block's data (Opus's, for the RED browsers send).
    pub payload_type: u8,
    /// How many RTP timestamp units before the packet's timestamp this block's frame starts;
    /// 0 for the primary block.
    pub timestamp_offset: u16,
    pub data: &'a [u8],
}

/// The blocks of a RED payload, oldest first and the primary last; see [`blocks`].
#[derive(Debug, Clone)]
pub struct Blocks<'a> {
    /// The headers not yet read (the primary's 1-byte header last).
    headers: &'a [u8],
    /// The data not yet read.
    data: &'a [u8],
}

/// The blocks of a RED payload, or `None` if it is malformed: no primary header, a header cut
/// short, block lengths that run past the payload, or more than [`MAX_BLOCKS`] blocks. The
/// whole payload is checked here, so the iterator yields every block it announces.
pub fn blocks(payload: &[u8]) -> Option<Blocks<'_>> {
    let mut header_len = 0;
    let mut redundant = 0;
    let mut redundant_len = 0;
    loop {
        let first = *payload.get(header_len)?;
        if first & 0x80 == 0 {
            header_len += 1;
            break;
        }
        redundant += 1;
        // This one and the primary still to come.
        if redundant + 1 > MAX_BLOCKS {
            return None;
        }
        let header = payload.get(header_len..header_len + 4)?;
        redundant_len += block_length(header[2], header[3]);
        header_len += 4;
    }
    let (headers, data) = payload.split_at(header_len);
    (redundant_len <= data.len()).then_some(Blocks { headers, data })
}

/// The primary block's data: the current frame, what a subscriber without RED is sent (as the
/// payload of a plain Opus packet). `None` if the payload is malformed (see [`blocks`]).
///
/// It may be empty (a sender with nothing new to say); a caller should send nothing then.
pub fn primary(payload: &[u8]) -> Option<&[u8]> {
    blocks(payload)?.last().map(|block| block.data)
}

/// The 10-bit block length from the third and fourth bytes of a 4-byte header.
fn block_length(third: u8, fourth: u8) -> usize {
    usize::from(third & 0x03) << 8 | usize::from(fourth)
}

impl<'a> Iterator for Blocks<'a> {
    type Item = Block<'a>;

    fn next(&mut self) -> Option<Block<'a>> {
        match *self.headers {
            [first, second, third, fourth, ref rest @ ..] if first & 0x80 != 0 => {
                let (data, after) = self.data.split_at_checked(block_length(third, fourth))?;
                self.headers = rest;
                self.data = after;
                Some(Block {
                    payload_type: first & 0x7f,
                    timestamp_offset: u16::from(second) << 6 | u16::from(third >> 2),
                    data,
                })
            }
            [first, ..] => {
                self.headers = &[];
                Some(Block {
                    payload_type: first & 0x7f,
                    timestamp_offset: 0,
                    data: std::mem::take(&mut self.data),
                })
            }
            [] => None,
        }
    }
}

/// How many earlier frames the SFU repeats in each packet it sends as RED on a clean link: two,
/// so that only three packets lost in a row (0.1 % of the time at 10 % random loss) lose audio.
/// It triples the audio's bitrate (about 40 → 120 kbit/s with headers), which the allocator
/// counts, and which is cheap next to any video.
pub const DISTANCE: usize = 2;

/// The most earlier frames a packet repeats (see [`LEVELS`]).
pub const MAX_DISTANCE: usize = 8;

/// How much redundancy a subscriber's audio gets: an index into [`LEVELS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Redundancy(usize);

/// Each level: the loss (a fraction, sustained) from which it is used, the earlier frames each
/// packet repeats, and how many times each packet goes out (see [`crate::spaced_copies`]).
///
/// The deepest level sends every packet twice with six earlier frames rather than once with
/// twelve, which costs the same (14 copies of each frame against 13). Measured in Chromium at
/// 80 % random loss (release build, `weak-network-report.js 20 80`, three runs each):
/// 15.3-15.5 % of the audio concealed with 12 frames once, 14.5 % with 12 twice, 3.0-5.4 %
/// with 6 twice. A packet with every earlier frame in it still arrives only one time in five,
/// on average 100 ms after the last one, and the jitter buffer had invented the audio before a
/// later packet repeated it; a second copy of each packet halves that wait and the shallower
/// depth keeps the repeats recent. Being spaced from the first, a copy is not taken by the same
/// short burst.
const LEVELS: [(f64, usize, usize); 6] = [
    (0.0, DISTANCE, 1),
    (0.10, 3, 1),
    (0.25, 4, 1),
    (0.40, 6, 1),
    (0.55, MAX_DISTANCE, 1),
    (0.65, 6, 2),
];

impl Redundancy {
    /// The level for a subscriber link losing `loss` at random, given the `current` one: up
    /// at once when loss rises, down only when loss has halved from where the current level
    /// is needed, so that a lucky second on a bad link does not strip its protection.
    pub fn for_loss(current: Redundancy, loss: f64) -> Redundancy {
        let needed = |loss: f64| {
            Redundancy(
                LEVELS[1..]
                    .iter()
                    .filter(|(from, ..)| loss >= *from)
                    .count(),
            )
        };
        needed(loss).max(current.min(needed(2.0 * loss)))
    }

    /// Earlier frames repeated in each packet.
    pub fn distance(self) -> usize {
        LEVELS[self.0].1
    }

    /// Times each packet goes out.
    pub fn copies(self) -> usize {
        LEVELS[self.0].2
    }
}

/// Packets a second of an Opus stream: browsers send 20 ms frames.
const OPUS_PACKETS_PER_SEC: f64 = 50.0;
/// Bits a second of the stream's measured rate that are each packet's headers (the overhead
/// the router's layer rates add), which a redundant block does not repeat.
const HEADERS_BPS: f64 = OPUS_PACKETS_PER_SEC * crate::router::PACKET_OVERHEAD as f64 * 8.0;
/// Bits a second each redundant block's own 4-byte header costs.
const BLOCK_HEADER_BPS: f64 = OPUS_PACKETS_PER_SEC * 4.0 * 8.0;

/// What a stream measured at `rate` bits a second (headers included) costs on the wire sent
/// as RED at `redundancy` (`None`: sent as it is): the headers once and the payload once per
/// frame carried, for each copy. Counting the whole rate per frame carried overstated the
/// audio by a third at the default depth, and at a 300 kbit/s cap that was the difference
/// between the lowest video layer fitting and a picture that stopped and started every few
/// seconds.
pub fn cost(rate: f64, redundancy: Option<Redundancy>) -> f64 {
    let Some(redundancy) = redundancy else {
        return rate;
    };
    let payload = (rate - HEADERS_BPS).max(0.0);
    let one = rate + redundancy.distance() as f64 * (payload + BLOCK_HEADER_BPS);
    one * redundancy.copies() as f64
}

/// Wraps one subscriber's Opus packets as RED (RFC 2198) with the previous [`DISTANCE`]
/// frames, for a subscriber that negotiated RED. The SFU adds the redundancy itself because
/// the loss is on the subscriber's link, not the publisher's: a teacher on good Wi-Fi sends
/// plain Opus, and each student on a bad one still gets the protection.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// (RTP timestamp, payload) of the last frames sent, oldest first.
    history: VecDeque<(u32, Bytes)>,
    /// How many of them each packet repeats, and how many times it goes out.
    redundancy: Redundancy,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            history: VecDeque::with_capacity(MAX_DISTANCE + 1),
            redundancy: Redundancy::default(),
        }
    }
}

impl Encoder {
    /// Sets the redundancy of the packets from now on.
    pub fn set_redundancy(&mut self, redundancy: Redundancy) {
        self.redundancy = redundancy;
    }

    pub fn redundancy(&self) -> Redundancy {
        self.redundancy
    }

    /// The RED payload for a frame at `timestamp` (the subscriber's timestamps), whose blocks
    /// carry `block_payload_type` (the subscriber's Opus payload type). Earlier frames that
    /// cannot be expressed (more than 14 bits of timestamp back, e.g. after a silence, or more
    /// than 1023 bytes) are left out.
    pub fn encode(&mut self, timestamp: u32, payload: &Bytes, block_payload_type: u8) -> Bytes {
        let skip = self
            .history
            .len()
            .saturating_sub(self.redundancy.distance());
        let usable = || {
            self.history
                .iter()
                .skip(skip)
                .filter_map(move |(ts, data)| {
                    let offset = timestamp.wrapping_sub(*ts);
                    (offset > 0 && offset < 1 << 14 && data.len() < 1 << 10)
                        .then_some((offset as u16, data))
                })
        };
        let size = usable().map(|(_, d)| 4 + d.len()).sum::<usize>() + 1 + payload.len();
        let mut out = BytesMut::with_capacity(size);
        for (offset, data) in usable() {
            out.put_u8(0x80 | block_payload_type);
            out.put_u8((offset >> 6) as u8);
            out.put_u8(((offset & 0x3f) as u8) << 2 | (data.len() >> 8) as u8);
            out.put_u8(data.len() as u8);
        }
        out.put_u8(block_payload_type & 0x7f);
        for (_, data) in usable() {
            out.put_slice(data);
        }
        out.put_slice(payload);
        self.history.push_back((timestamp, payload.clone()));
        if self.history.len() > MAX_DISTANCE {
            self.history.pop_front();
        }
        out.freeze()
    }
}

/// RED as Chrome offers it, over Opus at payload type 111 (the one `rtc`'s default codecs give
/// Opus): `a=rtpmap:63 red/48000/2`, `a=fmtp:63 111/111` (two blocks: one redundant, one primary).
pub fn red_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_RED.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "111/111".to_owned(),
            rtcp_feedback: Vec::new(),
        },
        payload_type: PAYLOAD_TYPE,
    }
}

/// Registers RED in a media engine, so that it is offered and accepted on audio m-lines.
/// Call it after `register_default_codecs`, so that Opus stays first in our offers.
///
/// Registering is not enough for a browser to *send* RED: libwebrtc uses RED only when the
/// answer lists it before the codec it carries, and `rtc` answers in the offer's order, where
/// Chrome puts Opus first. The SFU has to prefer RED on a publisher's audio transceiver
/// (`set_codec_preferences(vec![red_codec(), opus])`) before it answers; a test below shows
/// the answer that gives.
pub fn register_red(media_engine: &mut MediaEngine) -> Result<(), rtc::shared::error::Error> {
    media_engine.register_codec(red_codec(), RtpCodecKind::Audio)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rtc::peer_connection::RTCPeerConnectionBuilder;

    use super::*;

    const OPUS: u8 = 111;

    /// A RED payload: `redundant` as (timestamp offset, data), then the primary's data.
    fn red(redundant: &[(u16, &[u8])], primary: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(offset, data) in redundant {
            let len = data.len();
            out.extend_from_slice(&[
                0x80 | OPUS,
                (offset >> 6) as u8,
                ((offset & 0x3f) << 2) as u8 | (len >> 8) as u8,
                len as u8,
            ]);
        }
        out.push(OPUS);
        for &(_, data) in redundant {
            out.extend_from_slice(data);
        }
        out.extend_from_slice(primary);
        out
    }

    fn all(payload: &[u8]) -> Vec<Block<'_>> {
        blocks(payload).expect("well formed").collect()
    }

    #[test]
    fn the_encoder_repeats_the_last_two_frames_and_its_output_parses() {
        let mut encoder = Encoder::default();
        let frame = |i: u8| Bytes::from(vec![i; 10 + usize::from(i)]);
        let first = encoder.encode(1000, &frame(1), OPUS);
        assert_eq!(
            primary(&first),
            Some(&frame(1)[..]),
            "nothing to repeat yet"
        );
        assert_eq!(blocks(&first).unwrap().count(), 1);
        encoder.encode(1960, &frame(2), OPUS);
        let third = encoder.encode(2920, &frame(3), OPUS);
        let got: Vec<Block> = blocks(&third).unwrap().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].timestamp_offset, got[0].data),
            (1920, &frame(1)[..])
        );
        assert_eq!((got[1].timestamp_offset, got[1].data), (960, &frame(2)[..]));
        assert_eq!((got[2].timestamp_offset, got[2].data), (0, &frame(3)[..]));
        assert!(got.iter().all(|b| b.payload_type == OPUS));
        // After a long silence (DTX) the old frames are too far back to describe.
        let later = encoder.encode(2920 + 20_000, &frame(4), OPUS);
        assert_eq!(blocks(&later).unwrap().count(), 1);
    }

    #[test]
    fn a_lossier_link_gets_more_frames_repeated_and_they_parse() {
        let mut encoder = Encoder::default();
        encoder.set_redundancy(Redundancy::for_loss(encoder.redundancy(), 0.6));
        assert_eq!(encoder.redundancy().distance(), MAX_DISTANCE);
        let frame = |i: u32| Bytes::from(vec![i as u8; 80]);
        let mut last = Bytes::new();
        const SENT: u32 = 16;
        for i in 0..SENT {
            last = encoder.encode(960 * i, &frame(i), OPUS);
        }
        let got = all(&last);
        assert_eq!(got.len(), MAX_DISTANCE + 1);
        for (k, block) in got.iter().enumerate() {
            let back = (MAX_DISTANCE - k) as u32;
            assert_eq!(u32::from(block.timestamp_offset), 960 * back);
            assert_eq!(block.data, &frame(SENT - 1 - back)[..]);
        }
        // Back to a clean link: two again, from the next packet on.
        encoder.set_redundancy(Redundancy::default());
        assert_eq!(
            all(&encoder.encode(960 * SENT, &frame(SENT), OPUS)).len(),
            DISTANCE + 1
        );
    }

    #[test]
    fn redundancy_follows_loss_up_at_once_and_down_once_loss_halves() {
        let mut level = Redundancy::default();
        let mut path = Vec::new();
        for loss in [
            0.0, 0.05, 0.12, 0.3, 0.6, 0.8, 0.5, 0.35, 0.2, 0.12, 0.04, 0.0,
        ] {
            level = Redundancy::for_loss(level, loss);
            path.push((level.distance(), level.copies()));
        }
        let once = |d| (d, 1);
        assert_eq!(
            path,
            [
                once(2),
                once(2),
                once(3),
                once(4),
                once(8),
                (6, 2),
                (6, 2),
                (6, 2),
                once(6),
                once(3),
                once(2),
                once(2)
            ]
        );
        // 0.5 after 0.8: still more than half of the 0.65 that needs two copies, so they stay;
        // 0.35 after that too (0.7 needs them); 0.2 is under half of 0.55 but 0.4 needs 6.
    }

    #[test]
    fn the_cost_of_red_repeats_the_payload_not_the_headers() {
        // 44 kbit/s of Opus on the wire: 16 of headers, 28 of payload.
        assert_eq!(cost(44_000.0, None), 44_000.0);
        let clean = Redundancy::default();
        assert_eq!(
            cost(44_000.0, Some(clean)),
            44_000.0 + 2.0 * (28_000.0 + 1_600.0)
        );
        // A stream measured below its headers (silence, DTX) costs what was measured.
        assert_eq!(cost(10_000.0, Some(clean)), 10_000.0 + 2.0 * 1_600.0);
        let deepest = Redundancy::for_loss(clean, 0.9);
        let once = 44_000.0 + 6.0 * (28_000.0 + 1_600.0);
        assert_eq!(cost(44_000.0, Some(deepest)), 2.0 * once, "sent twice");
    }

    #[test]
    fn one_block_is_the_primary() {
        let payload = red(&[], b"now");
        assert_eq!(primary(&payload), Some(&b"now"[..]));
        assert_eq!(
            all(&payload),
            vec![Block {
                payload_type: OPUS,
                timestamp_offset: 0,
                data: b"now"
            }]
        );
    }

    #[test]
    fn the_primary_is_the_last_of_two_and_three_blocks() {
        let payload = red(&[(960, b"before")], b"now");
        assert_eq!(primary(&payload), Some(&b"now"[..]));
        let blocks = all(&payload);
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].timestamp_offset, blocks[0].data),
            (960, &b"before"[..])
        );

        // The largest offset (14 bits) and a length over 255 (10 bits) survive the packing.
        let long = [7u8; 700];
        let payload = red(&[(16_383, &long), (960, b"b")], b"now");
        assert_eq!(primary(&payload), Some(&b"now"[..]));
        let blocks = all(&payload);
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            (blocks[0].timestamp_offset, blocks[0].data),
            (16_383, &long[..])
        );
        assert_eq!(
            (blocks[1].timestamp_offset, blocks[1].data),
            (960, &b"b"[..])
        );
        assert!(blocks.iter().all(|b| b.payload_type == OPUS));
    }

    #[test]
    fn blocks_may_be_empty() {
        let payload = red(&[(960, b"")], b"now");
        assert_eq!(primary(&payload), Some(&b"now"[..]));
        assert_eq!(all(&payload)[0].data, b"");
        let payload = red(&[(960, b"before")], b"");
        assert_eq!(primary(&payload), Some(&b""[..]));
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        assert_eq!(primary(&[]), None, "no primary header");
        let payload = red(&[(960, b"before")], b"now");
        // Cut anywhere inside the headers or the redundant data.
        for len in 0..5 + b"before".len() {
            assert_eq!(primary(&payload[..len]), None, "cut at {len}");
        }
        // A length past the end.
        let mut long = payload.clone();
        long[3] = 200;
        assert_eq!(primary(&long), None);
        // Headers only, never a primary header.
        assert_eq!(primary(&[0x80 | OPUS, 0, 0, 0, 0x80 | OPUS, 0, 0, 0]), None);
    }

    #[test]
    fn too_many_blocks_are_rejected() {
        let redundant = vec![(960, &b""[..]); MAX_BLOCKS - 1];
        assert_eq!(primary(&red(&redundant, b"now")), Some(&b"now"[..]));
        let redundant = vec![(960, &b""[..]); MAX_BLOCKS];
        assert_eq!(primary(&red(&redundant, b"now")), None);
    }

    fn peer_with_red() -> rtc::peer_connection::RTCPeerConnection {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs().expect("defaults");
        register_red(&mut media_engine).expect("red");
        RTCPeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .build(Instant::now())
            .expect("peer connection")
    }

    /// The payload types of an SDP's audio m-line, in order of preference.
    fn audio_formats(sdp: &str) -> Vec<&str> {
        let line = sdp
            .lines()
            .find(|line| line.starts_with("m=audio"))
            .expect("an audio m-line");
        line.split(' ').skip(3).collect()
    }

    #[test]
    fn an_offer_with_red_registered_carries_it() {
        let mut pc = peer_with_red();
        pc.add_transceiver_from_kind(RtpCodecKind::Audio, None)
            .expect("audio transceiver");
        let sdp = pc.create_offer(None).expect("offer").sdp;
        assert!(sdp.contains("a=rtpmap:63 red/48000/2"), "{sdp}");
        assert!(sdp.contains("a=fmtp:63 111/111"), "{sdp}");
        // Opus stays the first audio codec.
        assert_eq!(audio_formats(&sdp)[0], "111", "{sdp}");
    }

    /// libwebrtc sends RED only if the answer lists it before Opus, and `rtc` answers in the
    /// offer's order (Opus first, as Chrome offers): the answerer has to ask for RED first.
    #[test]
    fn an_answer_puts_red_first_when_the_transceiver_prefers_it() {
        let mut browser = peer_with_red();
        browser
            .add_transceiver_from_kind(RtpCodecKind::Audio, None)
            .expect("audio transceiver");
        let offer = browser.create_offer(None).expect("offer");
        let mut sfu = peer_with_red();
        sfu.set_remote_description(Instant::now(), offer)
            .expect("remote offer");

        let answer = sfu.create_answer(None).expect("answer").sdp;
        assert_eq!(audio_formats(&answer)[0], "111", "{answer}");

        let id = sfu
            .get_transceivers()
            .next()
            .expect("the audio transceiver");
        let opus = RTCRtpCodecParameters {
            rtp_codec: crate::peer::opus(),
            payload_type: 111,
        };
        sfu.rtp_transceiver(id)
            .expect("transceiver")
            .set_codec_preferences(vec![red_codec(), opus])
            .expect("both negotiable");
        let answer = sfu.create_answer(None).expect("answer").sdp;
        assert_eq!(audio_formats(&answer), ["63", "111"], "{answer}");
    }
}
