//! How a subscriber's path is doing, judged from the random loss measured on it: clean, lossy
//! (video held to layers with few packets a frame), or so lossy that video is hopeless and
//! only audio is sent.
//!
//! Each state is left at a lower loss than it is entered at: loss measured over a second of
//! packets is noisy (at 10 % the window reads anything from 4 % to 16 %), and each change of
//! state costs keyframes, or pauses and resumes every video a student sees. Giving up video
//! is judged on the loss sustained over a few seconds ([`PathJudge`]): at 50 % loss the
//! second-long window read over 65 % now and then, and each time the picture stopped for
//! seconds (a 5.5 s stall in the weak-network report).

use std::time::{Duration, Instant};

use super::simulcast::Layer;

/// A subscriber losing more than this share of packets gets no video layer above
/// [`LOSSY_MAX_LAYER`], whatever its bandwidth: a frame shows only once all its packets have
/// arrived, and each lost one costs a retransmission round trip (a second one if the
/// retransmission is lost too), so the fewer packets per frame, the fewer frames wait. The
/// full layer of a camera is several packets a frame, the middle one one or two. Left under
/// half of it.
const LOSSY: f64 = 0.05;
/// The highest video layer a lossy path gets.
pub const LOSSY_MAX_LAYER: Layer = 1;
/// A subscriber losing more than this share, sustained, gets no video at all: at 70 % loss a
/// one-packet frame arrives 3 times in 10, and its resend as rarely, so the picture would be
/// frozen nearly all the time while every video packet still costs the path. What bandwidth
/// there is goes to the audio (and its redundancy, see `red`), and the student is told that
/// its video is paused. 50 % loss still gets video.
const AUDIO_ONLY: f64 = 0.6;
/// An audio-only path gets video again once its sustained loss is under this.
const AUDIO_ONLY_LEFT: f64 = 0.45;
/// How long a loss must last to count as sustained: the time constant of [`PathJudge`]'s
/// average. At 70 % loss from a clean link, video stops 3 to 4 s in.
const SUSTAINED: Duration = Duration::from_millis(1500);

/// A subscriber's path, from its loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathCondition {
    #[default]
    Clean,
    /// Video up to [`LOSSY_MAX_LAYER`].
    Lossy,
    /// No video.
    AudioOnly,
}

/// A path's condition over time: the condition, and the loss averaged over [`SUSTAINED`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PathJudge {
    condition: PathCondition,
    sustained: f64,
    at: Option<Instant>,
}

impl PathJudge {
    /// The condition of the path now that it loses `loss` (a fraction, over the last second).
    pub fn update(&mut self, now: Instant, loss: f64) -> PathCondition {
        let elapsed = self
            .at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.at = Some(now);
        let weight = 1.0 - (-elapsed.as_secs_f64() / SUSTAINED.as_secs_f64()).exp();
        self.sustained += (loss - self.sustained) * weight;
        self.condition = self.condition.next(loss, self.sustained);
        self.condition
    }

    /// The loss averaged over the last few seconds ([`SUSTAINED`]).
    pub fn sustained(&self) -> f64 {
        self.sustained
    }
}

impl PathCondition {
    /// The condition of a path that was `self` and now loses `loss` (a fraction), `sustained`
    /// on average over the last few seconds.
    fn next(self, loss: f64, sustained: f64) -> Self {
        let audio_only = match self {
            Self::AudioOnly => sustained > AUDIO_ONLY_LEFT,
            _ => sustained > AUDIO_ONLY,
        };
        let lossy = match self {
            Self::Clean => loss > LOSSY,
            _ => loss > LOSSY / 2.0,
        };
        if audio_only {
            Self::AudioOnly
        } else if lossy {
            Self::Lossy
        } else {
            Self::Clean
        }
    }

    /// The highest video layer this path gets, whatever its bandwidth (`None`: no video).
    pub fn max_video_layer(self) -> Option<Layer> {
        match self {
            Self::Clean => Some(Layer::MAX),
            Self::Lossy => Some(LOSSY_MAX_LAYER),
            Self::AudioOnly => None,
        }
    }

    /// Whether the path loses packets at random (lossy or worse).
    pub fn is_lossy(self) -> bool {
        self != Self::Clean
    }
}

#[cfg(test)]
mod tests {
    use super::PathCondition::{AudioOnly, Clean, Lossy};
    use super::*;

    /// The judge after a second of `loss` per entry, updated every 100 ms.
    fn judged(judge: &mut PathJudge, start: Instant, seconds: &[f64]) -> PathCondition {
        let mut condition = Clean;
        for (second, &loss) in seconds.iter().enumerate() {
            for tick in 0..10 {
                let at = Duration::from_millis(1000 * second as u64 + 100 * tick);
                condition = judge.update(start + at, loss);
            }
        }
        condition
    }

    #[test]
    fn a_lossy_link_stays_lossy_until_its_loss_halves() {
        assert_eq!(Clean.next(0.04, 0.04), Clean);
        assert_eq!(Clean.next(0.06, 0.06), Lossy);
        assert_eq!(
            Lossy.next(0.04, 0.04),
            Lossy,
            "a noisy dip under the threshold"
        );
        assert_eq!(Lossy.next(0.02, 0.02), Clean, "a link that got better");
    }

    #[test]
    fn video_stops_only_at_sustained_extreme_loss_and_comes_back_well_below_it() {
        let start = Instant::now();
        let mut judge = PathJudge::default();
        // 50 % loss read noisily, a second over 65 % now and then: video stays.
        let noisy_half = [0.5, 0.58, 0.42, 0.68, 0.5, 0.55, 0.45, 0.66, 0.52, 0.48];
        assert_eq!(judged(&mut judge, start, &noisy_half), Lossy);
        // 70 % from a clean link: video stops within 4 s.
        let mut judge = PathJudge::default();
        let t = start + Duration::from_secs(100);
        assert_eq!(judged(&mut judge, t, &[0.7, 0.7]), Lossy, "not after 2 s");
        let t = t + Duration::from_secs(2);
        assert_eq!(judged(&mut judge, t, &[0.7, 0.7]), AudioOnly);
        // 70 % read noisily stays audio only.
        let t = t + Duration::from_secs(2);
        assert_eq!(judged(&mut judge, t, &[0.62, 0.55, 0.58, 0.7]), AudioOnly);
        // A second that reads much better is not enough...
        let t = t + Duration::from_secs(4);
        assert_eq!(judged(&mut judge, t, &[0.3]), AudioOnly, "not sustained");
        // ... but the loss ending is: video back within a second of the window showing it.
        let t = t + Duration::from_secs(1);
        assert_eq!(judged(&mut judge, t, &[0.0]), Clean);
    }

    #[test]
    fn each_condition_caps_the_video_layer() {
        assert_eq!(Clean.max_video_layer(), Some(usize::MAX));
        assert_eq!(Lossy.max_video_layer(), Some(super::LOSSY_MAX_LAYER));
        assert_eq!(AudioOnly.max_video_layer(), None);
        assert!(!Clean.is_lossy() && Lossy.is_lossy() && AudioOnly.is_lossy());
    }
}
