//! A subscriber's quality of one track as a single step up a ladder, lowest first, so that
//! the allocator and the selector, which only ever go up and down one list, need not know
//! about temporal layers at all.
//!
//! A video's ladder: the lowest layer at a quarter, half and the whole frame rate (7.5, 15,
//! 30 fps from a 30 fps camera), then each higher layer at half and the whole frame rate. A
//! tight link thus loses frame rate, then resolution, and a video is paused only when even
//! the quarter rate of the lowest layer does not fit. A quarter rate is kept for that last
//! step: measured with Chromium (whose fake camera sends 20 fps), offering it on every layer
//! made a 500 kbit/s link get 720p at 5 fps and a 300 kbit/s one 360p at 5 fps, where a
//! smaller picture at 10-20 fps is the better class.
//!
//! Every video track has the same ladder, whether or not its publisher sends temporal
//! layers: the steps of a track without them all cost the whole layer (their bytes are all
//! counted as the base layer, see [`super::rates`]), so the allocator takes the top one of a
//! spatial layer as soon as it takes the layer.

use super::simulcast::Layer;
use super::temporal::ALL_TEMPORAL_LAYERS;

/// One step of a [`Ladder`]: an index into an allocation's per-step costs.
pub type Step = usize;

/// What one step forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quality {
    pub spatial: Layer,
    /// The highest temporal layer (TID) forwarded.
    pub temporal: u8,
}

/// How a track's steps map to qualities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ladder {
    /// One step per layer: audio.
    Single,
    /// See the module docs.
    Video,
}

impl Ladder {
    pub const SINGLE: Self = Self::Single;
    pub const VIDEO: Self = Self::Video;

    /// The number of steps of a track with `layers` spatial layers.
    pub fn steps(self, layers: usize) -> usize {
        match self {
            Self::Single => layers,
            Self::Video => 2 * layers + usize::from(layers > 0),
        }
    }

    /// What `step` forwards. The top step of a spatial layer forwards every temporal layer,
    /// however many the publisher sends.
    pub fn quality(self, step: Step) -> Quality {
        let (spatial, temporal) = match self {
            Self::Single => (step, ALL_TEMPORAL_LAYERS),
            Self::Video if step < 3 => (0, [0, 1, ALL_TEMPORAL_LAYERS][step]),
            Self::Video => (1 + (step - 3) / 2, [1, ALL_TEMPORAL_LAYERS][(step - 3) % 2]),
        };
        Quality { spatial, temporal }
    }

    /// The highest step of the spatial layer above `step`'s (of layer 0 from `None`): how far
    /// one upgrade goes. Frame rates within a layer cost no keyframe to change, so climbing
    /// them one by one, each after a hold, would only make a recovering link wait.
    pub fn next_layer_top(self, step: Option<Step>) -> Step {
        let layer = step.map_or(0, |step| self.quality(step).spatial + 1);
        self.steps(layer + 1) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u8 = ALL_TEMPORAL_LAYERS;

    #[test]
    fn a_quarter_frame_rate_only_for_the_lowest_layer() {
        let video = Ladder::VIDEO;
        let q = |spatial, temporal| Quality { spatial, temporal };
        let steps: Vec<Quality> = (0..video.steps(3)).map(|s| video.quality(s)).collect();
        assert_eq!(
            steps,
            [
                q(0, 0),
                q(0, 1),
                q(0, ALL),
                q(1, 1),
                q(1, ALL),
                q(2, 1),
                q(2, ALL)
            ]
        );
        assert_eq!(video.steps(0), 0);
        assert_eq!(video.steps(1), 3);
        assert_eq!(Ladder::SINGLE.steps(1), 1);
        assert_eq!(Ladder::SINGLE.quality(1), q(1, ALL));
    }

    #[test]
    fn an_upgrade_goes_to_the_top_of_the_next_layer() {
        let video = Ladder::VIDEO;
        assert_eq!(video.next_layer_top(None), 2);
        assert_eq!(video.next_layer_top(Some(0)), 4);
        assert_eq!(video.next_layer_top(Some(2)), 4);
        assert_eq!(video.next_layer_top(Some(3)), 6);
        assert_eq!(Ladder::SINGLE.next_layer_top(None), 0);
        assert_eq!(Ladder::SINGLE.next_layer_top(Some(1)), 2);
    }
}
