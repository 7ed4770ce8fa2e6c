//! Messages from a client to the server ([`ClientMessage`]), how the server parses them, and
//! what only they carry: track announcements and the browser's statistics.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, IceCandidate, MAX_MESSAGE_BYTES, PeerTarget, Permissions, TrackSource};
#[cfg(doc)]
use crate::{ServerEvent, ServerMessage};

/// Largest `width` or `height` of [`ClientMessage::TrackSettings`], in device pixels: twice an
/// 8K screen's width. Anything larger is a client bug, refused with [`ErrorCode::BadMessage`].
pub const MAX_RENDERED_DIMENSION: u32 = 16384;

/// A track the publisher is about to send, matched to the SDP by the MediaStreamTrack id that
/// appears in the offer's `a=msid` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackAnnouncement {
    /// `MediaStreamTrack.id` in the browser (the second part of `a=msid`).
    pub track_id: String,
    pub source: TrackSource,
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
