//! How a subscriber's path is doing, judged from the random loss measured on it: clean, lossy
//! (video held to layers with few packets a frame), or so lossy that video is hopeless and
//! only audio is sent.
//!
//! Each state is left at a lower loss than it is entered at: loss measured over a second of
//! packets is noisy (at 10 % the window reads anything from 4 % to 16 %), and each change of
//! state costs keyframes, or pauses and resumes every video a student sees.

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
/// A subscriber losing more than this share gets no video at all: at 70 % loss a one-packet
/// frame arrives 3 times in 10, and its resend as rarely, so the picture would be frozen
/// nearly all the time while every video packet still costs the path. What bandwidth there is
/// goes to the audio (and its redundancy, see `red`), and the student is told that its video
/// is paused. 50 % loss still gets video (the goal there is under 5 % frozen).
const AUDIO_ONLY: f64 = 0.65;
/// An audio-only path gets video again under this loss.
const AUDIO_ONLY_LEFT: f64 = 0.45;

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

impl PathCondition {
    /// The condition of a path that was `self` and now loses `loss` (a fraction).
    pub fn next(self, loss: f64) -> Self {
        let audio_only = match self {
            Self::AudioOnly => loss > AUDIO_ONLY_LEFT,
            _ => loss > AUDIO_ONLY,
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
    use super::PathCondition::{self, AudioOnly, Clean, Lossy};

    fn after(start: PathCondition, losses: &[f64]) -> PathCondition {
        losses
            .iter()
            .fold(start, |condition, &loss| condition.next(loss))
    }

    #[test]
    fn a_lossy_link_stays_lossy_until_its_loss_halves() {
        assert_eq!(Clean.next(0.04), Clean);
        assert_eq!(Clean.next(0.06), Lossy);
        assert_eq!(Lossy.next(0.04), Lossy, "a noisy dip under the threshold");
        assert_eq!(Lossy.next(0.02), Clean, "a link that got better");
    }

    #[test]
    fn video_stops_only_at_extreme_loss_and_comes_back_well_below_it() {
        // 50 % loss read noisily keeps video.
        assert_eq!(after(Clean, &[0.5, 0.58, 0.42, 0.62, 0.5]), Lossy);
        assert_eq!(Lossy.next(0.7), AudioOnly);
        assert_eq!(Clean.next(0.8), AudioOnly, "straight from a clean link");
        // 70 % read noisily stays audio only.
        assert_eq!(after(AudioOnly, &[0.62, 0.55, 0.48, 0.7]), AudioOnly);
        assert_eq!(AudioOnly.next(0.4), Lossy, "better, but still lossy");
        assert_eq!(AudioOnly.next(0.01), Clean);
    }

    #[test]
    fn each_condition_caps_the_video_layer() {
        assert_eq!(Clean.max_video_layer(), Some(usize::MAX));
        assert_eq!(Lossy.max_video_layer(), Some(super::LOSSY_MAX_LAYER));
        assert_eq!(AudioOnly.max_video_layer(), None);
        assert!(!Clean.is_lossy() && Lossy.is_lossy() && AudioOnly.is_lossy());
    }
}
