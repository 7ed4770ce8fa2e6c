//! Loss repair on a relay link, hop by hop: the receiving node notices a gap in a layer's
//! sequence numbers and asks the sending node for the missing packets ([`Gaps`]); the sending
//! node keeps its last packets of each exported layer to resend them ([`History`]). A loss on
//! the long link so costs one link round trip, not a round trip to the publisher, and the
//! students behind the relay see none of it; their own losses are repaired by their node.
//!
//! Pure: no time, no I/O.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::forward::simulcast::Layer;

/// Packets kept per track for resending: about 1.5 s of a 3-layer 2.5 Mbit/s camera, more
/// than a 300 ms link round trip plus the gap detection before it.
const HISTORY_PACKETS: usize = 1024;

/// The most packets asked for at one gap. A longer gap is an outage or a restart of the
/// stream, which a keyframe repairs better than resends.
const MAX_GAP: u16 = 64;

/// The sending node's recent packets of one track, by layer and sequence number.
#[derive(Debug, Default)]
pub struct History {
    packets: HashMap<(Layer, u16), Bytes>,
    order: VecDeque<(Layer, u16)>,
}

impl History {
    /// Keeps `packet`, forgetting the oldest beyond [`HISTORY_PACKETS`].
    pub fn keep(&mut self, layer: Layer, seq: u16, packet: Bytes) {
        if self.packets.insert((layer, seq), packet).is_none() {
            self.order.push_back((layer, seq));
        }
        while self.order.len() > HISTORY_PACKETS {
            if let Some(old) = self.order.pop_front() {
                self.packets.remove(&old);
            }
        }
    }

    /// The kept packet of `layer` numbered `seq`, if still there.
    pub fn get(&self, layer: Layer, seq: u16) -> Option<&Bytes> {
        self.packets.get(&(layer, seq))
    }
}

/// The receiving node's view of one track's sequence numbers, per layer.
#[derive(Debug, Default)]
pub struct Gaps {
    highest: HashMap<Layer, u16>,
}

impl Gaps {
    /// Notes an arriving packet; returns the sequence numbers it shows missing (none for a
    /// packet at or behind the highest seen: in order, a resend or a late one).
    pub fn arrived(&mut self, layer: Layer, seq: u16) -> Vec<u16> {
        let Some(highest) = self.highest.get_mut(&layer) else {
            self.highest.insert(layer, seq);
            return Vec::new();
        };
        let ahead = seq.wrapping_sub(*highest);
        // Half the sequence space or more ahead is behind (wraparound, RFC 3550 style).
        if ahead == 0 || ahead >= 0x8000 {
            return Vec::new();
        }
        let missing_from = highest.wrapping_add(1);
        *highest = seq;
        if ahead - 1 > MAX_GAP {
            return Vec::new();
        }
        (0..ahead - 1)
            .map(|i| missing_from.wrapping_add(i))
            .collect()
    }

    /// Forgets where `layer` was: its next packet starts it again, whatever its number
    /// (the layer was not sent for a while, on purpose).
    pub fn forget(&mut self, layer: Layer) {
        self.highest.remove(&layer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_layer_resumes_without_asking_for_what_was_not_sent() {
        let mut gaps = Gaps::default();
        assert!(gaps.arrived(2, 100).is_empty());
        gaps.forget(2);
        assert!(gaps.arrived(2, 140).is_empty());
        assert_eq!(gaps.arrived(2, 142), vec![141]);
    }

    #[test]
    fn a_gap_asks_for_exactly_the_missing_numbers_across_the_wrap() {
        let mut gaps = Gaps::default();
        assert!(gaps.arrived(0, 65533).is_empty());
        assert!(gaps.arrived(0, 65534).is_empty());
        assert_eq!(gaps.arrived(0, 1), vec![65535, 0]);
        // The resends, and a reordered packet, ask for nothing.
        assert!(gaps.arrived(0, 65535).is_empty());
        assert!(gaps.arrived(0, 0).is_empty());
        assert!(gaps.arrived(0, 2).is_empty());
    }

    #[test]
    fn layers_are_numbered_apart_and_long_gaps_are_left_to_keyframes() {
        let mut gaps = Gaps::default();
        gaps.arrived(0, 100);
        gaps.arrived(2, 9000);
        assert_eq!(gaps.arrived(0, 102), vec![101]);
        assert_eq!(gaps.arrived(2, 9003), vec![9001, 9002]);
        assert!(gaps.arrived(0, 102 + MAX_GAP + 2).is_empty());
        assert_eq!(gaps.arrived(0, 102 + MAX_GAP + 4), vec![102 + MAX_GAP + 3]);
    }

    #[test]
    fn history_keeps_the_latest_packets_only() {
        let mut history = History::default();
        for seq in 0..(HISTORY_PACKETS as u16 + 10) {
            history.keep(1, seq, Bytes::from(seq.to_be_bytes().to_vec()));
        }
        assert!(history.get(1, 9).is_none());
        assert_eq!(
            history.get(1, 10).map(|b| b.to_vec()),
            Some(10u16.to_be_bytes().to_vec())
        );
        assert!(history.get(0, 500).is_none(), "another layer");
    }
}
