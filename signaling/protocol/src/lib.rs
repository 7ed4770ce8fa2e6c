//! The Aula signaling protocol: JSON messages over one WebSocket per participant.
//!
//! Every message is an object with a `"type"` tag (snake_case). The client's first message is
//! [`ClientMessage::Join`], carrying [`PROTOCOL_VERSION`]; the server refuses other versions with
//! [`ErrorCode::UnsupportedVersion`] so that old SDKs fail loudly instead of misbehaving.
//!
//! Media uses two peer connections per participant, as LiveKit does:
//! - **publish** ([`PeerTarget::Publish`]): the client offers, the server answers. The client
//!   renegotiates whenever it adds or removes a track.
//! - **subscribe** ([`PeerTarget::Subscribe`]): the server offers, the client answers. The server
//!   renegotiates whenever tracks come and go in the room.
//!
//! Two connections keep each offer/answer exchange one-directional, so the two sides never offer
//! at the same time (no glare handling needed) and a subscriber that publishes nothing never
//! opens a publish connection at all.
//!
//! In the subscribe connection each forwarded track's MediaStream id is the track's `sid`, so the
//! browser maps `RTCTrackEvent.streams[0].id` to the [`TrackInfo`] it got in
//! [`ServerMessage::TrackPublished`].

use serde::{Deserialize, Serialize};

/// The version a client announces in [`ClientMessage::Join`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket text message the server accepts, in bytes. An SDP with simulcast and many
/// tracks is well under 64 KiB; larger messages are refused with [`ErrorCode::MessageTooLarge`].
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Largest `width` or `height` of [`ClientMessage::TrackSettings`], in device pixels: twice an
/// 8K screen's width. Anything larger is a client bug, refused with [`ErrorCode::BadMessage`].
pub const MAX_RENDERED_DIMENSION: u32 = 16384;

/// The `reason` of [`ServerMessage::Left`] when the server ended a session because one of its
/// peer connections failed (ICE or DTLS gave up; in a cluster, also the node serving its media
/// went away). Nothing the participant did: the SDKs join again by themselves (same token, a
/// new participant sid) instead of ending the session.
pub const LEFT_PEER_CONNECTION_FAILED: &str = "peer connection failed";

/// Which of the participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerTarget {
    Publish,
    Subscribe,
}

/// The role a token grants. Default [`Permissions`] derive from it (see the server's grants);
/// a token may override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs a class: publishes, moderates, ends the class.
    Teacher,
    /// Listens until invited on stage.
    Student,
    /// Helps the teacher moderate; the teacher can revoke that live.
    Assistant,
    /// Support desk staff: goes on duty and helps learners in private rooms.
    Agent,
    /// Asks the support desk for help; shares camera and screen with its agent.
    Learner,
}

impl Role {
    /// Staff may moderate a class (until a teacher revokes it for an assistant).
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Teacher | Role::Assistant)
    }

    /// Who may act on whom: a participant moderates only those of lower rank, so an assistant
    /// cannot remove the teacher or another assistant.
    pub fn rank(self) -> u8 {
        match self {
            Role::Teacher => 3,
            Role::Assistant => 2,
            Role::Agent => 2,
            Role::Student | Role::Learner => 1,
        }
    }
}

/// What a participant may publish. Screen share covers its audio too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishSource {
    Camera,
    Microphone,
    Screen,
}

impl PublishSource {
    /// Every source, in a stable order.
    pub const ALL: [PublishSource; 3] = [
        PublishSource::Camera,
        PublishSource::Microphone,
        PublishSource::Screen,
    ];

    /// The grant a track of `source` needs.
    pub fn of(source: TrackSource) -> Self {
        match source {
            TrackSource::Camera => PublishSource::Camera,
            TrackSource::Microphone => PublishSource::Microphone,
            TrackSource::ScreenShare | TrackSource::ScreenShareAudio => PublishSource::Screen,
        }
    }
}

/// A participant's live permissions: first from its token, then changed by moderators (invite
/// to stage, revoke). Every field has a serde default so that older peers may omit new ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Permissions {
    /// May open a publish connection at all.
    pub can_publish: bool,
    /// Which sources it may publish (only meaningful with `can_publish`).
    pub publish_sources: Vec<PublishSource>,
    pub can_subscribe: bool,
    /// May send chat and data messages.
    pub can_publish_data: bool,
    /// Invisible to the others (e.g. a recorder): never announced, never publishes.
    pub hidden: bool,
    /// May use the moderation messages (hands, stage, mute, remove, lock).
    pub can_moderate: bool,
}

impl Permissions {
    /// Whether a track of `source` may be published now.
    pub fn allows(&self, source: TrackSource) -> bool {
        self.can_publish
            && !self.hidden
            && self.publish_sources.contains(&PublishSource::of(source))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a track shows. The browser cannot tell the server this through SDP, so the publisher
/// announces it in [`ClientMessage::PublishOffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
}

impl TrackSource {
    /// The media a track of this source carries. The server refuses an announcement whose
    /// track is of the other kind (see [`ErrorCode::TrackMismatch`]): grants are checked on the
    /// source, so video announced as `microphone` would otherwise pass a microphone-only grant.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Microphone | TrackSource::ScreenShareAudio => TrackKind::Audio,
            TrackSource::Camera | TrackSource::ScreenShare => TrackKind::Video,
        }
    }
}

/// An ICE candidate as the browser's `RTCIceCandidate.toJSON()` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A track the publisher is about to send, matched to the SDP by the MediaStreamTrack id that
/// appears in the offer's `a=msid` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackAnnouncement {
    /// `MediaStreamTrack.id` in the browser (the second part of `a=msid`).
    pub track_id: String,
    pub source: TrackSource,
}

/// A published track as the room sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Server-assigned id, also the MediaStream id of the track in the subscribe connection.
    pub sid: String,
    pub participant_sid: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    /// Whether the publisher sends several simulcast layers of this track.
    pub simulcast: bool,
    pub muted: bool,
    /// Codec mime type, e.g. `audio/opus`, `video/VP8`.
    pub mime_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Server-assigned id, unique for this session of the participant.
    pub sid: String,
    /// Stable user id from the access token.
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub tracks: Vec<TrackInfo>,
    /// Whether the participant's hand is raised (see [`ClientMessage::RaiseHand`]).
    #[serde(default)]
    pub hand_raised: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// Everyone else in the room, with their published tracks.
    pub participants: Vec<ParticipantInfo>,
    /// Whether new joins (other than staff) are refused.
    #[serde(default)]
    pub locked: bool,
}

/// Messages from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Must be the first message. The token names the room and the identity.
    Join { version: u32, token: String },
    /// Instead of `Join` on a new connection after the old one dropped: continues the same
    /// participant (same sid, tracks, subscriptions) if sent within the server's reconnect
    /// timeout. Answered with [`ServerEvent::Resumed`], then whatever was queued meanwhile; the
    /// server restarts ICE on the subscribe connection (a new `subscribe_offer` follows) and
    /// the client restarts ICE on its publish connection (an offer with `iceRestart`).
    Resume { version: u32, resume_token: String },
    /// SDP offer for the publish connection, with what each sending track is.
    PublishOffer {
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    },
    /// SDP answer to a [`ServerMessage::SubscribeOffer`].
    SubscribeAnswer { sdp: String },
    /// A trickled ICE candidate of the client's side of `target`.
    Candidate {
        target: PeerTarget,
        candidate: IceCandidate,
    },
    /// Mute or unmute one of the client's own published tracks.
    MuteTrack { track_sid: String, muted: bool },
    /// Keep-alive; the server answers with [`ServerMessage::Pong`].
    Ping,
    /// Leave the room. The server answers with [`ServerMessage::Left`] and closes.
    Leave,

    // --- Class moderation (protocol version 1, added later; servers without it answer
    // `bad_message`). Privileged ones answer `forbidden` unless the sender may moderate and
    // outranks the target. ---
    /// Raise one's hand: joins the ordered queue staff see in [`ServerEvent::HandQueue`].
    RaiseHand,
    /// Lower a hand: one's own (`participant_sid` absent), or anyone's for staff.
    LowerHand {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant_sid: Option<String>,
    },
    /// Staff: let a participant publish camera and microphone (lowers its hand).
    InviteToStage { participant_sid: String },
    /// Staff: revoke publishing; the participant's tracks are unpublished at once.
    RemoveFromStage { participant_sid: String },
    /// Staff: mute another participant's track (the SFU stops forwarding it). Only the
    /// publisher itself can unmute, with [`ClientMessage::MuteTrack`].
    MuteParticipantTrack { track_sid: String },
    /// Staff: mute every student's microphone.
    MuteAllStudents,
    /// Staff: remove a participant; it gets [`ServerMessage::Left`] with the reason.
    RemoveParticipant {
        participant_sid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Staff: refuse (or again allow) new joins of non-staff participants.
    LockRoom { locked: bool },
    /// Teacher: end the class; everyone gets `left` with reason `class ended`.
    EndClass,
    /// Staff: replace a participant's permissions (e.g. the teacher revokes an assistant's
    /// moderation). `hidden` cannot be changed live and is ignored.
    SetPermissions {
        participant_sid: String,
        permissions: Permissions,
    },
    /// A chat line to the room (needs `can_publish_data`; rate limited).
    Chat { text: String },
    /// A small application message to the room (needs `can_publish_data`; rate limited).
    Data { topic: String, payload: String },

    // --- Support desk ---
    /// Agent: go on duty with skills (e.g. `audio`, `billing`, `en`) and how many learners at
    /// once. Sending it again updates them.
    GoOnDuty { skills: Vec<String>, capacity: u32 },
    /// Agent: take no new learners (current sessions continue).
    GoOffDuty,
    /// Learner: ask for help. Answered with [`ServerEvent::SupportQueued`] or
    /// [`ServerEvent::SupportAssigned`].
    RequestHelp { topic: String, language: String },
    /// Learner: withdraw a request still waiting.
    CancelHelp,
    /// Agent: hand a session over to an agent with `skill` (queued again if none is free).
    TransferSession { session_id: String, skill: String },
    /// Agent or learner: end a support session.
    EndSupportSession { session_id: String },
    /// Learner: rate a support session that has ended, `good` or not, once (the server counts
    /// it in `aula_support_ratings_total{rating="good|bad"}`). Refused with `unknown_session`
    /// unless the sender was that session's learner, on the same lobby connection, and has not
    /// rated it yet.
    RateSupportSession { session_id: String, good: bool },

    // --- Recording (tokens with `can_record`: teachers and agents by default) ---
    /// Start recording this room: everyone gets [`ServerEvent::Recording`]. Refused with
    /// `forbidden` without the grant, `already_recording` if it is being recorded.
    StartRecording,
    /// Stop recording this room. Refused with `forbidden` without the grant, `not_recording`
    /// if it is not being recorded.
    StopRecording,

    // --- Subscriber hints (servers without them answer `bad_message`) ---
    /// How large this client shows a video track it receives, in device pixels (CSS pixels times
    /// `devicePixelRatio`), e.g. `{"type":"track_settings","track_sid":"TR_x","width":640,
    /// "height":360}`. The server forwards no larger a simulcast layer than that size needs. A
    /// zero `width` or `height` means the video is not shown at all (hidden, scrolled away,
    /// detached, tab in the background): the server stops forwarding it to this client until a
    /// non-zero size comes. Until a client sends one for a track, the track has no size limit.
    ///
    /// Refused with `unknown_track` unless the track is a video track this participant
    /// receives, and with `bad_message` when a dimension exceeds [`MAX_RENDERED_DIMENSION`];
    /// the session goes on either way. Each message is applied as it comes, so clients send it
    /// only when the size changes (the browser SDK debounces it).
    TrackSettings {
        track_sid: String,
        width: u32,
        height: u32,
    },

    // --- Browser statistics (servers without it answer `bad_message`) ---
    /// What the participant's own browser measures, for the QoS timeline of a recording (see
    /// [`ClientStats`]); the browser SDK sends it by itself every [`CLIENT_STATS_INTERVAL_SECS`]
    /// while connected. Refused with `bad_message` when a value is out of range
    /// ([`ClientStats::validate`]) and `rate_limited` when sent more often than about every
    /// 4 s; the session goes on either way. Outside a recording the server ignores it.
    ClientStats(ClientStats),
}

/// How often the browser SDK sends [`ClientMessage::ClientStats`].
pub const CLIENT_STATS_INTERVAL_SECS: u64 = 5;

/// A browser's summary of the last interval (since its previous `client_stats`), e.g.
/// `{"type":"client_stats","fps":24.5,"freezes":1,"freeze_ms":450,"frame_width":1280,
/// "frame_height":720,"audio_concealed_ratio":0.02,"packet_loss":0.01,"rtt_ms":48,
/// "jitter_ms":6}`. Every field may be left out: a receive-only student has no video to
/// count. A field left out (or `null`) is `None`, not 0, so that the timeline tells "not
/// measured" from "measured 0" (no freezes, no loss); it is left out again when serialized.
/// Received media only, from `RTCPeerConnection.getStats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientStats {
    /// Frames per second decoded, over the received videos (their average).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Video freezes (`freezeCount`) and their total duration, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freezes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_ms: Option<u32>,
    /// The largest video frame decoded, in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_height: Option<u32>,
    /// The share of audio samples the browser had to conceal (0.0..=1.0): what lost or late
    /// audio sounded like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_concealed_ratio: Option<f64>,
    /// The share of received packets lost (0.0..=1.0), as the browser counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<f64>,
    /// The round trip of the browser's selected candidate pair, and the received streams' worst
    /// jitter, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
}

impl ClientStats {
    /// The checks a `client_stats` message passes: every number finite and within what a
    /// browser can report, so that a buggy or hostile client cannot write nonsense into a
    /// recording's timeline. A field left out passes.
    pub fn validate(&self) -> Result<(), String> {
        let in_range = |name: &str, value: Option<f64>, max: f64| match value {
            Some(value) if !(value.is_finite() && (0.0..=max).contains(&value)) => {
                Err(format!("{name} must be a number from 0 to {max}"))
            }
            _ => Ok(()),
        };
        let count = |value: Option<u32>| value.map(f64::from);
        in_range("fps", self.fps, 240.0)?;
        in_range("audio_concealed_ratio", self.audio_concealed_ratio, 1.0)?;
        in_range("packet_loss", self.packet_loss, 1.0)?;
        in_range("rtt_ms", self.rtt_ms, 60_000.0)?;
        in_range("jitter_ms", self.jitter_ms, 60_000.0)?;
        in_range("freezes", count(self.freezes), 1_000.0)?;
        in_range("freeze_ms", count(self.freeze_ms), 600_000.0)?;
        let max = f64::from(MAX_RENDERED_DIMENSION);
        in_range("frame_width", count(self.frame_width), max)?;
        in_range("frame_height", count(self.frame_height), max)
    }
}

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

/// Machine-readable error codes; `message` says the details for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not an object with a known `type` and the right fields.
    BadMessage,
    /// A message larger than [`MAX_MESSAGE_BYTES`].
    MessageTooLarge,
    /// `Join` with a version this server does not speak.
    UnsupportedVersion,
    /// Token missing, malformed, badly signed or expired.
    Unauthorized,
    /// The token is valid but does not allow this action.
    Forbidden,
    /// A message other than `Join` before joining, or `Join` twice.
    NotJoined,
    AlreadyJoined,
    /// The SDP could not be parsed or negotiated.
    BadSdp,
    /// The ICE candidate could not be parsed or applied.
    BadCandidate,
    /// A track sid that does not exist or is not yours.
    UnknownTrack,
    /// No such participant in your room.
    UnknownParticipant,
    /// The room is locked: only staff may join until it is unlocked.
    RoomLocked,
    /// Too many chat or data messages; wait and retry.
    RateLimited,
    /// A chat or data message larger than allowed.
    PayloadTooLarge,
    /// No such support session, or not yours.
    UnknownSession,
    /// The request does not fit the current state (e.g. asking for help twice).
    Conflict,
    /// A `publish_offer` announced a track as a source of the other media kind than the
    /// track's m-section in the SDP (video announced as `microphone`, audio as `camera`); the
    /// offer is refused and nothing of it is published.
    TrackMismatch,
    /// A `publish_offer` has an audio or video m-section none of whose codecs the server can
    /// receive (it takes Opus, G.722, PCMU, PCMA, VP8, VP9, H.264, AV1 and H.265); the message
    /// names the section and what it offered. The offer is refused and nothing of it is
    /// published: offer a supported codec.
    UnsupportedCodec,
    /// `start_recording` in a room being recorded.
    AlreadyRecording,
    /// `stop_recording` in a room not being recorded.
    NotRecording,
    /// The media plane failed; the session may continue.
    Internal,
    /// In a cluster, the room's origin node cannot be reached now (it may be failing over to
    /// another node): join again shortly.
    Unavailable,
}

impl ClientMessage {
    /// Parses one WebSocket text message, classifying the failure for the error reply.
    pub fn parse(text: &str) -> Result<Self, (ErrorCode, String)> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err((
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                    text.len()
                ),
            ));
        }
        serde_json::from_str(text).map_err(|e| (ErrorCode::BadMessage, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_stats_parse_flat_and_what_is_left_out_stays_out() {
        let text =
            r#"{"type":"client_stats","fps":24.5,"freezes":0,"frame_width":1280,"rtt_ms":null}"#;
        let ClientMessage::ClientStats(stats) = ClientMessage::parse(text).unwrap() else {
            panic!("not client_stats");
        };
        assert_eq!(stats.fps, Some(24.5));
        assert_eq!(stats.freezes, Some(0), "a measured 0 is kept");
        assert_eq!(stats.frame_width, Some(1280));
        assert_eq!(stats.frame_height, None);
        assert_eq!(stats.rtt_ms, None);
        assert_eq!(stats.validate(), Ok(()));
        let text = serde_json::to_string(&ClientMessage::ClientStats(stats)).unwrap();
        assert_eq!(
            text,
            r#"{"type":"client_stats","fps":24.5,"freezes":0,"frame_width":1280}"#
        );
        // An empty report is one too.
        let empty = ClientMessage::parse(r#"{"type":"client_stats"}"#).unwrap();
        assert_eq!(empty, ClientMessage::ClientStats(ClientStats::default()));
    }

    #[test]
    fn client_stats_out_of_range_are_refused() {
        let ok = ClientStats {
            fps: Some(30.0),
            audio_concealed_ratio: Some(1.0),
            rtt_ms: Some(120.0),
            frame_width: Some(MAX_RENDERED_DIMENSION),
            ..ClientStats::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            ClientStats {
                fps: Some(-1.0),
                ..ok
            },
            ClientStats {
                fps: Some(f64::NAN),
                ..ok
            },
            ClientStats {
                fps: Some(1000.0),
                ..ok
            },
            ClientStats {
                audio_concealed_ratio: Some(1.5),
                ..ok
            },
            ClientStats {
                packet_loss: Some(f64::INFINITY),
                ..ok
            },
            ClientStats {
                rtt_ms: Some(1e9),
                ..ok
            },
            ClientStats {
                freezes: Some(5000),
                ..ok
            },
            ClientStats {
                frame_height: Some(MAX_RENDERED_DIMENSION + 1),
                ..ok
            },
        ];
        for stats in bad {
            assert!(stats.validate().is_err(), "{stats:?} passed");
        }
        // A wrong type is a parse error: bad_message too.
        let text = r#"{"type":"client_stats","fps":"fast"}"#;
        assert_eq!(
            ClientMessage::parse(text).unwrap_err().0,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn messages_are_tagged_snake_case() {
        let json = serde_json::to_string(&ClientMessage::Join {
            version: 1,
            token: "t".into(),
        })
        .unwrap();
        assert_eq!(json, r#"{"type":"join","version":1,"token":"t"}"#);
        let msg = ServerMessage::Error {
            code: ErrorCode::BadSdp,
            message: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"error","code":"bad_sdp","message":"x"}"#
        );
    }

    #[test]
    fn candidate_uses_browser_field_names() {
        let text = r#"{"type":"candidate","target":"publish","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#;
        let ClientMessage::Candidate { target, candidate } = ClientMessage::parse(text).unwrap()
        else {
            panic!("not a candidate");
        };
        assert_eq!(target, PeerTarget::Publish);
        assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
        assert_eq!(candidate.sdp_m_line_index, Some(0));
    }

    #[test]
    fn additions_are_backward_compatible() {
        // A participant and a room as the first release sent them (no hand, no lock).
        let old = r#"{"type":"joined","version":1,"participant":{"sid":"PA_1","identity":"a","name":"a","role":"student","tracks":[]},"room":{"name":"r","participants":[]}}"#;
        let ServerMessage::Joined {
            participant,
            room,
            permissions,
            ..
        } = serde_json::from_str(old).expect("old joined parses")
        else {
            panic!("not joined");
        };
        assert!(!participant.hand_raised && !room.locked && permissions.is_none());
        // Permissions tolerate missing fields; new roles round-trip.
        let p: Permissions = serde_json::from_str(r#"{"can_subscribe":true}"#).expect("partial");
        assert!(p.can_subscribe && !p.can_publish);
        for role in [Role::Assistant, Role::Agent, Role::Learner] {
            let json = serde_json::to_string(&role).expect("role");
            assert_eq!(
                serde_json::from_str::<Role>(&json).expect("role back"),
                role
            );
        }
        assert_eq!(
            serde_json::to_string(&Role::Assistant).expect("role"),
            r#""assistant""#
        );
    }

    #[test]
    fn server_frame_parses_messages_and_events() {
        let msg: ServerFrame = serde_json::from_str(r#"{"type":"pong"}"#).expect("pong");
        assert_eq!(msg, ServerFrame::Message(ServerMessage::Pong));
        let ev: ServerFrame =
            serde_json::from_str(r#"{"type":"hand_queue","participant_sids":["PA_1"]}"#)
                .expect("hand queue");
        assert_eq!(
            ev,
            ServerFrame::Event(ServerEvent::HandQueue {
                participant_sids: vec!["PA_1".into()]
            })
        );
        assert!(serde_json::from_str::<ServerFrame>(r#"{"type":"nope"}"#).is_err());
        let alternates: ServerFrame =
            serde_json::from_str(r#"{"type":"alternates","urls":["ws://b:7880/ws"]}"#)
                .expect("alternates");
        assert_eq!(
            alternates,
            ServerFrame::Event(ServerEvent::Alternates {
                urls: vec!["ws://b:7880/ws".into()]
            })
        );
        let text =
            r#"{"type":"participant_state","participant_sid":"PA_1","state":"reconnecting"}"#;
        let ev = ServerEvent::ParticipantState {
            participant_sid: "PA_1".into(),
            state: ParticipantConnection::Reconnecting,
        };
        assert_eq!(serde_json::to_string(&ev).expect("serializes"), text);
        assert_eq!(
            serde_json::from_str::<ServerFrame>(text).expect("parses"),
            ServerFrame::Event(ev)
        );
    }

    #[test]
    fn sources_have_a_kind() {
        assert_eq!(TrackSource::Microphone.kind(), TrackKind::Audio);
        assert_eq!(TrackSource::ScreenShareAudio.kind(), TrackKind::Audio);
        assert_eq!(TrackSource::Camera.kind(), TrackKind::Video);
        assert_eq!(TrackSource::ScreenShare.kind(), TrackKind::Video);
    }

    #[test]
    fn permissions_check_sources() {
        let p = Permissions {
            can_publish: true,
            publish_sources: vec![PublishSource::Screen],
            ..Default::default()
        };
        assert!(p.allows(TrackSource::ScreenShare));
        assert!(p.allows(TrackSource::ScreenShareAudio));
        assert!(!p.allows(TrackSource::Camera));
        let hidden = Permissions {
            hidden: true,
            ..p.clone()
        };
        assert!(!hidden.allows(TrackSource::ScreenShare));
        let off = Permissions {
            can_publish: false,
            ..p
        };
        assert!(!off.allows(TrackSource::ScreenShare));
    }

    #[test]
    fn track_settings_shape() {
        let text = r#"{"type":"track_settings","track_sid":"TR_1","width":640,"height":0}"#;
        let msg = ClientMessage::parse(text).expect("parses");
        assert_eq!(
            msg,
            ClientMessage::TrackSettings {
                track_sid: "TR_1".into(),
                width: 640,
                height: 0
            }
        );
        assert_eq!(serde_json::to_string(&msg).expect("serializes"), text);
        // Sizes are whole, non-negative pixels: a browser's fractional or negative value is a
        // client bug.
        for bad in [
            r#"{"type":"track_settings","track_sid":"TR_1","width":640.5,"height":360}"#,
            r#"{"type":"track_settings","track_sid":"TR_1","width":-1,"height":360}"#,
            r#"{"type":"track_settings","track_sid":"TR_1","width":640}"#,
        ] {
            assert_eq!(
                ClientMessage::parse(bad).unwrap_err().0,
                ErrorCode::BadMessage,
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_input_is_classified() {
        assert_eq!(
            ClientMessage::parse("{not json").unwrap_err().0,
            ErrorCode::BadMessage
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"fly"}"#).unwrap_err().0,
            ErrorCode::BadMessage
        );
        let huge = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert_eq!(
            ClientMessage::parse(&huge).unwrap_err().0,
            ErrorCode::MessageTooLarge
        );
    }
}
