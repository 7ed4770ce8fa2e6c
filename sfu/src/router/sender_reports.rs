//! Publishers' sender reports, noted per layer and passed to each subscriber's connection in
//! the subscriber's own timestamps (see `sender_clock` for why).

use std::time::Instant;

use rtc::rtcp::sender_report::SenderReport;

use super::{Consumer, Peer, PeerKey, Router, Upstream};
use crate::api::SfuEvent;
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
        // Nodes this track is exported to get the reports too, for their own subscribers.
        for export in &producer.exports {
            for report in reports {
                self.events.push_back(SfuEvent::RelaySenderReport {
                    link: export.link,
                    track_sid: sid.to_owned(),
                    ssrc: report.ssrc,
                    ntp_time: report.ntp_time,
                    rtp_time: report.rtp_time,
                    packets: report.packet_count,
                    octets: report.octet_count,
                });
            }
        }
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

impl Router {
    /// A sender report of imported track `sid`'s publisher, passed on by the node that exports
    /// it (arrival here is the instant it names, as for a local publisher's).
    pub fn relay_sender_report(&mut self, now: Instant, sid: &str, ssrc: u32, rtp_time: u32) {
        if self
            .producers
            .get(sid)
            .is_none_or(|p| p.upstream != Upstream::Relay)
        {
            return;
        }
        let report = SenderReport {
            ssrc,
            rtp_time,
            ..Default::default()
        };
        self.note_sender_reports(now, sid, &[report]);
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
