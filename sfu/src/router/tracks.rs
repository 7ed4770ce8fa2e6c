//! Producers and consumers: a publisher's stream opening a producer (or another simulcast
//! layer of one), subscribing and unsubscribing, unpublishing, a moderator's pause, and the
//! per-subscriber settings (staff, rendered size) that the allocator reads.

use std::collections::HashMap;
use std::time::Instant;

use aula_protocol::{PeerTarget, TrackKind, TrackSource};
use rand::Rng;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tracing::{debug, info, warn};

use super::{Consumer, ConsumerStage, PeerKey, Producer, Router, Upstream};
use crate::api::{ParticipantId, PublishedTrack, RenderedSize, SfuError, SfuEvent};
use crate::codec::VideoCodec;
use crate::fec::Protection;
use crate::forward::Forwarder;
use crate::forward::quality::Ladder;
use crate::forward::rates::LayerRates;
use crate::forward::selector::Selector;
use crate::forward::simulcast::{LayerActivity, rid_rank};
use crate::record::format::Marker;
use crate::red;

impl Router {
    pub fn subscribe(
        &mut self,
        now: Instant,
        participant: &str,
        track_sid: &str,
    ) -> Result<(), SfuError> {
        let producer = self
            .producers
            .get(track_sid)
            .ok_or_else(|| SfuError::UnknownTrack(track_sid.to_owned()))?;
        if producer.participant == participant
            || self
                .participants
                .get(participant)
                .is_some_and(|p| p.subscriptions.contains(track_sid))
        {
            return Ok(());
        }
        let (codec, kind) = (producer.codec.clone(), producer.kind);
        let key = match self.participants.get(participant).and_then(|p| p.subscribe) {
            Some(key) => key,
            None => self.create_peer(now, participant, PeerTarget::Subscribe)?,
        };
        let ssrc = rand::rng().random::<u32>();
        let track = MediaStreamTrack::new(
            track_sid.to_owned(),
            track_sid.to_owned(),
            track_sid.to_owned(),
            match kind {
                TrackKind::Audio => RtpCodecKind::Audio,
                TrackKind::Video => RtpCodecKind::Video,
            },
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec: codec.clone(),
                ..Default::default()
            }],
        );
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        let sender_id = peer
            .pc
            .add_track(track)
            .map_err(|e| SfuError::Internal(e.to_string()))?;
        if let Some(producer) = self.producers.get_mut(track_sid) {
            producer.consumers.insert(
                participant.to_owned(),
                Consumer {
                    peer: key,
                    sender_id,
                    ssrc,
                    stage: ConsumerStage::Added,
                    forwarder: Forwarder::new(codec.clock_rate),
                    rendered: None,
                    selector: Selector::new(match kind {
                        TrackKind::Audio => Ladder::SINGLE,
                        TrackKind::Video => Ladder::VIDEO,
                    }),
                    red_encoder: red::Encoder::default(),
                    fec: Protection::OFF,
                    fec_frame: 0,
                    told_paused: false,
                },
            );
        }
        self.participants
            .entry(participant.to_owned())
            .or_default()
            .subscriptions
            .insert(track_sid.to_owned());
        self.schedule_offer(now, key);
        self.drive(now);
        Ok(())
    }

    pub fn unsubscribe(
        &mut self,
        now: Instant,
        participant: &str,
        track_sid: &str,
    ) -> Result<(), SfuError> {
        if let Some(key) = self.detach_consumer(participant, track_sid) {
            self.schedule_offer(now, key);
        }
        self.drive(now);
        Ok(())
    }

    /// Stops a published track at once (e.g. publish permission revoked): its consumers are
    /// removed and further packets of it are ignored.
    pub fn unpublish_track(&mut self, now: Instant, track_sid: &str) -> Result<(), SfuError> {
        if !self.producers.contains_key(track_sid) {
            return Err(SfuError::UnknownTrack(track_sid.to_owned()));
        }
        self.unpublish(now, track_sid);
        self.drive(now);
        Ok(())
    }

    /// Pauses or resumes forwarding of a track (a moderator's mute). Resumed video restarts
    /// every consumer on a fresh keyframe, which is requested at once.
    pub fn set_track_paused(
        &mut self,
        now: Instant,
        track_sid: &str,
        paused: bool,
    ) -> Result<(), SfuError> {
        let producer = self
            .producers
            .get_mut(track_sid)
            .ok_or_else(|| SfuError::UnknownTrack(track_sid.to_owned()))?;
        if producer.paused && !paused {
            for consumer in producer.consumers.values_mut() {
                consumer.forwarder.restart();
            }
            self.next_housekeeping = now;
        }
        if producer.paused != paused {
            self.captures.marker(now, track_sid, Marker::Muted(paused));
        }
        producer.paused = paused;
        Ok(())
    }

    /// Staff (teachers, assistants) cameras come before other cameras in every subscriber's
    /// allocation.
    pub fn set_staff(&mut self, participant: &str, staff: bool) {
        self.participants
            .entry(participant.to_owned())
            .or_default()
            .staff = staff;
    }

    /// Records how large the subscriber shows a video track; the allocator forwards no larger a
    /// layer than that size needs, and pauses the video while it is not shown (zero size).
    pub fn set_rendered_size(
        &mut self,
        participant: &str,
        track_sid: &str,
        size: Option<RenderedSize>,
    ) -> Result<(), SfuError> {
        let consumer = self
            .producers
            .get_mut(track_sid)
            .and_then(|p| p.consumers.get_mut(participant))
            .ok_or_else(|| SfuError::UnknownTrack(track_sid.to_owned()))?;
        consumer.rendered = size;
        Ok(())
    }

    /// Removes one consumer and its sender; returns the subscriber's peer to renegotiate.
    fn detach_consumer(&mut self, participant: &str, track_sid: &str) -> Option<PeerKey> {
        if let Some(state) = self.participants.get_mut(participant) {
            state.subscriptions.remove(track_sid);
        }
        let consumer = self
            .producers
            .get_mut(track_sid)?
            .consumers
            .remove(participant)?;
        let peer = self.peers.get_mut(&consumer.peer)?;
        if let Err(e) = peer.pc.remove_track(consumer.sender_id) {
            debug!(%participant, %track_sid, error = %e, "remove_track failed");
        }
        Some(consumer.peer)
    }

    pub(super) fn unpublish(&mut self, now: Instant, sid: &str) {
        let Some(producer) = self.producers.get(sid) else {
            return;
        };
        let subscribers: Vec<ParticipantId> = producer.consumers.keys().cloned().collect();
        let (publisher, upstream) = (producer.participant.clone(), producer.upstream);
        for participant in subscribers {
            if let Some(key) = self.detach_consumer(&participant, sid) {
                self.schedule_offer(now, key);
            }
        }
        self.producers.remove(sid);
        self.captures.track_unpublished(sid);
        if let Upstream::Peer { key, .. } = upstream
            && let Some(peer) = self.peers.get_mut(&key)
        {
            peer.producers.retain(|_, s| s != sid);
        }
        self.events.push_back(SfuEvent::TrackUnpublished {
            participant: publisher,
            track_sid: sid.to_owned(),
        });
    }

    /// A publisher's stream started: the first one of a track creates its producer, later ones
    /// are further simulcast layers of it.
    pub(super) fn open_producer_layer(
        &mut self,
        now: Instant,
        key: PeerKey,
        track_id: String,
        receiver_id: RTCRtpReceiverId,
        ssrc: u32,
        rid: Option<String>,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let layer = rid
            .as_deref()
            .map_or(0, |r| usize::from(rid_rank(r).0.min(2)));
        if let Some(sid) = peer.producers.get(&track_id)
            && let Some(producer) = self.producers.get_mut(sid)
        {
            // A track's simulcast layers share its receiver; another m-section reusing the
            // track id is another track, maybe of the other kind, and is not forwarded as this.
            if producer.upstream == (Upstream::Peer { key, receiver_id }) {
                producer.layers.insert(ssrc, layer);
            } else {
                warn!(participant = %peer.participant, %track_id, "a second m-section reuses a published track's id; ignored");
            }
            return;
        }
        let Some(mut receiver) = peer.pc.rtp_receiver(receiver_id) else {
            return;
        };
        let Some(codec) = receiver.track().codec(ssrc).cloned() else {
            warn!(participant = %peer.participant, %track_id, "track opened without a codec");
            return;
        };
        let parameters = &receiver.get_parameters().rtp_parameters;
        let extmaps = parameters
            .header_extensions
            .iter()
            .filter_map(|e| Some((u8::try_from(e.id).ok()?, e.uri.clone())))
            .collect();
        let codecs = &parameters.codecs;
        let payload_type = payload_type_of(codecs, &codec.mime_type);
        let red_payload_type = payload_type_of(codecs, red::MIME_TYPE_RED);
        let Some(payload_type) = payload_type else {
            warn!(participant = %peer.participant, %track_id, "no payload type for the track's codec");
            return;
        };
        let kind = match receiver.track().kind() {
            RtpCodecKind::Audio => TrackKind::Audio,
            _ => TrackKind::Video,
        };
        let source = peer
            .announced
            .get(&track_id)
            .copied()
            .unwrap_or(match kind {
                TrackKind::Audio => TrackSource::Microphone,
                TrackKind::Video => TrackSource::Camera,
            });
        // The offer's announcements were checked against its SDP; this checks what actually
        // arrived, so that nothing is forwarded under a source of the other kind.
        if source.kind() != kind || codec_kind(&codec.mime_type) != Some(kind) {
            warn!(participant = %peer.participant, %track_id, ?source, ?kind, mime = %codec.mime_type, "track is not what it was announced as; not forwarded");
            return;
        }
        let simulcast = rid.is_some() || peer.simulcast_ids.contains(&track_id);
        let sid = format!("TR_{}", random_id());
        peer.producers.insert(track_id, sid.clone());
        let participant = peer.participant.clone();
        info!(%participant, track = %sid, mime = %codec.mime_type, simulcast, "track published");
        let mut producer = Producer {
            sid: sid.clone(),
            participant: participant.clone(),
            upstream: Upstream::Peer { key, receiver_id },
            kind,
            source,
            video: VideoCodec::from_mime(&codec.mime_type),
            codec: codec.clone(),
            payload_type,
            red_payload_type,
            layers: HashMap::new(),
            activity: LayerActivity::default(),
            rates: LayerRates::default(),
            sizes: Vec::new(),
            last_pli: HashMap::new(),
            consumers: HashMap::new(),
            paused: false,
            extmaps,
            exports: Vec::new(),
            relay_history: Default::default(),
            relay_gaps: Default::default(),
            relay_demand: None,
            relay_listener_loss: 0,
            clocks: Vec::new(),
        };
        producer.layers.insert(ssrc, layer);
        producer.activity.record(layer, now);
        self.captures.track_published(&producer.capture_meta());
        self.producers.insert(sid.clone(), producer);
        self.events.push_back(SfuEvent::TrackPublished {
            participant,
            track: PublishedTrack {
                sid,
                kind,
                source,
                simulcast,
                mime_type: codec.mime_type,
            },
        });
    }
}

/// The payload type a connection negotiated for a codec (mime types compare case-insensitively:
/// browsers write `VP8`, some stacks `vp8`).
pub(super) fn payload_type_of(codecs: &[RTCRtpCodecParameters], mime: &str) -> Option<u8> {
    codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

/// The media kind of a codec by its mime type (`audio/opus`, `video/VP8`).
fn codec_kind(mime: &str) -> Option<TrackKind> {
    let (kind, _) = mime.split_once('/')?;
    if kind.eq_ignore_ascii_case("audio") {
        Some(TrackKind::Audio)
    } else if kind.eq_ignore_ascii_case("video") {
        Some(TrackKind::Video)
    } else {
        None
    }
}

fn random_id() -> String {
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}
