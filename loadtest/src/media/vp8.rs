//! Synthetic VP8 RTP payloads: no encoder, but the shape an SFU inspects is real.
//!
//! An SFU never decodes video, but it does read the VP8 payload descriptor (RFC 7741 §4.2) to
//! find keyframes: it starts a subscriber, and switches simulcast layers, only on a keyframe.
//! So every packet carries a correct descriptor (X=1 with a 15-bit PictureID, as browsers
//! send), and the first packet of each frame (S=1, PID=0) starts with a VP8 frame tag whose
//! inverse keyframe bit P is 0 on keyframes — plus, on keyframes, the start code and picture
//! size (RFC 6386 §9.1). After those headers every packet carries the 8-byte send time
//! ([`crate::clock::Epoch`] microseconds, big-endian) that subscribers turn into latency;
//! the rest is filler up to the frame's size.

use bytes::{BufMut, Bytes, BytesMut};

/// Descriptor length we write: X|S|PID, then I, then a 15-bit PictureID (M=1).
const DESCRIPTOR_LEN: usize = 4;
/// VP8 frame tag (3 bytes); keyframes add the start code and the picture size (7 bytes).
const FRAME_TAG_LEN: usize = 3;
const KEYFRAME_HEADER_LEN: usize = FRAME_TAG_LEN + 7;
const TIMESTAMP_LEN: usize = 8;
/// Filler byte; anything works, a constant keeps payloads deterministic.
const FILLER: u8 = 0xa5;

/// One video frame to packetize.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub keyframe: bool,
    /// Bytes of VP8 data in the frame (headers included), spread over its packets.
    pub size: usize,
    pub width: u16,
    pub height: u16,
    /// Send time, microseconds since the epoch.
    pub sent_at: u64,
}

/// Splits frames into RTP payloads, keeping the PictureID running as an encoder would.
#[derive(Debug, Clone)]
pub struct Vp8Packetizer {
    picture_id: u16,
    /// Largest RTP payload; browsers stay near 1200 bytes so SRTP and headers fit the MTU.
    max_payload: usize,
}

impl Vp8Packetizer {
    pub fn new(first_picture_id: u16, max_payload: usize) -> Self {
        Self {
            picture_id: first_picture_id & 0x7fff,
            // Room for the descriptor, the keyframe header and the timestamp at least.
            max_payload: max_payload.max(DESCRIPTOR_LEN + KEYFRAME_HEADER_LEN + TIMESTAMP_LEN + 1),
        }
    }

    /// The frame's RTP payloads in order; the last one gets the RTP marker bit.
    pub fn packetize(&mut self, frame: Frame) -> Vec<Bytes> {
        let picture_id = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        let header_len = if frame.keyframe {
            KEYFRAME_HEADER_LEN
        } else {
            FRAME_TAG_LEN
        };
        let mut remaining = frame.size.max(header_len + TIMESTAMP_LEN);
        let mut packets = Vec::with_capacity(remaining.div_ceil(self.max_payload - DESCRIPTOR_LEN));
        let mut first = true;
        while remaining > 0 {
            let room = self.max_payload - DESCRIPTOR_LEN;
            let mut body = BytesMut::with_capacity(self.max_payload);
            body.put_u8(0x80 | if first { 0x10 } else { 0 }); // X, S, PID=0
            body.put_u8(0x80); // I: PictureID present
            body.put_u16(0x8000 | picture_id); // M=1: 15-bit PictureID
            if first {
                put_frame_header(&mut body, frame, remaining);
            }
            body.put_u64(frame.sent_at);
            let used = body.len() - DESCRIPTOR_LEN;
            let take = remaining.min(room).max(used);
            body.put_bytes(FILLER, take - used);
            remaining = remaining.saturating_sub(take);
            packets.push(body.freeze());
            first = false;
        }
        packets
    }
}

/// RFC 6386 §9.1: 3-byte frame tag (P, version 0, show_frame, first partition size), then on
/// keyframes the start code 9d 01 2a and 14-bit width and height (scale 0), little-endian.
fn put_frame_header(body: &mut BytesMut, frame: Frame, size: usize) {
    // The first partition size is 19 bits; any plausible value does, the SFU never reads it.
    let partition = u32::try_from(size.min(0x7_ffff)).unwrap_or(0x7_ffff);
    let inverse_key = u32::from(!frame.keyframe);
    let tag = inverse_key | 0x10 | (partition << 5);
    body.put_u8(tag as u8);
    body.put_u8((tag >> 8) as u8);
    body.put_u8((tag >> 16) as u8);
    if frame.keyframe {
        body.put_slice(&[0x9d, 0x01, 0x2a]);
        body.put_u16_le(frame.width & 0x3fff);
        body.put_u16_le(frame.height & 0x3fff);
    }
}

/// What a subscriber reads back from a payload without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// First packet of a frame (S bit, partition 0).
    pub start: bool,
    /// First packet of a keyframe.
    pub keyframe: bool,
    pub sent_at: u64,
}

/// Parses a payload this module wrote (any RFC 7741 descriptor is understood). `None` when it
/// is too short or not ours: the caller counts the packet but has no latency for it.
pub fn parse(payload: &[u8]) -> Option<Parsed> {
    let first = *payload.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(at)?;
        at += 1;
        if ext & 0x80 != 0 {
            at += if *payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    let starts_frame = first & 0x10 != 0 && first & 0x07 == 0;
    let mut keyframe = false;
    if starts_frame {
        keyframe = *payload.get(at)? & 0x01 == 0;
        at += if keyframe {
            KEYFRAME_HEADER_LEN
        } else {
            FRAME_TAG_LEN
        };
    }
    let stamp: [u8; TIMESTAMP_LEN] = payload.get(at..at + TIMESTAMP_LEN)?.try_into().ok()?;
    Some(Parsed {
        start: starts_frame,
        keyframe,
        sent_at: u64::from_be_bytes(stamp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(keyframe: bool, size: usize) -> Frame {
        Frame {
            keyframe,
            size,
            width: 1280,
            height: 720,
            sent_at: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn keyframe_descriptor_and_header() {
        let mut p = Vp8Packetizer::new(0x7ffe, 1200);
        let packets = p.packetize(frame(true, 3000));
        assert_eq!(packets.len(), 3);
        let first = &packets[0];
        assert_eq!(first[0], 0x90, "X=1, S=1, PID=0");
        assert_eq!(first[1], 0x80, "I=1");
        assert_eq!(u16::from_be_bytes([first[2], first[3]]), 0x8000 | 0x7ffe);
        assert_eq!(first[4] & 0x01, 0, "P=0 on a keyframe");
        assert_eq!(&first[7..10], &[0x9d, 0x01, 0x2a], "start code");
        assert_eq!(u16::from_le_bytes([first[10], first[11]]), 1280);
        for later in &packets[1..] {
            assert_eq!(later[0], 0x80, "S=0 on continuation packets");
        }
        let total: usize = packets.iter().map(|p| p.len() - DESCRIPTOR_LEN).sum();
        assert_eq!(total, 3000, "the frame's bytes are all there");
        assert!(packets.iter().all(|p| p.len() <= 1200));
        // The PictureID wraps at 15 bits.
        let next = p.packetize(frame(false, 100));
        assert_eq!(
            u16::from_be_bytes([next[0][2], next[0][3]]),
            0x8000 | 0x7fff
        );
        let wrapped = p.packetize(frame(false, 100));
        assert_eq!(u16::from_be_bytes([wrapped[0][2], wrapped[0][3]]), 0x8000);
    }

    #[test]
    fn interframe_has_p_bit_set() {
        let packets = Vp8Packetizer::new(1, 1200).packetize(frame(false, 500));
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0][4] & 0x01, 1);
        assert_eq!(packets[0].len(), 504);
    }

    #[test]
    fn parse_reads_back_every_packet() {
        let mut p = Vp8Packetizer::new(5, 1000);
        for keyframe in [true, false] {
            let packets = p.packetize(frame(keyframe, 2500));
            let parsed: Vec<Parsed> = packets.iter().map(|b| parse(b).unwrap()).collect();
            assert_eq!(parsed[0].keyframe, keyframe);
            assert!(parsed[1..].iter().all(|x| !x.keyframe));
            assert!(parsed.iter().all(|x| x.sent_at == 0x0102_0304_0506_0708));
        }
    }

    #[test]
    fn tiny_frames_still_carry_headers_and_stamp() {
        let packets = Vp8Packetizer::new(0, 1200).packetize(frame(true, 1));
        assert_eq!(packets.len(), 1);
        assert!(parse(&packets[0]).unwrap().keyframe);
    }

    #[test]
    fn parse_rejects_truncated_input() {
        let packets = Vp8Packetizer::new(0, 1200).packetize(frame(true, 100));
        for len in 0..DESCRIPTOR_LEN + KEYFRAME_HEADER_LEN + TIMESTAMP_LEN {
            assert_eq!(parse(&packets[0][..len]), None, "len {len}");
        }
    }

    #[test]
    fn aula_keyframe_rule_agrees() {
        // The SFU's rule (sfu/src/codec.rs): skip the descriptor, bit 0 of the next byte is P.
        let key = Vp8Packetizer::new(0, 1200).packetize(frame(true, 100));
        let inter = Vp8Packetizer::new(0, 1200).packetize(frame(false, 100));
        assert_eq!(key[0][DESCRIPTOR_LEN] & 1, 0);
        assert_eq!(inter[0][DESCRIPTOR_LEN] & 1, 1);
    }
}
