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

mod handle;
pub use handle::SfuHandle;

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
    /// Router shards, each on its own thread (see [`crate::shard`]); at least one.
    pub workers: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 7882)),
            advertised_ips: Vec::new(),
            registry: prometheus::Registry::new(),
            workers: default_workers(),
        }
    }
}

/// One router shard per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
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
    /// The worst loss among listeners of an audio track imported from another node that have
    /// no RED, here and on the nodes this one passes it on to, in 256ths, when that changes;
    /// the control plane tells the node that exports it, so that the publisher's Opus encoder
    /// is asked for in-band FEC (see `Router::report_listeners_loss`).
    RelayListenerLoss { track_sid: TrackSid, fraction: u8 },
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

impl SfuStats {
    /// Adds another shard's peers, producers and consumers to these. The packet counters are
    /// the process's (every shard counts in the same metrics), so they are kept, not added.
    pub fn add(&mut self, other: &SfuStats) {
        self.peers += other.peers;
        self.producers += other.producers;
        self.consumers += other.consumers;
        self.rtp_packets_in = self.rtp_packets_in.max(other.rtp_packets_in);
        self.rtp_packets_out = self.rtp_packets_out.max(other.rtp_packets_out);
        self.unroutable_datagrams = self.unroutable_datagrams.max(other.unroutable_datagrams);
        self.send_errors = self.send_errors.max(other.send_errors);
    }
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
    RelayListenerLoss {
        track_sid: TrackSid,
        link: u64,
        fraction: u8,
    },
    RelaySenderReport {
        track_sid: TrackSid,
        ssrc: u32,
        rtp_time: u32,
    },
    /// Export a track on the pipe into shard `to` (see [`crate::shard`]).
    PipeExport {
        track_sid: TrackSid,
        to: usize,
        index: u64,
        reply: Reply<RelayedTrack>,
    },
    Pipe(crate::shard::pipes::PipeCommand),
}

/// A link to another node that tracks are exported on, numbered by the control plane.
#[derive(Clone)]
pub struct RelayLink {
    pub id: u64,
    pub link: std::sync::Arc<crate::relay::link::Link>,
}

/// Starts the SFU's threads (`config.workers` router shards) bound to `config.udp_bind`.
pub fn start(config: SfuConfig) -> std::io::Result<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)> {
    crate::shard::start(config)
}
