//! The SFU's own interceptor, at the wire end of every peer connection's chain.
//!
//! - It counts RTP and RTCP feedback as they cross the wire (NACKs, PLIs, retransmissions), for
//!   [`SfuMetrics`]. Sitting wire-most, it sees what the built-in interceptors generate on the
//!   way out (NACKs, reports, retransmissions) as well as everything that comes in.
//! - It lets keyframe requests through to the SFU. `rtc`'s chain ends inbound RTCP before the
//!   application unless an interceptor marks a packet [`Attribute::DeliverToApplication`]; an
//!   SFU must see a subscriber's PLI/FIR to relay it to the publisher, so this marks exactly
//!   those (and not the NACKs and reports the chain already acts on itself).

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use crate::metrics::SfuMetrics;

/// Position in the chain: below `Slot::CongestionControl` (1_000), the lowest built-in slot.
pub const SLOT: usize = 500;

pub struct Tap {
    metrics: SfuMetrics,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Tap {
    pub fn new(metrics: SfuMetrics) -> Self {
        Self {
            metrics,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Sequence numbers a NACK asks for.
fn nacked(packet: &dyn rtc::rtcp::Packet) -> u64 {
    packet
        .as_any()
        .downcast_ref::<TransportLayerNack>()
        .map_or(0, |nack| {
            nack.nacks
                .iter()
                .map(|pair| pair.packet_list().len() as u64)
                .sum()
        })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Tap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        match &msg.message.packet {
            Packet::Rtp(rtp) => {
                self.metrics.rtp_packets_received.inc();
                let size = rtp.header.marshal_size() + rtp.payload.len();
                self.metrics.rtp_bytes_received.inc_by(size as u64);
            }
            Packet::Rtcp(packets) => {
                let mut keyframe_request = false;
                for packet in packets {
                    self.metrics.nacks_received.inc_by(nacked(packet.as_ref()));
                    if is_keyframe_request(packet.as_ref()) {
                        keyframe_request = true;
                        self.metrics.plis_received.inc();
                    }
                }
                if keyframe_request {
                    msg.message.add(Attribute::DeliverToApplication);
                }
            }
            _ => {}
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        match &msg.message.packet {
            Packet::Rtp(rtp) => {
                self.metrics.rtp_packets_sent.inc();
                let size = rtp.header.marshal_size() + rtp.payload.len();
                self.metrics.rtp_bytes_sent.inc_by(size as u64);
                if msg.message.has(&Attribute::Retransmission) {
                    self.metrics.retransmissions.inc();
                }
            }
            Packet::Rtcp(packets) => {
                for packet in packets {
                    self.metrics.nacks_sent.inc_by(nacked(packet.as_ref()));
                    if is_keyframe_request(packet.as_ref()) {
                        self.metrics.plis_sent.inc();
                    }
                }
            }
            _ => {}
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for Tap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
