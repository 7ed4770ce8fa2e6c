//! Signaling: how a participant gets its peers negotiated with the server under test.

pub mod aula;
pub mod janus;

use std::net::SocketAddr;

use aula_protocol::PeerTarget;

use crate::media::source::MediaPlan;

/// One simulated participant.
#[derive(Debug, Clone)]
pub struct ParticipantSpec {
    pub room: String,
    pub identity: String,
    /// What it publishes, if anything.
    pub publish: Option<MediaPlan>,
    /// Whether it receives what others publish.
    pub subscribe: bool,
    /// The token's `region` (Aula): in a cluster, the room's origin places the participant's
    /// media on a node of that region.
    pub region: Option<String>,
    /// A test impairment of the participant's own path, set once it has joined (Aula).
    pub access: Option<Access>,
}

/// The participant's network path, as the SFU that serves its media impairs it
/// (`POST /test/impairment` on that node, which needs `[dev] test_impairment`): `loss` both
/// ways, `delay_ms` on what the SFU sends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Access {
    /// The HTTP address of the node serving the participant's media.
    pub node: SocketAddr,
    pub delay_ms: u64,
    pub loss: f64,
}

/// What a participant task reports to the orchestrator.
#[derive(Debug)]
pub enum ParticipantEvent {
    Joined,
    Connected(PeerTarget),
    Failed(String),
}
