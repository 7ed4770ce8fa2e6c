//! Sharing one subscriber's bandwidth estimate among the tracks it receives.
//!
//! The order is what a learner on a weak link needs most: every audio track first (a class
//! without the teacher's voice is lost, a frozen picture is not), then screen shares (the
//! board), then the teacher's camera, then other cameras. Within that order, every video first
//! gets its lowest layer, so as many stay visible as fit, and only then are layers raised, in
//! the same order. A video whose lowest layer does not fit is paused for this subscriber.
//!
//! A video's layers are the steps of its [`Ladder`](super::quality::Ladder): simulcast layers
//! at lower frame rates, so "lowest" is the lowest layer at its lowest frame rate (7.5 fps of
//! 180p from Chromium), and raising a video raises its frame rate, then its resolution. A
//! video is paused only when even that does not fit.
//!
//! [`allocate`] is a pure function of the estimate and each track's per-step bitrates (as
//! measured from the publisher); [`super::selector`] adds the timing (down at once, up slowly).

use super::quality::Step;

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
    /// Bits per second of each step, lowest first; `None` for a step that cannot be had (its
    /// layer is not being received, or not wanted: above the size the subscriber shows the
    /// video at). Audio has one.
    pub steps: Vec<Option<f64>>,
}

impl Demand {
    /// What forwarding `step` costs (`None`: paused, nothing).
    pub fn cost(&self, step: Option<Step>) -> f64 {
        step.and_then(|step| self.steps.get(step).copied().flatten())
            .unwrap_or(0.0)
    }

    /// The lowest step that can be had, and its cost.
    pub fn lowest(&self) -> Option<(Step, f64)> {
        self.steps
            .iter()
            .enumerate()
            .find_map(|(step, rate)| rate.map(|r| (step, r)))
    }
}

/// The step to forward for each demand, in the same order; `None` means paused. Audio is
/// never paused: it is granted even when it alone exceeds the estimate, because the
/// alternative is silence, and an estimate that low is already below what the estimator
/// allows as its floor.
pub fn allocate(budget: f64, demands: &[Demand]) -> Vec<Option<Step>> {
    let mut chosen: Vec<Option<Step>> = vec![None; demands.len()];
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&i| demands[i].priority);
    let mut left = budget;

    // Pass 1: audio whatever it costs, then each video's lowest step while it fits.
    for &i in &order {
        let Some((step, rate)) = demands[i].lowest() else {
            continue;
        };
        if demands[i].priority == Priority::Audio || rate <= left {
            chosen[i] = Some(step);
            left -= rate;
        }
    }
    // Pass 2: raise each granted video as far as the rest allows, in priority order.
    for &i in &order {
        let Some(current) = chosen[i] else {
            continue;
        };
        let rates = &demands[i].steps;
        let paid = rates[current].unwrap_or(0.0);
        let best = (current + 1..rates.len())
            .rev()
            .find(|&step| rates[step].is_some_and(|rate| rate - paid <= left));
        if let Some(step) = best {
            left -= rates[step].unwrap_or(0.0) - paid;
            chosen[i] = Some(step);
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
            steps: vec![Some(40.0 * K)],
        }
    }

    /// A simulcast camera at 150k / 500k / 1.5M, without temporal layers (one step each).
    fn video(priority: Priority) -> Demand {
        Demand {
            priority,
            steps: vec![Some(150.0 * K), Some(500.0 * K), Some(1_500.0 * K)],
        }
    }

    /// The same with three temporal layers, the lower frame rates at 35 % and 60 % of the
    /// bytes: 7.5 fps of the lowest layer costs 52.5k.
    fn temporal_video(priority: Priority) -> Demand {
        let steps = [150.0, 500.0, 1_500.0]
            .into_iter()
            .flat_map(|layer| [0.35, 0.6, 1.0].map(|share| Some(layer * share * K)))
            .collect();
        Demand { priority, steps }
    }

    #[test]
    fn cost_of_a_step() {
        let camera = video(Priority::Camera);
        assert_eq!(camera.cost(Some(1)), 500.0 * K);
        assert_eq!(camera.cost(None), 0.0);
        assert_eq!(camera.cost(Some(7)), 0.0, "no such step");
    }

    #[test]
    fn a_tight_link_loses_frame_rate_before_the_video() {
        let demands = [audio(), temporal_video(Priority::Teacher)];
        // 170 kbit/s: 150k at 30 fps does not fit beside the audio; 15 fps (90k) does.
        assert_eq!(allocate(170.0 * K, &demands), [Some(0), Some(1)]);
        assert_eq!(allocate(100.0 * K, &demands), [Some(0), Some(0)], "7.5 fps");
        assert_eq!(allocate(90.0 * K, &demands), [Some(0), None]);
        // Going down, frame rate goes first: 360p at 7.5 fps (175k) before 180p at 30 fps.
        assert_eq!(allocate(200.0 * K, &demands[1..]), [Some(3)]);
        assert_eq!(allocate(170.0 * K, &demands[1..]), [Some(2)]);
        assert_eq!(
            allocate(310.0 * K, &demands[1..]),
            [Some(4)],
            "360p at 15 fps"
        );
    }

    #[test]
    fn every_video_gets_its_lowest_frame_rate_before_any_is_raised() {
        let demands = [
            audio(),
            temporal_video(Priority::Teacher),
            temporal_video(Priority::Camera),
        ];
        // 40k + 2 x 52.5k fit in 190k; the teacher's camera gets the 45k left: 15 fps.
        assert_eq!(allocate(190.0 * K, &demands), [Some(0), Some(1), Some(0)]);
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
        teacher.steps[1] = None; // the publisher stopped sending the middle layer
        assert_eq!(
            allocate(800.0 * K, &[audio(), teacher.clone()]),
            [Some(0), Some(0)]
        );
        teacher.steps[0] = None;
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
            steps: vec![None, None, None],
        };
        assert_eq!(allocate(10_000.0 * K, &[hidden]), [None]);
    }
}
