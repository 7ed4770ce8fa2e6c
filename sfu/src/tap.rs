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
//!
//! This file holds the tap and the chain's entry points; `inbound` what it does to a
//! receiver's feedback before the NACK responder, `outbound` what it does to what goes out
//! (the SFU's own NACKs, resend copies, probe copies).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

use crate::arrival_log::ArrivalLog;
use crate::bwe::probe::{ProbeBucket, ProbeRequests};
use crate::bwe::remb::remb_of;
use crate::bwe::{self, SharedEstimate};
use crate::codec::VideoCodec;
use crate::feedback_loss::TransportLog;
use crate::metrics::SfuMetrics;
use crate::nack_age::SendLog;
use crate::qos::FeedbackCounts;
use crate::resend_budget::ResendBudget;
use reports::ReportLog;

mod inbound;
mod outbound;
mod reports;

use outbound::resend_copies;

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
    /// The sender reports sent, to read the peer's reception reports by (see `reports`).
    reports: ReportLog,
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
            reports: ReportLog::default(),
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
                let last = self
                    .feedback
                    .last_rtcp
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .replace(now);
                if last.is_some_and(|at| now.saturating_duration_since(at) > PATH_SILENCE) {
                    self.feedback.path_returned.store(true, Ordering::Relaxed);
                }
                self.note_receptions(packets, now);
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
                self.raise_reported_loss(packets);
                for packet in packets.iter() {
                    if let Some(report) = packet.as_any().downcast_ref::<SenderReport>() {
                        self.reports
                            .sent_report(report.ssrc, report.ntp_time, msg.now);
                    }
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
        self.reports.bind(info.ssrc, info.clock_rate);
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
        self.reports.unbind(info.ssrc);
        self.feedback
            .receptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&info.ssrc);
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
mod tests;
