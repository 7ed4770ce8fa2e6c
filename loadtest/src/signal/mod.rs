//! Signaling: how a participant gets its peers negotiated with the server under test.

pub mod aula;
pub mod janus;

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
}

/// What a participant task reports to the orchestrator.
#[derive(Debug)]
pub enum ParticipantEvent {
    Joined,
    Connected(PeerTarget),
    Failed(String),
}
