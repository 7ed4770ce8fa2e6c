//! Offer/answer: the publisher's offers answered (checked against what it announced), the
//! subscriber's offers (debounced, one at a time) and their answers, and the consumer stages
//! that negotiation moves on.

use std::collections::HashMap;
use std::time::Instant;

use aula_protocol::{PeerTarget, TrackAnnouncement, TrackKind, TrackSource};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_ULP_FEC};
use rtc::peer_connection::sdp::RTCSessionDescription;
use tracing::{info, warn};

use super::tracks::payload_type_of;
use super::{ConsumerStage, OFFER_DEBOUNCE, PeerKey, Router};
use crate::api::{SfuError, SfuEvent, TrackSid};
use crate::fec;
use crate::red;
use crate::sdp::{
    keep_simulcast_receivers, sending_track_ids, simulcast_track_ids, track_kinds,
    unreceivable_media,
};

impl Router {
    pub fn publish_offer(
        &mut self,
        now: Instant,
        participant: &str,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    ) -> Result<String, SfuError> {
        let offer = RTCSessionDescription::offer(sdp.clone())
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let (key, created) = match self.participants.get(participant).and_then(|p| p.publish) {
            Some(key) => (key, false),
            None => (
                self.create_peer(now, participant, PeerTarget::Publish)?,
                true,
            ),
        };
        let result = self.apply_publish_offer(now, key, offer, &sdp, tracks);
        if let Err(e) = &result {
            if let SfuError::UnsupportedCodec(what) = e {
                info!(%participant, "publish offer refused: no codec we can receive: {what}");
            }
            if created {
                self.close_peer(key);
            } else if let Some(peer) = self.peers.get_mut(&key) {
                // Back to the last agreed state, so the publisher's next offer is accepted (in
                // `have-remote-offer` it would be refused). Fails harmlessly if the offer was
                // never applied.
                if let Ok(rollback) = RTCSessionDescription::rollback(None) {
                    let _ = peer.pc.set_remote_description(now, rollback);
                }
            }
        }
        self.drive(now);
        result
    }

    fn apply_publish_offer(
        &mut self,
        now: Instant,
        key: PeerKey,
        offer: RTCSessionDescription,
        sdp: &str,
        tracks: Vec<TrackAnnouncement>,
    ) -> Result<String, SfuError> {
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        check_announced_kinds(sdp, &tracks, &peer.announced)?;
        // A renegotiation must not make `rtc` forget the layers of a simulcast track it
        // already receives (see `keep_simulcast_receivers`).
        let offer = match keep_simulcast_receivers(sdp, |id| peer.producers.contains_key(id)) {
            Some(kept) => {
                RTCSessionDescription::offer(kept).map_err(|e| SfuError::BadSdp(e.to_string()))?
            }
            None => offer,
        };
        peer.pc
            .set_remote_description(now, offer)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let answer = peer
            .pc
            .create_answer(None)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let unreceivable = unreceivable_media(sdp, &answer.sdp);
        if !unreceivable.is_empty() {
            return Err(SfuError::UnsupportedCodec(unreceivable.join("; ")));
        }
        peer.announced
            .extend(tracks.into_iter().map(|t| (t.track_id, t.source)));
        peer.simulcast_ids = simulcast_track_ids(sdp);
        let sending = sending_track_ids(sdp);
        let stopped: Vec<TrackSid> = peer
            .producers
            .iter()
            .filter(|(track_id, _)| !sending.contains(*track_id))
            .map(|(_, sid)| sid.clone())
            .collect();
        peer.pc
            .set_local_description(now, answer)
            .map_err(|e| match e {
                // `rtc` tells a section's track by its `a=ssrc` lines (or `a=rid` layers), or
                // by being the offer's only audio or video section.
                rtc::shared::error::Error::ErrRTPReceiverForSSRCTrackStreamNotFound => {
                    SfuError::BadSdp(
                        "a sending m-section has no a=ssrc lines (nor a=rid layers); they are \
                         needed when the offer has more than one audio or video section"
                            .into(),
                    )
                }
                e => SfuError::Internal(e.to_string()),
            })?;
        self.refresh_ufrag(key);
        self.mark(key);
        // The publisher stopped these tracks (removed, or the transceiver stopped).
        for sid in stopped {
            info!(track = %sid, "publisher stopped sending the track");
            self.unpublish(now, &sid);
        }
        let peer = &self.peers[&key];
        peer.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| SfuError::Internal("no local description after answering".into()))
    }

    pub fn subscribe_answer(
        &mut self,
        now: Instant,
        participant: &str,
        sdp: String,
    ) -> Result<(), SfuError> {
        let key = self.peer_of(participant, PeerTarget::Subscribe)?;
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        if !peer.awaiting_answer {
            return Err(SfuError::BadSdp(
                "no subscribe offer is waiting for an answer".into(),
            ));
        }
        peer.pc
            .set_remote_description(now, answer)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        // Changes made meanwhile (`offer_due`) go out from the next `handle_timeout`.
        peer.awaiting_answer = false;
        self.mark(key);
        self.advance_consumers(
            participant,
            ConsumerStage::Offered,
            ConsumerStage::Negotiated,
        );
        self.start_consumers(now, participant);
        self.drive(now);
        Ok(())
    }

    /// Notes that a subscribe peer needs a (re)offer; it goes out after [`OFFER_DEBOUNCE`], and
    /// never while the previous offer is unanswered, which keeps both sides' states in step.
    pub(super) fn schedule_offer(&mut self, now: Instant, key: PeerKey) {
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.offer_due.get_or_insert(now + OFFER_DEBOUNCE);
        }
    }

    pub(super) fn send_offer(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.offer_due = None;
        let offer = match peer.pc.create_offer(None) {
            Ok(offer) => offer,
            Err(e) => {
                warn!(participant = %peer.participant, error = %e, "cannot create subscribe offer");
                return;
            }
        };
        let sdp = offer.sdp.clone();
        tracing::trace!(participant = %peer.participant, %sdp, "subscribe offer");
        if let Err(e) = peer.pc.set_local_description(now, offer) {
            warn!(participant = %peer.participant, error = %e, "cannot apply subscribe offer");
            return;
        }
        peer.awaiting_answer = true;
        let participant = peer.participant.clone();
        self.refresh_ufrag(key);
        self.advance_consumers(&participant, ConsumerStage::Added, ConsumerStage::Offered);
        self.events
            .push_back(SfuEvent::SubscribeOffer { participant, sdp });
        self.mark(key);
    }

    fn advance_consumers(&mut self, participant: &str, from: ConsumerStage, to: ConsumerStage) {
        for producer in self.producers.values_mut() {
            if let Some(consumer) = producer.consumers.get_mut(participant)
                && consumer.stage == from
            {
                consumer.stage = to;
            }
        }
    }

    /// Makes negotiated consumers live once the subscriber's connection is up. Each starts on
    /// the next keyframe, which the housekeeping tick asks the publisher for.
    pub(super) fn start_consumers(&mut self, now: Instant, participant: &str) {
        let Some(key) = self.participants.get(participant).and_then(|p| p.subscribe) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.connected {
            return;
        }
        for producer in self.producers.values_mut() {
            let Some(consumer) = producer.consumers.get_mut(participant) else {
                continue;
            };
            if consumer.stage != ConsumerStage::Negotiated {
                continue;
            }
            let Some(mut sender) = peer.pc.rtp_sender(consumer.sender_id) else {
                continue;
            };
            let mime = &producer.codec.mime_type;
            let codecs = &sender.get_parameters().rtp_parameters.codecs;
            let payload_type = payload_type_of(codecs, mime);
            // RED only over Opus, the codec Aula's RED is registered for.
            let red = mime
                .eq_ignore_ascii_case(MIME_TYPE_OPUS)
                .then(|| payload_type_of(codecs, red::MIME_TYPE_RED))
                .flatten();
            let fec = producer.kind == TrackKind::Video
                && payload_type_of(codecs, fec::MIME_TYPE_VIDEO_RED) == Some(fec::RED_PAYLOAD_TYPE)
                && payload_type_of(codecs, MIME_TYPE_ULP_FEC) == Some(fec::ULPFEC_PAYLOAD_TYPE);
            match payload_type {
                Some(payload_type) => {
                    consumer.stage = ConsumerStage::Live {
                        payload_type,
                        red,
                        fec,
                    }
                }
                None => {
                    warn!(%participant, track = %producer.sid, %mime, "subscriber did not accept the codec")
                }
            }
        }
        // The new consumers get their layers (and keyframe requests) on this very tick.
        self.next_housekeeping = now;
    }
}

/// Refuses an offer that announces a track as a source of the other media kind than the
/// track's m-section: grants are checked on the announced source, so a label that could lie
/// (video as `microphone`) would let a microphone-only token publish video. A track this offer
/// does not announce again keeps its earlier announcement, and is checked against it.
fn check_announced_kinds(
    sdp: &str,
    tracks: &[TrackAnnouncement],
    earlier: &HashMap<String, TrackSource>,
) -> Result<(), SfuError> {
    for (track_id, kind) in track_kinds(sdp) {
        // The last announcement of a track is the one kept (see `apply_publish_offer`).
        let source = tracks
            .iter()
            .rev()
            .find(|t| t.track_id == track_id)
            .map(|t| t.source)
            .or_else(|| earlier.get(&track_id).copied());
        if let Some(source) = source
            && source.kind() != kind
        {
            return Err(SfuError::TrackMismatch(format!(
                "track {track_id} is {kind:?} in the SDP but announced as {source:?}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_source_must_match_its_tracks_kind() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:s mic\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:s cam\r\n";
        let label = |track_id: &str, source| TrackAnnouncement {
            track_id: track_id.into(),
            source,
        };
        let none = HashMap::new();
        let truthful = [
            label("mic", TrackSource::Microphone),
            label("cam", TrackSource::Camera),
        ];
        assert_eq!(check_announced_kinds(sdp, &truthful, &none), Ok(()));
        for lie in [
            label("cam", TrackSource::Microphone),
            label("cam", TrackSource::ScreenShareAudio),
            label("mic", TrackSource::Camera),
            label("mic", TrackSource::ScreenShare),
        ] {
            assert!(
                matches!(
                    check_announced_kinds(sdp, std::slice::from_ref(&lie), &none),
                    Err(SfuError::TrackMismatch(_))
                ),
                "{lie:?}"
            );
        }
        // A track not announced again keeps its earlier label, which must still fit.
        let earlier = HashMap::from([("cam".to_owned(), TrackSource::Microphone)]);
        assert!(matches!(
            check_announced_kinds(sdp, &[], &earlier),
            Err(SfuError::TrackMismatch(_))
        ));
        // The last announcement of a track is the one kept and checked.
        let relabelled = [
            label("cam", TrackSource::Microphone),
            label("cam", TrackSource::Camera),
        ];
        assert_eq!(check_announced_kinds(sdp, &relabelled, &earlier), Ok(()));
    }
}
