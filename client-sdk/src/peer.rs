//! One WebRTC peer connection: its own UDP socket and the task that drives `rtc`'s sans-I/O
//! state machine.
//!
//! The task owns the `RTCPeerConnection` outright (it is `&mut`-only), so everything else talks
//! to it through [`PeerCommand`]s. Its loop is the one the `rtc` examples use: flush
//! `poll_write` to the socket, drain `poll_event` and `poll_read`, then wait for whichever comes
//! first of a command, a datagram or `poll_timeout`. A bad packet or a failed call is logged and
//! the loop goes on: one corrupt datagram must not end a call.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aula_protocol::{ClientMessage, IceCandidate, PeerTarget};
use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, trace, warn};

use crate::error::ClientError;
use crate::rtp::RtpStamper;
use crate::{ClientEvent, ReceivedPacket};

/// Payload type offered for Opus; Chrome uses 111, and the server answers with what it accepts.
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Larger than any datagram a peer sends us (the path MTU is ~1500; SRTP adds little).
const RECV_BUFFER: usize = 2048;
/// How long to sleep when `rtc` has no timer pending; a command or a datagram wakes us earlier.
const IDLE_WAKEUP: Duration = Duration::from_secs(1);
/// Commands queued per peer; the tone task waits when the driver falls this far behind.
const COMMAND_QUEUE: usize = 64;

/// What the rest of the SDK asks of a peer connection's task.
#[derive(Debug)]
pub(crate) enum PeerCommand {
    /// Publish connection: the server's answer to our offer, and who waits for the verdict.
    RemoteAnswer(String, oneshot::Sender<Result<(), ClientError>>),
    /// Subscribe connection: an offer from the server (first or renegotiation); the task
    /// answers it with [`ClientMessage::SubscribeAnswer`].
    RemoteOffer(String),
    /// A trickled candidate of the server's side.
    RemoteCandidate(IceCandidate),
    /// Publish connection: send one payload as the next RTP packet of the audio track.
    Send(Bytes),
}

/// How far the connection got; `publish_audio` waits on this before it starts sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Connecting,
    Connected,
    /// ICE or DTLS gave up; `rtc` will not recover by itself.
    Failed,
    /// The task has ended (client dropped or left).
    Closed,
}

/// Where a peer task delivers what it produces. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PeerContext {
    /// Outgoing signaling messages (answers, candidates), written in order by the WebSocket task.
    pub(crate) signal: mpsc::UnboundedSender<ClientMessage>,
    /// Room and connection events: few, so unbounded, and never lost.
    pub(crate) control: mpsc::UnboundedSender<ClientEvent>,
    /// Received RTP: bounded, so a slow application costs packets, not memory.
    pub(crate) packets: mpsc::Sender<ReceivedPacket>,
    /// Packets dropped because the application did not drain them fast enough.
    pub(crate) dropped_packets: Arc<AtomicU64>,
    /// Changes (or closes) when the client goes away; every task then stops.
    pub(crate) shutdown: watch::Receiver<()>,
}

/// The publish side's single audio track.
struct AudioSender {
    id: RTCRtpSenderId,
    stamper: RtpStamper,
    /// The payload type the server's answer settled on, looked up on the first send.
    payload_type: Option<u8>,
}

/// A peer connection and its socket, ready to be driven by [`Peer::spawn`].
pub(crate) struct Peer {
    target: PeerTarget,
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local_addr: SocketAddr,
    ctx: PeerContext,
    link: watch::Sender<Link>,
    audio: Option<AudioSender>,
    /// Subscribe side: `rtc` track id -> Aula track sid (the track's MediaStream id).
    track_sids: HashMap<String, Arc<str>>,
    /// Whether the subscribe side has added its host candidate (done once, on the first offer).
    has_local_candidate: bool,
}

/// A handle on a running peer task.
pub(crate) struct PeerHandle {
    pub(crate) commands: mpsc::Sender<PeerCommand>,
    pub(crate) link: watch::Receiver<Link>,
    /// Dropping it ends the task (the session is being joined again on new connections),
    /// whoever else still holds a command sender.
    pub(crate) stop: watch::Sender<()>,
}

/// The Opus codec as every browser offers it: 48 kHz, two channels in SDP (RFC 7587 §7 says the
/// SDP always says 2; a mono stream is still valid), in-band FEC allowed.
fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
    }
}

fn build_pc(media_engine: MediaEngine) -> Result<RTCPeerConnection, ClientError> {
    let mut media_engine = media_engine;
    // NACK, RTCP reports and the rest of what a browser would run.
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    Ok(RTCPeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(Instant::now())?)
}

/// `rtc` gathers nothing itself: the socket's address is our one (host) candidate.
fn add_host_candidate(pc: &mut RTCPeerConnection, addr: SocketAddr) -> Result<(), ClientError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    Ok(())
}

impl Peer {
    async fn new(
        target: PeerTarget,
        pc: RTCPeerConnection,
        ip: IpAddr,
        ctx: PeerContext,
    ) -> Result<Self, ClientError> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local_addr = socket.local_addr()?;
        Ok(Self {
            target,
            pc,
            socket,
            local_addr,
            ctx,
            link: watch::Sender::new(Link::Connecting),
            audio: None,
            track_sids: HashMap::new(),
            has_local_candidate: false,
        })
    }

    /// A publish connection with one Opus track, and the offer to send for it.
    ///
    /// `track_id` becomes the second half of the offer's `a=msid`, which is how the server
    /// matches the track to its [`aula_protocol::TrackAnnouncement`].
    pub(crate) async fn publisher(
        ip: IpAddr,
        ctx: PeerContext,
        track_id: &str,
    ) -> Result<(Self, String), ClientError> {
        let codec = opus_codec();
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(codec.clone(), RtpCodecKind::Audio)?;
        let pc = build_pc(media_engine)?;
        let mut peer = Self::new(PeerTarget::Publish, pc, ip, ctx).await?;

        let ssrc = rand::random::<u32>();
        let track = MediaStreamTrack::new(
            format!("{track_id}-stream"),
            track_id.to_owned(),
            "tone".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec,
                ..Default::default()
            }],
        );
        let id = peer.pc.add_track(track)?;
        peer.audio = Some(AudioSender {
            id,
            stamper: RtpStamper::new(ssrc, rand::random(), rand::random()),
            payload_type: None,
        });

        add_host_candidate(&mut peer.pc, peer.local_addr)?;
        peer.has_local_candidate = true;
        let offer = peer.pc.create_offer(None)?;
        peer.pc.set_local_description(Instant::now(), offer)?;
        let sdp = peer
            .pc
            .local_description()
            .ok_or_else(|| ClientError::Protocol("no local description after offer".into()))?
            .sdp;
        Ok((peer, sdp))
    }

    /// A subscribe connection, waiting for the server's first offer.
    pub(crate) async fn subscriber(ip: IpAddr, ctx: PeerContext) -> Result<Self, ClientError> {
        // Accept whatever the room carries (browsers publish VP8/VP9/H.264 video too);
        // packets of every kind are reported, the application filters by track.
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs()?;
        let pc = build_pc(media_engine)?;
        Self::new(PeerTarget::Subscribe, pc, ip, ctx).await
    }

    /// Starts the driver task. It ends when every command sender is dropped, when the
    /// handle's `stop` is, when the client shuts down, or when the connection fails.
    pub(crate) fn spawn(self) -> PeerHandle {
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let (stop, stopped) = watch::channel(());
        let link = self.link.subscribe();
        tokio::spawn(self.run(rx, stopped));
        PeerHandle {
            commands,
            link,
            stop,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<PeerCommand>,
        mut stopped: watch::Receiver<()>,
    ) {
        let mut shutdown = self.ctx.shutdown.clone();
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            self.flush_writes().await;
            if !self.drain_events() {
                break;
            }
            self.drain_reads();
            // `drain_events` may have queued RTCP or a candidate; send before sleeping.
            self.flush_writes().await;

            let deadline = self
                .pc
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + IDLE_WAKEUP);
            // Unbiased: tokio picks a ready branch at random, so neither a flood of datagrams
            // nor of payloads to send can starve the other or `rtc`'s timers.
            tokio::select! {
                _ = shutdown.changed() => break,
                // Only ever dropped, never sent on.
                _ = stopped.changed() => break,
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, peer_addr)) => self.handle_datagram(&buf[..n], peer_addr),
                    // On Linux an ICMP port-unreachable from an earlier send surfaces here;
                    // the socket is still fine.
                    Err(e) => debug!(target = ?self.target, "UDP receive: {e}"),
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if let Err(e) = self.pc.handle_timeout(Instant::now()) {
                        warn!(target = ?self.target, "rtc timeout handling: {e}");
                    }
                }
            }
        }
        if let Err(e) = self.pc.close() {
            debug!(target = ?self.target, "closing peer connection: {e}");
        }
        self.flush_writes().await;
        self.link.send_if_modified(|link| {
            let changed = *link != Link::Failed;
            if changed {
                *link = Link::Closed;
            }
            changed
        });
    }

    fn handle_datagram(&mut self, datagram: &[u8], peer_addr: SocketAddr) {
        let message = TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(datagram),
        };
        if let Err(e) = self.pc.handle_read(message) {
            debug!(target = ?self.target, %peer_addr, "dropped a datagram: {e}");
        }
    }

    async fn flush_writes(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            if let Err(e) = self
                .socket
                .send_to(&out.message, out.transport.peer_addr)
                .await
            {
                debug!(target = ?self.target, peer = %out.transport.peer_addr, "UDP send: {e}");
            }
        }
    }

    /// Handles `rtc`'s events; returns false when the connection is beyond repair.
    fn drain_events(&mut self) -> bool {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnIceCandidateEvent(event) => {
                    self.signal_candidate(&event.candidate)
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    debug!(target = ?self.target, "peer connection {state}");
                    match state {
                        RTCPeerConnectionState::Connected => {
                            self.link.send_replace(Link::Connected);
                        }
                        RTCPeerConnectionState::Failed => {
                            warn!(target = ?self.target, "peer connection failed");
                            self.link.send_replace(Link::Failed);
                            let _ = self.ctx.control.send(ClientEvent::MediaFailed {
                                target: self.target,
                            });
                            return false;
                        }
                        _ => {}
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    // The server names each forwarded track's MediaStream after its sid.
                    let sid = match init.stream_ids.first() {
                        Some(stream_id) => stream_id.clone(),
                        None => {
                            warn!(track = %init.track_id, "track without a stream id; using its track id");
                            init.track_id.clone()
                        }
                    };
                    debug!(track = %init.track_id, %sid, ssrc = init.ssrc, "track opened");
                    self.track_sids.insert(init.track_id, sid.into());
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                    self.track_sids.remove(&track_id);
                }
                other => trace!(target = ?self.target, "rtc event {other:?}"),
            }
        }
        true
    }

    fn drain_reads(&mut self) {
        while let Some(TaggedRTCMessage { now, message }) = self.pc.poll_read() {
            let RTCMessage::RtpPacket(track_id, packet) = message else {
                continue;
            };
            let Some(track_sid) = self.track_sids.get(&track_id) else {
                debug!(track = %track_id, "RTP for a track that never opened");
                continue;
            };
            let received = ReceivedPacket {
                track_sid: track_sid.clone(),
                seq: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                payload: packet.payload,
                received_at: now,
            };
            // Never block the media loop on a slow application: drop and count instead.
            if self.ctx.packets.try_send(received).is_err() {
                self.ctx.dropped_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn handle_command(&mut self, command: PeerCommand) {
        let result = match command {
            PeerCommand::RemoteAnswer(sdp, verdict) => {
                // The waiting `publish_audio` reports the error; no need to log it here too.
                let _ = verdict.send(self.apply_answer(sdp));
                return;
            }
            PeerCommand::RemoteOffer(sdp) => self.answer_offer(sdp),
            PeerCommand::RemoteCandidate(candidate) => self.add_remote_candidate(candidate),
            PeerCommand::Send(payload) => self.send_payload(payload),
        };
        match result {
            Ok(()) => {}
            // The client is being dropped and its WebSocket writer went first.
            Err(ClientError::Closed) => debug!(target = ?self.target, "command after close"),
            Err(e) => warn!(target = ?self.target, "{e}"),
        }
    }

    fn apply_answer(&mut self, sdp: String) -> Result<(), ClientError> {
        let answer = RTCSessionDescription::answer(sdp)?;
        self.pc.set_remote_description(Instant::now(), answer)?;
        Ok(())
    }

    fn answer_offer(&mut self, sdp: String) -> Result<(), ClientError> {
        let offer = RTCSessionDescription::offer(sdp)?;
        self.pc.set_remote_description(Instant::now(), offer)?;
        if !self.has_local_candidate {
            add_host_candidate(&mut self.pc, self.local_addr)?;
            self.has_local_candidate = true;
        }
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(Instant::now(), answer)?;
        let sdp = self
            .pc
            .local_description()
            .ok_or_else(|| ClientError::Protocol("no local description after answer".into()))?
            .sdp;
        // Sent before the candidate event is drained, so the server has the connection by
        // the time our candidate arrives.
        self.ctx
            .signal
            .send(ClientMessage::SubscribeAnswer { sdp })
            .map_err(|_| ClientError::Closed)
    }

    fn add_remote_candidate(&mut self, candidate: IceCandidate) -> Result<(), ClientError> {
        self.pc.add_remote_candidate(RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment,
            url: None,
        })?;
        Ok(())
    }

    fn signal_candidate(&self, candidate: &RTCIceCandidate) {
        let init = match candidate.to_json() {
            Ok(init) => init,
            Err(e) => return warn!(target = ?self.target, "local candidate: {e}"),
        };
        let message = ClientMessage::Candidate {
            target: self.target,
            candidate: IceCandidate {
                candidate: init.candidate,
                // `rtc` fills "" here; the candidate belongs to the bundle, i.e. m-line 0.
                sdp_mid: init.sdp_mid.filter(|mid| !mid.is_empty()),
                sdp_m_line_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            },
        };
        // Fails only when the WebSocket task is gone, and then nobody needs the candidate.
        let _ = self.ctx.signal.send(message);
    }

    fn send_payload(&mut self, payload: Bytes) -> Result<(), ClientError> {
        let Some(audio) = self.audio.as_mut() else {
            return Err(ClientError::Protocol(
                "payload sent on a connection without a track".into(),
            ));
        };
        let mut sender = self
            .pc
            .rtp_sender(audio.id)
            .ok_or(rtc::shared::error::Error::ErrRTPSenderNotExisted)?;
        let payload_type = match audio.payload_type {
            Some(pt) => pt,
            None => {
                let pt = sender
                    .get_parameters()
                    .rtp_parameters
                    .codecs
                    .first()
                    .map(|codec| codec.payload_type)
                    .ok_or(rtc::shared::error::Error::ErrRTPTransceiverCodecUnsupported)?;
                audio.payload_type = Some(pt);
                pt
            }
        };
        let packet = audio.stamper.stamp(payload_type, payload);
        sender.write_rtp(Instant::now(), packet)?;
        Ok(())
    }
}
