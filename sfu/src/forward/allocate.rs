//! Sharing one subscriber's bandwidth estimate among the tracks it receives.
//!
//! The order is what a learner on a weak link needs most: every audio track first (a class
//! without the teacher's voice is lost, a frozen picture is not), then screen shares (the
//! board), then the teacher's camera, then other cameras. Within that order, every video first
//! gets its lowest layer, so as many stay visible as fit, and only then are layers raised, in
//! the same order. A video whose lowest layer does not fit is paused for this subscriber.
//!
//! [`allocate`] is a pure function of the estimate and each track's per-layer bitrates (as
//! measured from the publisher); [`super::selector`] adds the timing (down at once, up slowly).

use super::simulcast::Layer;

/// Who gets bandwidth first; the derived order is the allocation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Audio,
    Screen,
    Teacher,
    Camera,
}

/// What one subscribed track would cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub priority: Priority,
    /// Bits per second of each layer, lowest first; `None` for a layer that is not being
    /// received (or not wanted: above the size the subscriber shows the video at). Audio and
    /// non-simulcast video have one layer.
    pub layers: Vec<Option<f64>>,
}

impl Demand {
    /// What going up one layer from `from` (`None`: paused) would add: the next layer that
    /// can be had, less the current one. 0 when there is none above.
    pub fn upgrade_cost(&self, from: Option<Layer>) -> f64 {
        let current = self.cost(from);
        let next = from.map_or(0, |layer| layer + 1);
        self.layers
            .iter()
            .skip(next)
            .find_map(|rate| *rate)
            .map_or(0.0, |rate| (rate - current).max(0.0))
    }

    /// What forwarding `layer` costs (`None`: paused, nothing).
    pub fn cost(&self, layer: Option<Layer>) -> f64 {
        layer
            .and_then(|layer| self.layers.get(layer).copied().flatten())
            .unwrap_or(0.0)
    }

    fn lowest(&self) -> Option<(Layer, f64)> {
        self.layers
            .iter()
            .enumerate()
            .find_map(|(layer, rate)| rate.map(|r| (layer, r)))
    }
}

/// The layer to forward for each demand, in the same order; `None` means paused. Audio is
/// never paused: it is granted even when it alone exceeds the estimate, because the
/// alternative is silence, and an estimate that low is already below what the estimator
/// allows as its floor.
pub fn allocate(budget: f64, demands: &[Demand]) -> Vec<Option<Layer>> {
    let mut chosen: Vec<Option<Layer>> = vec![None; demands.len()];
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&i| demands[i].priority);
    let mut left = budget;

    // Pass 1: audio whatever it costs, then each video's lowest layer while it fits.
    for &i in &order {
        let Some((layer, rate)) = demands[i].lowest() else {
            continue;
        };
        if demands[i].priority == Priority::Audio || rate <= left {
            chosen[i] = Some(layer);
            left -= rate;
        }
    }
    // Pass 2: raise each granted video as far as the rest allows, in priority order.
    for &i in &order {
        let Some(current) = chosen[i] else {
            continue;
        };
        let rates = &demands[i].layers;
        let paid = rates[current].unwrap_or(0.0);
        let best = (current + 1..rates.len())
            .rev()
            .find(|&layer| rates[layer].is_some_and(|rate| rate - paid <= left));
        if let Some(layer) = best {
            left -= rates[layer].unwrap_or(0.0) - paid;
            chosen[i] = Some(layer);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: f64 = 1_000.0;

    fn audio() -> Demand {
        Demand {
            priority: Priority::Audio,
            layers: vec![Some(40.0 * K)],
        }
    }

    /// A simulcast camera at 150k / 500k / 1.5M.
    fn video(priority: Priority) -> Demand {
        Demand {
            priority,
            layers: vec![Some(150.0 * K), Some(500.0 * K), Some(1_500.0 * K)],
        }
    }

    #[test]
    fn an_upgrade_costs_the_next_layer_that_can_be_had_less_the_current() {
        let camera = video(Priority::Camera);
        assert_eq!(camera.upgrade_cost(None), 150.0 * K, "resuming");
        assert_eq!(camera.upgrade_cost(Some(0)), 350.0 * K);
        assert_eq!(camera.upgrade_cost(Some(2)), 0.0, "nothing above");
        assert_eq!(camera.cost(Some(1)), 500.0 * K);
        assert_eq!(camera.cost(None), 0.0);
        let gap = Demand {
            layers: vec![Some(150.0 * K), None, Some(1_500.0 * K)],
            ..camera
        };
        assert_eq!(gap.upgrade_cost(Some(0)), 1_350.0 * K);
    }

    #[test]
    fn everything_fits_on_a_good_link() {
        let demands = [audio(), video(Priority::Teacher)];
        assert_eq!(allocate(5_000.0 * K, &demands), [Some(0), Some(2)]);
    }

    #[test]
    fn a_weak_link_gets_the_layer_that_fits() {
        let demands = [audio(), video(Priority::Teacher)];
        assert_eq!(allocate(600.0 * K, &demands), [Some(0), Some(1)]);
        assert_eq!(allocate(400.0 * K, &demands), [Some(0), Some(0)]);
    }

    #[test]
    fn video_is_paused_before_audio_suffers() {
        let demands = [audio(), video(Priority::Teacher)];
        assert_eq!(allocate(100.0 * K, &demands), [Some(0), None]);
        assert_eq!(
            allocate(10.0 * K, &demands),
            [Some(0), None],
            "audio is never paused"
        );
    }

    #[test]
    fn screen_then_teacher_then_others() {
        // Listed in the "wrong" order on purpose: priority decides, not position.
        let demands = [
            video(Priority::Camera),
            video(Priority::Teacher),
            video(Priority::Screen),
            audio(),
        ];
        // 40k audio + 150k screen + 150k teacher fit; the other camera's 150k does not.
        assert_eq!(
            allocate(400.0 * K, &demands),
            [None, Some(0), Some(0), Some(0)]
        );
        // Every lowest layer fits (490k), and what is left raises the screen first.
        assert_eq!(
            allocate(1_000.0 * K, &demands),
            [Some(0), Some(0), Some(1), Some(0)]
        );
        assert_eq!(
            allocate(2_500.0 * K, &demands),
            [Some(0), Some(1), Some(2), Some(0)]
        );
    }

    #[test]
    fn missing_layers_are_skipped() {
        let mut teacher = video(Priority::Teacher);
        teacher.layers[1] = None; // the publisher stopped sending the middle layer
        assert_eq!(
            allocate(800.0 * K, &[audio(), teacher.clone()]),
            [Some(0), Some(0)]
        );
        teacher.layers[0] = None;
        assert_eq!(
            allocate(800.0 * K, &[audio(), teacher.clone()]),
            [Some(0), None],
            "only the 1.5M layer is left and it does not fit"
        );
        assert_eq!(
            allocate(2_000.0 * K, &[audio(), teacher]),
            [Some(0), Some(2)]
        );
    }

    #[test]
    fn a_track_with_no_layer_at_all_is_paused() {
        let hidden = Demand {
            priority: Priority::Teacher,
            layers: vec![None, None, None],
        };
        assert_eq!(allocate(10_000.0 * K, &[hidden]), [None]);
    }
}
