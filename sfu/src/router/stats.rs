//! What the router reports: the gauges, the links' statistics and connection quality for the
//! control plane, and the QoS samples of recorded participants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aula_protocol::TrackKind;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::statistics::StatsSelector;
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use rtc::statistics::stats::rtp_stream::RTCRtpStreamStats;

use super::{ConsumerStage, Router};
use crate::api::{ParticipantId, SfuEvent};
use crate::bwe::SharedEstimate;
use crate::qos::{LinkState, Totals};
use crate::quality::{self, ConnectionQuality, LinkSample};

impl Router {
    pub(super) fn update_gauges(&self) {
        let stats = self.stats();
        self.metrics.peers.set(stats.peers as i64);
        self.metrics.published_tracks.set(stats.producers as i64);
        self.metrics.subscriptions.set(stats.consumers as i64);
        let paused = self
            .producers
            .values()
            .filter(|p| p.kind == TrackKind::Video && !p.paused)
            .flat_map(|p| p.consumers.values())
            .filter(|c| {
                matches!(c.stage, ConsumerStage::Live { .. })
                    && c.selector.allowed().is_none()
                    && !c.hidden()
            })
            .count();
        self.metrics.paused_video.set(paused as i64);
    }

    /// Feeds what each link reports (subscribers: their receiver reports about our streams;
    /// publishers: what we measure of theirs) into the metrics, and tells the control plane
    /// when a participant's connection quality changes.
    pub(super) fn sample_peer_stats(&mut self, now: Instant) {
        let mut links: HashMap<ParticipantId, Vec<LinkSample>> = HashMap::new();
        for peer in self.peers.values_mut().filter(|p| p.connected) {
            if let Some(estimate) = peer.estimate.as_ref().and_then(SharedEstimate::current) {
                self.metrics.subscriber_estimate.observe(estimate);
            }
            let report = peer.pc.get_stats(now, StatsSelector::None);
            let samples = links.entry(peer.participant.clone()).or_default();
            for reception in peer.feedback.receptions() {
                self.metrics.peer_fraction_lost.observe(reception.loss);
                self.metrics
                    .peer_jitter
                    .observe(reception.jitter.as_secs_f64());
                if let Some(rtt) = reception.rtt {
                    self.metrics.peer_rtt.observe(rtt.as_secs_f64());
                }
                samples.push(LinkSample {
                    loss: reception.loss,
                    jitter: reception.jitter,
                    rtt: reception.rtt,
                });
            }
            for entry in report.iter() {
                if let RTCStatsReportEntry::InboundRtp(stats) = entry {
                    let received = &stats.received_rtp_stream_stats;
                    let ssrc = received.rtp_stream_stats.ssrc;
                    let (was_received, was_lost) = peer
                        .inbound_totals
                        .insert(ssrc, (received.packets_received, received.packets_lost))
                        .unwrap_or((0, 0));
                    let got = received.packets_received.saturating_sub(was_received);
                    let lost = (received.packets_lost - was_lost).max(0) as u64;
                    if got + lost > 0 {
                        let jitter =
                            jitter_secs(&report, &received.rtp_stream_stats, received.jitter);
                        samples.push(LinkSample {
                            loss: lost as f64 / (got + lost) as f64,
                            jitter: Duration::from_secs_f64(jitter),
                            rtt: None,
                        });
                    }
                }
            }
            // What the subscriber's transport-wide feedback says the path lost. Its receiver
            // reports cannot be relied on for this: Chromium counts a packet that NACK
            // repaired as received, and at 20 % loss they said 0 (a student on a bad link
            // was shown "excellent" to the teacher).
            if let Some(estimate) = &peer.estimate {
                samples.push(LinkSample {
                    loss: estimate.loss(),
                    jitter: Duration::ZERO,
                    rtt: None,
                });
            }
        }
        let mut counts: HashMap<ConnectionQuality, i64> = HashMap::new();
        for (participant, samples) in links {
            let report = quality::report(samples);
            *counts.entry(report.level).or_default() += 1;
            if let Some(state) = self.participants.get_mut(&participant)
                && quality::worth_telling(state.told.as_ref(), &report)
            {
                state.quality = Some(report.level);
                state.told = Some(report);
                self.events.push_back(SfuEvent::ConnectionQuality {
                    participant,
                    quality: report.level,
                    loss: report.loss,
                    rtt: report.rtt,
                });
            }
        }
        for level in [
            ConnectionQuality::Excellent,
            ConnectionQuality::Good,
            ConnectionQuality::Poor,
        ] {
            self.metrics
                .connection_quality
                .with_label_values(&[quality::label(level)])
                .set(counts.get(&level).copied().unwrap_or(0));
        }
    }

    /// Tells the control plane what each recorded participant's links did over the last
    /// second ([`SfuEvent::QosSample`]).
    pub(super) fn sample_qos(&mut self, now: Instant) {
        let captures = &self.captures;
        self.qos.retain(|p| captures.records(p));
        // Only those connected here: another shard's staff are known here too (`set_staff`).
        let recorded: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(p, state)| {
                (state.publish.is_some() || state.subscribe.is_some()) && self.captures.records(p)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for participant in recorded {
            let Some(state) = self.participants.get(&participant) else {
                continue;
            };
            let (publish, subscribe, quality) = (state.publish, state.subscribe, state.quality);
            let mut totals = Totals::default();
            let mut link = LinkState {
                quality,
                recording_dropped: self.captures.dropped_of(&participant),
                ..LinkState::default()
            };
            if let Some(peer) = publish.and_then(|key| self.peers.get_mut(&key)) {
                totals.add(&peer.pc.get_stats(now, StatsSelector::None));
                totals.add_feedback(&peer.feedback);
            }
            if let Some(peer) = subscribe.and_then(|key| self.peers.get_mut(&key)) {
                let report = peer.pc.get_stats(now, StatsSelector::None);
                totals.add(&report);
                totals.add_feedback(&peer.feedback);
                link.estimate_bps = peer.estimate.as_ref().and_then(SharedEstimate::current);
                link.loss_before_recovery = peer.estimate.as_ref().map(SharedEstimate::loss);
                for reception in peer.feedback.receptions() {
                    link.jitter = link.jitter.max(Some(reception.jitter));
                    link.rtt = link.rtt.max(reception.rtt);
                    link.loss_after_recovery =
                        Some(link.loss_after_recovery.unwrap_or(0.0).max(reception.loss));
                }
            }
            link.layers = self
                .producers
                .values()
                .filter(|p| p.kind == TrackKind::Video)
                .filter_map(|p| Some((p.sid.clone(), p.consumers.get(&participant)?)))
                .map(|(sid, consumer)| (sid, consumer.forwarder.current()))
                .collect();
            let sample = self.qos.sample(now, &participant, totals, link);
            self.events.push_back(SfuEvent::QosSample {
                participant,
                at: now,
                sample: Box::new(sample),
            });
        }
    }
}

/// RTCP carries jitter in RTP timestamp units, and `rtc` passes it on as it is (though its docs
/// say seconds): seconds are that over the stream's clock rate, its codec's when the report
/// has it. Read as seconds, a video stream's few milliseconds of jitter were hundreds of
/// "seconds", and every publisher's connection quality was `poor`.
fn jitter_secs(report: &RTCStatsReport, stream: &RTCRtpStreamStats, units: f64) -> f64 {
    let clock_rate = match report.get(&stream.codec_id) {
        Some(RTCStatsReportEntry::Codec(codec)) => Some(codec.clock_rate),
        _ => None,
    };
    timestamp_units_to_secs(units, clock_rate, stream.kind)
}

/// `units` of an RTP clock in seconds; without a known rate, the usual 48 kHz for audio (Opus)
/// and 90 kHz for video.
fn timestamp_units_to_secs(units: f64, clock_rate: Option<u32>, kind: RtpCodecKind) -> f64 {
    let default = if kind == RtpCodecKind::Audio {
        48_000
    } else {
        90_000
    };
    let rate = clock_rate.filter(|r| *r > 0).unwrap_or(default);
    units.max(0.0) / f64::from(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_read_in_its_streams_clock() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(
            timestamp_units_to_secs(90.0, None, RtpCodecKind::Video),
            0.001
        ));
        assert!(close(
            timestamp_units_to_secs(480.0, None, RtpCodecKind::Audio),
            0.01
        ));
        assert!(close(
            timestamp_units_to_secs(80.0, Some(8_000), RtpCodecKind::Audio),
            0.01
        ));
        assert_eq!(
            timestamp_units_to_secs(-5.0, Some(0), RtpCodecKind::Video),
            0.0
        );
    }
}
