//! `aula-client`: the Rust client SDK of Aula.
//!
//! It joins a room over the JSON WebSocket protocol of [`aula_protocol`], publishes an Opus
//! audio track, and reports every RTP packet of the tracks the server forwards. It exists for
//! Aula's integration tests and load-test tool, so it favours being small and predictable over
//! features: one audio track per client, no video, no jitter buffer. It does ride out network
//! trouble as the browser SDK does: a dropped WebSocket is resumed, and a lost session (the
//! server ended it because its media path failed, or it could not be resumed) is joined again
//! by itself; see [`Client`]'s "Reconnecting".
//!
//! ```no_run
//! # async fn demo(url: &str, token: &str) -> Result<(), aula_client::ClientError> {
//! use aula_client::{AudioSource, Client, ClientEvent, ToneConfig};
//!
//! let mut client = Client::connect(url, token).await?;
//! let _audio = client.publish_audio(AudioSource::Tone(ToneConfig::default())).await?;
//! while let Some(event) = client.next_event().await {
//!     if let ClientEvent::Packet(packet) = event {
//!         println!("{} #{}: {} bytes", packet.track_sid, packet.seq, packet.payload.len());
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Checking what arrived
//!
//! An SFU rewrites sequence numbers and timestamps, so a receiver cannot compare them with the
//! sender's. Payloads, though, travel untouched, and the tone is deterministic: a
//! [`ToneEncoder`] built with the publisher's [`ToneConfig`] yields, frame by frame, exactly
//! the payloads the publisher sends. A receiver finds its first packet's payload in that
//! sequence and from there expects the following ones in order; since every packet advances
//! the RTP timestamp by exactly one frame (960), timestamp differences tell how many frames a
//! gap spans. For payloads that identify themselves, publish with [`AudioSource::Manual`] and
//! number them in [`PublishedAudio::send_payload`].
//!
//! # Media
//!
//! Each peer connection (publish and subscribe, as the protocol describes) has its own UDP
//! socket and a task driving webrtc-rs `rtc`, which is sans-I/O; see the `peer` module.

mod client;
mod connection;
mod error;
mod moderation;
mod peer;
mod publish;
mod rtp;
pub mod tone;

use std::sync::Arc;
use std::time::Instant;

use aula_protocol::{ErrorCode, ParticipantInfo, PeerTarget, RoomInfo, TrackInfo};
use bytes::Bytes;

pub use aula_protocol;
pub use client::Client;
pub use error::ClientError;
pub use publish::{AudioSource, PublishedAudio};
pub use tone::{ToneConfig, ToneEncoder};

/// What happened in the session, in the order [`Client::next_event`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    ParticipantJoined(ParticipantInfo),
    ParticipantLeft {
        participant_sid: String,
    },
    /// A track is live in the room (ours included); the server will forward others' tracks to
    /// us, and their packets then arrive as [`ClientEvent::Packet`] with this `sid`.
    TrackPublished(TrackInfo),
    TrackUnpublished {
        track_sid: String,
        participant_sid: String,
    },
    TrackMuted {
        track_sid: String,
        participant_sid: String,
        muted: bool,
    },
    /// The server's view of a participant's connection quality changed.
    ConnectionQuality {
        participant_sid: String,
        quality: aula_protocol::ConnectionQuality,
        /// The worst loss behind the level, in thousandths (123 = 12.3 %), when the server says.
        loss_permille: Option<u16>,
        /// The longest round trip measured, in milliseconds, when there is one.
        rtt_ms: Option<u32>,
    },
    /// One RTP packet of a subscribed track.
    Packet(ReceivedPacket),
    /// The server reported an error; the session goes on unless a `Disconnected` follows.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// A peer connection's ICE or DTLS gave up; its media will not flow again on it. The
    /// server ends the session for it soon after (when its side gives up too), and the client
    /// then joins again ([`ClientEvent::Reconnecting`], [`ClientEvent::Rejoined`]).
    MediaFailed {
        target: PeerTarget,
    },
    /// A room event: the hand queue, stage and permission changes, a participant reconnecting,
    /// chat and data messages, the room locked, support desk updates. The moderation calls
    /// (`raise_hand`, `invite_to_stage`, `chat`, ...) are answered with these, or with
    /// [`ClientEvent::Error`] (`forbidden`, `rate_limited`, ...).
    Room(aula_protocol::ServerEvent),
    /// The connection is being restored (see [`Client`]'s "Reconnecting"), once per outage:
    /// the WebSocket dropped and the session is being resumed, or the session was lost (`reason`
    /// is then the server's, e.g. [`aula_protocol::LEFT_PEER_CONNECTION_FAILED`]) and is being
    /// joined again. Room events and moderation calls wait until it is over; media keeps
    /// flowing while resuming if its path is up. It ends with [`ClientEvent::Reconnected`],
    /// [`ClientEvent::Rejoined`] or [`ClientEvent::Disconnected`].
    Reconnecting {
        reason: String,
    },
    /// The session was resumed on a new WebSocket: the same participant, tracks and
    /// subscriptions. Calls made while reconnecting were dropped; repeat what still matters.
    Reconnected,
    /// The session was lost and the client joined the room again with its token: a **new
    /// participant** (`participant.sid`; the room saw `previous_sid` leave), the room as it is
    /// now, new connections. [`Client::participant`] and [`Client::room`] are these from now on.
    /// The server subscribes us to the room's tracks again (their packets keep their track
    /// sids); our audio track is being published again, as a new track (its
    /// [`ClientEvent::TrackPublished`] follows). Calls made while reconnecting were dropped,
    /// and are not repeated; the server gives back a moderator's grants (the stage) and a
    /// raised hand (see [`Client`]'s docs). Packets the old connection received
    /// may still follow this event (room events come before queued packets): their
    /// `received_at` is earlier than the `Reconnecting`.
    Rejoined {
        participant: ParticipantInfo,
        room: RoomInfo,
        previous_sid: String,
    },
    /// The session is over: `Left` from the server for a reason other than a failed media
    /// path, or the session was lost and could not be resumed nor joined again (or rejoining
    /// is off: [`Client::set_auto_rejoin`]). Only packets already received may follow it.
    Disconnected {
        reason: String,
    },
}

/// An RTP packet as it arrived (after SRTP, before any jitter buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPacket {
    /// The Aula track sid ([`TrackInfo::sid`]); shared, as every packet of a track carries it.
    pub track_sid: Arc<str>,
    /// Sequence number as the SFU sent it (its numbering, not the publisher's).
    pub seq: u16,
    /// RTP timestamp as the SFU sent it (offset from the publisher's, same clock rate).
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub received_at: Instant,
}
