//! The write-path stage that turns the router's FEC placeholders into ULPFEC packets (see the
//! module docs of [`super`] for why it sits here, wire-side of transport-wide numbering).
//!
//! For each stream it keeps the RED-wrapped media packets sent since the last FEC packets,
//! in the form the receiver rebuilds before decoding FEC: the RED header taken off, the
//! block's payload type put in, the extensions written at send time zeroed. A placeholder
//! names its group of [`super::plan`]; the stage puts the group's parity in its place. The
//! first media packet after FEC packets starts the next frame's set.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::Marshal;
use tracing::debug;

use super::{RED_PAYLOAD_TYPE, ULPFEC_PAYLOAD_TYPE, plan, read_placeholder, ulpfec, unwrap};
use crate::metrics::SfuMetrics;

/// Position in the chain: between `Slot::TwccSender` (2_000), which adds the transport-wide
/// number's extension, and `Slot::CongestionControl` (1_000), which records sizes.
pub const SLOT: usize = 1_500;

/// Header extensions whose values a sender writes as a packet leaves, and which Chromium's
/// FEC receiver therefore zeroes in every packet before XOR-ing it (`ZeroMutableExtensions`).
const WRITTEN_AT_SEND: [&str; 4] = [
    crate::feedback_loss::TRANSPORT_CC_URI,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "urn:ietf:params:rtp-hdrext:toffset",
    "http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
];

/// Most media packets kept for one frame's FEC: a keyframe of a large screen share. Older
/// ones go unprotected (NACK still repairs them).
const MAX_PENDING: usize = 512;

#[derive(Default)]
struct Stream {
    /// Ids of the [`WRITTEN_AT_SEND`] extensions negotiated on the stream.
    zeroed: Vec<u8>,
    /// The frame's packets as the receiver will see them (see the module docs).
    pending: VecDeque<Vec<u8>>,
    /// Whether the last packet was FEC: the next media packet starts a new frame.
    after_fec: bool,
}

pub struct FecStage {
    metrics: SfuMetrics,
    streams: HashMap<u32, Stream>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl FecStage {
    pub fn new(metrics: SfuMetrics) -> Self {
        Self {
            metrics,
            streams: HashMap::new(),
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    fn on_red(&mut self, packet: &mut rtc::rtp::Packet) {
        let Some(stream) = self.streams.get_mut(&packet.header.ssrc) else {
            return;
        };
        if let Some((group, protection)) = read_placeholder(&packet.payload) {
            stream.after_fec = true;
            let packets: Vec<&[u8]> = stream.pending.iter().map(Vec::as_slice).collect();
            let groups = plan(packets.len(), protection);
            let parity = groups.get(group).or(groups.last()).and_then(|group| {
                ulpfec::encode(&group.iter().map(|&i| packets[i]).collect::<Vec<_>>())
            });
            match parity {
                Some(parity) => {
                    let mut payload = BytesMut::with_capacity(1 + parity.len());
                    payload.put_u8(ULPFEC_PAYLOAD_TYPE);
                    payload.put_slice(&parity);
                    packet.payload = payload.freeze();
                    self.metrics.fec_packets_sent.inc();
                }
                // Nothing sent since the stream was bound: the placeholder goes as it is, a
                // malformed FEC packet the receiver discards, so that its number is no gap.
                None => debug!(
                    ssrc = packet.header.ssrc,
                    "FEC placeholder with nothing to protect"
                ),
            }
            return;
        }
        let Some((payload_type, data)) = unwrap(&packet.payload) else {
            return;
        };
        if std::mem::take(&mut stream.after_fec) {
            stream.pending.clear();
        }
        let mut view = packet.clone();
        view.header.payload_type = payload_type;
        view.payload = Bytes::copy_from_slice(data);
        for extension in &mut view.header.extensions {
            if stream.zeroed.contains(&extension.id) {
                extension.payload = Bytes::from(vec![0; extension.payload.len()]);
            }
        }
        match view.marshal() {
            Ok(bytes) => {
                if stream.pending.len() == MAX_PENDING {
                    stream.pending.pop_front();
                }
                stream.pending.push_back(bytes.to_vec());
            }
            Err(e) => debug!(error = %e, "packet to protect does not marshal"),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FecStage {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet
            && packet.header.payload_type == RED_PAYLOAD_TYPE
        {
            self.on_red(packet);
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for FecStage {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let zeroed = info
            .rtp_header_extensions
            .iter()
            .filter(|e| WRITTEN_AT_SEND.contains(&e.uri.as_str()))
            .filter_map(|e| u8::try_from(e.id).ok())
            .collect();
        self.streams.insert(
            info.ssrc,
            Stream {
                zeroed,
                ..Stream::default()
            },
        );
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use rtc::interceptor::{AttributedPacket, RTPHeaderExtension};
    use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
    use rtc::shared::TransportContext;

    use super::*;
    use crate::fec::{Protection, placeholder, wrap};

    const SSRC: u32 = 42;
    const TWCC_ID: u8 = 3;
    const MID_ID: u8 = 4;

    fn stage() -> FecStage {
        let mut stage = FecStage::new(SfuMetrics::register(&prometheus::Registry::new()).unwrap());
        stage.bind_local_stream(&StreamInfo {
            ssrc: SSRC,
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: WRITTEN_AT_SEND[0].to_owned(),
                id: u16::from(TWCC_ID),
            }],
            ..Default::default()
        });
        stage
    }

    /// A packet as it reaches the stage: numbered for transport-wide feedback (`twcc`), with
    /// a MID extension that the parity must cover as it is.
    fn packet(seq: u16, twcc: u16, payload: Bytes) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: Header {
                version: 2,
                extension: true,
                extension_profile: EXTENSION_PROFILE_ONE_BYTE,
                extensions: vec![
                    Extension {
                        id: MID_ID,
                        payload: Bytes::from_static(b"1"),
                    },
                    Extension {
                        id: TWCC_ID,
                        payload: Bytes::copy_from_slice(&twcc.to_be_bytes()),
                    },
                ],
                payload_type: RED_PAYLOAD_TYPE,
                sequence_number: seq,
                timestamp: 3_000,
                marker: seq == 102,
                ssrc: SSRC,
                ..Default::default()
            },
            payload,
        }
    }

    fn send(stage: &mut FecStage, packet: rtc::rtp::Packet) -> rtc::rtp::Packet {
        stage
            .handle_write(TaggedPacket {
                now: Instant::now(),
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)),
            })
            .unwrap();
        match stage.poll_write().unwrap().message.packet {
            Packet::Rtp(packet) => packet,
            _ => unreachable!(),
        }
    }

    /// What a receiver rebuilds from a RED-wrapped packet before decoding FEC: payload type
    /// 96 and the VP8 payload, its transport-wide number zeroed.
    fn as_received(sent: &rtc::rtp::Packet) -> Vec<u8> {
        let mut view = sent.clone();
        let (payload_type, data) = unwrap(&sent.payload).unwrap();
        view.header.payload_type = payload_type;
        view.payload = Bytes::copy_from_slice(data);
        view.header.extensions[1].payload = Bytes::from_static(&[0, 0]);
        view.marshal().unwrap().to_vec()
    }

    #[test]
    fn placeholders_become_fec_packets_that_rebuild_a_lost_packet_of_their_group() {
        let mut stage = stage();
        let sent: Vec<rtc::rtp::Packet> = (100..103)
            .map(|seq| {
                let vp8 = Bytes::from(vec![seq as u8; 50 + usize::from(seq) % 7]);
                send(&mut stage, packet(seq, seq + 1000, wrap(96, &vp8)))
            })
            .collect();
        // Pairs: groups {0, 2} and {1}.
        let protection = Protection(3);
        let fec: Vec<rtc::rtp::Packet> = (0..2)
            .map(|group| {
                send(
                    &mut stage,
                    packet(103 + group as u16, 0, placeholder(group, protection)),
                )
            })
            .collect();
        let received: Vec<Vec<u8>> = sent.iter().map(as_received).collect();
        let parity = |p: &rtc::rtp::Packet| {
            let (payload_type, data) = unwrap(&p.payload).unwrap();
            assert_eq!(payload_type, ULPFEC_PAYLOAD_TYPE);
            data.to_vec()
        };
        let rebuilt = ulpfec::recover(&parity(&fec[0]), &[&received[2][..]], SSRC);
        assert_eq!(
            rebuilt.as_ref(),
            Some(&received[0]),
            "packet 100 from 102 and FEC"
        );
        let rebuilt = ulpfec::recover(&parity(&fec[1]), &[], SSRC);
        assert_eq!(
            rebuilt.as_ref(),
            Some(&received[1]),
            "packet 101, alone in its group"
        );
        assert_eq!(stage.metrics.fec_packets_sent.get(), 2);
    }

    #[test]
    fn each_frame_is_protected_on_its_own_and_other_packets_pass_untouched() {
        let mut stage = stage();
        send(&mut stage, packet(100, 1, wrap(96, b"first frame")));
        send(&mut stage, packet(101, 2, placeholder(0, Protection(4))));
        let second = send(&mut stage, packet(102, 3, wrap(96, b"second frame")));
        let fec = send(&mut stage, packet(103, 4, placeholder(0, Protection(4))));
        let header = ulpfec::parse(unwrap(&fec.payload).unwrap().1).unwrap();
        assert_eq!(header.protected, [102]);
        assert_eq!(
            second.payload,
            wrap(96, b"second frame"),
            "media goes as it came"
        );
        let mut plain = packet(104, 5, Bytes::from_static(b"vp8"));
        plain.header.payload_type = 96;
        assert_eq!(send(&mut stage, plain.clone()), plain);
    }
}
