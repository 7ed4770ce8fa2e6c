//! What the control planes of two nodes say over a link's control stream, inside the media
//! plane's [`Control::Call`](aula_sfu::relay::framing::Control), `Reply` and `Event` envelopes.
//!
//! The room's origin runs the room; a node it placed participants on runs their media. So calls
//! go from the origin to that node's SFU (one per [`MediaPlane`](crate::media::MediaPlane)
//! command, plus moving tracks between the nodes), and events come back for those participants.

use aula_protocol::{IceCandidate, PeerTarget, TrackAnnouncement};
use aula_sfu::relay::track::RelayedTrack;
use aula_sfu::{ConnectionQuality, PeerState, PublishedTrack, RenderedSize, SfuEvent};
use serde::{Deserialize, Serialize};

/// A command to the other node's media plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    PublishOffer {
        participant: String,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    },
    SubscribeAnswer {
        participant: String,
        sdp: String,
    },
    AddCandidate {
        participant: String,
        target: PeerTarget,
        candidate: IceCandidate,
    },
    Subscribe {
        participant: String,
        track_sid: String,
    },
    Unsubscribe {
        participant: String,
        track_sid: String,
    },
    RemoveParticipant {
        participant: String,
    },
    UnpublishTrack {
        track_sid: String,
    },
    SetTrackPaused {
        track_sid: String,
        paused: bool,
    },
    NoteSelfMuted {
        track_sid: String,
        muted: bool,
    },
    RestartIce {
        participant: String,
    },
    SetStaff {
        participant: String,
    },
    SetRenderedSize {
        participant: String,
        track_sid: String,
        size: RenderedSize,
    },
    /// Make this track (sent by the caller on the link) available to subscribers there.
    Import {
        track: RelayedTrack,
    },
    /// Send this track, published there, to the caller as track `index` of the link; the reply
    /// is the [`RelayedTrack`] to import.
    Export {
        track_sid: String,
        index: u64,
    },
}

/// An event of the other node's media plane, about a participant the origin placed there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RemoteEvent {
    TrackPublished {
        participant: String,
        track: PublishedTrack,
    },
    TrackUnpublished {
        participant: String,
        track_sid: String,
    },
    SubscribeOffer {
        participant: String,
        sdp: String,
    },
    PeerState {
        participant: String,
        target: PeerTarget,
        state: PeerState,
    },
    ConnectionQuality {
        participant: String,
        quality: ConnectionQuality,
        loss: f64,
        rtt_ms: Option<u64>,
    },
    StreamState {
        participant: String,
        track_sid: String,
        paused: bool,
    },
}

impl RemoteEvent {
    /// The participant the event is about.
    pub fn participant(&self) -> &str {
        match self {
            Self::TrackPublished { participant, .. }
            | Self::TrackUnpublished { participant, .. }
            | Self::SubscribeOffer { participant, .. }
            | Self::PeerState { participant, .. }
            | Self::ConnectionQuality { participant, .. }
            | Self::StreamState { participant, .. } => participant,
        }
    }

    /// The participant `event` is about, if it is an event that may cross a link (see
    /// [`RemoteEvent::of`]): looked at before the event is taken, so that the events that stay
    /// here are not converted for nothing.
    pub fn participant_of(event: &SfuEvent) -> Option<&str> {
        match event {
            SfuEvent::TrackPublished { participant, .. }
            | SfuEvent::TrackUnpublished { participant, .. }
            | SfuEvent::SubscribeOffer { participant, .. }
            | SfuEvent::PeerState { participant, .. }
            | SfuEvent::ConnectionQuality { participant, .. }
            | SfuEvent::StreamState { participant, .. } => Some(participant),
            SfuEvent::RecordingFailed { .. }
            | SfuEvent::QosSample { .. }
            | SfuEvent::RelayKeyframeRequest { .. }
            | SfuEvent::RelayLayerDemand { .. }
            | SfuEvent::RelayListenerLoss { .. }
            | SfuEvent::RelayNack { .. }
            | SfuEvent::RelaySenderReport { .. } => None,
        }
    }

    /// What to send for `event`; the event back for what stays on the node (recordings and
    /// their QoS samples are the origin's own; keyframe requests go up the link as such).
    pub fn of(event: SfuEvent) -> Result<Self, SfuEvent> {
        Ok(match event {
            SfuEvent::TrackPublished { participant, track } => {
                Self::TrackPublished { participant, track }
            }
            SfuEvent::TrackUnpublished {
                participant,
                track_sid,
            } => Self::TrackUnpublished {
                participant,
                track_sid,
            },
            SfuEvent::SubscribeOffer { participant, sdp } => {
                Self::SubscribeOffer { participant, sdp }
            }
            SfuEvent::PeerState {
                participant,
                target,
                state,
            } => Self::PeerState {
                participant,
                target,
                state,
            },
            SfuEvent::ConnectionQuality {
                participant,
                quality,
                loss,
                rtt,
            } => Self::ConnectionQuality {
                participant,
                quality,
                loss,
                rtt_ms: rtt.map(|rtt| rtt.as_millis() as u64),
            },
            SfuEvent::StreamState {
                participant,
                track_sid,
                paused,
            } => Self::StreamState {
                participant,
                track_sid,
                paused,
            },
            other @ (SfuEvent::RecordingFailed { .. }
            | SfuEvent::QosSample { .. }
            | SfuEvent::RelayKeyframeRequest { .. }
            | SfuEvent::RelayLayerDemand { .. }
            | SfuEvent::RelayListenerLoss { .. }
            | SfuEvent::RelayNack { .. }
            | SfuEvent::RelaySenderReport { .. }) => return Err(other),
        })
    }

    /// The event as the origin's control plane handles it.
    pub fn into_sfu_event(self) -> SfuEvent {
        match self {
            Self::TrackPublished { participant, track } => {
                SfuEvent::TrackPublished { participant, track }
            }
            Self::TrackUnpublished {
                participant,
                track_sid,
            } => SfuEvent::TrackUnpublished {
                participant,
                track_sid,
            },
            Self::SubscribeOffer { participant, sdp } => {
                SfuEvent::SubscribeOffer { participant, sdp }
            }
            Self::PeerState {
                participant,
                target,
                state,
            } => SfuEvent::PeerState {
                participant,
                target,
                state,
            },
            Self::ConnectionQuality {
                participant,
                quality,
                loss,
                rtt_ms,
            } => SfuEvent::ConnectionQuality {
                participant,
                quality,
                loss,
                rtt: rtt_ms.map(std::time::Duration::from_millis),
            },
            Self::StreamState {
                participant,
                track_sid,
                paused,
            } => SfuEvent::StreamState {
                participant,
                track_sid,
                paused,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_the_link_unchanged() {
        let quality = SfuEvent::ConnectionQuality {
            participant: "PA_1".into(),
            quality: ConnectionQuality::Good,
            loss: 0.02,
            rtt: Some(std::time::Duration::from_millis(120)),
        };
        let paused = SfuEvent::StreamState {
            participant: "PA_1".into(),
            track_sid: "TR_1".into(),
            paused: true,
        };
        for event in [quality, paused] {
            assert_eq!(RemoteEvent::participant_of(&event), Some("PA_1"));
            let wire = RemoteEvent::of(event.clone()).unwrap();
            let json = serde_json::to_value(&wire).unwrap();
            let back: RemoteEvent = serde_json::from_value(json).unwrap();
            assert_eq!(back.participant(), "PA_1");
            assert_eq!(back.into_sfu_event(), event);
        }
    }
}
