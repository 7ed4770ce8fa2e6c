//! Publishers' sender reports, noted per layer and passed to each subscriber's connection in
//! the subscriber's own timestamps (see `sender_clock` for why).

use std::time::Instant;

use rtc::rtcp::sender_report::SenderReport;

use super::{Consumer, Peer, PeerKey, Router};
use crate::sender_clock::SenderClock;

impl Router {
    /// A publisher's sender reports for track `sid` (from its connection, or from the node
    /// that exports it), arrived at `now`.
    pub(super) fn note_sender_reports(
        &mut self,
        now: Instant,
        sid: &str,
        reports: &[SenderReport],
    ) {
        let Some(producer) = self.producers.get_mut(sid) else {
            return;
        };
        for report in reports {
            let Some(&layer) = producer.layers.get(&report.ssrc) else {
                continue;
            };
            if producer.clocks.len() <= layer {
                producer.clocks.resize(layer + 1, None);
            }
            producer.clocks[layer] = Some(SenderClock {
                at: now,
                rtp: report.rtp_time,
                clock_rate: producer.codec.clock_rate,
            });
        }
        for consumer in producer.consumers.values() {
            pass_clock(&self.peers, &producer.clocks, consumer);
        }
    }
}

/// Gives `consumer`'s connection the publisher's clock of the layer it forwards now, in the
/// consumer's timestamps, or takes it away when there is none (before the publisher's first
/// report of that layer, or nothing forwarded).
pub(super) fn pass_clock(
    peers: &std::collections::HashMap<PeerKey, Box<Peer>>,
    clocks: &[Option<SenderClock>],
    consumer: &Consumer,
) {
    let Some(estimate) = peers.get(&consumer.peer).and_then(|p| p.estimate.as_ref()) else {
        return;
    };
    let clock = consumer.forwarder.current().and_then(|layer| {
        let clock = (*clocks.get(layer)?)?;
        let rtp = consumer.forwarder.output_timestamp(clock.rtp)?;
        Some(SenderClock { rtp, ..clock })
    });
    estimate.set_sender_clock(consumer.ssrc, clock);
}
