//! The SFU's own interceptor, at the wire end of every peer connection's chain.
//!
//! - It counts RTP and RTCP feedback as they cross the wire (NACKs, PLIs, retransmissions), for
//!   [`SfuMetrics`], and the connection's own NACKs and keyframe requests for the recording's
//!   QoS samples ([`FeedbackCounts`]). Sitting wire-most, it sees what the built-in
//!   interceptors generate on the way out (NACKs, reports, retransmissions) as well as
//!   everything that comes in.
//! - It lets keyframe requests through to the SFU. `rtc`'s chain ends inbound RTCP before the
//!   application unless an interceptor marks a packet [`Attribute::DeliverToApplication`]; an
//!   SFU must see a subscriber's PLI/FIR to relay it to the publisher, so this marks exactly
//!   those (and not the NACKs and reports the chain already acts on itself). It lets
//!   publishers' sender reports through too: a recording keeps them, for lip sync.
//! - It keeps stale NACKs from the responder. It records when each outgoing packet first went
//!   out ([`SendLog`]), and trims inbound NACKs to the packets sent recently enough for a resend
//!   to help, before `rtc`'s NACK responder (further from the wire) acts on them.
//! - It asks the responder for what a subscriber's TWCC feedback reports lost, as if the
//!   subscriber had NACKed it ([`TransportLog`]): a second, independent request for every loss.
//! - It limits resends while the path shows a queue ([`ResendBudget`]).
//! - It probes the path by asking the responder for copies of what it sends ([`ProbeBucket`],
//!   see `bwe::probe`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use crate::arrival_log::ArrivalLog;
use crate::bwe::probe::{ProbeBucket, ProbeRequests};
use crate::bwe::remb::remb_of;
use crate::bwe::{self, SharedEstimate};
use crate::codec::VideoCodec;
use crate::feedback_loss::TransportLog;
use crate::metrics::SfuMetrics;
use crate::nack_age::{SendLog, Trim};
use crate::qos::FeedbackCounts;
use crate::resend_budget::ResendBudget;

/// Position in the chain: below `Slot::CongestionControl` (1_000), the lowest built-in slot.
pub const SLOT: usize = 500;

/// No RTCP from a peer for this long is an outage of its path (a receiver sends transport-wide
/// feedback every 50-100 ms, and a report at least every second).
pub const PATH_SILENCE: Duration = Duration::from_millis(1500);

pub struct Tap {
    metrics: SfuMetrics,
    /// This connection's share of the feedback, which the router reads.
    feedback: Arc<FeedbackCounts>,
    /// The connection's bandwidth estimate, on connections the SFU sends media on: a
    /// receiver's REMB is recorded in it, and it says how many copies of a resend to send
    /// (`resend_copies`) and how fast to probe (`bwe::probe`).
    estimate: Option<SharedEstimate>,
    sent: SendLog,
    /// When the last RTCP came in (see [`PATH_SILENCE`]).
    last_rtcp: Option<Instant>,
    /// When the publisher's packets arrived, to ask only for recent losses.
    arrivals: ArrivalLog,
    transport: TransportLog,
    /// Resends allowed while the path shows a queue.
    budget: ResendBudget,
    /// Copies sent to probe the path (see `bwe::probe`), and those asked for, not yet sent.
    probe: ProbeBucket,
    probing: ProbeRequests,
    /// The latest packet sent on a bound stream with an RTX stream: (stream, sequence number,
    /// size). Forgotten when that stream is unbound.
    probe_source: Option<(u32, u16, usize)>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Tap {
    pub fn new(
        metrics: SfuMetrics,
        estimate: Option<SharedEstimate>,
        feedback: Arc<FeedbackCounts>,
    ) -> Self {
        Self {
            metrics,
            feedback,
            estimate,
            sent: SendLog::new(),
            last_rtcp: None,
            arrivals: ArrivalLog::default(),
            transport: TransportLog::default(),
            budget: ResendBudget::default(),
            probe: ProbeBucket::default(),
            probing: ProbeRequests::default(),
            probe_source: None,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }

    /// Trims every NACK in a compound packet to what is still worth resending, removing the
    /// NACKs left empty; counts the sequence numbers left out.
    fn trim_nacks(&mut self, packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>, now: Instant) {
        let mut stale = 0;
        packets.retain_mut(|packet| {
            let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
                return true;
            };
            match self.sent.trim(nack, now) {
                Trim::Keep => true,
                Trim::Rewrite { nack, skipped } => {
                    stale += skipped;
                    *packet = Box::new(nack);
                    true
                }
                Trim::Drop { skipped } => {
                    stale += skipped;
                    false
                }
            }
        });
        self.metrics.nack_stale.inc_by(stale);
    }

    /// Cuts each NACK the SFU sends a publisher down to the losses recent enough to ask for
    /// (see `arrival_log`), removing the NACKs left empty; counts what was left out.
    fn withhold_stale_nacks(
        &mut self,
        packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>,
        now: Instant,
    ) {
        let mut withheld = 0;
        packets.retain_mut(|packet| {
            let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
                return true;
            };
            match self.arrivals.trim(nack, now) {
                Trim::Keep => true,
                Trim::Rewrite { nack, skipped } => {
                    withheld += skipped;
                    *packet = Box::new(nack);
                    true
                }
                Trim::Drop { skipped } => {
                    withheld += skipped;
                    false
                }
            }
        });
        self.metrics.nacks_withheld.inc_by(withheld);
    }

    /// Cuts each NACK down to the resends the path's budget allows (see `resend_budget`),
    /// keeping the newest sequence numbers; counts the rest as not resent.
    fn limit_resends(&mut self, packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>, now: Instant) {
        let Some(estimate) = &self.estimate else {
            return;
        };
        let (bps, congested) = (estimate.current(), estimate.congested());
        let mut left_out = 0;
        packets.retain_mut(|packet| {
            let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
                return true;
            };
            let mut seqs: Vec<u16> = nack
                .nacks
                .iter()
                .flat_map(|pair| pair.packet_list())
                .collect();
            let allowed = self.budget.take(now, seqs.len(), bps, congested);
            if allowed == seqs.len() {
                return true;
            }
            left_out += (seqs.len() - allowed) as u64;
            if allowed == 0 {
                return false;
            }
            let newest = seqs.split_off(seqs.len() - allowed);
            let limited = TransportLayerNack {
                sender_ssrc: nack.sender_ssrc,
                media_ssrc: nack.media_ssrc,
                nacks: nack_pairs_from_sequence_numbers(&newest),
            };
            *packet = Box::new(limited);
            true
        });
        self.metrics.nack_stale.inc_by(left_out);
    }

    /// With a packet of stream `ssrc` numbered `seq` (`len` bytes) being sent now: asks the NACK
    /// responder for copies of the latest packet of a stream that resends on an RTX stream,
    /// and of the packets just before it, as many as the probe wants now (see `bwe::probe`).
    /// Only those streams' copies are numbered for the feedback; any packet may carry the
    /// request, so that a subscriber whose video is paused (only audio flows, which has no RTX
    /// stream) is probed with copies of its last video packets before the video resumes. The
    /// request goes up the read leg, where the chain carries it to the responder on the
    /// connection's next poll.
    fn ask_for_probe_copies(&mut self, ssrc: u32, seq: u16, len: usize, now: Instant) {
        if self.sent.has_rtx(ssrc) {
            self.probe_source = Some((ssrc, seq, len));
        }
        let Some((ssrc, seq, len)) = self.probe_source else {
            return;
        };
        let rate = self.estimate.as_ref().map_or(0.0, SharedEstimate::probe);
        let copies = self.probe.copies(now, rate, len) as u16;
        if copies == 0 {
            return;
        }
        let seqs: Vec<u16> = (0..copies)
            .rev()
            .map(|back| seq.wrapping_sub(back))
            .collect();
        self.probing.ask(ssrc, &seqs);
        let nack = TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc: ssrc,
            nacks: nack_pairs_from_sequence_numbers(&seqs),
        };
        self.read.push_back(TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack)])),
        });
    }

    /// Adds to a compound packet NACKs for what its TWCC feedback reports lost (see
    /// `feedback_loss`); `trim_nacks` then treats them like the receiver's own.
    ///
    /// Not while the path shows a queue: its losses are then an overflow's tail drops, and
    /// asking again for every resend the overflow drops too would only keep the queue full
    /// until the allocator's cut takes effect. The receiver's own NACKs still get answers.
    fn ask_for_reported_losses(&mut self, packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>) {
        if self
            .estimate
            .as_ref()
            .is_some_and(SharedEstimate::congested)
        {
            return;
        }
        let nacks: Vec<Box<dyn rtc::rtcp::Packet>> = packets
            .iter()
            .filter_map(|packet| packet.as_any().downcast_ref::<TransportLayerCc>())
            .flat_map(|feedback| self.transport.nacks(feedback))
            .map(|nack| Box::new(nack) as Box<dyn rtc::rtcp::Packet>)
            .collect();
        for nack in &nacks {
            self.metrics.feedback_nacks.inc_by(nacked(nack.as_ref()));
        }
        packets.extend(nacks);
    }
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
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

/// How many times one resend goes out on a path losing `loss` of its packets: enough that
/// every copy is lost on fewer than 1 in 500 resends, at most [`MAX_RESEND_COPIES`]. The
/// receiver asks again only a round trip later (a receive-only browser cannot measure the RTT
/// and assumes 100 ms), and a lost resend is what freezes a picture on a lossy link: at 10 %
/// loss one copy is lost on 1 resend in 10, three copies on 1 in 1000. Resends are a small
/// share of the traffic (the lost share), so the copies cost little.
fn resend_copies(loss: f64) -> usize {
    const ALL_LOST: f64 = 0.002;
    (1..MAX_RESEND_COPIES)
        .find(|&copies| loss.powi(copies as i32) <= ALL_LOST)
        .unwrap_or(MAX_RESEND_COPIES)
}

const MAX_RESEND_COPIES: usize = 3;

/// Whether a stream negotiated generic NACK (`a=rtcp-fb:<pt> nack`), the test `rtc`'s responder
/// uses to decide whether to buffer a stream for resending.
fn supports_nack(info: &StreamInfo) -> bool {
    info.rtcp_feedback
        .iter()
        .any(|fb| fb.typ == "nack" && fb.parameter.is_empty())
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Tap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        let now = msg.now;
        let mut deliver = false;
        match &mut msg.message.packet {
            Packet::Rtp(rtp) => {
                self.arrivals
                    .arrived(rtp.header.ssrc, rtp.header.sequence_number, now);
                self.metrics.rtp_packets_received.inc();
                let size = rtp.header.marshal_size() + rtp.payload.len();
                self.metrics.rtp_bytes_received.inc_by(size as u64);
            }
            Packet::Rtcp(packets) => {
                if self
                    .last_rtcp
                    .is_some_and(|at| now.saturating_duration_since(at) > PATH_SILENCE)
                {
                    self.feedback.path_returned.store(true, Ordering::Relaxed);
                }
                self.last_rtcp = Some(now);
                for packet in packets.iter() {
                    let nacks = nacked(packet.as_ref());
                    self.metrics.nacks_received.inc_by(nacks);
                    count(&self.feedback.nacks_received, nacks);
                    if is_keyframe_request(packet.as_ref()) {
                        deliver = true;
                        self.metrics.plis_received.inc();
                        count(&self.feedback.keyframe_requests_received, 1);
                    }
                    deliver |= packet.as_any().is::<SenderReport>();
                }
                if let Some(estimate) = &self.estimate {
                    if let Some(bps) = remb_of(packets) {
                        estimate.set_remb(bps);
                    }
                    // Before the congestion controller (further from the wire) reads the same
                    // feedback: it tells a reported loss from an unreported packet by this.
                    for feedback in packets
                        .iter()
                        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerCc>())
                    {
                        estimate.note_feedback(
                            feedback.base_sequence_number,
                            feedback.packet_status_count,
                        );
                    }
                }
                self.ask_for_reported_losses(packets);
                self.trim_nacks(packets, now);
                self.limit_resends(packets, now);
                // Nothing left: it held only stale NACKs. Passing it on empty would make it an
                // attribute carrier (see `Packet::Rtcp`), and at the wire end it carries none.
                if packets.is_empty() {
                    return Ok(());
                }
            }
            _ => {}
        }
        if deliver {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        let retransmission = msg.message.has(&Attribute::Retransmission);
        match &mut msg.message.packet {
            Packet::Rtp(rtp) => {
                let header = &rtp.header;
                // The packet this one carries: a resend on an RTX stream carries another's.
                let original = if retransmission {
                    self.sent
                        .original(header.ssrc, header.sequence_number, &rtp.payload)
                } else {
                    Some((header.ssrc, header.sequence_number))
                };
                if let Some((ssrc, seq)) = original {
                    self.transport
                        .record(header, ssrc, seq, retransmission, msg.now);
                }
                self.metrics.rtp_packets_sent.inc();
                let size = header.marshal_size() + rtp.payload.len();
                self.metrics.rtp_bytes_sent.inc_by(size as u64);
                let probe_copy =
                    retransmission && original.is_some_and(|(s, q)| self.probing.answered(s, q));
                if probe_copy {
                    self.metrics.probe_bytes.inc_by(size as u64);
                } else if retransmission {
                    self.metrics.retransmissions.inc();
                    if let Some((ssrc, seq)) = original {
                        self.sent.record_resend(ssrc, seq, msg.now);
                    }
                    // Extra copies on a lossy path without a queue; see `resend_copies`.
                    // SRTP's replay protection drops a copy if an earlier one arrived. On a
                    // congested path copies would only add to the queue.
                    let loss = match &self.estimate {
                        Some(estimate) if !estimate.congested() => estimate.loss(),
                        _ => 0.0,
                    };
                    for _ in 1..resend_copies(loss) {
                        let copy = AttributedPacket::new(Packet::Rtp(rtp.clone()))
                            .with(Attribute::Retransmission);
                        self.write.push_back(TaggedPacket {
                            message: copy,
                            ..msg
                        });
                    }
                } else {
                    // A resend's age counts from the original, so only originals are recorded.
                    self.sent.record(
                        rtp.header.ssrc,
                        rtp.header.sequence_number,
                        &rtp.payload,
                        msg.now,
                    );
                    self.ask_for_probe_copies(header.ssrc, header.sequence_number, size, msg.now);
                }
            }
            Packet::Rtcp(packets) => {
                self.withhold_stale_nacks(packets, msg.now);
                if packets.is_empty() {
                    return Ok(());
                }
                for packet in packets.iter() {
                    let nacks = nacked(packet.as_ref());
                    self.metrics.nacks_sent.inc_by(nacks);
                    count(&self.feedback.nacks_sent, nacks);
                    if is_keyframe_request(packet.as_ref()) {
                        self.metrics.plis_sent.inc();
                        count(&self.feedback.keyframe_requests_sent, 1);
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
    /// Only streams the responder buffers are logged; a NACK for any other stream is dropped,
    /// as the responder would ignore it.
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.transport.bind(info);
        let rtx = bwe::rtx::rtx_ssrc(info);
        if let (Some(estimate), Some(rtx)) = (&self.estimate, rtx) {
            estimate.set_rtx_stream(rtx, true);
        }
        if supports_nack(info) {
            self.sent
                .bind(info.ssrc, rtx, VideoCodec::from_mime(&info.mime_type));
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.sent.unbind(info.ssrc);
        if self
            .probe_source
            .is_some_and(|(ssrc, _, _)| ssrc == info.ssrc)
        {
            self.probe_source = None;
        }
        if let (Some(estimate), Some(rtx)) = (&self.estimate, bwe::rtx::rtx_ssrc(info)) {
            estimate.set_rtx_stream(rtx, false);
        }
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.arrivals.forget(info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rtc::interceptor::{AttributedPacket, RTCPFeedback};
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::shared::TransportContext;

    use super::*;

    const SSRC: u32 = 0xA1;
    const RTX_SSRC: u32 = 0xA2;

    /// Stream `SSRC`, with generic NACK negotiated.
    fn nack_stream() -> StreamInfo {
        StreamInfo {
            ssrc: SSRC,
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: String::new(),
            }],
            ..Default::default()
        }
    }

    /// A tap publishing into `estimate`, with `stream` bound.
    fn tap_with(estimate: Option<SharedEstimate>, stream: StreamInfo) -> Tap {
        let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
        let mut tap = Tap::new(metrics, estimate, Arc::default());
        tap.bind_local_stream(&stream);
        tap
    }

    fn tap() -> Tap {
        tap_with(None, nack_stream())
    }

    fn tagged(now: Instant, message: AttributedPacket) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message,
        }
    }

    #[test]
    fn a_receivers_remb_is_recorded_in_the_connections_estimate() {
        use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
        let estimate = SharedEstimate::new();
        let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
        let mut tap = Tap::new(metrics, Some(estimate.clone()), Arc::default());
        let remb: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: 700_000.0,
            ssrcs: vec![SSRC],
        });
        let message = AttributedPacket::new(Packet::Rtcp(vec![remb]));
        tap.handle_read(tagged(Instant::now(), message))
            .expect("read");
        assert!(tap.poll_read().is_some(), "passed on");
        assert_eq!(estimate.remb(), Some(700_000.0));
    }

    fn send(tap: &mut Tap, seq: u16, now: Instant, retransmission: bool) {
        let mut rtp = rtc::rtp::Packet::default();
        rtp.header.ssrc = SSRC;
        rtp.header.sequence_number = seq;
        let mut message = AttributedPacket::new(Packet::Rtp(rtp));
        if retransmission {
            message.add(Attribute::Retransmission);
        }
        tap.handle_write(tagged(now, message)).expect("write");
        assert!(tap.poll_write().is_some());
    }

    fn nack(seqs: &[u16]) -> Box<dyn rtc::rtcp::Packet> {
        Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        })
    }

    /// The publisher's packet `seq` arriving at the SFU.
    fn arrive(tap: &mut Tap, seq: u16, now: Instant) {
        let mut rtp = rtc::rtp::Packet::default();
        rtp.header.ssrc = SSRC;
        rtp.header.sequence_number = seq;
        let message = AttributedPacket::new(Packet::Rtp(rtp));
        tap.handle_read(tagged(now, message)).expect("read");
        assert!(tap.poll_read().is_some());
    }

    /// The sequence numbers of the NACK the tap sends on when the SFU asks for `seqs`.
    fn ask(tap: &mut Tap, seqs: &[u16], now: Instant) -> Vec<u16> {
        let message = AttributedPacket::new(Packet::Rtcp(vec![nack(seqs)]));
        tap.handle_write(tagged(now, message)).expect("write");
        let Some(out) = tap.poll_write() else {
            return Vec::new();
        };
        let Packet::Rtcp(packets) = out.message.packet else {
            panic!("RTCP in, RTCP out");
        };
        packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
            .collect()
    }

    #[test]
    fn a_publisher_is_asked_only_for_recent_losses() {
        let mut tap = tap();
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        arrive(&mut tap, 1, t0);
        arrive(&mut tap, 3, t0 + 40 * ms);
        assert_eq!(ask(&mut tap, &[2], t0 + 50 * ms), [2]);
        // The path is gone for 5 s (4..=253 lost), then back.
        arrive(&mut tap, 254, t0 + 5040 * ms);
        let back = t0 + 5050 * ms;
        assert!(
            ask(&mut tap, &[2, 100, 253], back).is_empty(),
            "outage losses"
        );
        arrive(&mut tap, 256, back);
        assert_eq!(ask(&mut tap, &[100, 255], back + 10 * ms), [255]);
        assert_eq!(tap.metrics.nacks_withheld.get(), 4);
    }

    /// What of a compound packet the tap passes on, as NACKed seqs and the other packets' count.
    fn receive(
        tap: &mut Tap,
        packets: Vec<Box<dyn rtc::rtcp::Packet>>,
        now: Instant,
    ) -> Option<(Vec<u16>, usize)> {
        let message = AttributedPacket::new(Packet::Rtcp(packets));
        tap.handle_read(tagged(now, message)).expect("read");
        let out = tap.poll_read()?;
        let Packet::Rtcp(packets) = out.message.packet else {
            panic!("RTCP in, RTCP out");
        };
        let nacks = packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
            .collect();
        let others = packets
            .iter()
            .filter(|p| !p.as_any().is::<TransportLayerNack>())
            .count();
        Some((nacks, others))
    }

    #[test]
    fn stale_nacks_are_trimmed_before_the_responder() {
        let mut tap = tap();
        let t0 = Instant::now();
        send(&mut tap, 10, t0, false);
        send(&mut tap, 11, t0 + Duration::from_millis(900), false);
        // A resend of 10 must not make 10 look fresh again.
        send(&mut tap, 10, t0 + Duration::from_millis(900), true);
        let now = t0 + Duration::from_millis(1_500);

        let out = receive(&mut tap, vec![nack(&[10, 11])], now);
        assert_eq!(out, Some((vec![11], 0)));
        assert_eq!(tap.metrics.nack_stale.get(), 1);
        assert_eq!(tap.metrics.nacks_received.get(), 2);

        // Only stale NACKs in a compound with a report: the report goes on alone.
        let report: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverReport::default());
        let out = receive(&mut tap, vec![report, nack(&[10, 12])], now);
        assert_eq!(out, Some((vec![], 1)));
        assert_eq!(tap.metrics.nack_stale.get(), 3);

        // Only stale NACKs: nothing goes on.
        assert_eq!(receive(&mut tap, vec![nack(&[10])], now), None);

        // The stream unbinds: its log goes, and NACKs for it with it.
        tap.unbind_local_stream(&StreamInfo {
            ssrc: SSRC,
            ..Default::default()
        });
        assert_eq!(receive(&mut tap, vec![nack(&[11])], now), None);
    }

    #[test]
    fn the_connections_own_nacks_and_keyframe_requests_are_counted_both_ways() {
        let mut tap = tap();
        let now = Instant::now();
        send(&mut tap, 10, now, false);
        let pli = || -> Box<dyn rtc::rtcp::Packet> { Box::new(PictureLossIndication::default()) };
        // Counted as they come in, stale or not: what the participant asked for.
        receive(&mut tap, vec![nack(&[10, 11, 12]), pli()], now);
        let message = AttributedPacket::new(Packet::Rtcp(vec![nack(&[5, 6]), pli(), pli()]));
        tap.handle_write(tagged(now, message)).expect("write");
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let feedback = &tap.feedback;
        assert_eq!(read(&feedback.nacks_received), 3);
        assert_eq!(read(&feedback.keyframe_requests_received), 1);
        assert_eq!(read(&feedback.nacks_sent), 2);
        assert_eq!(read(&feedback.keyframe_requests_sent), 2);
    }

    #[test]
    fn what_transport_feedback_reports_lost_is_resent_like_a_nack() {
        use rtc::interceptor::RTPHeaderExtension;
        use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
            PacketStatusChunk, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
        };
        const EXT: u8 = 5;
        let estimate = SharedEstimate::new();
        let stream = StreamInfo {
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
                    .to_owned(),
                id: u16::from(EXT),
            }],
            ssrc_rtx: Some(RTX_SSRC),
            payload_type_rtx: Some(97),
            ..nack_stream()
        };
        let mut tap = tap_with(Some(estimate.clone()), stream);
        let now = Instant::now();
        let write = |tap: &mut Tap, ssrc, seq, transport_seq: u16, payload: &[u8], resend| {
            let mut rtp = rtc::rtp::Packet::default();
            rtp.header.ssrc = ssrc;
            rtp.header.sequence_number = seq;
            rtp.header
                .set_extension(EXT, transport_seq.to_be_bytes().to_vec().into())
                .expect("extension");
            rtp.payload = payload.to_vec().into();
            let mut message = AttributedPacket::new(Packet::Rtp(rtp));
            if resend {
                message.add(Attribute::Retransmission);
            }
            tap.handle_write(tagged(now, message)).expect("write");
            while tap.poll_write().is_some() {}
        };
        write(&mut tap, SSRC, 7, 40, &[], false);
        write(&mut tap, SSRC, 8, 41, &[], false);
        let run = |symbol, run_length| {
            PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: symbol,
                run_length,
            })
        };
        let feedback = TransportLayerCc {
            base_sequence_number: 40,
            packet_status_count: 2,
            packet_chunks: vec![
                run(SymbolTypeTcc::PacketNotReceived, 1),
                run(SymbolTypeTcc::PacketReceivedSmallDelta, 1),
            ],
            ..Default::default()
        };
        let out = receive(&mut tap, vec![Box::new(feedback.clone())], now);
        assert_eq!(
            out,
            Some((vec![7], 1)),
            "the feedback goes on with a NACK for 7"
        );
        assert_eq!(tap.metrics.feedback_nacks.get(), 1);
        assert_eq!(
            tap.metrics.nacks_received.get(),
            0,
            "the subscriber NACKed nothing"
        );
        assert_eq!(tap.feedback.nacks_received.load(Ordering::Relaxed), 0);

        // The responder resends 7 on the RTX stream (its payload names 7). The same loss
        // reported again is not asked for again, nor is the receiver's NACK for it a moment
        // later.
        write(&mut tap, RTX_SSRC, 0, 42, &[0, 7], true);
        let out = receive(&mut tap, vec![Box::new(feedback.clone())], now);
        assert_eq!(out, Some((vec![], 1)), "7 went out again since");
        assert_eq!(
            receive(&mut tap, vec![nack(&[7])], now),
            None,
            "just resent"
        );

        // The same report while the path shows a queue: the feedback goes on alone.
        estimate.set_congested(true);
        let out = receive(&mut tap, vec![Box::new(feedback)], now);
        assert_eq!(out, Some((vec![], 1)), "no NACK while congested");
    }

    #[test]
    fn a_second_request_for_a_packet_just_resent_is_not_answered() {
        let mut tap = tap();
        let t0 = Instant::now();
        send(&mut tap, 10, t0, false);
        send(&mut tap, 10, t0 + Duration::from_millis(20), true);
        let out = receive(&mut tap, vec![nack(&[10])], t0 + Duration::from_millis(40));
        assert_eq!(out, None, "resent 20 ms ago");
        let out = receive(&mut tap, vec![nack(&[10])], t0 + Duration::from_millis(150));
        assert_eq!(out, Some((vec![10], 0)), "a retry after the gap");
    }

    #[test]
    fn a_path_with_a_queue_gets_only_its_budget_of_resends_the_newest_first() {
        let estimate = SharedEstimate::new();
        estimate.set_twcc(500_000.0);
        estimate.set_congested(true);
        let mut tap = tap_with(Some(estimate.clone()), nack_stream());
        let now = Instant::now();
        for seq in 0..10 {
            send(&mut tap, seq, now, false);
        }
        let lost: Vec<u16> = (0..10).collect();
        let out = receive(&mut tap, vec![nack(&lost)], now);
        assert_eq!(out, Some((vec![9], 0)), "one resend, the newest");
        assert_eq!(tap.metrics.nack_stale.get(), 9);

        estimate.set_congested(false);
        let out = receive(&mut tap, vec![nack(&lost)], now);
        assert_eq!(out, Some((lost, 0)), "no queue, no limit");
    }

    #[test]
    fn resends_are_copied_so_that_losing_all_copies_is_rare() {
        assert_eq!(resend_copies(0.0), 1);
        assert_eq!(resend_copies(0.002), 1);
        assert_eq!(resend_copies(0.02), 2);
        assert_eq!(resend_copies(0.10), 3);
        assert_eq!(resend_copies(0.50), MAX_RESEND_COPIES);

        let estimate = SharedEstimate::new();
        estimate.set_loss(0.10);
        let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
        let mut tap = Tap::new(metrics, Some(estimate.clone()), Arc::default());
        let written = |tap: &mut Tap| std::iter::from_fn(|| tap.poll_write()).count();
        let now = Instant::now();
        send(&mut tap, 1, now, false);
        assert_eq!(written(&mut tap), 0, "an original goes out once");
        send(&mut tap, 1, now, true);
        assert_eq!(
            written(&mut tap),
            2,
            "a resend on a lossy path, three times"
        );
        estimate.set_congested(true);
        send(&mut tap, 1, now, true);
        assert_eq!(written(&mut tap), 0, "a congested path gets no copies");
    }

    #[test]
    fn nacks_for_video_sent_before_the_latest_keyframe_are_not_answered() {
        let stream = StreamInfo {
            mime_type: "video/VP8".to_owned(),
            ..nack_stream()
        };
        let mut tap = tap_with(None, stream);
        let now = Instant::now();
        for (seq, payload) in [(1, [0x10, 0x01]), (2, [0x10, 0x00]), (3, [0x00, 0x00])] {
            let mut rtp = rtc::rtp::Packet::default();
            rtp.header.ssrc = SSRC;
            rtp.header.sequence_number = seq;
            rtp.payload = payload.to_vec().into();
            let message = AttributedPacket::new(Packet::Rtp(rtp));
            tap.handle_write(tagged(now, message)).expect("write");
        }
        // Packet 2 starts a VP8 keyframe (S=1, P=0): packet 1 is of no use any more.
        let out = receive(&mut tap, vec![nack(&[1, 3])], now);
        assert_eq!(out, Some((vec![3], 0)));
        assert_eq!(tap.metrics.nack_stale.get(), 1);
    }

    #[test]
    fn a_probe_asks_the_responder_for_copies_of_what_is_sent() {
        let estimate = SharedEstimate::new();
        let stream = StreamInfo {
            ssrc_rtx: Some(RTX_SSRC),
            payload_type_rtx: Some(97),
            ..nack_stream()
        };
        let mut tap = tap_with(Some(estimate.clone()), stream);
        assert_eq!(estimate.rtx_streams(), [RTX_SSRC], "known as an RTX stream");
        // What the tap asks the responder for on the read leg, and what else it passes on.
        let asked = |tap: &mut Tap| {
            let mut seqs = Vec::new();
            while let Some(out) = tap.poll_read() {
                let Packet::Rtcp(packets) = out.message.packet else {
                    panic!("only requests");
                };
                for packet in &packets {
                    let nack = packet
                        .as_any()
                        .downcast_ref::<TransportLayerNack>()
                        .expect("a NACK");
                    assert_eq!(nack.media_ssrc, SSRC);
                    seqs.extend(nack.nacks.iter().flat_map(|pair| pair.packet_list()));
                }
            }
            seqs
        };
        let t0 = Instant::now();
        // 12-byte packets every 10 ms: 9.6 kbit/s; a 9.6 kbit/s probe doubles it.
        estimate.set_probe(9_600.0);
        let mut requested = Vec::new();
        for i in 0..100u16 {
            send(
                &mut tap,
                i,
                t0 + Duration::from_millis(10 * u64::from(i)),
                false,
            );
            requested.extend(asked(&mut tap));
        }
        assert!((95..=100).contains(&requested.len()), "{requested:?}");
        assert_eq!(tap.metrics.probe_bytes.get(), 0, "nothing resent yet");

        // The responder resends one on the RTX stream: a probe copy, not a repair.
        let copy = *requested.last().expect("asked");
        let mut rtx = rtc::rtp::Packet::default();
        rtx.header.ssrc = RTX_SSRC;
        rtx.header.sequence_number = 0;
        rtx.payload = copy.to_be_bytes().to_vec().into();
        let message =
            AttributedPacket::new(Packet::Rtp(rtx.clone())).with(Attribute::Retransmission);
        tap.handle_write(tagged(t0 + Duration::from_secs(1), message))
            .expect("write");
        assert!(tap.poll_write().is_some(), "sent once");
        assert!(tap.poll_write().is_none());
        assert_eq!(tap.metrics.probe_bytes.get(), 14);
        assert_eq!(tap.metrics.retransmissions.get(), 0);
        // The same packet asked for by the receiver is a repair.
        let message = AttributedPacket::new(Packet::Rtp(rtx)).with(Attribute::Retransmission);
        tap.handle_write(tagged(t0 + Duration::from_secs(1), message))
            .expect("write");
        assert_eq!(tap.metrics.retransmissions.get(), 1);

        estimate.set_probe(0.0);
        send(&mut tap, 100, t0 + Duration::from_secs(2), false);
        assert!(asked(&mut tap).is_empty(), "no probe, no copies");

        // The video pauses; audio (no RTX stream) carries the probe: copies of the last video
        // packets.
        estimate.set_probe(9_600.0);
        let mut copies = Vec::new();
        for i in 0..20u16 {
            let mut audio = rtc::rtp::Packet::default();
            audio.header.ssrc = 0xB0;
            audio.header.sequence_number = i;
            let at = t0 + Duration::from_millis(3_000 + 10 * u64::from(i));
            tap.handle_write(tagged(at, AttributedPacket::new(Packet::Rtp(audio))))
                .expect("write");
            while tap.poll_write().is_some() {}
            copies.extend(asked(&mut tap));
        }
        assert!(!copies.is_empty(), "probed while only audio flows");
        assert!(copies.iter().all(|&seq| seq <= 100), "{copies:?}");

        // The video stream goes: nothing is left to copy.
        tap.unbind_local_stream(&StreamInfo {
            ssrc: SSRC,
            ..Default::default()
        });
        let mut audio = rtc::rtp::Packet::default();
        audio.header.ssrc = 0xB0;
        audio.header.sequence_number = 20;
        let at = t0 + Duration::from_secs(4);
        tap.handle_write(tagged(at, AttributedPacket::new(Packet::Rtp(audio))))
            .expect("write");
        assert!(asked(&mut tap).is_empty(), "no copies of an unbound stream");
    }

    #[test]
    fn no_probe_copies_without_an_rtx_payload_type() {
        // `rtc` gives the stream an RTX SSRC, but the receiver negotiated no RTX: the responder
        // would resend the packet itself, which the receiver drops as a replay, unreported.
        let estimate = SharedEstimate::new();
        let stream = StreamInfo {
            ssrc_rtx: Some(RTX_SSRC),
            ..nack_stream()
        };
        let mut tap = tap_with(Some(estimate.clone()), stream);
        assert!(estimate.rtx_streams().is_empty());
        estimate.set_probe(1_000_000.0);
        let t0 = Instant::now();
        for i in 0..50u16 {
            send(
                &mut tap,
                i,
                t0 + Duration::from_millis(10 * u64::from(i)),
                false,
            );
            assert!(tap.poll_read().is_none(), "no copies asked for");
        }
    }
}
