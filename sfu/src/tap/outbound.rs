//! What the tap does to what goes out: the SFU's own NACKs to a publisher cut to the losses
//! recent enough to ask for, copies of a resend on a lossy path, and the copies asked of the
//! NACK responder to probe the path. Apart from `tap.rs` so that the chain's entry points
//! there stay short.

use std::sync::PoisonError;
use std::time::Instant;

use rtc::interceptor::{AttributedPacket, Packet, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::shared::TransportContext;

use super::{Tap, reports};
use crate::bwe::SharedEstimate;
use crate::nack_age::Trim;

impl Tap {
    /// Cuts each NACK the SFU sends a publisher down to the losses recent enough to ask for
    /// (see `arrival_log`), removing the NACKs left empty; counts what was left out.
    pub(super) fn withhold_stale_nacks(
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

    /// Raises the fraction lost of the SFU's reception reports to the floors the router set
    /// (`FeedbackCounts::reported_loss_floor`). Only the fraction: the cumulative count, from
    /// which a browser's congestion controller takes the loss of its path, stays what the SFU
    /// counted, so the publisher's send rate is not cut for its listeners' links. Chromium
    /// gives the fraction of its audio stream's block to the Opus encoder, which adds in-band
    /// FEC from about 5 % (`AudioEncoderOpusImpl::OnReceivedUplinkPacketLossFraction`).
    pub(super) fn raise_reported_loss(&self, packets: &mut [Box<dyn rtc::rtcp::Packet>]) {
        let floors = self
            .feedback
            .reported_loss_floor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if floors.is_empty() {
            return;
        }
        let floor = |ssrc: u32| floors.get(&ssrc).copied().unwrap_or(0);
        for packet in packets.iter_mut() {
            let below = reports::blocks(packet.as_ref())
                .iter()
                .any(|block| block.fraction_lost < floor(block.ssrc));
            if !below {
                continue;
            }
            let raised = reports::edited(packet.as_ref(), |blocks| {
                for block in blocks {
                    block.fraction_lost = block.fraction_lost.max(floor(block.ssrc));
                }
            });
            if let Some(raised) = raised {
                *packet = raised;
                self.metrics.reports_loss_raised.inc();
            }
        }
    }

    /// With a packet of stream `ssrc` numbered `seq` (`len` bytes) being sent now: asks the NACK
    /// responder for copies of the latest packet of a stream that resends on an RTX stream,
    /// and of the packets just before it, as many as the probe wants now (see `bwe::probe`).
    /// Only those streams' copies are numbered for the feedback; any packet may carry the
    /// request, so that a subscriber whose video is paused (only audio flows, which has no RTX
    /// stream) is probed with copies of its last video packets before the video resumes. The
    /// request goes up the read leg, where the chain carries it to the responder on the
    /// connection's next poll.
    pub(super) fn ask_for_probe_copies(&mut self, ssrc: u32, seq: u16, len: usize, now: Instant) {
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
}

/// How many times one resend goes out on a path losing `loss` of its packets: enough that
/// every copy is lost on fewer than 1 in 500 resends, at most [`MAX_RESEND_COPIES`]. The
/// receiver asks again only a round trip later (a receive-only browser cannot measure the RTT
/// and assumes 100 ms), and a lost resend is what freezes a picture on a lossy link: at 10 %
/// loss one copy is lost on 1 resend in 10, three copies on 1 in 1000. Resends are a small
/// share of the traffic (the lost share), so the copies cost little.
pub(super) fn resend_copies(loss: f64) -> usize {
    const ALL_LOST: f64 = 0.002;
    (1..MAX_RESEND_COPIES)
        .find(|&copies| loss.powi(copies as i32) <= ALL_LOST)
        .unwrap_or(MAX_RESEND_COPIES)
}

pub(super) const MAX_RESEND_COPIES: usize = 3;
