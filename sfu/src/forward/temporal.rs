//! Which frames of one simulcast layer a subscriber gets: all of them, or only those of the
//! lower temporal layers (a lower frame rate at a fraction of the bitrate, with no keyframe
//! needed to change it).
//!
//! A VP8 encoder with temporal layers (Chromium's L1T2, L1T3) tags each frame with a TID; a
//! frame references only frames of its own layer or below, so dropping every frame above a
//! TID leaves a stream the decoder can still use. Going down is possible at any frame. Going
//! up to layer `n` is possible only where the frames of `n` stop needing the ones that were
//! dropped: at a keyframe, or at a frame of layer `n` marked as a sync point (the Y bit: it
//! references only the base layer). One layer at a time, as a non-sync frame of layer `n` may
//! reference an earlier frame of layer `n - 1` that was not sent either.
//!
//! Frames are kept or dropped whole: the decision is taken at a frame's first packet to
//! arrive and remembered by timestamp for the rest (and for those that come late).

use std::collections::VecDeque;

use crate::codec::Vp8Temporal;

/// Temporal layers a subscriber's frame rate is chosen among (Chromium sends up to three).
pub const MAX_TEMPORAL_LAYERS: u8 = 3;
/// A target that forwards every frame: the highest TID a VP8 descriptor can carry.
pub const ALL_TEMPORAL_LAYERS: u8 = 3;

/// Frames whose decision is remembered, for their late packets: half a second at 30 fps.
const REMEMBERED_FRAMES: usize = 16;

#[derive(Debug, Clone)]
pub struct TemporalFilter {
    /// The highest temporal layer wanted.
    target: u8,
    /// The highest temporal layer being forwarded (at most `target`).
    current: u8,
    /// Recent frames (by RTP timestamp) and whether each is forwarded, newest last.
    frames: VecDeque<(u32, bool)>,
}

impl Default for TemporalFilter {
    fn default() -> Self {
        Self {
            target: ALL_TEMPORAL_LAYERS,
            current: ALL_TEMPORAL_LAYERS,
            frames: VecDeque::new(),
        }
    }
}

impl TemporalFilter {
    /// Going down takes effect at the next frame; going up waits for a frame to switch at.
    pub fn set_target(&mut self, target: u8) {
        self.target = target;
        self.current = self.current.min(target);
    }

    pub fn current(&self) -> u8 {
        self.current
    }

    /// A keyframe of a new spatial layer (or the first one): every layer up to the target
    /// can be decoded from it.
    pub fn restart(&mut self) {
        self.current = self.target;
        self.frames.clear();
    }

    /// Whether the packet's frame is forwarded. Packets without a TID (a publisher without
    /// temporal layers) always are.
    pub fn forwards(&mut self, timestamp: u32, temporal: Option<Vp8Temporal>) -> bool {
        let Some(temporal) = temporal else {
            return true;
        };
        if let Some(&(_, forwarded)) = self.frames.iter().find(|(ts, _)| *ts == timestamp) {
            return forwarded;
        }
        let newest = self.frames.back().is_none_or(|&(ts, _)| {
            // Wrapping comparison of RTP timestamps: newer is less than half the range ahead.
            timestamp.wrapping_sub(ts) < 1 << 31
        });
        if !newest {
            // A late packet of a frame no longer remembered: as the layer is now.
            return temporal.id <= self.current;
        }
        if temporal.sync && temporal.id == self.current + 1 && temporal.id <= self.target {
            self.current = temporal.id;
        }
        let forwarded = temporal.id <= self.current;
        if self.frames.len() == REMEMBERED_FRAMES {
            self.frames.pop_front();
        }
        self.frames.push_back((timestamp, forwarded));
        forwarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(id: u8, sync: bool) -> Option<Vp8Temporal> {
        Some(Vp8Temporal { id, sync })
    }

    #[test]
    fn down_at_the_next_frame_up_one_layer_at_a_sync_frame() {
        let mut f = TemporalFilter::default();
        f.restart();
        assert!(f.forwards(0, tid(0, true)));
        assert!(f.forwards(3000, tid(2, false)));
        f.set_target(0);
        assert!(!f.forwards(6000, tid(1, false)));
        assert!(!f.forwards(9000, tid(2, false)));
        assert!(f.forwards(12000, tid(0, false)));
        f.set_target(2);
        // A non-sync frame of layer 1 may need one that was dropped; layer 2 must wait for 1.
        assert!(!f.forwards(15000, tid(2, true)));
        assert!(!f.forwards(18000, tid(1, false)));
        assert!(f.forwards(21000, tid(1, true)), "layer 1 synced");
        assert_eq!(f.current(), 1);
        assert!(!f.forwards(24000, tid(2, false)));
        assert!(f.forwards(27000, tid(2, true)), "then layer 2");
        assert!(f.forwards(30000, tid(2, false)));
        assert_eq!(f.current(), 2);
    }

    #[test]
    fn a_frame_is_kept_or_dropped_whole_even_across_a_switch() {
        let mut f = TemporalFilter::default();
        f.restart();
        assert!(f.forwards(3000, tid(2, false)));
        f.set_target(1);
        // The rest of the frame already started, and a late packet of it, still go.
        assert!(f.forwards(3000, tid(2, false)));
        assert!(!f.forwards(9000, tid(2, false)));
        assert!(f.forwards(6000, tid(1, false)), "late, before the drop");
        assert!(
            !f.forwards(9000, tid(2, false)),
            "the rest of the dropped frame"
        );
    }

    #[test]
    fn streams_without_temporal_layers_pass_whatever_the_target() {
        let mut f = TemporalFilter::default();
        f.set_target(0);
        assert!(f.forwards(0, None));
        assert!(f.forwards(3000, None));
    }

    #[test]
    fn timestamps_wrap() {
        let mut f = TemporalFilter::default();
        f.set_target(0);
        assert!(f.forwards(u32::MAX - 100, tid(0, false)));
        assert!(!f.forwards(2900, tid(1, false)), "newer across the wrap");
        assert!(f.forwards(5900, tid(0, false)));
    }
}
