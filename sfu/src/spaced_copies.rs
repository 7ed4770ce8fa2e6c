//! Second copies of a subscriber's audio packets, a moment after the first, on the worst
//! links (see `red::Redundancy` for when, and what it measured).
//!
//! The copy goes out at the wire end of the connection's chain, with the first copy's
//! transport-wide sequence number: the receiver's SRTP drops whichever copy arrives second as a
//! replay before its congestion-control feedback sees it, so a copy numbered on its own would
//! be reported lost every time it is not needed (a link losing nothing measured 50 % loss and
//! stayed audio-only), and with one number the feedback reports the packet arrived if either
//! copy did. The router asks for copies through the connection's [`SharedEstimate`], as it
//! asks for probes, and this stage notes there which numbers went out twice, so that the
//! estimator counts their losses as the losses of two copies (see `bwe::estimator::losses`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

use crate::bwe::SharedEstimate;
use crate::feedback_loss::{transport_cc_id, transport_seq};
use crate::red;

/// Position in the chain: below `Slot::CongestionControl` (1_000), so a copy is not recorded
/// as a second departure of its transport-wide number, and above the tap (500), which counts it.
pub const SLOT: usize = 600;

/// How long after a packet its copy goes out: half an Opus frame, so that on a link that
/// carries both, a packet arrives every 10 ms, and a short burst does not take both.
pub const COPY_DELAY: Duration = Duration::from_millis(10);

pub struct SpacedCopies {
    estimate: SharedEstimate,
    /// The transport-wide sequence number's extension id, per stream.
    twcc_ids: HashMap<u32, u8>,
    /// Copies not yet due, oldest first: (due, packet, where it goes).
    pending: VecDeque<(Instant, rtc::rtp::Packet, TransportContext)>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl SpacedCopies {
    pub fn new(estimate: SharedEstimate) -> Self {
        Self {
            estimate,
            twcc_ids: HashMap::new(),
            pending: VecDeque::new(),
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SpacedCopies {
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

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(rtp) = &msg.message.packet
            && rtp.header.payload_type == red::PAYLOAD_TYPE
            && !msg.message.has(&Attribute::Retransmission)
            && self.estimate.spaced_copies()
        {
            let number = self
                .twcc_ids
                .get(&rtp.header.ssrc)
                .and_then(|&id| transport_seq(&rtp.header, id));
            if let Some(number) = number {
                self.estimate.note_doubled(number);
            }
            self.pending
                .push_back((msg.now + COPY_DELAY, rtp.clone(), msg.transport));
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        while let Some((due, ..)) = self.pending.front()
            && *due <= now
        {
            let (_, packet, transport) = self.pending.pop_front().expect("front");
            self.write.push_back(TaggedPacket {
                now,
                transport,
                message: AttributedPacket::new(Packet::Rtp(packet)),
            });
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.pending.front().map(|(due, ..)| *due)
    }
}

impl Interceptor for SpacedCopies {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(id) = transport_cc_id(info) {
            self.twcc_ids.insert(info.ssrc, id);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.twcc_ids.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload_type: u8, seq: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: bytes::Bytes::from_static(b"opus"),
            })),
        }
    }

    fn seq(msg: TaggedPacket) -> u16 {
        match msg.message.packet {
            Packet::Rtp(rtp) => rtp.header.sequence_number,
            _ => panic!("RTP"),
        }
    }

    #[test]
    fn red_audio_goes_out_again_after_the_delay_while_asked_and_nothing_else_does() {
        let estimate = SharedEstimate::new();
        let mut copies = SpacedCopies::new(estimate.clone());
        let t0 = Instant::now();
        let send = |copies: &mut SpacedCopies, pt, s, now| {
            let mut msg = packet(pt, s);
            msg.now = now;
            copies.handle_write(msg).unwrap();
            seq(copies.poll_write().expect("the packet goes on at once"))
        };
        assert_eq!(send(&mut copies, red::PAYLOAD_TYPE, 1, t0), 1);
        assert_eq!(copies.poll_timeout(), None, "not asked for");
        estimate.set_spaced_copies(true);
        send(&mut copies, red::PAYLOAD_TYPE, 2, t0);
        send(&mut copies, 96, 3, t0);
        assert_eq!(
            copies.poll_timeout(),
            Some(t0 + COPY_DELAY),
            "video is not copied"
        );
        copies.handle_timeout(t0 + COPY_DELAY / 2).unwrap();
        assert!(copies.poll_write().is_none(), "not yet");
        copies.handle_timeout(t0 + COPY_DELAY).unwrap();
        assert_eq!(copies.poll_write().map(seq), Some(2));
        estimate.set_spaced_copies(false);
        send(&mut copies, red::PAYLOAD_TYPE, 4, t0 + COPY_DELAY);
        assert_eq!(copies.poll_timeout(), None);
    }
}
