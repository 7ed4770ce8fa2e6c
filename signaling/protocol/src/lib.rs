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
//!
//! `types` holds what the messages of both directions are made of, `client` the client's
//! messages, `server` the server's; everything is re-exported here.

mod client;
mod server;
mod types;

pub use client::{
    CLIENT_STATS_INTERVAL_SECS, ClientMessage, ClientStats, MAX_RENDERED_DIMENSION,
    TrackAnnouncement,
};
pub use server::{
    ConnectionQuality, LEFT_PEER_CONNECTION_FAILED, MAX_ALTERNATES, ParticipantConnection,
    RecordingState, ServerEvent, ServerFrame, ServerMessage, StreamState, WaitingLearner,
};
pub use types::{
    ErrorCode, IceCandidate, ParticipantInfo, PeerTarget, Permissions, PublishSource, Role,
    RoomInfo, TrackInfo, TrackKind, TrackSource,
};

/// The version a client announces in [`ClientMessage::Join`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket text message the server accepts, in bytes. An SDP with simulcast and many
/// tracks is well under 64 KiB; larger messages are refused with [`ErrorCode::MessageTooLarge`].
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests;
