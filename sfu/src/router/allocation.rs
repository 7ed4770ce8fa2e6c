//! Bandwidth allocation: each subscriber's estimate shared among its consumers by
//! [`crate::forward::allocate`], audio redundancy and video FEC set by its loss, the probe
//! rate asked of its connection, and [`SfuEvent::StreamState`] when a video pauses for it.

use std::collections::{HashMap, HashSet};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use aula_protocol::{TrackKind, TrackSource};
use tracing::debug;

use super::{Consumer, ConsumerStage, Producer, Router, Upstream};
use crate::api::{ParticipantId, SfuEvent};
use crate::bwe::{self, SharedEstimate};
use crate::fec::Protection;
use crate::forward::allocate::{Demand, Priority, allocate};
use crate::forward::condition::PathCondition;
use crate::forward::quality::Step;
use crate::forward::selector;
use crate::forward::simulcast::{Layer, layer_for_size};
use crate::qos::{LayerChange, LayerReason};
use crate::red;

/// A subscriber whose connection has been up this long without any congestion feedback (no
/// TWCC, no REMB) is not estimating: it gets the best layers, as it would from an SFU
/// without congestion control.
const FEEDBACK_GRACE: Duration = Duration::from_secs(3);
/// Bitrates assumed for a layer before a whole window of it has been measured.
const ASSUMED_AUDIO_RATE: f64 = 40_000.0;
const ASSUMED_VIDEO_RATES: [f64; 3] = [150_000.0, 500_000.0, 1_500_000.0];

/// The loss one subscriber's protection follows (see `PathJudge`).
struct PathLoss {
    participant: ParticipantId,
    sustained: f64,
    held: f64,
    estimate: Option<SharedEstimate>,
}

impl Router {
    /// Shares each subscriber's bandwidth estimate among its consumers: see
    /// [`crate::forward::allocate`] for the order and [`crate::forward::selector`] for the
    /// timing. A subscriber without any estimate gets the best layers.
    pub(super) fn allocate_bandwidth(&mut self, now: Instant) {
        type Budget = (
            ParticipantId,
            Option<SharedEstimate>,
            Option<f64>,
            PathCondition,
        );
        let mut losses = Vec::new();
        let budgets: Vec<Budget> = self
            .participants
            .iter()
            .filter_map(|(id, state)| {
                let peer = self.peers.get_mut(&state.subscribe?)?;
                let budget = peer.estimate.as_ref().and_then(SharedEstimate::current);
                let young = peer
                    .connected_at
                    .is_none_or(|at| now.saturating_duration_since(at) < FEEDBACK_GRACE);
                let (loss, totals) = peer
                    .estimate
                    .as_ref()
                    .map_or_else(Default::default, |e| (e.loss(), e.losses()));
                let condition = peer.path.update(now, loss, totals);
                // RED's depth follows the sustained loss: one noisy second at 50 % loss read
                // over 65 % and took it to 12 frames, whose ~400 kbit/s then left no room for
                // any video (paused for 9 s in the weak-network report). It lets go of it
                // slowly (`PathJudge::held`); FEC follows it as it is.
                losses.push(PathLoss {
                    participant: id.clone(),
                    sustained: peer.path.sustained(),
                    held: peer.path.held(),
                    estimate: peer.estimate.clone(),
                });
                let budget = budget.or(young.then_some(bwe::INITIAL_BITRATE));
                Some((id.clone(), peer.estimate.clone(), budget, condition))
            })
            .collect();
        self.report_listeners_loss(&losses);
        // Audio redundancy follows each subscriber's loss, before the allocation counts it.
        for PathLoss {
            participant,
            sustained,
            held,
            estimate,
        } in losses
        {
            let mut copies = 1;
            for producer in self.producers.values_mut() {
                if let Some(consumer) = producer.consumers.get_mut(&participant) {
                    let before = consumer.red_encoder.redundancy();
                    let redundancy = red::Redundancy::for_loss(before, held);
                    if redundancy != before {
                        debug!(%participant, ?redundancy, held, "audio redundancy changed");
                    }
                    consumer.red_encoder.set_redundancy(redundancy);
                    copies = copies.max(redundancy.copies());
                    consumer.fec = Protection::for_loss(consumer.fec, sustained);
                }
            }
            // The connection's wire end sends the copies (see `spaced_copies`).
            if let Some(estimate) = estimate {
                estimate.set_spaced_copies(copies > 1);
            }
        }
        let staff: HashSet<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| p.staff)
            .map(|(id, _)| id.clone())
            .collect();
        for (participant, estimate, budget, condition) in budgets {
            let probe = self.allocate_for(now, &participant, &staff, budget, condition);
            if let Some(estimate) = estimate {
                estimate.set_probe(probe);
            }
        }
    }

    /// Tells each local publisher of audio, in the SFU's receiver reports, the worst sustained
    /// loss among its listeners that RED does not protect (they did not negotiate it: Firefox,
    /// other WebRTC stacks). Its Opus encoder then adds in-band FEC, each packet carrying a
    /// coarser copy of the frame before, which is the repair such a listener can have.
    /// Listeners with RED are left out: the SFU repeats frames for each of them as deep as
    /// their own loss asks (see `red`), and in-band FEC would only take bits from every
    /// listener's audio for a repair RED already makes. The worst listener, not a share of
    /// them: one learner who cannot hear is the one this is for, and FEC costs the others
    /// a little quality, not audibility.
    ///
    /// Listeners on other shards and nodes count too: each importing router reports the worst
    /// of its own listeners and of those it passes the track on to, up the pipe or relay link
    /// the track came by ([`SfuEvent::RelayListenerLoss`], when that changes), as it does the
    /// layers its subscribers need.
    fn report_listeners_loss(&mut self, losses: &[PathLoss]) {
        let loss_of: HashMap<&str, f64> = losses
            .iter()
            .map(|loss| (loss.participant.as_str(), loss.sustained))
            .collect();
        for producer in self
            .producers
            .values_mut()
            .filter(|p| p.kind == TrackKind::Audio)
        {
            let here = producer
                .consumers
                .iter()
                .filter(|(_, c)| matches!(c.stage, ConsumerStage::Live { red: None, .. }))
                .filter_map(|(listener, _)| loss_of.get(listener.as_str()))
                .fold(0.0, |worst: f64, &loss| worst.max(loss));
            let beyond = producer.exports.iter().map(|e| e.listener_loss).max();
            let worst = fraction_lost(here).max(beyond.unwrap_or(0));
            match producer.upstream {
                Upstream::Peer { key, .. } => {
                    let Some(peer) = self.peers.get(&key) else {
                        continue;
                    };
                    let mut floors = peer
                        .feedback
                        .reported_loss_floor
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    for &ssrc in producer.layers.keys() {
                        match worst {
                            0 => floors.remove(&ssrc),
                            _ => floors.insert(ssrc, worst),
                        };
                    }
                }
                Upstream::Relay if worst != producer.relay_listener_loss => {
                    producer.relay_listener_loss = worst;
                    self.events.push_back(SfuEvent::RelayListenerLoss {
                        track_sid: producer.sid.clone(),
                        fraction: worst,
                    });
                }
                Upstream::Relay => {}
            }
        }
    }

    /// Chooses the layers of one subscriber's tracks. Returns the probe rate its connection
    /// should send (see `bwe::probe`): what the pending upgrades would add, plus the margin
    /// an upgrade needs ([`selector::UP_MARGIN`]) on the total, so that the probe verifies
    /// the headroom the estimate claims and not just the bare cost (a layer's keyframe and
    /// its ups and downs need that room).
    fn allocate_for(
        &mut self,
        now: Instant,
        participant: &str,
        staff: &HashSet<ParticipantId>,
        budget: Option<f64>,
        condition: PathCondition,
    ) -> f64 {
        let mut sids = Vec::new();
        let mut demands = Vec::new();
        for producer in self.producers.values() {
            let Some(consumer) = producer.consumers.get(participant) else {
                continue;
            };
            // A moderator's pause and a hidden video cost nothing and keep their layer.
            if producer.paused
                || consumer.hidden()
                || !matches!(consumer.stage, ConsumerStage::Live { .. })
            {
                continue;
            }
            demands.push(demand(
                producer,
                consumer,
                staff.contains(&producer.participant),
                condition,
            ));
            sids.push(producer.sid.clone());
        }
        let (fits, fits_with_margin) = match budget {
            Some(budget) => (
                allocate(budget, &demands),
                allocate(budget / selector::UP_MARGIN, &demands),
            ),
            None => {
                let best = allocate(f64::INFINITY, &demands);
                (best.clone(), best)
            }
        };
        let (mut forwarded, mut pending) = (0.0, 0.0);
        for (i, sid) in sids.iter().enumerate() {
            let Some(producer) = self.producers.get_mut(sid) else {
                continue;
            };
            let Some(consumer) = producer.consumers.get_mut(participant) else {
                continue;
            };
            let before = consumer.selector.allowed();
            let after = match budget {
                Some(estimate) => {
                    // A dip of the estimate on a clean path is a passing queue, worth
                    // riding out at the lowest step; on a lossy one it is the loss.
                    let lowest = demands[i]
                        .lowest()
                        .filter(|_| !condition.is_lossy())
                        .map(|(step, _)| step);
                    consumer
                        .selector
                        .update(now, fits[i], fits_with_margin[i], estimate, lowest)
                }
                None => consumer.selector.unlimited(fits[i]),
            };
            if fits[i].is_none() && after.is_some() {
                debug!(%participant, track = %sid, ?after, ?budget, "no room for the video: kept at its lowest step for the grace");
            }
            if before != after {
                // At once, not at the layer's next packet: the keyframe request for the new
                // layer goes out in this same housekeeping round (`request_keyframes`).
                consumer.retarget(&producer.activity);
                debug!(%participant, track = %sid, ?before, ?after, ?budget, ?condition, "allocation changed");
                // Recordings keep to simulcast layers: a frame rate alone changing is not one.
                let ladder = consumer.selector.ladder();
                let layer = |step: Option<Step>| step.map(|step| ladder.quality(step).spatial);
                let (from, to) = (layer(before), layer(after));
                if from != to && self.captures.records(participant) {
                    let cap = layer(demands[i].steps.iter().rposition(Option::is_some));
                    let change = LayerChange {
                        at: now,
                        track_sid: sid.clone(),
                        from,
                        to,
                        reason: LayerReason::of(to, cap, condition),
                    };
                    self.qos.layer_changed(participant, change);
                }
                self.metrics
                    .layer_changes
                    .with_label_values(&[if after > before { "up" } else { "down" }])
                    .inc();
            }
            // The subscriber hears of a video its link cannot take (and of its return), as
            // the page would otherwise show a frozen frame with no reason.
            let paused = after.is_none() && producer.kind == TrackKind::Video;
            if paused != consumer.told_paused {
                consumer.told_paused = paused;
                self.events.push_back(SfuEvent::StreamState {
                    participant: participant.to_owned(),
                    track_sid: sid.clone(),
                    paused,
                });
            }
            forwarded += demands[i].cost(after);
            if let Some(up_to) = consumer.selector.pending_upgrade() {
                pending += (demands[i].cost(Some(up_to)) - demands[i].cost(after)).max(0.0);
            }
        }
        if pending > 0.0 {
            selector::UP_MARGIN * (forwarded + pending) - forwarded
        } else {
            0.0
        }
    }
}

/// What forwarding `producer` to one subscriber costs, step by step (layers at frame rates,
/// see [`Ladder`](crate::forward::quality::Ladder)): measured rates of the layers being
/// received, none above what the subscriber's rendered size needs or what its path's
/// condition allows (no video at all on an audio-only path). Before a layer has been measured
/// its lower frame rates are assumed to cost the whole layer: a subscriber then starts at full
/// frame rate or not at all, as before frame rates were chosen, rather than on a guess of what
/// they save.
fn demand(
    producer: &Producer,
    consumer: &Consumer,
    staff: bool,
    condition: PathCondition,
) -> Demand {
    let priority = match (producer.kind, producer.source) {
        (TrackKind::Audio, _) => Priority::Audio,
        (_, TrackSource::ScreenShare) => Priority::Screen,
        _ if staff => Priority::Teacher,
        _ => Priority::Camera,
    };
    let count = producer.layers.values().max().map_or(1, |top| top + 1);
    // RED repeats each frame as many more times as the link's loss asks (see `red`), and FEC
    // adds its parity to video (see `fec`).
    let redundancy = match consumer.stage {
        ConsumerStage::Live { red: Some(_), .. } => Some(consumer.red_encoder.redundancy()),
        _ => None,
    };
    let fec_overhead = match consumer.stage {
        ConsumerStage::Live { fec: true, .. } => consumer.fec.overhead(),
        _ => 0.0,
    };
    let rendered = consumer
        .rendered
        .and_then(|r| layer_for_size(&producer.sizes, (r.width, r.height)))
        .unwrap_or(Layer::MAX);
    let max_layer = match producer.kind {
        TrackKind::Audio => Some(Layer::MAX),
        TrackKind::Video => condition.max_video_layer().map(|max| max.min(rendered)),
    };
    let ladder = consumer.selector.ladder();
    let steps = (0..ladder.steps(count))
        .map(|step| {
            let quality = ladder.quality(step);
            let layer = quality.spatial;
            let assumed = match producer.kind {
                TrackKind::Audio => ASSUMED_AUDIO_RATE,
                TrackKind::Video => ASSUMED_VIDEO_RATES[layer.min(2)],
            };
            let rate = producer.rates.rate_up_to(layer, quality.temporal);
            (max_layer.is_some_and(|max| layer <= max) && producer.activity.is_alive(layer))
                .then(|| red::cost(rate.unwrap_or(assumed), redundancy) * (1.0 + fec_overhead))
        })
        .collect();
    Demand { priority, steps }
}

/// A share of packets lost as RTCP's fraction lost: in 256ths, rounded down (RFC 3550 §6.4.1).
fn fraction_lost(loss: f64) -> u8 {
    (loss.clamp(0.0, 1.0) * 256.0).min(255.0) as u8
}
