//! A subscriber's quality of one track as a single step up a ladder: each spatial (simulcast)
//! layer at each of its frame rates, lowest first — (0, 7.5 fps) < (0, 15 fps) < (0, 30 fps) <
//! (1, 7.5 fps) < ... — so that a tight link first loses frame rate and then resolution, and
//! the allocator and the selector, which only ever go up and down one list, need not know
//! about temporal layers at all.
//!
//! Every video track has the same ladder, whether or not its publisher sends temporal
//! layers: the steps of a track without them all cost the whole layer (their bytes are all
//! counted as the base layer, see [`super::rates`]), so the allocator takes the top one of a
//! spatial layer as soon as it takes the layer.

use super::simulcast::Layer;
use super::temporal::{ALL_TEMPORAL_LAYERS, MAX_TEMPORAL_LAYERS};

/// One step of a [`Ladder`]: an index into an allocation's per-step costs.
pub type Step = usize;

/// What one step forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quality {
    pub spatial: Layer,
    /// The highest temporal layer (TID) forwarded.
    pub temporal: u8,
}

/// How a track's steps map to qualities: `temporal` steps per spatial layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ladder {
    temporal: u8,
}

impl Ladder {
    /// Audio: one step per layer (and one layer).
    pub const SINGLE: Self = Self { temporal: 1 };
    pub const VIDEO: Self = Self {
        temporal: MAX_TEMPORAL_LAYERS,
    };

    /// Steps per spatial layer.
    pub fn per_layer(self) -> usize {
        usize::from(self.temporal)
    }

    /// The top step of a spatial layer forwards every temporal layer, however many the
    /// publisher sends.
    pub fn quality(self, step: Step) -> Quality {
        let per_layer = self.per_layer();
        let temporal = (step % per_layer) as u8;
        Quality {
            spatial: step / per_layer,
            temporal: if temporal + 1 == self.temporal {
                ALL_TEMPORAL_LAYERS
            } else {
                temporal
            },
        }
    }

    /// The highest step of the spatial layer above `step`'s (of layer 0 from `None`): how far
    /// one upgrade goes. Frame rates within a layer cost no keyframe to change, so climbing
    /// them one by one, each after a hold, would only make a recovering link wait.
    pub fn next_layer_top(self, step: Option<Step>) -> Step {
        let layer = step.map_or(0, |step| step / self.per_layer() + 1);
        (layer + 1) * self.per_layer() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_go_through_the_frame_rates_of_each_layer() {
        let video = Ladder::VIDEO;
        let q = |spatial, temporal| Quality { spatial, temporal };
        assert_eq!(video.quality(0), q(0, 0));
        assert_eq!(video.quality(1), q(0, 1));
        assert_eq!(video.quality(2), q(0, ALL_TEMPORAL_LAYERS));
        assert_eq!(video.quality(3), q(1, 0));
        assert_eq!(video.quality(8), q(2, ALL_TEMPORAL_LAYERS));
        assert_eq!(Ladder::SINGLE.quality(1), q(1, ALL_TEMPORAL_LAYERS));
    }

    #[test]
    fn an_upgrade_goes_to_the_top_of_the_next_layer() {
        let video = Ladder::VIDEO;
        assert_eq!(video.next_layer_top(None), 2);
        assert_eq!(video.next_layer_top(Some(0)), 5);
        assert_eq!(video.next_layer_top(Some(2)), 5);
        assert_eq!(video.next_layer_top(Some(3)), 8);
        assert_eq!(Ladder::SINGLE.next_layer_top(None), 0);
        assert_eq!(Ladder::SINGLE.next_layer_top(Some(1)), 2);
    }
}
