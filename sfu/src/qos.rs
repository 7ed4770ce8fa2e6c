//! QoS samples of recorded participants (issue 13, item 3): once a second, what the SFU sees of
//! each participant's links, for the recording's QoS timeline.
//!
//! The router calls in only while something is recorded, and only for recorded participants:
//! [`Sampler::sample`] turns the running totals of a participant's stats reports into the
//! rates of the last interval, and [`Sampler::layer_changed`] collects the allocator's layer
//! decisions for the next sample. The control plane writes the samples out
//! (`aula_signaling`'s `recording::qos`); nothing here touches the disk.
//!
//! Directions are the participant's: it *sends* what the SFU receives from it (its publish
//! connection) and *receives* what the SFU forwards to it (its subscribe connection).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};

use crate::api::{ParticipantId, TrackSid};
use crate::forward::condition::PathCondition;
use crate::forward::simulcast::Layer;
use crate::quality::ConnectionQuality;

/// One sample a second, as the issue asks.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Running totals read from one participant's stats reports (both of its connections).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Media bytes received from the participant (what it publishes).
    pub bytes_received: u64,
    /// Media bytes sent to the participant (what it subscribes to).
    pub bytes_sent: u64,
    /// NACKed sequence numbers and keyframe requests (PLI + FIR) the participant sent about
    /// what it receives.
    pub nacks_received: u64,
    pub keyframe_requests_received: u64,
    /// NACKed sequence numbers and keyframe requests the SFU sent the participant about what
    /// it publishes.
    pub nacks_sent: u64,
    pub keyframe_requests_sent: u64,
    /// Packets of the participant's streams received and lost, as the SFU counts them.
    pub packets_received: u64,
    pub packets_lost: u64,
}

impl Totals {
    /// Adds the bytes and packets one stats report holds. Not its NACK and keyframe request
    /// counts: see [`FeedbackCounts`].
    pub fn add(&mut self, report: &RTCStatsReport) {
        for entry in report.iter() {
            match entry {
                RTCStatsReportEntry::InboundRtp(stats) => {
                    let received = &stats.received_rtp_stream_stats;
                    self.bytes_received += stats.bytes_received;
                    self.packets_received += received.packets_received;
                    self.packets_lost += received.packets_lost.max(0) as u64;
                }
                RTCStatsReportEntry::OutboundRtp(stats) => {
                    self.bytes_sent += stats.sent_rtp_stream_stats.bytes_sent;
                }
                _ => {}
            }
        }
    }

    /// Adds the feedback counted on one of the participant's connections.
    pub fn add_feedback(&mut self, feedback: &FeedbackCounts) {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        self.nacks_received += read(&feedback.nacks_received);
        self.keyframe_requests_received += read(&feedback.keyframe_requests_received);
        self.nacks_sent += read(&feedback.nacks_sent);
        self.keyframe_requests_sent += read(&feedback.keyframe_requests_sent);
    }
}

/// The NACKs and keyframe requests that crossed one connection, counted by the SFU's tap
/// (`crate::tap`) at the wire and read by the router for the samples. `rtc`'s stats cannot
/// give them: they count only the RTCP that reaches `rtc`'s own handler, and a subscriber's
/// NACKs and keyframe requests are consumed before it (by the tap and `rtc`'s NACK responder),
/// while the NACKs to a publisher come from `rtc`'s generator, further down the chain.
///
/// A participant sends feedback only about what it receives (on its subscribe connection)
/// and gets it only about what it publishes (on its publish connection), so what came in on
/// either connection is what it sent, and what went out is what the SFU sent it.
#[derive(Debug, Default)]
pub struct FeedbackCounts {
    /// NACKed sequence numbers (as `aula_nacks_*_total` count them) and keyframe requests
    /// (PLI, FIR) that came in on the connection.
    pub nacks_received: AtomicU64,
    pub keyframe_requests_received: AtomicU64,
    /// Those that went out.
    pub nacks_sent: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    /// Set when feedback comes in again after [`crate::tap::PATH_SILENCE`] without any: the
    /// path from the participant came back from an outage. Also set when the connection is
    /// connected again after ICE called it disconnected while nothing came from it (see
    /// `Peer::outage`). The router takes it (and asks for keyframes for what the participant
    /// watches).
    pub path_returned: std::sync::atomic::AtomicBool,
    /// When the last RTCP came in on the connection (written by the tap).
    pub last_rtcp: Mutex<Option<Instant>>,
    /// On a publish connection: per audio stream (SSRC), the least loss the SFU's receiver
    /// reports give for it, as RTCP's fraction lost (x/256): what its listeners without RED
    /// lose, so that the publisher's Opus encoder adds in-band FEC for them (see
    /// `Router::report_listeners_loss`). Written by the router, applied by the tap.
    pub reported_loss_floor: Mutex<HashMap<u32, u8>>,
    /// Per stream the SFU sends on the connection, what the peer's latest reception report
    /// said of it (read by the tap: see `tap::reports`).
    pub receptions: Mutex<HashMap<u32, Reception>>,
}

/// What a peer's reception report said of one stream the SFU sends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reception {
    /// The fraction lost since its previous report: after the peer's repairs (Chromium counts
    /// a packet that a resend brought as received).
    pub loss: f64,
    pub jitter: Duration,
    /// `None` until the peer has echoed one of the SFU's sender reports.
    pub rtt: Option<Duration>,
}

impl FeedbackCounts {
    /// How long since the last RTCP came in on the connection (`None`: none yet). On a
    /// subscriber's connection RTCP is all that comes.
    pub fn silent_for(&self, now: Instant) -> Option<Duration> {
        let last = *self
            .last_rtcp
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.map(|at| now.saturating_duration_since(at))
    }

    /// The latest reception reports on the connection's streams.
    pub fn receptions(&self) -> Vec<Reception> {
        let receptions = self
            .receptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        receptions.values().copied().collect()
    }
}

/// What the router knows of a participant's links right now, beside the totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkState {
    /// The bandwidth estimate of the path to the participant, bits per second.
    pub estimate_bps: Option<f64>,
    /// The share of packets that path lost before retransmission repaired any (its
    /// transport-wide feedback).
    pub loss_before_recovery: Option<f64>,
    /// The share still lost after repair: the worst of its receiver reports (browsers count a
    /// repaired packet as received).
    pub loss_after_recovery: Option<f64>,
    pub rtt: Option<Duration>,
    pub jitter: Option<Duration>,
    pub quality: Option<ConnectionQuality>,
    /// Each subscribed video and the layer forwarded now (`None`: paused).
    pub layers: Vec<(TrackSid, Option<Layer>)>,
    /// Capture records of the participant's tracks dropped so far (a slow disk).
    pub recording_dropped: u64,
}

/// A subscriber's layer of one video changed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerChange {
    pub at: Instant,
    pub track_sid: TrackSid,
    pub from: Option<Layer>,
    pub to: Option<Layer>,
    pub reason: LayerReason,
}

/// Why the allocator chose a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerReason {
    /// The bandwidth estimate does not allow the best layer available.
    Bandwidth,
    /// The link loses packets: layers with fewer packets a frame (see
    /// [`crate::forward::condition`]).
    LossyLink,
    /// The link loses so much that video is paused and only audio is sent (see
    /// [`crate::forward::condition`]).
    AudioOnly,
    /// The best layer the publisher sends and the subscriber's rendered size needs.
    BestAvailable,
    /// No layer can be had (the publisher sends none the subscriber shows).
    Unavailable,
}

impl LayerReason {
    /// The allocator chose `to` while `cap` was the best layer it could have had (the
    /// publisher's, within the rendered size, and within what the path's `condition` gets).
    pub fn of(to: Option<Layer>, cap: Option<Layer>, condition: PathCondition) -> Self {
        match cap {
            None if condition == PathCondition::AudioOnly => LayerReason::AudioOnly,
            None => LayerReason::Unavailable,
            Some(cap) if to.is_none_or(|to| to < cap) => LayerReason::Bandwidth,
            Some(_) if condition.is_lossy() => LayerReason::LossyLink,
            Some(_) => LayerReason::BestAvailable,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            LayerReason::Bandwidth => "bandwidth",
            LayerReason::LossyLink => "lossy_link",
            LayerReason::AudioOnly => "audio_only",
            LayerReason::BestAvailable => "best_available",
            LayerReason::Unavailable => "unavailable",
        }
    }
}

/// One participant's figures over the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSample {
    /// Bits per second the participant sent (the SFU received) and received.
    pub send_bps: f64,
    pub receive_bps: f64,
    /// The share of the participant's own packets lost on the way to the SFU.
    pub send_loss: Option<f64>,
    pub nacks_received: u64,
    pub keyframe_requests_received: u64,
    pub nacks_sent: u64,
    pub keyframe_requests_sent: u64,
    pub link: LinkState,
    /// Layer changes since the last sample, oldest first.
    pub layer_changes: Vec<LayerChange>,
}

/// See the module docs.
#[derive(Default)]
pub struct Sampler {
    last: HashMap<ParticipantId, (Instant, Totals)>,
    changes: HashMap<ParticipantId, Vec<LayerChange>>,
}

impl Sampler {
    /// Notes a layer change of a recorded subscriber, for its next sample.
    pub fn layer_changed(&mut self, participant: &str, change: LayerChange) {
        self.changes
            .entry(participant.to_owned())
            .or_default()
            .push(change);
    }

    /// The sample of `participant` now. Its first has zero rates: it has no interval yet.
    pub fn sample(
        &mut self,
        now: Instant,
        participant: &str,
        totals: Totals,
        link: LinkState,
    ) -> PeerSample {
        let (then, before) = self
            .last
            .insert(participant.to_owned(), (now, totals))
            .unwrap_or((now, totals));
        let secs = now.saturating_duration_since(then).as_secs_f64();
        let rate = |now: u64, then: u64| {
            if secs > 0.0 {
                now.saturating_sub(then) as f64 * 8.0 / secs
            } else {
                0.0
            }
        };
        let got = totals
            .packets_received
            .saturating_sub(before.packets_received);
        let lost = totals.packets_lost.saturating_sub(before.packets_lost);
        PeerSample {
            send_bps: rate(totals.bytes_received, before.bytes_received),
            receive_bps: rate(totals.bytes_sent, before.bytes_sent),
            send_loss: (got + lost > 0).then(|| lost as f64 / (got + lost) as f64),
            nacks_received: totals.nacks_received.saturating_sub(before.nacks_received),
            keyframe_requests_received: totals
                .keyframe_requests_received
                .saturating_sub(before.keyframe_requests_received),
            nacks_sent: totals.nacks_sent.saturating_sub(before.nacks_sent),
            keyframe_requests_sent: totals
                .keyframe_requests_sent
                .saturating_sub(before.keyframe_requests_sent),
            link,
            layer_changes: self.changes.remove(participant).unwrap_or_default(),
        }
    }

    /// Forgets participants no longer recorded.
    pub fn retain(&mut self, recorded: impl Fn(&str) -> bool) {
        self.last.retain(|p, _| recorded(p));
        self.changes.retain(|p, _| recorded(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_counts_are_of_the_last_interval() {
        let mut sampler = Sampler::default();
        let t0 = Instant::now();
        let first = Totals {
            bytes_received: 1_000,
            bytes_sent: 5_000,
            nacks_received: 3,
            packets_received: 90,
            packets_lost: 10,
            ..Totals::default()
        };
        let sample = sampler.sample(t0, "p", first, LinkState::default());
        assert_eq!(sample.send_bps, 0.0, "no interval yet");
        assert_eq!(sample.nacks_received, 0);
        let second = Totals {
            bytes_received: 6_000,
            bytes_sent: 30_000,
            nacks_received: 5,
            packets_received: 180,
            packets_lost: 20,
            ..Totals::default()
        };
        let t1 = t0 + Duration::from_millis(500);
        let sample = sampler.sample(t1, "p", second, LinkState::default());
        assert_eq!(sample.send_bps, 80_000.0);
        assert_eq!(sample.receive_bps, 400_000.0);
        assert_eq!(sample.nacks_received, 2);
        assert_eq!(sample.send_loss, Some(0.1));
    }

    #[test]
    fn layer_changes_go_with_the_next_sample_once() {
        let mut sampler = Sampler::default();
        let now = Instant::now();
        let change = LayerChange {
            at: now,
            track_sid: "TR_a".into(),
            from: Some(2),
            to: Some(0),
            reason: LayerReason::Bandwidth,
        };
        sampler.layer_changed("p", change.clone());
        let sample = sampler.sample(now, "p", Totals::default(), LinkState::default());
        assert_eq!(sample.layer_changes, vec![change]);
        let sample = sampler.sample(now, "p", Totals::default(), LinkState::default());
        assert!(sample.layer_changes.is_empty());
    }

    #[test]
    fn a_layer_below_the_best_available_is_the_bandwidths_doing() {
        use PathCondition::{AudioOnly, Clean, Lossy};
        let of = LayerReason::of;
        assert_eq!(of(Some(0), Some(2), Clean), LayerReason::Bandwidth);
        assert_eq!(of(None, Some(0), Clean), LayerReason::Bandwidth);
        assert_eq!(of(Some(1), Some(1), Lossy), LayerReason::LossyLink);
        assert_eq!(of(Some(2), Some(2), Clean), LayerReason::BestAvailable);
        assert_eq!(of(None, None, Clean), LayerReason::Unavailable);
        assert_eq!(of(None, None, AudioOnly), LayerReason::AudioOnly);
    }
}
