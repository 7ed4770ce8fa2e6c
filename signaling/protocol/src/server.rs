//! Messages from the server to a client: the first release's [`ServerMessage`], the later
//! [`ServerEvent`], [`ServerFrame`] to parse both, and what only they carry.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::ClientMessage;
use crate::{
    ErrorCode, IceCandidate, ParticipantInfo, PeerTarget, Permissions, RoomInfo, TrackInfo,
};

/// The `reason` of [`ServerMessage::Left`] when the server ended a session because one of its
/// peer connections failed (ICE or DTLS gave up; in a cluster, also the node serving its media
/// went away). Nothing the participant did: the SDKs join again by themselves (same token, a
/// new participant sid) instead of ending the session.
pub const LEFT_PEER_CONNECTION_FAILED: &str = "peer connection failed";

/// Messages from the server to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to [`ClientMessage::Join`]: who you are and who is already there.
    Joined {
        version: u32,
        participant: ParticipantInfo,
        room: RoomInfo,
        /// What this participant may do; absent from servers before grants.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        permissions: Option<Permissions>,
        /// Secret for [`ClientMessage::Resume`] after a dropped connection; absent when the
        /// server does not keep dropped participants.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_sid: String,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track_sid: String,
        participant_sid: String,
    },
    TrackMuted {
        track_sid: String,
        participant_sid: String,
        muted: bool,
    },
    /// SDP answer for the publish connection.
    PublishAnswer {
        sdp: String,
    },
    /// SDP offer for the subscribe connection (initial or renegotiation).
    SubscribeOffer {
        sdp: String,
    },
    /// An ICE candidate of the server's side of `target`.
    Candidate {
        target: PeerTarget,
        candidate: IceCandidate,
    },
    Pong,
    /// How well a participant's media flows, sent to that participant, to the room's staff
    /// (those who may moderate) and to a support room's agent whenever it changes (sampled
    /// every few seconds from RTCP reports).
    ConnectionQuality {
        participant_sid: String,
        quality: ConnectionQuality,
        /// The worst loss of the participant's links, in thousandths (123 = 12.3 %), behind
        /// the level: for a tooltip. Sent again when it moves by 2 points. Absent from older
        /// servers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_permille: Option<u16>,
        /// The longest round trip measured, in milliseconds; absent when none was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtt_ms: Option<u32>,
    },
    /// The server ended this participant's session (after `Leave`, or for `reason`; see
    /// [`LEFT_PEER_CONNECTION_FAILED`]).
    Left {
        reason: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Server messages added after the first release of protocol version 1: moderation, chat and
/// the support desk. They travel on the same socket with the same `type` tag as
/// [`ServerMessage`], but live in their own enum so that code matching `ServerMessage`
/// exhaustively (SDKs built against the first release) keeps compiling; such SDKs skip these as
/// unknown types. New clients parse both with [`ServerFrame`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Answer to [`ClientMessage::Resume`]: the same participant continues on this connection.
    Resumed { participant_sid: String },
    /// Another participant's connection dropped (`reconnecting`: its media has most likely
    /// stopped too) or came back (`connected`). A dropped participant stays in the room for the
    /// server's reconnect timeout (`reconnect_timeout_secs`, 15 s by default), waiting for its
    /// [`ClientMessage::Resume`]; if none comes, [`ServerMessage::ParticipantLeft`] follows.
    /// Pages show it, e.g. "reconnecting…" on the tile, instead of a frozen picture.
    ParticipantState {
        participant_sid: String,
        state: ParticipantConnection,
    },
    /// The raised hands in the order they were raised (to staff and to those in it).
    HandQueue { participant_sids: Vec<String> },
    /// Your permissions (or, for staff, another participant's) changed. Staff are also sent
    /// everyone's permissions as they stand: each other participant's right after `joined`
    /// (and after being granted moderation), and each newcomer's after its
    /// `participant_joined`, so a moderator's page knows who is on stage and which assistant
    /// moderates, and can send [`ClientMessage::SetPermissions`] from what is in force.
    PermissionsChanged {
        participant_sid: String,
        permissions: Permissions,
    },
    /// The room was locked or unlocked.
    RoomLocked { locked: bool },
    /// A chat line; `from` is the sender's participant sid.
    Chat {
        from: String,
        name: String,
        text: String,
    },
    /// An application data message.
    Data {
        from: String,
        topic: String,
        payload: String,
    },
    /// Support: your request waits at `position` (1 = next among requests on its topic), for
    /// about `estimated_wait_secs`; `null` when no agent on duty serves the topic right now.
    SupportQueued {
        position: u32,
        estimated_wait_secs: Option<u64>,
    },
    /// Support: a private room for you and your peer; join it with `token`.
    SupportAssigned {
        session_id: String,
        room: String,
        token: String,
        /// The other side's identity (the agent for a learner, the learner for an agent).
        peer_identity: String,
        /// The other side's display name, from its token (the identity if it has none); also
        /// its name in the private room. Absent from servers before it was added.
        #[serde(default)]
        peer_name: String,
        topic: String,
        /// The language the learner asked in. Absent from servers before it was added.
        #[serde(default)]
        language: String,
    },
    /// Support, to agents (on duty, or once on duty and now off): the learners waiting, in
    /// queue order (a transferred learner first), sent whenever the desk changes and when an
    /// agent goes on duty. Pages tick `waited_secs` forward themselves between updates.
    SupportQueue { waiting: Vec<WaitingLearner> },
    /// Support: the session ended (or was transferred away from this agent).
    SupportEnded { session_id: String, reason: String },
    /// The room is being recorded (`recording`), or no longer (`stopped`): sent to everyone
    /// in the room when it changes, and to a participant joining a room being recorded right
    /// after its `joined`, so that pages can show it. `started_by` is the identity of the
    /// participant who started it, `admin` (the admin API) or `auto` (the server's
    /// `[recording] auto`).
    Recording {
        state: RecordingState,
        recording_id: String,
        started_by: String,
    },
    /// A video you receive was paused because your connection cannot take it (too little
    /// bandwidth for even its lowest layer, or so much loss that only audio gets through), or
    /// was resumed after such a pause. Pages say so ("your connection is very weak: audio
    /// only") instead of showing a frozen picture. Not sent for a video you hide yourself (a
    /// zero rendered size) or for a publisher's own mute.
    StreamState {
        track_sid: String,
        state: StreamState,
    },
    /// In a cluster: other nodes this client may reconnect to if the node it is connected to
    /// becomes unreachable, as WebSocket URLs (`ws://host:port/ws`, from the cluster
    /// directory's public addresses), best first: live nodes of the client's region, then the
    /// others; at most [`MAX_ALTERNATES`]. Sent right after `joined` and `resumed`, and again
    /// whenever the list changes (a node joins or leaves the cluster); each list replaces the
    /// last, and an empty one means there is none. A single server never sends it.
    ///
    /// The SDKs try these, in order, when their node refuses or does not answer the WebSocket
    /// during a reconnect, joining again with the same token (any node of the cluster checks
    /// it and finds the room). A client that reached its node over `wss` keeps `wss` for these
    /// (the nodes sit behind a TLS front end that the server does not know of).
    Alternates { urls: Vec<String> },
}

/// The most URLs in [`ServerEvent::Alternates`].
pub const MAX_ALTERNATES: usize = 4;

/// Whether a video reaches you (see [`ServerEvent::StreamState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    Active,
    Paused,
}

/// Whether a room is being recorded (see [`ServerEvent::Recording`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    Recording,
    Stopped,
    /// Writing the recording failed (a disk error); it is stopped, `stopped` follows, and the
    /// class goes on. `recording.json` says why.
    Failed,
}

/// A learner waiting for an agent, as [`ServerEvent::SupportQueue`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingLearner {
    /// The learner's display name.
    pub name: String,
    pub topic: String,
    pub language: String,
    /// Seconds since the request (or, for a transferred session, the transfer).
    pub waited_secs: u64,
}

/// Anything the server sends: parse with this when handling both [`ServerMessage`] and
/// [`ServerEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerFrame {
    Message(ServerMessage),
    Event(ServerEvent),
}

/// Whether a participant's connection is up (see [`ServerEvent::ParticipantState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantConnection {
    Connected,
    Reconnecting,
}

/// A participant's connection quality: the worst of its links' loss, jitter and RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionQuality {
    Poor,
    Good,
    Excellent,
}
