//! Tracks carried between nodes (issue 14): the router's side, with no I/O.
//!
//! A node that has a track *exports* it to each node that needs it: every packet it receives of
//! the track (all simulcast layers, after RED is taken apart and header extensions dropped, as
//! for its own subscribers) is queued once per link as a [`RelayTransmit`], which the worker
//! sends as a QUIC datagram. The other node *imports* it: a producer with
//! [`Upstream::Relay`], fed by [`Router::relay_packet`], that its local subscribers consume
//! exactly like a local publisher's track, each with its own layer choice and congestion
//! control. Keyframe requests for an imported track become one
//! [`SfuEvent::RelayKeyframeRequest`] per layer (rate-limited as PLIs are), which the control
//! plane sends up the link; the exporting node asks its publisher.

use std::time::Instant;

use bytes::Bytes;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tracing::{debug, info};

use super::forwarding::RELAYED_PLI_MIN_INTERVAL;
use super::{LayerActivity, LayerRates, Producer, Router, Upstream};
use crate::api::{SfuError, SfuEvent};
use crate::codec::VideoCodec;
use crate::forward::simulcast::Layer;
use crate::relay::track::{RelayedTrack, flow_id};
use aula_protocol::TrackKind;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use std::collections::HashMap;

/// One node a track is exported to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The link, as the control plane numbers them.
    pub link: u64,
    /// The track's index on that link (see [`crate::relay::track`]).
    pub index: u64,
    /// The layers the other node asked for (see [`demanded_layers`]); every layer until it
    /// says.
    pub layers: Option<Vec<Layer>>,
    /// Audio: the worst loss among the other node's (or shard's) listeners without RED, as it
    /// reported, in 256ths (see `Router::report_listeners_loss`).
    pub listener_loss: u8,
}

impl Export {
    fn carries(&self, layer: Layer) -> bool {
        self.layers
            .as_ref()
            .is_none_or(|layers| layers.contains(&layer))
    }
}

/// The layers of an imported video to ask of the node that exports it, when the best layer any
/// subscriber here may get now is `best` (`None`: every one is paused or hidden) and the
/// highest the track has is `top`: every layer up to one above `best`. The layer above keeps
/// flowing so that its rate is known and a subscriber can climb to it at once (the one above
/// that follows when one does); the lowest always flows, so a paused video can resume. A
/// class whose learners behind a relay all watch the small picture then costs the long link
/// the two small layers, not the full one too.
pub fn demanded_layers(best: Option<Layer>, top: Layer) -> Vec<Layer> {
    let highest = best.map_or(0, |best| best.saturating_add(1)).min(top);
    (0..=highest).collect()
}

/// A packet for another node: send `data` on `link` as a datagram of `flow`.
#[derive(Debug, Clone)]
pub struct RelayTransmit {
    pub link: u64,
    pub flow: u64,
    pub data: Bytes,
}

/// Queues `packet` (of `layer`) for every node `producer` is exported to: marshalled once,
/// shared by all, and kept for resending.
pub(super) fn export(
    producer: &mut Producer,
    layer: Layer,
    packet: &rtc::rtp::Packet,
    out: &mut std::collections::VecDeque<RelayTransmit>,
) {
    let data = match packet.marshal() {
        Ok(data) => data.freeze(),
        Err(e) => {
            debug!(error = %e, "cannot marshal a packet for a relay link");
            return;
        }
    };
    for export in producer.exports.iter().filter(|e| e.carries(layer)) {
        out.push_back(RelayTransmit {
            link: export.link,
            flow: flow_id(export.index, layer),
            data: data.clone(),
        });
    }
    producer
        .relay_history
        .keep(layer, packet.header.sequence_number, data);
}

impl Router {
    /// The next packet for another node, if any.
    pub fn poll_relay_transmit(&mut self) -> Option<RelayTransmit> {
        self.relay_transmits.pop_front()
    }

    /// Starts sending `track_sid` to the node on `link` as track `index` there, and asks its
    /// publisher for keyframes so that the other node's subscribers can start. Returns what the
    /// other node needs to import it. Exporting twice on one link keeps the first index.
    pub fn relay_export(
        &mut self,
        now: Instant,
        track_sid: &str,
        link: u64,
        index: u64,
    ) -> Result<RelayedTrack, SfuError> {
        let producer = self
            .producers
            .get_mut(track_sid)
            .ok_or_else(|| SfuError::UnknownTrack(track_sid.to_owned()))?;
        let index = match producer.exports.iter().find(|e| e.link == link) {
            Some(export) => export.index,
            None => {
                producer.exports.push(Export {
                    link,
                    index,
                    layers: None,
                    listener_loss: 0,
                });
                info!(track = %track_sid, link, index, "track exported to a relay link");
                index
            }
        };
        let track = RelayedTrack {
            sid: producer.sid.clone(),
            participant: producer.participant.clone(),
            kind: producer.kind,
            source: producer.source,
            mime_type: producer.codec.mime_type.clone(),
            clock_rate: producer.codec.clock_rate,
            channels: producer.codec.channels,
            fmtp: producer.codec.sdp_fmtp_line.clone(),
            payload_type: producer.payload_type,
            simulcast: producer.layers.len() > 1,
            index,
        };
        let layers: Vec<Layer> = producer.layers.values().copied().collect();
        for layer in layers {
            self.request_keyframe(now, track_sid, layer);
        }
        Ok(track)
    }

    /// The node on `link` wants only `layers` of `track_sid` (see [`demanded_layers`]). A
    /// layer it adds is asked of the publisher as a keyframe, so that the subscriber climbing
    /// to it there can switch at once.
    pub fn relay_layer_demand(
        &mut self,
        now: Instant,
        track_sid: &str,
        link: u64,
        layers: Vec<Layer>,
    ) {
        let Some(export) = self
            .producers
            .get_mut(track_sid)
            .and_then(|p| p.exports.iter_mut().find(|e| e.link == link))
        else {
            return;
        };
        let added: Vec<Layer> = match &export.layers {
            Some(before) => layers
                .iter()
                .copied()
                .filter(|layer| !before.contains(layer))
                .collect(),
            None => Vec::new(),
        };
        export.layers = Some(layers);
        for layer in added {
            self.request_keyframe(now, track_sid, layer);
        }
    }

    /// The node (or shard) on `link` says the worst loss among its listeners of audio track
    /// `track_sid` that have no RED is `fraction` (256ths); it counts with the listeners here
    /// in what the publisher is told (see `Router::report_listeners_loss`). Unknown tracks or
    /// links are a no-op.
    pub fn relay_listener_loss(&mut self, track_sid: &str, link: u64, fraction: u8) {
        if let Some(export) = self
            .producers
            .get_mut(track_sid)
            .and_then(|p| p.exports.iter_mut().find(|e| e.link == link))
        {
            export.listener_loss = fraction;
        }
    }

    /// Tells the nodes that export this node's imported videos which layers its subscribers,
    /// and the shards and nodes it passes them on to, need now ([`SfuEvent::RelayLayerDemand`], when that changes).
    pub(super) fn update_relay_demands(&mut self) {
        for producer in self
            .producers
            .values_mut()
            .filter(|p| p.upstream == Upstream::Relay && p.kind == TrackKind::Video)
        {
            let Some(top) = producer.layers.values().max().copied() else {
                continue;
            };
            let best = producer
                .consumers
                .values()
                .filter_map(|c| Some(c.selector.ladder().quality(c.wanted()?).spatial))
                .max();
            // Shards or nodes this track is passed on to need their layers too.
            let passed_on = producer
                .exports
                .iter()
                .map(|e| {
                    e.layers
                        .as_ref()
                        .map_or(top, |l| l.iter().max().copied().unwrap_or(0))
                })
                .max();
            let mut layers = demanded_layers(best, top);
            if let Some(highest) = passed_on.filter(|h| Some(h) > layers.last()) {
                layers = (0..=highest).collect();
            }
            if producer.relay_demand.as_ref() != Some(&layers) {
                // A layer asked for again resumes after a gap that is no loss: the exporter
                // sent nothing of it meanwhile.
                for layer in &layers {
                    if producer
                        .relay_demand
                        .as_ref()
                        .is_some_and(|before| !before.contains(layer))
                    {
                        producer.relay_gaps.forget(*layer);
                    }
                }
                producer.relay_demand = Some(layers.clone());
                self.events.push_back(SfuEvent::RelayLayerDemand {
                    track_sid: producer.sid.clone(),
                    layers,
                });
            }
        }
    }

    /// Stops sending `track_sid` on `link`. Unknown tracks or links are a no-op.
    pub fn relay_unexport(&mut self, track_sid: &str, link: u64) {
        if let Some(producer) = self.producers.get_mut(track_sid) {
            producer.exports.retain(|e| e.link != link);
        }
    }

    /// Forgets a link that went down: nothing more is exported on it.
    pub fn relay_link_closed(&mut self, link: u64) {
        for producer in self.producers.values_mut() {
            producer.exports.retain(|e| e.link != link);
        }
    }

    /// Makes a track of another node available here, for [`Router::subscribe`]. No
    /// [`SfuEvent::TrackPublished`] follows: the control plane that asked knows it. Importing a
    /// track that is here already is a no-op.
    pub fn relay_import(&mut self, track: RelayedTrack) -> Result<(), SfuError> {
        if self.producers.contains_key(&track.sid) {
            return Ok(());
        }
        let codec_kind = VideoCodec::from_mime(&track.mime_type);
        if (track.kind == TrackKind::Video) != codec_kind.is_some()
            || track.source.kind() != track.kind
        {
            return Err(SfuError::TrackMismatch(format!(
                "relayed track {} is {:?} {:?} in {}",
                track.sid, track.kind, track.source, track.mime_type
            )));
        }
        info!(track = %track.sid, participant = %track.participant, "relayed track imported");
        let producer = Producer {
            sid: track.sid.clone(),
            participant: track.participant,
            upstream: Upstream::Relay,
            kind: track.kind,
            source: track.source,
            codec: RTCRtpCodec {
                mime_type: track.mime_type,
                clock_rate: track.clock_rate,
                channels: track.channels,
                sdp_fmtp_line: track.fmtp,
                rtcp_feedback: Vec::new(),
            },
            payload_type: track.payload_type,
            red_payload_type: None,
            video: codec_kind,
            layers: HashMap::new(),
            activity: LayerActivity::default(),
            rates: LayerRates::default(),
            sizes: Vec::new(),
            last_pli: HashMap::new(),
            consumers: HashMap::new(),
            paused: false,
            extmaps: Vec::new(),
            exports: Vec::new(),
            relay_history: Default::default(),
            relay_gaps: Default::default(),
            relay_demand: None,
            relay_listener_loss: 0,
            clocks: Vec::new(),
        };
        self.producers.insert(track.sid, producer);
        Ok(())
    }

    /// A packet of imported track `track_sid`, layer `layer`, from its link. Packets of unknown
    /// or local tracks, and packets that do not parse, are dropped.
    pub fn relay_packet(&mut self, now: Instant, track_sid: &str, layer: Layer, data: &Bytes) {
        let Some(producer) = self.producers.get_mut(track_sid) else {
            return;
        };
        if producer.upstream != Upstream::Relay {
            return;
        }
        let packet = match rtc::rtp::Packet::unmarshal(&mut data.clone()) {
            Ok(packet) => packet,
            Err(e) => {
                debug!(track = %track_sid, error = %e, "malformed relayed packet dropped");
                return;
            }
        };
        producer.layers.entry(packet.header.ssrc).or_insert(layer);
        let missing = producer
            .relay_gaps
            .arrived(layer, packet.header.sequence_number);
        if !missing.is_empty() {
            self.metrics.relay_nacked.inc_by(missing.len() as u64);
            self.events.push_back(SfuEvent::RelayNack {
                track_sid: track_sid.to_owned(),
                layer,
                seqs: missing,
            });
        }
        self.forward(now, track_sid, packet);
        // Out now: waiting for the next datagram or timer to collect the copies held them
        // up to tens of milliseconds on a shard or node with few subscribers.
        self.drive(now);
    }

    /// Resends what the node on `link` says it lost of `track_sid`'s `layer`, as far as it is
    /// still kept.
    pub fn relay_resend(&mut self, track_sid: &str, link: u64, layer: Layer, seqs: &[u16]) {
        let Some(producer) = self.producers.get(track_sid) else {
            return;
        };
        let Some(export) = producer.exports.iter().find(|e| e.link == link) else {
            return;
        };
        for seq in seqs {
            if let Some(data) = producer.relay_history.get(layer, *seq) {
                self.relay_transmits.push_back(RelayTransmit {
                    link,
                    flow: flow_id(export.index, layer),
                    data: data.clone(),
                });
                self.metrics.relay_resent.inc();
            }
        }
    }

    /// A keyframe request for one layer of a local track, from another node's or shard's
    /// subscribers (already limited there): asks the publisher now unless it was asked in the
    /// last [`RELAYED_PLI_MIN_INTERVAL`].
    pub fn request_keyframe(&mut self, now: Instant, track_sid: &str, layer: Layer) {
        self.send_pli_within(now, track_sid, layer, RELAYED_PLI_MIN_INTERVAL);
        self.drive(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::SfuMetrics;
    use aula_protocol::TrackSource;

    fn opus_track(index: u64) -> RelayedTrack {
        RelayedTrack {
            sid: "TR_teacher_mic".into(),
            participant: "PA_teacher".into(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            fmtp: "minptime=10;useinbandfec=1".into(),
            payload_type: 111,
            simulcast: false,
            index,
        }
    }

    /// A marshalled RTP packet, numbered `seq`, timestamps `tick` apart.
    fn packet(payload_type: u8, ssrc: u32, seq: u16, tick: u32, payload: &'static [u8]) -> Bytes {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type,
                sequence_number: seq,
                timestamp: u32::from(seq) * tick,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        };
        packet.marshal().unwrap().freeze()
    }

    /// An Opus packet of 20 ms.
    fn rtp(seq: u16) -> Bytes {
        packet(111, 0x1234, seq, 960, &[0xfc, 0xff, 0xfe])
    }

    /// A router with no peers, as a node between two links has.
    fn router(now: Instant) -> Router {
        let metrics = SfuMetrics::register(&prometheus::Registry::new()).unwrap();
        Router::new(&[], metrics, now)
    }

    fn transmits(router: &mut Router) -> Vec<RelayTransmit> {
        std::iter::from_fn(|| router.poll_relay_transmit()).collect()
    }

    /// A node between two others (a track imported from the origin and exported on to another
    /// relay) exercises both halves: what arrives is passed on once per link, a gap is asked
    /// for again, and what the next node asks for is resent from the history.
    #[test]
    fn imported_packets_are_passed_on_gaps_asked_for_and_losses_resent() {
        let now = Instant::now();
        let mut router = router(now);
        router.relay_import(opus_track(3)).unwrap();
        let sid = "TR_teacher_mic";
        let exported = router.relay_export(now, sid, 7, 5).unwrap();
        assert_eq!(exported.index, 5);
        assert_eq!(exported.mime_type, "audio/opus");

        router.relay_packet(now, sid, 0, &rtp(65535));
        router.relay_packet(now, sid, 0, &rtp(2));
        let nacks: Vec<_> = std::iter::from_fn(|| router.poll_event()).collect();
        assert_eq!(
            nacks,
            vec![SfuEvent::RelayNack {
                track_sid: sid.into(),
                layer: 0,
                seqs: vec![0, 1],
            }]
        );
        let sent = transmits(&mut router);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|t| t.link == 7 && t.flow == flow_id(5, 0)));

        router.relay_resend(sid, 7, 0, &[65535, 1]);
        let resent = transmits(&mut router);
        assert_eq!(resent.len(), 1, "only what is kept is resent");
        assert_eq!(resent[0].data, rtp(65535));
        router.relay_resend(sid, 8, 0, &[65535]);
        assert!(transmits(&mut router).is_empty(), "not exported on link 8");
    }

    fn vp8_track(index: u64) -> RelayedTrack {
        RelayedTrack {
            sid: "TR_teacher_cam".into(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
            payload_type: 96,
            simulcast: true,
            ..opus_track(index)
        }
    }

    /// A VP8 delta frame's packet of the simulcast layer sent on `ssrc`.
    fn vp8(ssrc: u32, seq: u16) -> Bytes {
        packet(96, ssrc, seq, 3000, &[0x10, 0x01, 0xaa, 0xbb])
    }

    /// One packet of each of the three layers, through `router`'s imported camera.
    fn one_of_each_layer(router: &mut Router, now: Instant, seq: u16) -> Vec<u64> {
        for layer in 0..3 {
            router.relay_packet(now, "TR_teacher_cam", layer, &vp8(100 + layer as u32, seq));
        }
        transmits(router).iter().map(|t| t.flow).collect()
    }

    #[test]
    fn demand_is_one_layer_above_the_best_any_subscriber_gets() {
        assert_eq!(
            demanded_layers(None, 2),
            [0],
            "all paused: the lowest still flows"
        );
        assert_eq!(demanded_layers(Some(0), 2), [0, 1]);
        assert_eq!(demanded_layers(Some(1), 2), [0, 1, 2]);
        assert_eq!(demanded_layers(Some(Layer::MAX), 2), [0, 1, 2]);
        assert_eq!(demanded_layers(Some(0), 0), [0], "one layer");
    }

    #[test]
    fn only_the_layers_another_node_asked_for_cross_the_link() {
        let now = Instant::now();
        let mut router = router(now);
        router.relay_import(vp8_track(1)).unwrap();
        let sid = "TR_teacher_cam";
        router.relay_export(now, sid, 7, 2).unwrap();
        let flows =
            |layers: &[Layer]| -> Vec<u64> { layers.iter().map(|&l| flow_id(2, l)).collect() };
        assert_eq!(
            one_of_each_layer(&mut router, now, 1),
            flows(&[0, 1, 2]),
            "all, until asked"
        );

        router.relay_layer_demand(now, sid, 7, vec![0, 1]);
        assert_eq!(one_of_each_layer(&mut router, now, 2), flows(&[0, 1]));
        router.relay_layer_demand(now, sid, 8, vec![0]);
        assert_eq!(
            one_of_each_layer(&mut router, now, 3),
            flows(&[0, 1]),
            "a demand on a link the track is not exported on changes nothing"
        );

        // The top layer asked for again: its keyframe is asked for up the chain at once.
        while router.poll_event().is_some() {}
        router.relay_layer_demand(now + Duration::from_secs(1), sid, 7, vec![0, 1, 2]);
        let events: Vec<_> = std::iter::from_fn(|| router.poll_event()).collect();
        assert_eq!(
            events,
            [SfuEvent::RelayKeyframeRequest {
                track_sid: sid.into(),
                layer: 2
            }]
        );
        assert_eq!(one_of_each_layer(&mut router, now, 4), flows(&[0, 1, 2]));
    }

    #[test]
    fn an_imported_video_tells_its_exporter_what_its_subscribers_need_once() {
        let now = Instant::now();
        let mut router = router(now);
        router.relay_import(vp8_track(1)).unwrap();
        router.relay_import(opus_track(2)).unwrap();
        one_of_each_layer(&mut router, now, 1);
        while router.poll_event().is_some() {}
        router.update_relay_demands();
        let events: Vec<_> = std::iter::from_fn(|| router.poll_event()).collect();
        assert_eq!(
            events,
            [SfuEvent::RelayLayerDemand {
                track_sid: "TR_teacher_cam".into(),
                layers: vec![0],
            }],
            "nobody here watches it: the lowest layer only; nothing for audio"
        );
        router.update_relay_demands();
        assert_eq!(router.poll_event(), None, "told once, until it changes");
    }

    #[test]
    fn a_relayed_track_must_be_the_kind_its_codec_is() {
        let now = Instant::now();
        let mut router = router(now);
        let mut track = opus_track(1);
        track.kind = TrackKind::Video;
        track.source = TrackSource::Camera;
        assert!(matches!(
            router.relay_import(track),
            Err(SfuError::TrackMismatch(_))
        ));
    }
}
