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

/// Which of the participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerTarget {
    Publish,
    Subscribe,
}

/// The role a token grants. Issue-level permissions derive from it (see the server's grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Teacher,
    Student,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// Everyone else in the room, with their published tracks.
    pub participants: Vec<ParticipantInfo>,
}

/// Messages from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Must be the first message. The token names the room and the identity.
    Join { version: u32, token: String },
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
    /// How well a participant's media flows, sent to that participant and to the room's
    /// teachers whenever it changes (sampled every few seconds from RTCP reports).
    ConnectionQuality {
        participant_sid: String,
        quality: ConnectionQuality,
    },
    /// The server ended this participant's session (after `Leave`, or for `reason`).
    Left {
        reason: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
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
    /// The media plane failed; the session may continue.
    Internal,
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
