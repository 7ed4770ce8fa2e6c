//! A light client's peer connection: an `rtc` state machine with no socket and no task of its
//! own. A [`crate::shard::Shard`] owns many of them, feeds them datagrams and time, and sends
//! what they produce; signaling talks to them through [`PeerOutput`]s and shard commands.
//!
//! A bad datagram or a failed call is logged and the peer goes on: one corrupt packet must not
//! end a client, and a run with hundreds of them must not stop for one.

pub mod config;
pub mod publisher;
pub mod subscriber;
pub mod tap;

use aula_sfu::peer;
use std::net::SocketAddr;
use std::time::Instant;

use aula_protocol::{IceCandidate, PeerTarget, TrackAnnouncement, TrackKind};
use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::clock::Epoch;
use crate::media::source::MediaPlan;
use publisher::Publisher;
use subscriber::Subscriber;

/// What a peer tells its participant's signaling task.
#[derive(Debug)]
pub enum PeerOutput {
    LocalCandidate(PeerTarget, IceCandidate),
    /// Subscribe side: the answer to the server's offer.
    Answer(String),
    Connected(PeerTarget),
    Failed(PeerTarget),
}

pub enum Role {
    Publisher(Box<Publisher>),
    Subscriber(Box<Subscriber>),
}

pub struct LightPeer {
    pub pc: RTCPeerConnection,
    pub local: SocketAddr,
    pub ufrag: String,
    target: PeerTarget,
    out: mpsc::UnboundedSender<PeerOutput>,
    has_local_candidate: bool,
    pub connected: bool,
    pub failed: bool,
    pub role: Role,
}

/// What the shard needs back from draining a peer.
#[derive(Default)]
pub struct Drained {
    pub became_connected: bool,
    pub failed: bool,
}

impl LightPeer {
    /// A publish connection with the plan's tracks; returns it with the offer to send and what
    /// to announce for the tracks.
    pub fn publisher(
        local: SocketAddr,
        out: mpsc::UnboundedSender<PeerOutput>,
        plan: MediaPlan,
        epoch: Epoch,
        name: &str,
        now: Instant,
    ) -> Result<(Self, String, Vec<TrackAnnouncement>), Error> {
        let (ufrag, pwd) = peer::ice_credentials();
        let mut pc = config::build(ufrag.clone(), pwd, now)?;
        let (publisher, tracks) = Publisher::add_tracks(&mut pc, plan, epoch, name)?;
        config::add_host_candidate(&mut pc, local)?;
        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer)?;
        let sdp = pc
            .local_description()
            .ok_or(Error::ErrPeerConnLocalDescriptionNil)?
            .sdp;
        let peer = Self {
            pc,
            local,
            ufrag,
            target: PeerTarget::Publish,
            out,
            has_local_candidate: true,
            connected: false,
            failed: false,
            role: Role::Publisher(Box::new(publisher)),
        };
        Ok((peer, sdp, tracks))
    }

    /// A subscribe connection waiting for the server's offer.
    pub fn subscriber(
        local: SocketAddr,
        out: mpsc::UnboundedSender<PeerOutput>,
        join_started: Instant,
        frame_interval: std::time::Duration,
        now: Instant,
    ) -> Result<Self, Error> {
        let (ufrag, pwd) = peer::ice_credentials();
        let pc = config::build(ufrag.clone(), pwd, now)?;
        Ok(Self {
            pc,
            local,
            ufrag,
            target: PeerTarget::Subscribe,
            out,
            has_local_candidate: false,
            connected: false,
            failed: false,
            role: Role::Subscriber(Box::new(Subscriber::new(join_started, frame_interval))),
        })
    }

    /// When the peer next needs [`LightPeer::handle_timeout`] or [`LightPeer::pump`].
    pub fn next_wakeup(&mut self) -> Option<Instant> {
        let timer = self.pc.poll_timeout();
        let media = match &self.role {
            Role::Publisher(p) => p.next_due(),
            Role::Subscriber(_) => None,
        };
        match (timer, media) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_datagram(&mut self, from: SocketAddr, at: Instant, data: &[u8]) {
        let message = TaggedBytesMut {
            now: at,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = self.pc.handle_read(message) {
            debug!(local = %self.local, "dropped a datagram: {e}");
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.pc.handle_timeout(now) {
            debug!(local = %self.local, "timeout handling: {e}");
        }
    }

    /// Publisher: writes the media due at `now`.
    pub fn pump(&mut self, now: Instant) {
        if let Role::Publisher(publisher) = &mut self.role {
            publisher.pump(&mut self.pc, now);
        }
    }

    /// The server's SDP: an answer on the publish side, an offer on the subscribe side (which
    /// is answered at once through [`PeerOutput::Answer`]).
    pub fn remote_description(&mut self, sdp: String, now: Instant) -> Result<(), Error> {
        match self.target {
            PeerTarget::Publish => self
                .pc
                .set_remote_description(now, RTCSessionDescription::answer(sdp)?),
            PeerTarget::Subscribe => {
                self.pc
                    .set_remote_description(now, RTCSessionDescription::offer(sdp)?)?;
                if !self.has_local_candidate {
                    config::add_host_candidate(&mut self.pc, self.local)?;
                    self.has_local_candidate = true;
                }
                let answer = self.pc.create_answer(None)?;
                self.pc.set_local_description(now, answer)?;
                let sdp = self
                    .pc
                    .local_description()
                    .ok_or(Error::ErrPeerConnLocalDescriptionNil)?
                    .sdp;
                // Queued before the candidate event is drained, so the server has the answer
                // by the time our candidate arrives.
                let _ = self.out.send(PeerOutput::Answer(sdp));
                Ok(())
            }
        }
    }

    pub fn remote_candidate(&mut self, candidate: IceCandidate) -> Result<(), Error> {
        if candidate.candidate.is_empty() {
            return Ok(()); // end-of-candidates
        }
        self.pc.add_remote_candidate(RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment,
            url: None,
        })
    }

    /// Handles `rtc`'s events and received messages. Latencies go to `latencies` while
    /// `measuring`.
    pub fn drain(&mut self, epoch: Epoch, measuring: bool, latencies: &mut Vec<u32>) -> Drained {
        let mut drained = Drained::default();
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnIceCandidateEvent(event) => {
                    match event.candidate.to_json() {
                        Ok(init) => {
                            let _ = self.out.send(PeerOutput::LocalCandidate(
                                self.target,
                                IceCandidate {
                                    candidate: init.candidate,
                                    // `rtc` fills "" here; the candidate belongs to the bundle.
                                    sdp_mid: init.sdp_mid.filter(|mid| !mid.is_empty()),
                                    sdp_m_line_index: init.sdp_mline_index,
                                    username_fragment: init.username_fragment,
                                },
                            ));
                        }
                        Err(e) => warn!("local candidate: {e}"),
                    }
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected if !self.connected => {
                        self.connected = true;
                        drained.became_connected = true;
                        if let Role::Publisher(publisher) = &mut self.role {
                            publisher.start(Instant::now());
                        }
                        let _ = self.out.send(PeerOutput::Connected(self.target));
                    }
                    RTCPeerConnectionState::Failed if !self.failed => {
                        self.failed = true;
                        drained.failed = true;
                        let _ = self.out.send(PeerOutput::Failed(self.target));
                    }
                    _ => {}
                },
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    if let Role::Subscriber(subscriber) = &mut self.role {
                        let kind = self
                            .pc
                            .rtp_receiver(init.receiver_id)
                            .map(|r| r.track().kind());
                        let kind = match kind {
                            Some(RtpCodecKind::Audio) => TrackKind::Audio,
                            _ => TrackKind::Video,
                        };
                        subscriber.track_opened(init.track_id, kind, init.receiver_id);
                    }
                }
                _ => {}
            }
        }
        while let Some(TaggedRTCMessage { now, message }) = self.pc.poll_read() {
            match (&mut self.role, message) {
                (Role::Subscriber(subscriber), RTCMessage::RtpPacket(track_id, packet)) => {
                    subscriber.on_rtp(&track_id, &packet, now, epoch, measuring, latencies);
                }
                (Role::Publisher(publisher), RTCMessage::RtcpPacket(_, packets)) => {
                    for packet in &packets {
                        for ssrc in tap::keyframe_request_ssrcs(packet.as_ref()) {
                            publisher.keyframe_requested(ssrc);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Role::Subscriber(subscriber) = &mut self.role {
            // A frame the subscriber gave up on: ask for a keyframe, as a browser would.
            for (receiver, media_ssrc) in subscriber.keyframe_requests.drain(..) {
                let Some(mut receiver) = self.pc.rtp_receiver(receiver) else {
                    continue;
                };
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if let Err(e) = receiver.write_rtcp(Instant::now(), vec![Box::new(pli)]) {
                    debug!(local = %self.local, "PLI: {e}");
                }
            }
        }
        drained
    }
}
