//! Lets keyframe requests reach the publisher's media loop.
//!
//! `rtc` ends inbound RTCP inside its interceptor chain unless an interceptor marks a packet
//! [`Attribute::DeliverToApplication`]. A publisher must see the SFU's PLI/FIR to send a
//! keyframe at once (a joining subscriber waits for it), so this marks exactly those.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Position in the chain: below `Slot::CongestionControl` (1_000), the lowest built-in slot,
/// so it sees packets as they come off the wire.
pub const SLOT: usize = 500;

/// The media SSRCs a PLI or FIR asks keyframes for; empty for other RTCP.
pub fn keyframe_request_ssrcs(packet: &dyn rtc::rtcp::Packet) -> Vec<u32> {
    let any = packet.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        vec![pli.media_ssrc]
    } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
        fir.fir.iter().map(|entry| entry.ssrc).collect()
    } else {
        Vec::new()
    }
}

#[derive(Default)]
pub struct KeyframeTap {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets
                .iter()
                .any(|p| !keyframe_request_ssrcs(p.as_ref()).is_empty())
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
