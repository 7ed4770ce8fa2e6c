//! Peer connections: creating and closing them, ICE (remote candidates, restarts, the
//! ufrag and password that route STUN), their state changes and track events, and a
//! participant's removal. Apart from router.rs, which holds the types and drives the peers.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use aula_protocol::{IceCandidate, PeerTarget};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::sansio::Protocol;
use tracing::{debug, info};

use super::{OUTAGE_SILENCE, Peer, PeerKey, Router, Transmit};
use crate::api::{PeerState, SfuError, SfuEvent, TrackSid};
use crate::bwe::SharedEstimate;
use crate::forward::condition::PathJudge;
use crate::peer;
use crate::qos::FeedbackCounts;
use crate::sdp::ice_credentials;

impl Router {
    pub fn add_candidate(
        &mut self,
        now: Instant,
        participant: &str,
        target: PeerTarget,
        candidate: IceCandidate,
    ) -> Result<(), SfuError> {
        let key = self.peer_of(participant, target)?;
        // mDNS names (`*.local`) cannot be resolved here; the browser's connectivity checks
        // reach us anyway and ICE learns its address as a peer-reflexive candidate.
        if candidate.candidate.contains(".local ") || candidate.candidate.is_empty() {
            return Ok(());
        }
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        peer.pc
            .add_remote_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_m_line_index,
                username_fragment: candidate.username_fragment,
                ..Default::default()
            })
            .map_err(|e| SfuError::BadCandidate(e.to_string()))?;
        self.mark(key);
        self.drive(now);
        Ok(())
    }

    /// The remote addresses of the participant's connections (both directions), e.g. for a
    /// test's impairment of one participant's link.
    pub fn participant_addrs(&self, participant: &str) -> Vec<SocketAddr> {
        let Some(state) = self.participants.get(participant) else {
            return Vec::new();
        };
        [state.publish, state.subscribe]
            .into_iter()
            .flatten()
            .filter_map(|key| self.peers.get(&key))
            .flat_map(|peer| peer.addrs.iter().copied())
            .collect()
    }

    /// Restarts ICE on the participant's subscribe connection (after it reconnected from a new
    /// network): a new offer with fresh credentials follows.
    pub fn restart_ice(&mut self, now: Instant, participant: &str) -> Result<(), SfuError> {
        let key = self.peer_of(participant, PeerTarget::Subscribe)?;
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.pc.restart_ice();
        }
        self.schedule_offer(now, key);
        Ok(())
    }

    pub fn remove_participant(&mut self, now: Instant, participant: &str) {
        let Some(state) = self.participants.remove(participant) else {
            return;
        };
        let published: Vec<TrackSid> = self
            .producers
            .values()
            .filter(|p| p.participant == participant)
            .map(|p| p.sid.clone())
            .collect();
        for sid in published {
            self.unpublish(now, &sid);
        }
        self.captures.participant_left(participant);
        for sid in &state.subscriptions {
            if let Some(producer) = self.producers.get_mut(sid) {
                producer.consumers.remove(participant);
            }
        }
        for key in [state.publish, state.subscribe].into_iter().flatten() {
            self.close_peer(key);
        }
        info!(%participant, "participant removed from the media plane");
        self.drive(now);
    }

    pub(super) fn peer_of(
        &self,
        participant: &str,
        target: PeerTarget,
    ) -> Result<PeerKey, SfuError> {
        let state = self
            .participants
            .get(participant)
            .ok_or(SfuError::NoConnection(target))?;
        match target {
            PeerTarget::Publish => state.publish,
            PeerTarget::Subscribe => state.subscribe,
        }
        .ok_or(SfuError::NoConnection(target))
    }

    pub(super) fn create_peer(
        &mut self,
        now: Instant,
        participant: &str,
        target: PeerTarget,
    ) -> Result<PeerKey, SfuError> {
        // No credentials of ours: `rtc` draws them, and new ones at each ICE restart (pinned ones
        // would be reused by a restart, which the browser then cannot tell from none). The
        // peer is routed by ufrag once its local description has them (`refresh_ufrag`), which
        // is before the remote side can send any check.
        let (ufrag, pwd) = (String::new(), String::new());
        let estimate = (target == PeerTarget::Subscribe).then(SharedEstimate::new);
        let feedback = Arc::new(FeedbackCounts::default());
        let role = match &estimate {
            Some(estimate) => peer::Role::Subscriber(estimate),
            None => peer::Role::Publisher,
        };
        let mut pc = peer::build(
            ufrag.clone(),
            pwd.clone(),
            &self.metrics,
            role,
            feedback.clone(),
            now,
        )
        .map_err(|e| SfuError::Internal(e.to_string()))?;
        for candidate in &self.host_candidates {
            pc.add_local_candidate(candidate.clone())
                .map_err(|e| SfuError::Internal(e.to_string()))?;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.peers.insert(
            key,
            Box::new(Peer {
                pc,
                participant: participant.to_owned(),
                target,
                ufrag,
                pwd,
                addrs: Vec::new(),
                connected: false,
                deadline: None,
                queued: false,
                inbound_totals: HashMap::new(),
                announced: HashMap::new(),
                simulcast_ids: HashSet::new(),
                producers: HashMap::new(),
                awaiting_answer: false,
                offer_due: None,
                estimate,
                path: PathJudge::default(),
                connected_at: None,
                outage: false,
                returned_at: None,
                feedback,
            }),
        );
        let state = self.participants.entry(participant.to_owned()).or_default();
        match target {
            PeerTarget::Publish => state.publish = Some(key),
            PeerTarget::Subscribe => state.subscribe = Some(key),
        }
        Ok(key)
    }

    pub(super) fn close_peer(&mut self, key: PeerKey) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        if let Err(e) = peer.pc.close() {
            debug!(participant = %peer.participant, error = %e, "close failed");
        }
        // Send what closing produced (DTLS close_notify), so the browser learns at once.
        while let Some(out) = peer.pc.poll_write() {
            self.transmits.push_back(Transmit::of(&self.hosts, out));
        }
        self.unroute_ufrag(&peer.ufrag);
        for addr in &peer.addrs {
            self.unroute_addr(*addr, key);
        }
        if let Some(state) = self.participants.get_mut(&peer.participant) {
            match peer.target {
                PeerTarget::Publish if state.publish == Some(key) => state.publish = None,
                PeerTarget::Subscribe if state.subscribe == Some(key) => state.subscribe = None,
                _ => {}
            }
        }
    }

    /// Keeps STUN routing right after an ICE restart, which may give the connection new local
    /// credentials: the browser's checks from its new address name the new ufrag and are
    /// signed with the new password.
    pub(super) fn refresh_ufrag(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Some((ufrag, pwd)) = peer.pc.local_description().and_then(|d| {
            let (ufrag, pwd) = ice_credentials(&d.sdp)?;
            Some((ufrag.to_owned(), pwd.to_owned()))
        }) else {
            return;
        };
        peer.pwd = pwd;
        if ufrag != peer.ufrag {
            let old = std::mem::replace(&mut peer.ufrag, ufrag.clone());
            self.unroute_ufrag(&old);
            self.route_ufrag(&ufrag, key);
        }
    }

    pub(super) fn handle_peer_event(
        &mut self,
        now: Instant,
        key: PeerKey,
        event: RTCPeerConnectionEvent,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                debug!(participant = %peer.participant, target = ?peer.target, %state, "peer state");
                let (participant, target) = (peer.participant.clone(), peer.target);
                match state {
                    RTCPeerConnectionState::Connected => {
                        peer.connected = true;
                        // Connected again after an outage long enough for ICE to call the path
                        // disconnected: the path is back, whether or not RTCP has said so yet
                        // (a browser's reports can lag its ICE checks by a second, which was a
                        // second of frozen picture).
                        if peer.connected_at.is_some() && std::mem::take(&mut peer.outage) {
                            peer.feedback.path_returned.store(true, Ordering::Relaxed);
                        }
                        peer.connected_at.get_or_insert(now);
                        if target == PeerTarget::Subscribe {
                            self.start_consumers(now, &participant);
                        }
                        self.events.push_back(SfuEvent::PeerState {
                            participant,
                            target,
                            state: PeerState::Connected,
                        });
                    }
                    // A path losing half its packets loses the ICE checks too, and ICE calls it
                    // disconnected for a moment while media and feedback go on: no outage, and
                    // a keyframe asked for when it is "back" (at 50 % loss, large and slow to
                    // get through) stalled the picture it was meant to restore.
                    RTCPeerConnectionState::Disconnected => {
                        peer.outage = peer
                            .feedback
                            .silent_for(now)
                            .is_none_or(|silence| silence >= OUTAGE_SILENCE);
                    }
                    RTCPeerConnectionState::Failed => {
                        peer.connected = false;
                        self.events.push_back(SfuEvent::PeerState {
                            participant,
                            target,
                            state: PeerState::Failed,
                        });
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init))
                if peer.target == PeerTarget::Publish =>
            {
                self.open_producer_layer(
                    now,
                    key,
                    init.track_id,
                    init.receiver_id,
                    init.ssrc,
                    init.rid,
                );
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                if let Some(sid) = peer.producers.get(&track_id).cloned() {
                    self.unpublish(now, &sid);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::SfuMetrics;

    /// Whether a subscriber whose connection goes disconnected and connected again, with its
    /// last feedback `silent` before the disconnection (`None`: none ever), is taken for back
    /// from an outage.
    fn returned_after(silent: Option<Duration>) -> bool {
        let start = Instant::now();
        let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
        let mut router = Router::new(&[], metrics, start);
        let key = router
            .create_peer(start, "student", PeerTarget::Subscribe)
            .expect("peer");
        let state = |state| RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state);
        router.handle_peer_event(start, key, state(RTCPeerConnectionState::Connected));
        let disconnected = start + Duration::from_secs(10);
        let feedback = router.peers[&key].feedback.clone();
        *feedback.last_rtcp.lock().expect("lock") = silent.map(|s| disconnected - s);
        router.handle_peer_event(
            disconnected,
            key,
            state(RTCPeerConnectionState::Disconnected),
        );
        let connected = disconnected + Duration::from_millis(300);
        router.handle_peer_event(connected, key, state(RTCPeerConnectionState::Connected));
        feedback.path_returned.load(Ordering::Relaxed)
    }

    /// ICE calls a path losing half its packets disconnected now and then while its feedback
    /// goes on: no outage, and no keyframe asked for when it is connected again (at 50 % loss
    /// one stalled the picture it was meant to restore). A path silent when ICE gave up on it
    /// is back from an outage when it connects again.
    #[test]
    fn a_reconnection_is_a_return_only_after_silence() {
        assert!(!returned_after(Some(Duration::from_millis(80))));
        assert!(returned_after(Some(Duration::from_secs(4))));
        assert!(returned_after(None));
    }
}
