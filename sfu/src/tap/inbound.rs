//! What the tap does to the feedback a receiver sends before `rtc`'s NACK responder (further
//! from the wire) acts on it: NACKs trimmed to the packets still worth resending, cut to the
//! path's resend budget, and added for what transport-wide feedback reports lost; and what its
//! reception reports say, noted for the router. Apart from `tap.rs` so that the chain's entry
//! points there stay short.

use std::sync::PoisonError;
use std::time::Instant;

use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};

use super::{Tap, nacked, reports};
use crate::bwe::SharedEstimate;
use crate::nack_age::Trim;

/// The loss from which packets only a lost feedback packet reported on are resent. Below it,
/// the receiver's NACK and the feedback are rarely both lost, and the resends, most of them of
/// packets that had arrived, cost more than they repair: at 5 % loss they added 90 kbit/s
/// (each resend goes out up to three times) to a 520 kbit/s video.
const UNREPORTED_FROM: f64 = 0.2;

impl Tap {
    /// Notes what the peer's reception reports say of the streams the SFU sends it (see
    /// `reports`), for the router's connection quality and QoS samples.
    pub(super) fn note_receptions(&self, packets: &[Box<dyn rtc::rtcp::Packet>], now: Instant) {
        let read: Vec<_> = packets
            .iter()
            .flat_map(|packet| reports::blocks(packet.as_ref()))
            .filter_map(|block| Some((block.ssrc, self.reports.read(block, now)?)))
            .collect();
        if !read.is_empty() {
            self.feedback
                .receptions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(read);
        }
    }

    /// Trims every NACK in a compound packet to what is still worth resending, removing the
    /// NACKs left empty; counts the sequence numbers left out.
    pub(super) fn trim_nacks(
        &mut self,
        packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>,
        now: Instant,
    ) {
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

    /// Cuts each NACK down to the resends the path's budget allows (see `resend_budget`),
    /// keeping the newest sequence numbers; counts the rest as not resent.
    pub(super) fn limit_resends(
        &mut self,
        packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>,
        now: Instant,
    ) {
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

    /// Adds to a compound packet NACKs for what its TWCC feedback reports lost (see
    /// `feedback_loss`); `trim_nacks` then treats them like the receiver's own. And, on a path
    /// losing [`UNREPORTED_FROM`] or more, for what only a lost feedback packet reported on.
    ///
    /// Not while the path shows a queue: its losses are then an overflow's tail drops, and
    /// asking again for every resend the overflow drops too would only keep the queue full
    /// until the allocator's cut takes effect. The receiver's own NACKs still get answers.
    pub(super) fn ask_for_reported_losses(
        &mut self,
        packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>,
    ) {
        if self
            .estimate
            .as_ref()
            .is_some_and(SharedEstimate::congested)
        {
            return;
        }
        let loss = self.estimate.as_ref().map_or(0.0, SharedEstimate::loss);
        let mut nacks: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        for feedback in packets
            .iter()
            .filter_map(|packet| packet.as_any().downcast_ref::<TransportLayerCc>())
        {
            for nack in self.transport.nacks(feedback) {
                self.metrics.feedback_nacks.inc_by(nacked(&nack));
                nacks.push(Box::new(nack));
            }
            let unreported = self.transport.unreported(feedback);
            if loss >= UNREPORTED_FROM {
                for nack in unreported {
                    self.metrics.unreported_nacks.inc_by(nacked(&nack));
                    nacks.push(Box::new(nack));
                }
            }
        }
        packets.extend(nacks);
    }
}
