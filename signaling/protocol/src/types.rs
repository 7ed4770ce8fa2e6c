//! The types the messages of both directions are made of: who a participant is and what it
//! may do, tracks and their sources, ICE candidates, and the error codes. Apart from the
//! messages themselves so that each direction's file holds only its own.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::{ClientMessage, MAX_MESSAGE_BYTES};

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
