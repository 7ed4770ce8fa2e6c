//! What travels on a link between nodes, as bytes; no I/O here.
//!
//! - **Datagrams** carry one RTP or RTCP packet each, after a flow id written as a QUIC
//!   variable-length integer (RFC 9000 §16), as in the IETF RTP-over-QUIC draft
//!   (draft-ietf-avtcore-rtp-over-quic): the receiver chose the flow id when it subscribed, so it
//!   knows the track at once. RTP and RTCP share a flow and are told apart as in RFC 5761.
//! - **Control messages** go on one reliable bidirectional stream, each a 4-byte big-endian
//!   length and that many bytes of JSON: rare and small, so readability wins over compactness.
//!
//! Everything decoded here comes from another node over the network: decoding never panics, and
//! malformed input is an error value.

use serde::{Deserialize, Serialize};

/// The largest value a QUIC variable-length integer holds (2^62 - 1).
pub const MAX_VARINT: u64 = (1 << 62) - 1;

/// The most bytes a flow id takes on the wire. Flow ids below 2^30 (any a node hands out in
/// practice) take 4 bytes at most, below 64 one byte.
pub const MAX_FLOW_ID_LEN: usize = 8;

/// The largest control message body accepted. Control messages are a few hundred bytes; a larger
/// length means a broken or hostile peer, and reading on would only buffer its garbage.
pub const MAX_CONTROL_LEN: usize = 64 * 1024;

/// The smallest RTP packet: the fixed 12-byte header.
const RTP_HEADER_LEN: usize = 12;
/// The smallest RTCP compound packet: a receiver report without report blocks.
const RTCP_MIN_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty datagram or truncated flow id")]
    TruncatedFlowId,
    #[error("flow id {0} does not fit a QUIC variable-length integer")]
    FlowIdTooLarge(u64),
    #[error("{0} bytes are too short for an RTP or RTCP packet")]
    PacketTooShort(usize),
    #[error("not an RTP/RTCP version 2 packet")]
    BadVersion,
    #[error("control message of {0} bytes exceeds the {MAX_CONTROL_LEN}-byte limit")]
    ControlTooLarge(usize),
    #[error("malformed control message: {0}")]
    MalformedControl(String),
    #[error("stale epoch {got} for room {room}: the current lease is epoch {current}")]
    StaleEpoch {
        room: String,
        got: u64,
        current: u64,
    },
}

/// Appends `value` as a QUIC variable-length integer, in the shortest form.
pub fn write_varint(value: u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
    match value {
        0..=0x3f => out.push(value as u8),
        0x40..=0x3fff => out.extend_from_slice(&(value as u16 | 0x4000).to_be_bytes()),
        0x4000..=0x3fff_ffff => out.extend_from_slice(&(value as u32 | 0x8000_0000).to_be_bytes()),
        0x4000_0000..=MAX_VARINT => {
            out.extend_from_slice(&(value | 0xc000_0000_0000_0000).to_be_bytes())
        }
        _ => return Err(FrameError::FlowIdTooLarge(value)),
    }
    Ok(())
}

/// Reads a QUIC variable-length integer at the start of `buf`: its value and its length.
pub fn read_varint(buf: &[u8]) -> Result<(u64, usize), FrameError> {
    let first = *buf.first().ok_or(FrameError::TruncatedFlowId)?;
    // The two high bits give the length: 1, 2, 4 or 8 bytes.
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len).ok_or(FrameError::TruncatedFlowId)?;
    let value = bytes[1..]
        .iter()
        .fold(u64::from(first & 0x3f), |acc, &b| (acc << 8) | u64::from(b));
    Ok((value, len))
}

/// Whether a datagram carries RTP or RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Rtp,
    Rtcp,
}

/// A decoded datagram: the packet borrows from the datagram's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub flow: u64,
    pub kind: PacketKind,
    pub packet: &'a [u8],
}

/// The datagram carrying `packet` (RTP or RTCP) on `flow`.
pub fn encode_datagram(flow: u64, packet: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(MAX_FLOW_ID_LEN + packet.len());
    write_varint(flow, &mut out)?;
    out.extend_from_slice(packet);
    Ok(out)
}

/// Splits a datagram into its flow id and packet, and checks that the packet looks like RTP or
/// RTCP (version 2, long enough for its fixed header and CSRC list). What lies beyond the fixed
/// header is for the RTP and RTCP parsers downstream.
pub fn decode_datagram(datagram: &[u8]) -> Result<Datagram<'_>, FrameError> {
    let (flow, len) = read_varint(datagram)?;
    let packet = &datagram[len..];
    let (Some(&first), Some(&second)) = (packet.first(), packet.get(1)) else {
        return Err(FrameError::PacketTooShort(packet.len()));
    };
    if first >> 6 != 2 {
        return Err(FrameError::BadVersion);
    }
    // RFC 5761 §4: a second byte of 192..=223 is an RTCP packet type (SR is 200, RR 201, ...);
    // RTP payload types there would collide, so WebRTC never uses them.
    let (kind, min_len) = if (192..=223).contains(&second) {
        (PacketKind::Rtcp, RTCP_MIN_LEN)
    } else {
        let csrc_count = usize::from(first & 0x0f);
        (PacketKind::Rtp, RTP_HEADER_LEN + 4 * csrc_count)
    };
    if packet.len() < min_len {
        return Err(FrameError::PacketTooShort(packet.len()));
    }
    Ok(Datagram { flow, kind, packet })
}

/// The first control message each side sends: who it is, and which lease of which room it acts
/// for. A node that has seen a newer lease of the room refuses the link, so a former origin that
/// lost its lease (and does not know it yet) cannot feed media into the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub node_id: String,
    pub region: String,
    pub room: String,
    /// The room's origin lease epoch (`aula_signaling::cluster`), rising with every claim.
    pub epoch: u64,
}

impl Hello {
    /// Refuses a hello whose epoch is older than `current`, the newest epoch this node knows for
    /// the room. A newer epoch is accepted: the peer may simply have heard of the claim first.
    pub fn check_epoch(&self, current: u64) -> Result<(), FrameError> {
        if self.epoch < current {
            return Err(FrameError::StaleEpoch {
                room: self.room.clone(),
                got: self.epoch,
                current,
            });
        }
        Ok(())
    }
}

/// A message on a link's control stream. Tracks are named by their SFU track id; simulcast layers
/// by their spatial index (0 = lowest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    Hello(Hello),
    /// Send me this track's layers, in datagrams on `flow` (chosen by the subscriber, so that it
    /// knows each arriving datagram's track from its flow id alone).
    Subscribe {
        track: String,
        flow: u64,
        layers: Vec<u8>,
    },
    Unsubscribe {
        track: String,
    },
    /// The layers the subscriber's participants want now (replaces the previous demand).
    LayerDemand {
        track: String,
        layers: Vec<u8>,
    },
    /// The worst loss (in 256ths) among the subscriber's listeners of an audio track that have
    /// no RED, so that the publisher is asked for Opus in-band FEC (replaces the previous one).
    ListenerLoss {
        track: String,
        fraction: u8,
    },
    /// One request per track and layer, however many participants behind the node asked.
    KeyframeRequest {
        track: String,
        layer: u8,
    },
    /// These packets of a track's layer were lost on the link: resend them (see
    /// `relay::repair`).
    Nack {
        track: String,
        layer: u8,
        seqs: Vec<u16>,
    },
    /// A publisher's RTCP sender report, so subscribers behind the node keep lip sync.
    SenderReport {
        track: String,
        ssrc: u32,
        ntp_time: u64,
        rtp_time: u32,
        packets: u32,
        octets: u32,
    },
    /// What the sender of this message received on the link, for the other side's loss figures.
    Stats {
        datagrams_received: u64,
        bytes_received: u64,
    },
    /// A command of the room's origin to the media plane of the node it placed participants
    /// on; answered by a [`Control::Reply`] with the same id. The body is the control plane's
    /// business (`aula_signaling::cluster::relay`), opaque here.
    Call {
        id: u64,
        body: serde_json::Value,
    },
    Reply {
        id: u64,
        result: Result<serde_json::Value, serde_json::Value>,
    },
    /// What happened in the media plane of a node to the participants the origin placed there.
    Event {
        body: serde_json::Value,
    },
}

impl Control {
    /// The message as it goes on the stream: length, then JSON.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("control messages always serialize");
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a message body (after its length), checking what JSON alone does not.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let message: Control = serde_json::from_slice(body)
            .map_err(|e| FrameError::MalformedControl(e.to_string()))?;
        if let Control::Subscribe { flow, .. } = message
            && flow > MAX_VARINT
        {
            return Err(FrameError::FlowIdTooLarge(flow));
        }
        Ok(message)
    }
}

/// The body length announced by a control message's 4-byte header.
pub fn control_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_CONTROL_LEN {
        return Err(FrameError::ControlTooLarge(len));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(payload_len: usize) -> Vec<u8> {
        let mut packet = vec![0x80, 96, 0, 1, 0, 0, 0, 10, 0xde, 0xad, 0xbe, 0xef];
        packet.extend((0..payload_len).map(|i| i as u8));
        packet
    }

    #[test]
    fn varints_match_rfc_9000_examples() {
        // RFC 9000 appendix A.1.
        let examples: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in examples {
            assert_eq!(read_varint(bytes), Ok((value, bytes.len())));
            let mut out = Vec::new();
            write_varint(value, &mut out).unwrap();
            assert_eq!(out, bytes);
        }
        // A longer encoding than needed still decodes (the RFC allows it).
        assert_eq!(read_varint(&[0x40, 0x25]), Ok((37, 2)));
    }

    #[test]
    fn varint_limits() {
        for value in [
            0,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            MAX_VARINT,
        ] {
            let mut out = Vec::new();
            write_varint(value, &mut out).unwrap();
            assert_eq!(read_varint(&out), Ok((value, out.len())));
        }
        assert_eq!(
            write_varint(MAX_VARINT + 1, &mut Vec::new()),
            Err(FrameError::FlowIdTooLarge(MAX_VARINT + 1))
        );
        assert_eq!(read_varint(&[]), Err(FrameError::TruncatedFlowId));
        assert_eq!(read_varint(&[0xc0, 1, 2]), Err(FrameError::TruncatedFlowId));
    }

    #[test]
    fn rtp_and_rtcp_datagrams_round_trip() {
        let packet = rtp(1000);
        let datagram = encode_datagram(300, &packet).unwrap();
        assert_eq!(datagram.len(), 2 + packet.len());
        assert_eq!(
            decode_datagram(&datagram),
            Ok(Datagram {
                flow: 300,
                kind: PacketKind::Rtp,
                packet: &packet
            })
        );

        let receiver_report = [0x80, 201, 0, 1, 0, 0, 0, 7];
        let datagram = encode_datagram(5, &receiver_report).unwrap();
        let decoded = decode_datagram(&datagram).unwrap();
        assert_eq!((decoded.flow, decoded.kind), (5, PacketKind::Rtcp));
        assert_eq!(decoded.packet, receiver_report);
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        assert_eq!(decode_datagram(&[]), Err(FrameError::TruncatedFlowId));
        assert_eq!(decode_datagram(&[0x40]), Err(FrameError::TruncatedFlowId));
        assert_eq!(decode_datagram(&[1]), Err(FrameError::PacketTooShort(0)));
        assert_eq!(
            decode_datagram(&[1, 0x80]),
            Err(FrameError::PacketTooShort(1))
        );
        let mut not_rtp = encode_datagram(1, &rtp(10)).unwrap();
        not_rtp[1] = 0x40; // version 1
        assert_eq!(decode_datagram(&not_rtp), Err(FrameError::BadVersion));
        // An RTP header announcing two CSRCs it does not have.
        let mut short = rtp(0);
        short[0] |= 2;
        let datagram = encode_datagram(1, &short).unwrap();
        assert_eq!(
            decode_datagram(&datagram),
            Err(FrameError::PacketTooShort(12))
        );
        let rtcp_header_only = encode_datagram(1, &[0x80, 200, 0, 0]).unwrap();
        assert_eq!(
            decode_datagram(&rtcp_header_only),
            Err(FrameError::PacketTooShort(4))
        );
    }

    #[test]
    fn every_truncation_of_a_datagram_is_an_error_not_a_panic() {
        let datagram = encode_datagram(1 << 20, &rtp(20)).unwrap();
        for len in 0..4 + RTP_HEADER_LEN {
            assert!(decode_datagram(&datagram[..len]).is_err(), "length {len}");
        }
        assert!(decode_datagram(&datagram).is_ok());
    }

    fn messages() -> Vec<Control> {
        vec![
            Control::Hello(Hello {
                node_id: "eu-west-1".into(),
                region: "eu-west".into(),
                room: "maths".into(),
                epoch: 3,
            }),
            Control::Subscribe {
                track: "TR_1".into(),
                flow: 7,
                layers: vec![0, 1, 2],
            },
            Control::Unsubscribe {
                track: "TR_1".into(),
            },
            Control::LayerDemand {
                track: "TR_1".into(),
                layers: vec![0],
            },
            Control::ListenerLoss {
                track: "TR_1".into(),
                fraction: 51,
            },
            Control::KeyframeRequest {
                track: "TR_1".into(),
                layer: 2,
            },
            Control::SenderReport {
                track: "TR_1".into(),
                ssrc: 1234,
                ntp_time: 0xdead_beef_0000_0001,
                rtp_time: 90_000,
                packets: 10,
                octets: 12_000,
            },
            Control::Stats {
                datagrams_received: 1000,
                bytes_received: 1_200_000,
            },
        ]
    }

    #[test]
    fn control_messages_round_trip() {
        for message in messages() {
            let frame = message.encode();
            let len = control_len(frame[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, frame.len() - 4);
            assert_eq!(Control::decode(&frame[4..]), Ok(message));
        }
    }

    #[test]
    fn malformed_control_messages_are_errors() {
        assert_eq!(
            control_len(((MAX_CONTROL_LEN + 1) as u32).to_be_bytes()),
            Err(FrameError::ControlTooLarge(MAX_CONTROL_LEN + 1))
        );
        assert_eq!(
            control_len(u32::MAX.to_be_bytes()),
            Err(FrameError::ControlTooLarge(u32::MAX as usize))
        );
        for body in [
            &b""[..],
            b"{",
            b"null",
            b"{\"type\":\"launch_missiles\"}",
            b"{\"type\":\"unsubscribe\"}",
            b"{\"type\":\"keyframe_request\",\"track\":\"t\",\"layer\":300}",
        ] {
            assert!(
                matches!(Control::decode(body), Err(FrameError::MalformedControl(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let huge_flow = format!(
            "{{\"type\":\"subscribe\",\"track\":\"t\",\"flow\":{},\"layers\":[]}}",
            MAX_VARINT + 1
        );
        assert_eq!(
            Control::decode(huge_flow.as_bytes()),
            Err(FrameError::FlowIdTooLarge(MAX_VARINT + 1))
        );
    }

    #[test]
    fn a_stale_epoch_is_refused() {
        let hello = Hello {
            node_id: "us-east-1".into(),
            region: "us-east".into(),
            room: "maths".into(),
            epoch: 4,
        };
        assert_eq!(
            hello.check_epoch(5),
            Err(FrameError::StaleEpoch {
                room: "maths".into(),
                got: 4,
                current: 5
            })
        );
        assert_eq!(hello.check_epoch(4), Ok(()));
        assert_eq!(
            hello.check_epoch(3),
            Ok(()),
            "a newer lease than we know of"
        );
    }
}
