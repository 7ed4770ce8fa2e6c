//! REMB (draft-alvestrand-rmcat-remb): a receiver's own estimate of what it can take, the
//! fallback for receivers that do not send TWCC feedback.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::SharedEstimate;

/// Position in the chain: inbound RTCP passes here on its way up; nothing is generated.
pub const SLOT: usize = 600;

/// Reads REMB as it passes and records the latest value; everything passes unchanged.
pub struct RembReader {
    shared: SharedEstimate,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RembReader {
    pub fn new(shared: SharedEstimate) -> Self {
        Self {
            shared,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

/// The bitrate of the REMB among `packets`, if any (a malformed value counts as none).
fn remb_of(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Option<f64> {
    packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
        .map(|remb| f64::from(remb.bitrate))
        .rfind(|bps| bps.is_finite() && *bps > 0.0)
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RembReader {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && let Some(bps) = remb_of(packets)
        {
            self.shared.set_remb(bps);
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

impl Interceptor for RembReader {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_sane_remb_counts() {
        let remb = |bitrate| -> Box<dyn rtc::rtcp::Packet> {
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate,
                ssrcs: vec![2],
            })
        };
        assert_eq!(remb_of(&[]), None);
        assert_eq!(remb_of(&[remb(500_000.0)]), Some(500_000.0));
        assert_eq!(
            remb_of(&[remb(500_000.0), remb(f32::NAN)]),
            Some(500_000.0),
            "a NaN is ignored"
        );
        assert_eq!(remb_of(&[remb(-1.0)]), None);
    }
}
