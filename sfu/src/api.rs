//! The media plane's face to the control plane: commands in, events out.
//!
//! The SFU runs on its own thread and owns every peer connection; the control plane talks to it
//! only through [`SfuHandle`] (commands with a reply) and the [`SfuEvent`] stream. Nothing in the
//! SFU knows about tokens, rooms' rules or HTTP: the control plane decides *who* subscribes to
//! *what*, the SFU makes the media flow.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use aula_protocol::{IceCandidate, PeerTarget, TrackAnnouncement, TrackKind, TrackSource};
use tokio::sync::{mpsc, oneshot};

use crate::impair::Impairment;
use crate::record::capture::{RecordingSpec, TrackLog};
use crate::relay::track::RelayedTrack;

/// Participant session id, assigned by the control plane (`ParticipantInfo::sid`).
pub type ParticipantId = String;
/// Published track id, assigned by the SFU (`TrackInfo::sid`).
pub type TrackSid = String;

/// Where the SFU listens and what it tells peers.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// One UDP socket for all peers.
    pub udp_bind: SocketAddr,
    /// Addresses written into ICE host candidates. Empty means "the bound address", or, when
    /// bound to the unspecified address, 127.0.0.1 plus every non-loopback interface address.
    pub advertised_ips: Vec<IpAddr>,
    /// Where the SFU registers its metrics (see [`crate::SfuMetrics`]); the control plane serves
    /// this registry at `/metrics`.
    pub registry: prometheus::Registry,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 7882)),
            advertised_ips: Vec::new(),
            registry: prometheus::Registry::new(),
        }
    }
}

/// The size, in CSS pixels times the device pixel ratio, at which a subscriber shows a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderedSize {
    pub width: u32,
    pub height: u32,
}

/// A track the SFU started receiving from a publisher.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedTrack {
    pub sid: TrackSid,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub simulcast: bool,
    pub mime_type: String,
}

/// Peer connection states the control plane acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PeerState {
    Connected,
    /// ICE or DTLS gave up (timeout); the connection will not come back by itself.
    Failed,
}

/// What happened in the media plane.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuEvent {
    /// Media started arriving for an announced track; subscribe others to it.
    TrackPublished {
        participant: ParticipantId,
        track: PublishedTrack,
    },
    /// The track stopped (renegotiated away, or its publisher left or failed). Its consumers are
    /// already gone when this is sent.
    TrackUnpublished {
        participant: ParticipantId,
        track_sid: TrackSid,
    },
    /// Send this offer to the participant's subscribe connection.
    SubscribeOffer {
        participant: ParticipantId,
        sdp: String,
    },
    PeerState {
        participant: ParticipantId,
        target: PeerTarget,
        state: PeerState,
    },
    /// The participant's connection quality changed (sampled every few seconds).
    /// A track's capture log in `recording` stopped being written (`error` says why, e.g. a
    /// disk error); reported once per log.
    RecordingFailed {
        recording: String,
        track_sid: TrackSid,
        error: String,
    },
    /// A participant's connection quality, when its level changed or its figures moved enough
    /// to tell (see [`crate::quality::worth_telling`]).
    ConnectionQuality {
        participant: ParticipantId,
        quality: crate::quality::ConnectionQuality,
        /// The worst loss of its links, a fraction.
        loss: f64,
        /// The longest round trip measured, if any.
        rtt: Option<Duration>,
    },
    /// A video the participant receives was paused because its link cannot take even the
    /// lowest layer (too little bandwidth, or too much loss for any video: see
    /// [`crate::forward::condition`]), or resumed after such a pause. Not sent for a video
    /// the participant hides itself or a moderator paused.
    StreamState {
        participant: ParticipantId,
        track_sid: TrackSid,
        paused: bool,
    },
    /// Subscribers here want a keyframe of a track imported from another node (see
    /// [`crate::relay`]); the control plane asks the node that exports it.
    RelayKeyframeRequest { track_sid: TrackSid, layer: usize },
    /// Subscribers here need only these layers of a video imported from another node (see
    /// [`crate::router::relay::demanded_layers`]); the control plane tells the node that
    /// exports it.
    RelayLayerDemand {
        track_sid: TrackSid,
        layers: Vec<usize>,
    },
    /// A publisher's sender report for a track exported on `link`; the control plane passes it
    /// on, so that subscribers behind that node keep lip sync (see [`crate::sender_clock`]).
    RelaySenderReport {
        link: u64,
        track_sid: TrackSid,
        ssrc: u32,
        ntp_time: u64,
        rtp_time: u32,
        packets: u32,
        octets: u32,
    },
    /// Packets of a track imported from another node were lost on the link; the control plane
    /// asks that node to resend them (see [`crate::relay::repair`]).
    RelayNack {
        track_sid: TrackSid,
        layer: usize,
        seqs: Vec<u16>,
    },
    /// A recorded participant's links over the last second (see [`crate::qos`]), sampled
    /// at `at`, for the recording's QoS timeline.
    QosSample {
        participant: ParticipantId,
        at: Instant,
        sample: Box<crate::qos::PeerSample>,
    },
}

/// Why a command failed. `BadSdp` and `BadCandidate` are the client's fault; the rest are not.
/// Serializable: a relay node's SFU answers the origin's commands over the link.
#[derive(Debug, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SfuError {
    #[error("bad SDP: {0}")]
    BadSdp(String),
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    /// A publish offer announced a track as a source of the other media kind.
    #[error("track does not match its announced source: {0}")]
    TrackMismatch(String),
    /// A publish offer has an audio or video section with no codec the SFU supports; the
    /// offer is refused whole rather than answered with that section silently rejected.
    #[error("no codec the server can receive: {0}")]
    UnsupportedCodec(String),
    #[error("unknown participant")]
    UnknownParticipant,
    #[error("unknown track {0}")]
    UnknownTrack(TrackSid),
    #[error("no {0:?} connection yet")]
    NoConnection(PeerTarget),
    #[error("media plane error: {0}")]
    Internal(String),
    #[error("the SFU has stopped")]
    Stopped,
}

/// Counters the control plane reads (e.g. for `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfuStats {
    pub peers: usize,
    pub producers: usize,
    pub consumers: usize,
    pub rtp_packets_in: u64,
    pub rtp_packets_out: u64,
    /// Datagrams that matched no peer and were not a STUN request naming one.
    pub unroutable_datagrams: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

pub(crate) enum Command {
    PublishOffer {
        participant: ParticipantId,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
        reply: Reply<String>,
    },
    SubscribeAnswer {
        participant: ParticipantId,
        sdp: String,
        reply: Reply<()>,
    },
    AddCandidate {
        participant: ParticipantId,
        target: PeerTarget,
        candidate: IceCandidate,
        reply: Reply<()>,
    },
    Subscribe {
        participant: ParticipantId,
        track_sid: TrackSid,
        reply: Reply<()>,
    },
    Unsubscribe {
        participant: ParticipantId,
        track_sid: TrackSid,
        reply: Reply<()>,
    },
    RemoveParticipant {
        participant: ParticipantId,
        reply: Reply<()>,
    },
    UnpublishTrack {
        track_sid: TrackSid,
        reply: Reply<()>,
    },
    SetTrackPaused {
        track_sid: TrackSid,
        paused: bool,
        reply: Reply<()>,
    },
    NoteSelfMuted {
        track_sid: TrackSid,
        muted: bool,
    },
    RestartIce {
        participant: ParticipantId,
        reply: Reply<()>,
    },
    SetStaff {
        participant: ParticipantId,
        staff: bool,
        reply: Reply<()>,
    },
    SetRenderedSize {
        participant: ParticipantId,
        track_sid: TrackSid,
        size: Option<RenderedSize>,
        reply: Reply<()>,
    },
    Stats {
        reply: Reply<SfuStats>,
    },
    StartRecording {
        spec: RecordingSpec,
        reply: Reply<Instant>,
    },
    RecordParticipant {
        id: String,
        participant: ParticipantId,
        reply: Reply<()>,
    },
    StopRecording {
        id: String,
        reply: Reply<Vec<TrackLog>>,
    },
    SetImpairment {
        participant: ParticipantId,
        impairment: Option<Impairment>,
        reply: Reply<()>,
    },
    RelayExport {
        track_sid: TrackSid,
        link: RelayLink,
        index: u64,
        reply: Reply<RelayedTrack>,
    },
    RelayUnexport {
        track_sid: TrackSid,
        link: u64,
    },
    RelayLinkClosed {
        link: u64,
    },
    RelayImport {
        track: RelayedTrack,
        reply: Reply<()>,
    },
    RelayPacket {
        track_sid: TrackSid,
        layer: usize,
        data: bytes::Bytes,
    },
    RequestKeyframe {
        track_sid: TrackSid,
        layer: usize,
    },
    RelayResend {
        track_sid: TrackSid,
        link: u64,
        layer: usize,
        seqs: Vec<u16>,
    },
    RelayLayerDemand {
        track_sid: TrackSid,
        link: u64,
        layers: Vec<usize>,
    },
    RelaySenderReport {
        track_sid: TrackSid,
        ssrc: u32,
        rtp_time: u32,
    },
}

/// A link to another node that tracks are exported on, numbered by the control plane.
#[derive(Clone)]
pub struct RelayLink {
    pub id: u64,
    pub link: std::sync::Arc<crate::relay::link::Link>,
}

/// Cheap to clone; every method is a round trip to the SFU thread.
#[derive(Clone)]
pub struct SfuHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) local_addr: SocketAddr,
}

impl SfuHandle {
    /// The UDP address the SFU is bound to (useful when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| SfuError::Stopped)?;
        rx.await.map_err(|_| SfuError::Stopped)?
    }

    /// Queues a command that has no reply, from code that must not wait (a link's reader). The
    /// queue is only full when the SFU thread is far behind; the command is then dropped, and
    /// said so.
    fn tell(&self, command: Command) {
        if self.commands.try_send(command).is_err() {
            tracing::warn!("SFU command queue full or stopped; a relay command was dropped");
        }
    }

    /// Applies a publisher's offer (creating its publish connection on first use) and returns
    /// the answer. `tracks` says what each sending track is; unannounced tracks are camera or
    /// microphone by kind.
    pub async fn publish_offer(
        &self,
        participant: &str,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    ) -> Result<String, SfuError> {
        let participant = participant.to_owned();
        self.call(|reply| Command::PublishOffer {
            participant,
            sdp,
            tracks,
            reply,
        })
        .await
    }

    /// Applies the client's answer to the last [`SfuEvent::SubscribeOffer`].
    pub async fn subscribe_answer(&self, participant: &str, sdp: String) -> Result<(), SfuError> {
        let participant = participant.to_owned();
        self.call(|reply| Command::SubscribeAnswer {
            participant,
            sdp,
            reply,
        })
        .await
    }

    /// Adds a trickled remote candidate to one of the participant's connections.
    pub async fn add_candidate(
        &self,
        participant: &str,
        target: PeerTarget,
        candidate: IceCandidate,
    ) -> Result<(), SfuError> {
        let participant = participant.to_owned();
        self.call(|reply| Command::AddCandidate {
            participant,
            target,
            candidate,
            reply,
        })
        .await
    }

    /// Forwards `track_sid` to the participant, renegotiating its subscribe connection (an
    /// [`SfuEvent::SubscribeOffer`] follows). Subscribing twice is a no-op.
    pub async fn subscribe(&self, participant: &str, track_sid: &str) -> Result<(), SfuError> {
        let (participant, track_sid) = (participant.to_owned(), track_sid.to_owned());
        self.call(|reply| Command::Subscribe {
            participant,
            track_sid,
            reply,
        })
        .await
    }

    /// Stops forwarding `track_sid` to the participant. Unknown subscriptions are a no-op.
    pub async fn unsubscribe(&self, participant: &str, track_sid: &str) -> Result<(), SfuError> {
        let (participant, track_sid) = (participant.to_owned(), track_sid.to_owned());
        self.call(|reply| Command::Unsubscribe {
            participant,
            track_sid,
            reply,
        })
        .await
    }

    /// Closes both of the participant's connections and unpublishes its tracks
    /// ([`SfuEvent::TrackUnpublished`] follows for each). Unknown participants are a no-op.
    pub async fn remove_participant(&self, participant: &str) -> Result<(), SfuError> {
        let participant = participant.to_owned();
        self.call(|reply| Command::RemoveParticipant { participant, reply })
            .await
    }

    /// Stops a published track at once (its consumers go, [`SfuEvent::TrackUnpublished`]
    /// follows), e.g. when a moderator revokes the publisher's permission.
    pub async fn unpublish_track(&self, track_sid: &str) -> Result<(), SfuError> {
        let track_sid = track_sid.to_owned();
        self.call(|reply| Command::UnpublishTrack { track_sid, reply })
            .await
    }

    /// Pauses (a moderator's mute) or resumes forwarding of a track to every subscriber.
    pub async fn set_track_paused(&self, track_sid: &str, paused: bool) -> Result<(), SfuError> {
        let track_sid = track_sid.to_owned();
        self.call(|reply| Command::SetTrackPaused {
            track_sid,
            paused,
            reply,
        })
        .await
    }

    /// The publisher muted or unmuted its own track: forwarding goes on (it sends silence or
    /// black, or nothing), but a recording notes it in the track's log. Not waited for.
    pub async fn note_self_muted(&self, track_sid: &str, muted: bool) -> Result<(), SfuError> {
        let track_sid = track_sid.to_owned();
        let command = Command::NoteSelfMuted { track_sid, muted };
        self.commands
            .send(command)
            .await
            .map_err(|_| SfuError::Stopped)
    }

    /// Restarts ICE on the participant's subscribe connection (it reconnected from another
    /// network); an [`SfuEvent::SubscribeOffer`] with new credentials follows. The publish
    /// connection restarts from the client's side, with an ICE-restart offer.
    pub async fn restart_ice(&self, participant: &str) -> Result<(), SfuError> {
        let participant = participant.to_owned();
        self.call(|reply| Command::RestartIce { participant, reply })
            .await
    }

    /// Marks a participant as staff (a teacher or an assistant): when a subscriber's
    /// bandwidth is short, staff cameras keep their layers before other cameras do.
    pub async fn set_staff(&self, participant: &str, staff: bool) -> Result<(), SfuError> {
        let participant = participant.to_owned();
        self.call(|reply| Command::SetStaff {
            participant,
            staff,
            reply,
        })
        .await
    }

    /// Tells the SFU how large the participant shows a subscribed video track, so it forwards
    /// no larger a simulcast layer than that needs. `None` means "unknown" (no limit);
    /// a zero size means the video is not shown at all, and it is paused for this subscriber.
    pub async fn set_rendered_size(
        &self,
        participant: &str,
        track_sid: &str,
        size: Option<RenderedSize>,
    ) -> Result<(), SfuError> {
        let (participant, track_sid) = (participant.to_owned(), track_sid.to_owned());
        self.call(|reply| Command::SetRenderedSize {
            participant,
            track_sid,
            size,
            reply,
        })
        .await
    }

    /// Tests only: impairs the participant's network path inside the SFU (see
    /// [`crate::impair`]), or with `None` stops. What the SFU sends to the participant's
    /// addresses suffers loss, the rate cap and delay; what it receives from them, the loss.
    /// Participants the SFU does not know yet are accepted: the impairment applies once their
    /// media connects, and ends when they are removed.
    pub async fn set_impairment(
        &self,
        participant: &str,
        impairment: Option<Impairment>,
    ) -> Result<(), SfuError> {
        let participant = participant.to_owned();
        self.call(|reply| Command::SetImpairment {
            participant,
            impairment,
            reply,
        })
        .await
    }

    /// Starts recording every track `spec.participants` publish, now or later, into capture
    /// logs in `spec.dir` (see [`crate::record::capture`]). The id must be new. Returns the
    /// recording's time 0, the origin of its logs' record times, so that what the control plane
    /// writes beside them (the QoS timeline) lines up with them.
    pub async fn start_recording(&self, spec: RecordingSpec) -> Result<Instant, SfuError> {
        self.call(|reply| Command::StartRecording { spec, reply })
            .await
    }

    /// Adds a participant (one who joined the recorded room later) to a recording.
    pub async fn record_participant(&self, id: &str, participant: &str) -> Result<(), SfuError> {
        let (id, participant) = (id.to_owned(), participant.to_owned());
        self.call(|reply| Command::RecordParticipant {
            id,
            participant,
            reply,
        })
        .await
    }

    /// Stops a recording and hands back its logs, closing: [`TrackLog::log`]'s `finish` waits
    /// (blocking) until each is on disk.
    pub async fn stop_recording(&self, id: &str) -> Result<Vec<TrackLog>, SfuError> {
        let id = id.to_owned();
        self.call(|reply| Command::StopRecording { id, reply })
            .await
    }

    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Starts sending a track to another node over `link`, as track `index` there (see
    /// [`crate::relay::track`]); returns what that node needs to import it.
    pub async fn relay_export(
        &self,
        track_sid: &str,
        link: RelayLink,
        index: u64,
    ) -> Result<RelayedTrack, SfuError> {
        let track_sid = track_sid.to_owned();
        self.call(|reply| Command::RelayExport {
            track_sid,
            link,
            index,
            reply,
        })
        .await
    }

    /// Stops sending a track on a link. Not waited for.
    pub fn relay_unexport(&self, track_sid: &str, link: u64) {
        self.tell(Command::RelayUnexport {
            track_sid: track_sid.to_owned(),
            link,
        });
    }

    /// Forgets a link that went down. Not waited for.
    pub fn relay_link_closed(&self, link: u64) {
        self.tell(Command::RelayLinkClosed { link });
    }

    /// Makes another node's track available here for [`SfuHandle::subscribe`].
    pub async fn relay_import(&self, track: RelayedTrack) -> Result<(), SfuError> {
        self.call(|reply| Command::RelayImport { track, reply })
            .await
    }

    /// Hands the SFU a packet of an imported track, from its link. Dropped (false) when the
    /// SFU's queue is full: media is never waited for.
    pub fn relay_packet(&self, track_sid: &str, layer: usize, data: bytes::Bytes) -> bool {
        self.commands
            .try_send(Command::RelayPacket {
                track_sid: track_sid.to_owned(),
                layer,
                data,
            })
            .is_ok()
    }

    /// Another node lost packets of a track sent to it on `link`: resend those still kept.
    /// Not waited for.
    pub fn relay_resend(&self, track_sid: &str, link: u64, layer: usize, seqs: Vec<u16>) {
        self.tell(Command::RelayResend {
            track_sid: track_sid.to_owned(),
            link,
            layer,
            seqs,
        });
    }

    /// The node on `link` needs only `layers` of `track_sid`. Not waited for.
    pub fn relay_layer_demand(&self, track_sid: &str, link: u64, layers: Vec<usize>) {
        self.tell(Command::RelayLayerDemand {
            track_sid: track_sid.to_owned(),
            link,
            layers,
        });
    }

    /// The publisher of imported track `track_sid` reported that `rtp_time` of its stream
    /// `ssrc` is now (its sender report, passed on by the node that exports it). Not waited for.
    pub fn relay_sender_report(&self, track_sid: &str, ssrc: u32, rtp_time: u32) {
        self.tell(Command::RelaySenderReport {
            track_sid: track_sid.to_owned(),
            ssrc,
            rtp_time,
        });
    }

    /// Another node's subscribers want a keyframe of a track published here. Not waited for.
    pub fn request_keyframe(&self, track_sid: &str, layer: usize) {
        self.tell(Command::RequestKeyframe {
            track_sid: track_sid.to_owned(),
            layer,
        });
    }
}

/// Starts the SFU thread bound to `config.udp_bind`.
pub fn start(config: SfuConfig) -> std::io::Result<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)> {
    crate::worker::spawn(config)
}
