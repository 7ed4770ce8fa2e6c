//! How a subscriber's path is doing, judged from the random loss measured on it: clean, lossy
//! (video held to layers with few packets a frame), or so lossy that video is hopeless and
//! only audio is sent.
//!
//! Each change of state costs keyframes, or pauses and resumes every video a student sees, and
//! loss measured over a second of packets is noisy (at 10 % the window reads anything from 4 %
//! to 16 %), so each state is left at a lower loss than it is entered at. Giving up video is
//! judged on the packets counted over a few seconds ([`EVIDENCE`]), and only when the count
//! puts the loss clearly on one side of [`AUDIO_ONLY`] ([`CONFIDENCE`] standard deviations):
//! a student at 50 % loss gets few packets reported (about 35 a second: the video is at its
//! lowest step and half the feedback is lost too), and an average of the second-long readings
//! passed 60 % often enough that one run in four paused the picture, for 10 to 17 s since it
//! was then kept paused until the average fell under 45 %.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::simulcast::Layer;
use crate::bwe::loss::Losses;

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
/// is paused. 50 % loss still gets video.
const AUDIO_ONLY: f64 = 0.6;
/// How far the loss counted must be from [`AUDIO_ONLY`], in standard deviations of a share of
/// that many packets lost at [`AUDIO_ONLY`], before video is given up or given back. Between
/// the two the path keeps its state. At 50 % loss and 35 packets a second, entering needs 67 %
/// counted over [`EVIDENCE`], four standard deviations above the true loss (in
/// `half_the_packets_lost_never_takes_the_video_away`'s model, once in about 30 hours of such
/// a link, against one 20 s run in four before); a student that was audio-only (25 packets a
/// second) gets video back once under 51 % is counted. At 70 % loss, the video stops as soon
/// as the window holds only lossy seconds.
const CONFIDENCE: f64 = 1.75;
/// How long the packets counted to judge [`AUDIO_ONLY`] were sent over. At 70 % loss from a
/// clean link, video stops 4 to 6 s in; when the loss ends, it comes back within a second or
/// two (a clean second's packets outnumber the lossy seconds' lost ones).
const EVIDENCE: Duration = Duration::from_secs(4);
/// How often the totals counted are noted, for the window of [`EVIDENCE`]: 17 notes.
const NOTE_EVERY: Duration = Duration::from_millis(250);
/// Fewer packets counted than this say nothing either way (no feedback: an outage, a receiver
/// without transport-wide feedback).
const MIN_COUNTED: f64 = 30.0;
/// The time constant of [`PathJudge::sustained`], the loss the redundancy of audio and video
/// follows.
const SUSTAINED: Duration = Duration::from_millis(1500);
/// The time constant with which [`PathJudge::held`] lets go of a loss.
const HELD: Duration = Duration::from_secs(5);

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

/// A path's condition over time: the condition, the loss averaged over [`SUSTAINED`], and
/// the totals of loss counted over the last [`EVIDENCE`].
#[derive(Debug, Clone, Default)]
pub struct PathJudge {
    condition: PathCondition,
    sustained: f64,
    held: f64,
    at: Option<Instant>,
    /// The connection's totals of loss counted, noted every [`NOTE_EVERY`], oldest first: the
    /// first is the newest at least [`EVIDENCE`] old.
    counted: VecDeque<(Instant, Losses)>,
}

impl PathJudge {
    /// The condition of the path now that it loses `loss` (a fraction, over the last second)
    /// and its feedback has counted `totals` of random loss since it began.
    pub fn update(&mut self, now: Instant, loss: f64, totals: Losses) -> PathCondition {
        let elapsed = self
            .at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.at = Some(now);
        let weight = 1.0 - (-elapsed.as_secs_f64() / SUSTAINED.as_secs_f64()).exp();
        self.sustained += (loss - self.sustained) * weight;
        let kept = (-elapsed.as_secs_f64() / HELD.as_secs_f64()).exp();
        self.held = self.sustained.max(self.held * kept);
        if self
            .counted
            .back()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= NOTE_EVERY)
        {
            self.counted.push_back((now, totals));
        }
        while self
            .counted
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= EVIDENCE)
        {
            self.counted.pop_front();
        }
        let recent = self.counted.front().map(|(_, base)| totals.since(base));
        self.condition = self
            .condition
            .next(loss, recent.and_then(|recent| hopeless(&recent)));
        self.condition
    }

    /// The loss averaged over the last few seconds ([`SUSTAINED`]).
    pub fn sustained(&self) -> f64 {
        self.sustained
    }

    /// The sustained loss, up as fast but down only slowly ([`HELD`]): what the audio's
    /// protection follows. At 80 % loss the loss read from the feedback fell for a second or
    /// two now and then (to 0.2-0.3, seen in the allocation's log), and RED, following the
    /// sustained loss, gave up its copies and depth for the 4 s it took to climb back: 7.9 %
    /// and 16 % of the audio concealed in such runs, against 3-5 % in the others. Audio
    /// protection is cheap next to video; keeping it a few seconds too long costs little. (The
    /// loss reported for listeners without RED, and FEC, follow the sustained loss.)
    pub fn held(&self) -> f64 {
        self.held
    }
}

/// Whether the loss `counted` shows is clearly above [`AUDIO_ONLY`] (`Some(true)`), clearly
/// under it (`Some(false)`), or too close to it, or on too few packets, to say.
fn hopeless(counted: &Losses) -> Option<bool> {
    let (copies, share) = counted.copies_and_share();
    if copies < MIN_COUNTED {
        return None;
    }
    let margin = CONFIDENCE * (AUDIO_ONLY * (1.0 - AUDIO_ONLY) / copies).sqrt();
    if share > AUDIO_ONLY + margin {
        Some(true)
    } else if share < AUDIO_ONLY - margin {
        Some(false)
    } else {
        None
    }
}

impl PathCondition {
    /// The condition of a path that was `self` and now loses `loss` (a fraction), whose video
    /// the last few seconds' counts show `hopeless` (`None`: they cannot tell).
    fn next(self, loss: f64, hopeless: Option<bool>) -> Self {
        let audio_only = hopeless.unwrap_or(self == Self::AudioOnly);
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
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::PathCondition::{AudioOnly, Clean, Lossy};
    use super::*;

    fn counted(known: usize, lost: usize) -> Losses {
        Losses {
            known,
            lost,
            ..Losses::default()
        }
    }

    #[test]
    fn a_lossy_link_stays_lossy_until_its_loss_halves() {
        assert_eq!(Clean.next(0.04, None), Clean);
        assert_eq!(Clean.next(0.06, None), Lossy);
        assert_eq!(
            Lossy.next(0.04, None),
            Lossy,
            "a noisy dip under the threshold"
        );
        assert_eq!(Lossy.next(0.02, None), Clean, "a link that got better");
    }

    #[test]
    fn video_is_given_up_or_back_only_when_the_counts_are_clearly_on_one_side() {
        // 140 packets, about four seconds of a student at its lowest video step at 50 % loss:
        // the line is 60 % ± 7.3 %.
        assert_eq!(hopeless(&counted(140, 70)), Some(false));
        assert_eq!(hopeless(&counted(140, 84)), None, "60 %: cannot tell");
        assert_eq!(
            hopeless(&counted(140, 94)),
            None,
            "67 %: still within the margin"
        );
        assert_eq!(hopeless(&counted(140, 98)), Some(true), "70 %");
        assert_eq!(hopeless(&counted(20, 20)), None, "too few packets to say");
        // Packets sent twice count as two copies each, lost at the square root of the share.
        let twice = Losses {
            known_twice: 100,
            lost_twice: 49,
            ..Losses::default()
        };
        assert_eq!(hopeless(&twice), Some(true), "70 % per copy");
        let (mut audio_only, mut lossy) = (AudioOnly, Lossy);
        assert_eq!(audio_only.next(0.5, None), AudioOnly, "kept while unsure");
        assert_eq!(lossy.next(0.65, None), Lossy, "kept while unsure");
        audio_only = audio_only.next(0.5, Some(false));
        lossy = lossy.next(0.7, Some(true));
        assert_eq!((audio_only, lossy), (Lossy, AudioOnly));
    }

    /// A student's link as its feedback reports it: `per_second` packets counted a second
    /// (fewer while its video is paused), each lost with probability `loss`.
    struct Link {
        judge: PathJudge,
        totals: Losses,
        now: Instant,
        rng: StdRng,
    }

    impl Link {
        fn new(seed: u64) -> Self {
            Self {
                judge: PathJudge::default(),
                totals: Losses::default(),
                now: Instant::now(),
                rng: StdRng::seed_from_u64(seed),
            }
        }

        /// `seconds` at `loss`, updated every 100 ms as the router does; the condition after
        /// each update.
        fn run(&mut self, seconds: u64, loss: f64) -> Vec<PathCondition> {
            let mut seen = Vec::new();
            let mut condition = self.judge.condition;
            for tick in 0..seconds * 10 {
                // 35 packets a second with the lowest video step, 25 with audio alone; 60 on
                // a clean link.
                let per_second = match (loss, condition) {
                    (0.0, _) => 60,
                    (_, AudioOnly) => 25,
                    _ => 35,
                };
                let packets = per_second / 10 + usize::from(tick % 2 == 0 && per_second % 10 != 0);
                for _ in 0..packets {
                    self.totals.known += 1;
                    self.totals.lost += usize::from(self.rng.random_bool(loss));
                }
                self.now += Duration::from_millis(100);
                condition = self.judge.update(self.now, loss, self.totals);
                seen.push(condition);
            }
            seen
        }
    }

    #[test]
    fn half_the_packets_lost_never_takes_the_video_away() {
        for seed in 0..20 {
            let mut link = Link::new(seed);
            link.run(10, 0.0);
            let seen = link.run(600, 0.5);
            assert!(
                !seen.contains(&AudioOnly),
                "seed {seed}: video given up at 50 % loss"
            );
            assert_eq!(seen.last(), Some(&Lossy));
        }
    }

    #[test]
    fn seventy_percent_takes_the_video_away_within_seconds_and_its_end_gives_it_back() {
        for seed in 0..20 {
            let mut link = Link::new(seed);
            link.run(10, 0.0);
            let seen = link.run(60, 0.7);
            let given_up = seen.iter().position(|&c| c == AudioOnly);
            assert!(
                given_up.is_some_and(|tick| tick <= 80),
                "seed {seed}: video given up at tick {given_up:?} of 70 % loss"
            );
            let kept = &seen[given_up.unwrap_or(0)..];
            assert!(
                kept.iter().all(|&c| c == AudioOnly),
                "seed {seed}: video given back while the loss lasted"
            );
            let after = link.run(3, 0.0);
            let back = after.iter().position(|&c| c == Clean);
            assert!(
                back.is_some_and(|tick| tick <= 20),
                "seed {seed}: video back at tick {back:?} after the loss ended"
            );
        }
    }

    #[test]
    fn without_feedback_the_condition_is_kept() {
        let mut link = Link::new(1);
        link.run(10, 0.0);
        link.run(10, 0.8);
        assert_eq!(link.judge.condition, AudioOnly);
        // An outage: nothing counted, whatever the last second's share read.
        for _ in 0..100 {
            link.now += Duration::from_millis(100);
            link.judge.update(link.now, 0.0, link.totals);
        }
        assert_eq!(link.judge.condition, AudioOnly);
    }

    /// At 80 % loss the reading falls to nothing for two seconds: the sustained loss
    /// follows it down, the held loss keeps the audio's deepest protection (each packet twice);
    /// once the loss has really ended, it lets go of the copies within 5 s and of all
    /// redundancy within 15 s.
    #[test]
    fn audio_protection_outlasts_a_dip_of_the_loss_read() {
        use crate::red::Redundancy;
        let t = Instant::now();
        let tick = Duration::from_millis(100);
        let mut judge = PathJudge::default();
        let mut level = Redundancy::default();
        let mut at = t;
        let mut run = |judge: &mut PathJudge, level: &mut Redundancy, ticks, loss| {
            for _ in 0..ticks {
                at += tick;
                judge.update(at, loss, Losses::default());
                *level = Redundancy::for_loss(*level, judge.held());
            }
        };
        run(&mut judge, &mut level, 50, 0.8);
        assert_eq!(level.copies(), 2, "the deepest protection at 80 % loss");
        run(&mut judge, &mut level, 20, 0.0);
        assert!(
            judge.sustained() < 0.325,
            "the sustained loss follows the dip"
        );
        assert_eq!(level.copies(), 2, "kept through the dip");
        run(&mut judge, &mut level, 50, 0.8);
        run(&mut judge, &mut level, 50, 0.0);
        assert_eq!(level.copies(), 1, "no copies 5 s after the loss ended");
        run(&mut judge, &mut level, 100, 0.0);
        assert_eq!(
            level,
            Redundancy::default(),
            "no redundancy 15 s after the loss ended"
        );
    }

    #[test]
    fn each_condition_caps_the_video_layer() {
        assert_eq!(Clean.max_video_layer(), Some(usize::MAX));
        assert_eq!(Lossy.max_video_layer(), Some(super::LOSSY_MAX_LAYER));
        assert_eq!(AudioOnly.max_video_layer(), None);
        assert!(!Clean.is_lossy() && Lossy.is_lossy() && AudioOnly.is_lossy());
    }
}
