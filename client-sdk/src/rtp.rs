//! Turns payloads into RTP packets: one payload per packet, as Opus wants (RFC 7587).

use bytes::Bytes;
use rtc::rtp::{Header, Packet};

use crate::tone::FRAME_SAMPLES;

/// Stamps consecutive payloads with sequence numbers and timestamps.
///
/// Every payload advances the timestamp by one 20 ms frame, so a receiver can tell how many
/// frames apart two packets are from their timestamps alone, whatever offset an SFU adds. The
/// starting sequence number and timestamp are random, as RFC 3550 §5.1 asks, so receivers cannot
/// rely on absolute values.
#[derive(Debug)]
pub(crate) struct RtpStamper {
    ssrc: u32,
    next_seq: u16,
    next_timestamp: u32,
    /// The marker bit starts a talk spurt (RFC 3551 §4.1): set on the very first packet only.
    first: bool,
}

impl RtpStamper {
    pub(crate) fn new(ssrc: u32, first_seq: u16, first_timestamp: u32) -> Self {
        Self {
            ssrc,
            next_seq: first_seq,
            next_timestamp: first_timestamp,
            first: true,
        }
    }

    pub(crate) fn stamp(&mut self, payload_type: u8, payload: Bytes) -> Packet {
        let packet = Packet {
            header: Header {
                version: 2,
                marker: self.first,
                payload_type,
                sequence_number: self.next_seq,
                timestamp: self.next_timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.first = false;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(FRAME_SAMPLES as u32);
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_consecutive_packets_and_wraps() {
        let mut stamper = RtpStamper::new(7, u16::MAX, u32::MAX - 100);
        let a = stamper.stamp(111, Bytes::from_static(b"a"));
        let b = stamper.stamp(111, Bytes::from_static(b"b"));
        let c = stamper.stamp(111, Bytes::from_static(b"c"));
        assert!(a.header.marker && !b.header.marker && !c.header.marker);
        assert_eq!(
            [
                a.header.sequence_number,
                b.header.sequence_number,
                c.header.sequence_number
            ],
            [u16::MAX, 0, 1]
        );
        assert_eq!(b.header.timestamp, (u32::MAX - 100).wrapping_add(960));
        assert_eq!(c.header.timestamp, b.header.timestamp + 960);
        assert_eq!(
            (c.header.ssrc, c.header.payload_type, c.header.version),
            (7, 111, 2)
        );
        assert_eq!(c.payload, Bytes::from_static(b"c"));
    }
}
