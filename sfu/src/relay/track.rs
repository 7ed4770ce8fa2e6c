//! A track carried between nodes: what the receiving node needs to forward it as if it were
//! published there, and how its datagrams are told apart on the link.
//!
//! A track keeps its SFU track id on every node it is carried to, so the control plane names it
//! the same way whichever node its subscribers are on. Each simulcast layer has its own flow id
//! on the link: the track's index on that link (chosen by the sending node, told in the import)
//! times four, plus the layer. The receiving node so knows a datagram's track and layer from its
//! flow id alone, before parsing the packet.

use aula_protocol::{TrackKind, TrackSource};
use serde::{Deserialize, Serialize};

use crate::api::{ParticipantId, TrackSid};
use crate::forward::simulcast::Layer;

/// Simulcast layers a track has at most.
const LAYERS: u64 = 3;
/// Flow ids per track: one per simulcast layer and one spare.
const FLOWS_PER_TRACK: u64 = 4;

/// A track as the node that has it describes it to the node it sends it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedTrack {
    pub sid: TrackSid,
    /// The publisher, wherever it is connected.
    pub participant: ParticipantId,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub mime_type: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: String,
    /// The payload type of the packets on the link: the codec's, never RED or RTX (the sending
    /// node takes RED apart before it forwards, as for its own subscribers).
    pub payload_type: u8,
    pub simulcast: bool,
    /// The track's index on the link (see the module docs).
    pub index: u64,
}

/// The flow id of `layer` of the track with `index` on a link.
pub fn flow_id(index: u64, layer: Layer) -> u64 {
    index * FLOWS_PER_TRACK + layer as u64
}

/// The track index and layer a flow id names; `None` for the spare flow of a track.
pub fn flow_parts(flow: u64) -> Option<(u64, Layer)> {
    let layer = flow % FLOWS_PER_TRACK;
    (layer < LAYERS).then_some((flow / FLOWS_PER_TRACK, layer as Layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_ids_name_track_and_layer() {
        for index in [0, 1, 77, (1 << 28) - 1] {
            for layer in 0..=2 {
                assert_eq!(flow_parts(flow_id(index, layer)), Some((index, layer)));
            }
        }
        assert_eq!(flow_parts(3), None);
    }
}
