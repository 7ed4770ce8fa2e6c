//! VP8 frames from RTP (RFC 7741). Pure.
//!
//! Each payload starts with a descriptor: the S bit and partition index say where a frame
//! starts (S=1, partition 0), the optional fields (PictureID, TL0PICIDX, TID/KEYIDX) are skipped
//! over; the RTP marker bit ends a frame, and all packets of a frame share its RTP timestamp.
//! The frame's first bytes are the VP8 frame header (RFC 6386 §9.1), whose P bit says keyframe
//! and whose keyframe start code is followed by the picture size.
//!
//! A frame is kept only if it is whole: starts with S=1 and partition 0, ends with the marker
//! bit, no sequence number missing in between. After a frame is lost (or at the start of a
//! stream) every interframe refers to a picture the decoder never saw, so nothing is kept until
//! the next whole keyframe; that keyframe carries `lost_since`, so the stretch is marked. The
//! PictureID would tell lost frames too, but the sequence numbers already do.

use super::Frame;
use crate::reorder::Ordered;

/// The keyframe start code, after the 3-byte frame tag (RFC 6386 §9.1).
const START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// The frames of one stream (`packets` in sending order) that can be decoded.
pub fn frames(packets: &[Ordered]) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    // Whether the decoder has the picture the next interframe refers to.
    let mut reference = false;
    let mut lost_since: Option<i64> = None;
    let mut last_index: Option<i64> = None;
    for group in packets.chunk_by(|a, b| a.timestamp == b.timestamp) {
        // Just after the last frame kept, or, before any, where the stream starts.
        let lost_from = frames
            .last()
            .map_or(group[0].timestamp, |f| f.timestamp + 1);
        if last_index.is_some_and(|last| group[0].index != last + 1) {
            reference = false;
            lost_since.get_or_insert(lost_from);
        }
        last_index = Some(group[group.len() - 1].index);
        match whole_frame(group) {
            Some(mut frame) if frame.keyframe || reference => {
                frame.lost_since = lost_since.take();
                reference = true;
                frames.push(frame);
            }
            _ => {
                reference = false;
                lost_since.get_or_insert(lost_from);
            }
        }
    }
    frames
}

/// The frame made of `group` (packets sharing a timestamp), if every packet of it is there.
fn whole_frame(group: &[Ordered]) -> Option<Frame> {
    let contiguous = group.windows(2).all(|w| w[1].index == w[0].index + 1);
    let last = group.last()?;
    if !contiguous || !last.packet.marker {
        return None;
    }
    let mut data = Vec::new();
    for (i, packet) in group.iter().enumerate() {
        let descriptor = Descriptor::parse(&packet.packet.payload)?;
        if (i == 0) != descriptor.starts_frame() {
            return None;
        }
        data.extend_from_slice(&packet.packet.payload[descriptor.len..]);
    }
    Some(Frame {
        timestamp: group[0].timestamp,
        keyframe: is_keyframe(&data),
        data,
        lost_since: None,
    })
}

/// The VP8 payload descriptor's fields that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Descriptor {
    start_of_partition: bool,
    partition: u8,
    /// Its length in bytes: the VP8 data starts after it.
    len: usize,
}

impl Descriptor {
    /// RFC 7741 §4.2: X|R|N|S|R|PID, then if X: I|L|T|K|RSV, then PictureID (1 or 2 bytes, if
    /// I), TL0PICIDX (if L), TID|Y|KEYIDX (if T or K).
    fn parse(payload: &[u8]) -> Option<Descriptor> {
        let first = *payload.first()?;
        let mut len = 1;
        if first & 0x80 != 0 {
            let extension = *payload.get(1)?;
            len += 1;
            if extension & 0x80 != 0 {
                len += if *payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
            }
            if extension & 0x40 != 0 {
                len += 1;
            }
            if extension & 0x30 != 0 {
                len += 1;
            }
        }
        (len < payload.len()).then_some(Descriptor {
            start_of_partition: first & 0x10 != 0,
            partition: first & 0x07,
            len,
        })
    }

    fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition == 0
    }
}

/// Whether a VP8 frame is a keyframe: P bit 0 in the frame tag, and the start code.
pub fn is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|tag| tag & 0x01 == 0) && frame.get(3..6) == Some(&START_CODE)
}

/// A keyframe's picture size (width, height), scaling bits dropped.
pub fn dimensions(keyframe: &[u8]) -> Option<(u16, u16)> {
    if !is_keyframe(keyframe) {
        return None;
    }
    let size = keyframe.get(6..10)?;
    let width = u16::from_le_bytes([size[0], size[1]]) & 0x3fff;
    let height = u16::from_le_bytes([size[2], size[3]]) & 0x3fff;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::Packet;

    /// A keyframe's VP8 data: frame tag (P=0, show_frame), start code, size, filler.
    fn keyframe(width: u16, height: u16) -> Vec<u8> {
        let mut data = vec![0x10, 0x02, 0x00];
        data.extend_from_slice(&START_CODE);
        data.extend_from_slice(&width.to_le_bytes());
        data.extend_from_slice(&height.to_le_bytes());
        data.extend_from_slice(&[0xa5; 40]);
        data
    }

    fn interframe() -> Vec<u8> {
        let mut data = vec![0x11, 0x02, 0x00];
        data.extend_from_slice(&[0x5a; 30]);
        data
    }

    /// The packets of `data` sent as frame `timestamp`, `per_packet` bytes of VP8 data each,
    /// with a 15-bit PictureID descriptor; indexes from `first_index`.
    fn packetize(data: &[u8], timestamp: i64, first_index: i64, per_packet: usize) -> Vec<Ordered> {
        let chunks: Vec<&[u8]> = data.chunks(per_packet).collect();
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut payload = vec![if i == 0 { 0x90 } else { 0x80 }, 0x80, 0x81, 0x23];
                payload.extend_from_slice(chunk);
                Ordered {
                    packet: Packet {
                        ssrc: 1,
                        sequence: (first_index + i as i64) as u16,
                        timestamp: timestamp as u32,
                        marker: i == chunks.len() - 1,
                        payload,
                        arrival_us: 0,
                    },
                    index: first_index + i as i64,
                    timestamp,
                }
            })
            .collect()
    }

    /// Frames of the given data, 3000 ticks apart, packetized 16 bytes a packet.
    fn stream(frames: &[Vec<u8>]) -> Vec<Ordered> {
        let mut packets = Vec::new();
        for (i, data) in frames.iter().enumerate() {
            let first_index = packets.len() as i64 + 100;
            packets.extend(packetize(data, 3000 * i as i64, first_index, 16));
        }
        packets
    }

    #[test]
    fn reassembles_frames_and_finds_keyframes_and_their_size() {
        let sent = [keyframe(640, 360), interframe(), interframe()];
        let frames = frames(&stream(&sent));
        assert_eq!(frames.len(), 3);
        for (frame, data) in frames.iter().zip(&sent) {
            assert_eq!(&frame.data, data);
            assert_eq!(frame.lost_since, None);
        }
        assert!(frames[0].keyframe && !frames[1].keyframe);
        assert_eq!(dimensions(&frames[0].data), Some((640, 360)));
        assert_eq!(dimensions(&frames[1].data), None);
        assert_eq!(
            frames.iter().map(|f| f.timestamp).collect::<Vec<_>>(),
            [0, 3000, 6000]
        );
    }

    #[test]
    fn descriptors_of_every_length_are_skipped() {
        // X=0; X with 7-bit PictureID; X with 15-bit PictureID, TL0PICIDX and TID/KEYIDX.
        for (descriptor, len) in [
            (&[0x10][..], 1),
            (&[0x90, 0x80, 0x05], 3),
            (&[0x90, 0xf0, 0x81, 0x02, 0x07, 0x40], 6),
        ] {
            let mut payload = descriptor.to_vec();
            payload.push(0xee);
            let parsed = Descriptor::parse(&payload).unwrap();
            assert!(parsed.starts_frame());
            assert_eq!(parsed.len, len);
        }
        assert_eq!(Descriptor::parse(&[0x90, 0x80]), None);
    }

    #[test]
    fn the_stream_waits_for_a_keyframe_and_marks_what_it_skipped() {
        let sent = [interframe(), interframe(), keyframe(320, 180), interframe()];
        let frames = frames(&stream(&sent));
        assert_eq!(frames.len(), 2);
        assert!(frames[0].keyframe);
        assert_eq!(frames[0].timestamp, 6000);
        assert_eq!(frames[0].lost_since, Some(0));
        assert_eq!(frames[1].lost_since, None);
    }

    #[test]
    fn after_a_lost_packet_video_resumes_at_the_next_keyframe() {
        let sent = [
            keyframe(320, 180),
            interframe(),
            interframe(),
            interframe(),
            keyframe(320, 180),
            interframe(),
        ];
        let mut packets = stream(&sent);
        // The second packet of frame 1 (at 3000) is lost.
        let lost = packets.iter().position(|p| p.timestamp == 3000).unwrap() + 1;
        packets.remove(lost);
        let frames = frames(&packets);
        let timestamps: Vec<i64> = frames.iter().map(|f| f.timestamp).collect();
        assert_eq!(timestamps, [0, 12000, 15000]);
        assert_eq!(frames[1].lost_since, Some(1));
    }

    #[test]
    fn a_whole_lost_frame_is_seen_from_the_sequence_numbers() {
        let sent = [
            keyframe(320, 180),
            interframe(),
            interframe(),
            keyframe(320, 180),
        ];
        let mut packets = stream(&sent);
        packets.retain(|p| p.timestamp != 3000);
        let frames = frames(&packets);
        let timestamps: Vec<i64> = frames.iter().map(|f| f.timestamp).collect();
        assert_eq!(timestamps, [0, 9000]);
        assert_eq!(frames[1].lost_since, Some(1));
    }

    #[test]
    fn a_frame_missing_its_marker_or_its_start_is_not_kept() {
        let sent = [keyframe(320, 180), interframe(), keyframe(320, 180)];
        let mut packets = stream(&sent);
        let first_of_second = packets.iter().position(|p| p.timestamp == 3000).unwrap();
        packets[first_of_second].packet.payload[0] = 0x80; // S bit cleared
        assert_eq!(frames(&packets).len(), 2);
        let mut packets = stream(&sent);
        let last_of_first = first_of_second - 1;
        packets[last_of_first].packet.marker = false;
        let kept = frames(&packets);
        assert_eq!(kept.iter().map(|f| f.timestamp).collect::<Vec<_>>(), [6000]);
    }
}
