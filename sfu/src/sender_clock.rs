//! Sender reports that carry the publisher's clock, for lip sync.
//!
//! A receiver lines audio up with video by their sender reports: each says which RTP timestamp
//! of its stream belongs to which wall-clock instant. `rtc` writes the SFU's own from its send
//! history: the RTP timestamp of the last frame sent, as if that frame had been captured the
//! moment the SFU sent it. Audio and video do not take the same time from the publisher's
//! camera and microphone to the SFU (a video frame is encoded and paced out over tens of
//! milliseconds), so that offset went into every student's lip sync.
//!
//! The publisher's own reports say it right. The router notes, per layer, the RTP timestamp a
//! publisher's report gave and the instant it arrived ([`SenderClock`]; arrival rather than the
//! publisher's wall clock, so that only the network delay, the same for audio and video, is
//! added), turns it into each subscriber's timestamps (each consumer's rewriting offset), and
//! leaves it in the subscriber connection's [`SharedEstimate`]. This stage, on the way out,
//! sets the RTP timestamp of each sender report `rtc` writes for that stream from it, at the
//! report's own instant. The NTP time stays the SFU's, which the receiver's reports echo for
//! the round-trip time. A stream without a publisher report yet keeps `rtc`'s.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use crate::bwe::SharedEstimate;

/// Position in the chain: anywhere below `rtc`'s report generator (11_000); next to the wire.
pub const SLOT: usize = 550;

/// An RTP timestamp and the instant it belongs to, in a stream's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    pub at: Instant,
    pub rtp: u32,
    pub clock_rate: u32,
}

impl SenderClock {
    /// The stream's RTP timestamp at `now`.
    pub fn rtp_at(&self, now: Instant) -> u32 {
        let ticks = |d: std::time::Duration| (d.as_secs_f64() * f64::from(self.clock_rate)) as u32;
        if now >= self.at {
            self.rtp.wrapping_add(ticks(now - self.at))
        } else {
            self.rtp.wrapping_sub(ticks(self.at - now))
        }
    }
}

/// See the module docs.
pub struct SenderClockStage {
    estimate: SharedEstimate,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl SenderClockStage {
    pub fn new(estimate: SharedEstimate) -> Self {
        Self {
            estimate,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderClockStage {
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
        let now = msg.now;
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            for packet in packets.iter_mut() {
                let Some(report) = packet.as_any().downcast_ref::<SenderReport>() else {
                    continue;
                };
                if let Some(clock) = self.estimate.sender_clock(report.ssrc) {
                    let mut report = report.clone();
                    report.rtp_time = clock.rtp_at(now);
                    *packet = Box::new(report);
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for SenderClockStage {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.estimate.set_sender_clock(info.ssrc, None);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    use super::*;

    #[test]
    fn a_clock_counts_ticks_either_way_and_wraps() {
        let at = Instant::now();
        let clock = SenderClock {
            at,
            rtp: u32::MAX - 100,
            clock_rate: 90_000,
        };
        assert_eq!(clock.rtp_at(at + Duration::from_millis(10)), 799);
        assert_eq!(clock.rtp_at(at), u32::MAX - 100);
        let later = SenderClock {
            at: at + Duration::from_millis(20),
            rtp: 5,
            ..clock
        };
        assert_eq!(later.rtp_at(at), 5u32.wrapping_sub(1_800));
    }

    #[test]
    fn reports_of_streams_with_a_clock_carry_it_and_others_go_as_written() {
        let estimate = SharedEstimate::new();
        let mut stage = SenderClockStage::new(estimate.clone());
        let t0 = Instant::now();
        estimate.set_sender_clock(
            1,
            Some(SenderClock {
                at: t0,
                rtp: 1_000,
                clock_rate: 48_000,
            }),
        );
        let report = |ssrc| SenderReport {
            ssrc,
            ntp_time: 77,
            rtp_time: 5,
            ..Default::default()
        };
        stage
            .handle_write(TaggedPacket {
                now: t0 + Duration::from_millis(500),
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![
                    Box::new(report(1)),
                    Box::new(report(2)),
                ])),
            })
            .unwrap();
        let Packet::Rtcp(out) = stage.poll_write().unwrap().message.packet else {
            panic!("RTCP");
        };
        let sent: Vec<&SenderReport> = out
            .iter()
            .map(|p| p.as_any().downcast_ref::<SenderReport>().unwrap())
            .collect();
        assert_eq!(
            (sent[0].rtp_time, sent[0].ntp_time),
            (25_000, 77),
            "the publisher's clock"
        );
        assert_eq!(sent[1].rtp_time, 5, "no clock: as rtc wrote it");
        stage.unbind_local_stream(&StreamInfo {
            ssrc: 1,
            ..Default::default()
        });
        assert_eq!(estimate.sender_clock(1), None, "forgotten with its stream");
    }
}
