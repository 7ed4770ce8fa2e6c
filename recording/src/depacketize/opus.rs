//! Opus frames from RTP (RFC 7587). Pure.
//!
//! The payload is one Opus packet, which decodes on its own: nothing to reassemble, and a
//! lost packet costs only its own 20 ms. A hole in the sequence numbers marks the next frame
//! with where the audio stopped.

use super::Frame;
use crate::reorder::Ordered;

/// The Opus RTP clock rate (RFC 7587): 48 kHz whatever the audio's own rate.
pub const CLOCK_RATE: u32 = 48_000;

/// The frames of one stream (`packets` in sending order). Empty payloads carry nothing.
pub fn frames(packets: &[Ordered]) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut last_index: Option<i64> = None;
    for ordered in packets {
        let data = &ordered.packet.payload;
        let lost = last_index.is_some_and(|last| ordered.index != last + 1);
        last_index = Some(ordered.index);
        if data.is_empty() {
            continue;
        }
        let end_of_last = frames
            .last()
            .map(|f| f.timestamp + i64::from(samples(&f.data)));
        frames.push(Frame {
            timestamp: ordered.timestamp,
            data: data.clone(),
            keyframe: true,
            lost_since: end_of_last.filter(|_| lost),
        });
    }
    frames
}

/// How many 48 kHz samples an Opus packet holds (RFC 6716 §3.1): the TOC byte's configuration
/// gives the frame duration, its code the frame count. 0 for a malformed packet.
pub fn samples(packet: &[u8]) -> u32 {
    let Some(&toc) = packet.first() else {
        return 0;
    };
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let count = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(0, |byte| u32::from(byte & 0x3f)),
    };
    frame * count
}

/// The identification header of an Opus stream (RFC 7845 §5.1): an Ogg file's first packet,
/// and a WebM track's CodecPrivate. Pre-skip 0: a recording joins the sender's encoder
/// mid-stream, there is no encoder start-up delay to trim.
pub fn head(channels: u8) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1); // version
    head.push(channels);
    head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    head.extend_from_slice(&CLOCK_RATE.to_le_bytes()); // input sample rate, informational
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family 0: mono or stereo
    head
}

/// Opus packets lasting `samples` (rounded down to 2.5 ms) that carry no audio: each is a TOC
/// byte alone, a CELT frame of 0 bytes, which a decoder treats as a lost frame (RFC 6716
/// §3.2.1). Durations 20, 10, 5 and 2.5 ms, longest first.
pub fn concealment(samples: u32) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut left = samples;
    // CELT fullband configurations 31 to 28: 20, 10, 5, 2.5 ms.
    for (config, duration) in [(31u8, 960), (30, 480), (29, 240), (28, 120)] {
        while left >= duration {
            packets.push(vec![config << 3]);
            left -= duration;
        }
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::Packet;

    fn ordered(index: i64, payload: Vec<u8>) -> Ordered {
        Ordered {
            packet: Packet {
                ssrc: 1,
                sequence: index as u16,
                timestamp: (index * 960) as u32,
                marker: false,
                payload,
                arrival_us: 0,
            },
            index,
            timestamp: index * 960,
        }
    }

    #[test]
    fn samples_follow_the_toc_byte() {
        let encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip);
        let mut encoder = encoder.unwrap();
        let packet = encoder.encode_vec(&[0i16; 960], 400).unwrap();
        assert_eq!(samples(&packet), 960);
        assert_eq!(samples(&[0xfc]), 960); // CELT 20 ms, code 0
        assert_eq!(samples(&[3 << 3]), 2880); // SILK 60 ms, code 0
        assert_eq!(samples(&[0xf9]), 1920); // CELT 20 ms, code 1: two frames
        assert_eq!(samples(&[0x03 | (16 << 3), 0x05]), 5 * 120); // CELT 2.5 ms, 5 frames
        assert_eq!(samples(&[]), 0);
    }

    #[test]
    fn concealment_lasts_as_asked_to_2_5_ms() {
        for asked in [0, 119, 120, 960, 1000, 48_000 + 359] {
            let packets = concealment(asked);
            let total: u32 = packets.iter().map(|p| samples(p)).sum();
            assert_eq!(total, asked / 120 * 120);
            assert!(packets.iter().all(|p| p.len() == 1));
        }
        let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut out = [0i16; 960];
        assert_eq!(
            decoder
                .decode(&concealment(960)[0], &mut out, false)
                .unwrap(),
            960
        );
    }

    #[test]
    fn one_frame_a_packet_and_a_hole_marks_where_audio_stopped() {
        let packet = vec![0xfc, 1, 2, 3];
        let packets: Vec<Ordered> = [0, 1, 2, 5, 6]
            .map(|i| ordered(i, packet.clone()))
            .into_iter()
            .collect();
        let frames = frames(&packets);
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[3].timestamp, 5 * 960);
        assert_eq!(frames[3].lost_since, Some(3 * 960));
        assert!(
            frames
                .iter()
                .enumerate()
                .all(|(i, f)| i == 3 || f.lost_since.is_none())
        );
    }
}
