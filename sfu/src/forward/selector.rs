//! When a subscriber's layer for one track actually changes: down at once, up carefully.
//!
//! Going down late costs a frozen picture (the path is already full); going up early costs the
//! same, plus a keyframe for nothing. So [`Selector::update`] applies a lower allocation
//! immediately, but an upgrade only when the estimate has covered it *with a margin*
//! ([`UP_MARGIN`], see [`super::allocate`] run on the estimate divided by it) for a while
//! ([`UP_HOLD`]), and one layer at a time.
//!
//! The path is probed during the hold: while an upgrade is pending, the router has the
//! connection send copies adding what the upgrade would cost (`bwe::probe`). If the path
//! cannot carry them, the estimate drops, the upgrade is no longer affordable and stops being
//! pending before it is made: a failed probe, and the next one waits twice as long, up to
//! [`MAX_HOLD`], until the estimate is well above where the probe started ([`PATH_CHANGE`]).
//! The ceiling is short on purpose: a failed probe costs a brief queue, and a learner whose
//! Wi-Fi recovers should get the picture back within seconds.
//!
//! An upgrade undone within [`FAILED_UPGRADE`] failed too: the probe passed but the layer
//! cost more than it (its first frame is a keyframe several times the size of the others, and
//! on a path with little to spare that burst alone overflows the queue). That is dearer than a
//! failed probe: two keyframes asked of the publisher and often a frozen moment. So the wait
//! keeps doubling, up to [`MAX_UPGRADE_HOLD`], for as long as the path stays where the upgrade
//! failed; an estimate well above that ([`PATH_CHANGE`]) means the path has changed, and the
//! wait is back to [`UP_HOLD`] (a lifted cap is climbed back from within seconds). An upgrade
//! that held that long succeeded and the wait is back to [`UP_HOLD`] too.
//!
//! A pause is put off for [`PAUSE_GRACE`]: when the allocation has no room left even for a
//! video's lowest step, the video goes to that step at once and stays there that long before
//! it is paused. A pause costs seconds of frozen picture (the resume waits for the hold and
//! then a keyframe), while running a step over for a moment costs a brief queue: at a
//! 200 kbit/s cap a dip of the estimate to 85 % of what the path delivered paused the video
//! and froze the picture for 2.6-8 s, though the estimate was back within a second. A path
//! that stays short (a 150 kbit/s cap) still gets its pause, after the grace, and the audio
//! keeps its room.
//!
//! The layers are the steps of the track's [`Ladder`]: going down is by as many steps as the
//! allocation says (a lower frame rate at once), and an upgrade goes as far as the allocation
//! with margin allows, but not beyond the top of the next spatial layer: one keyframe, and
//! one layer's worth of probing, per hold, as before there were frame rates to choose.

use std::time::{Duration, Instant};

use super::quality::{Ladder, Step};

/// The estimate must exceed an upgrade's cost by this factor.
pub const UP_MARGIN: f64 = 1.15;
/// How long the upgrade must stay affordable before it is made.
pub const UP_HOLD: Duration = Duration::from_secs(2);
/// The longest wait before another upgrade after repeated failures. A failed probe costs a
/// brief queue, not a frozen picture, so retrying this often is cheap; and a learner whose
/// link recovers climbs the two steps back to the top layer within about 10 s at worst.
pub const MAX_HOLD: Duration = Duration::from_secs(4);
/// A downgrade this soon after an upgrade means the upgrade failed; an upgrade that lasts
/// longer succeeded.
pub const FAILED_UPGRADE: Duration = Duration::from_secs(3);
/// The longest wait before another upgrade after repeated failed upgrades on an unchanged
/// path: one failure costs a frozen moment at most this often.
pub const MAX_UPGRADE_HOLD: Duration = Duration::from_secs(16);
/// An estimate this many times the one an upgrade failed at means the path has changed.
pub const PATH_CHANGE: f64 = 1.3;
/// How long a video stays at its lowest step when the allocation has no room for it, before
/// it is paused.
pub const PAUSE_GRACE: Duration = Duration::from_secs(2);

/// The allowed step of one consumer (`None`: paused), with its upgrade timing.
#[derive(Debug, Clone)]
pub struct Selector {
    ladder: Ladder,
    allowed: Option<Step>,
    started: bool,
    /// Since when an upgrade has been affordable, and the estimate then.
    up_since: Option<(Instant, f64)>,
    /// Where the affordable upgrade would go.
    up_to: Option<Step>,
    /// The last upgrade and the estimate it was made on, until it has failed or succeeded.
    last_up: Option<(Instant, f64)>,
    /// The estimate the last failed upgrade or probe started on, while its backoff lasts.
    failed_at: Option<f64>,
    hold: Duration,
    /// Since when the allocation has had no room for this video while it was forwarded.
    short_since: Option<Instant>,
}

/// One step per layer, as for audio.
impl Default for Selector {
    fn default() -> Self {
        Self::new(Ladder::SINGLE)
    }
}

impl Selector {
    pub fn new(ladder: Ladder) -> Self {
        Self {
            ladder,
            allowed: None,
            started: false,
            up_since: None,
            up_to: None,
            last_up: None,
            failed_at: None,
            hold: UP_HOLD,
            short_since: None,
        }
    }

    pub fn ladder(&self) -> Ladder {
        self.ladder
    }

    pub fn allowed(&self) -> Option<Step> {
        self.allowed
    }

    /// The step an upgrade that is affordable and being held would go to (what to probe for).
    pub fn pending_upgrade(&self) -> Option<Step> {
        self.up_to
    }

    /// Without an estimate there is nothing to be careful about: take `best` as is. When an
    /// estimate appears later, its first allocation is taken as is too.
    pub fn unlimited(&mut self, best: Option<Step>) -> Option<Step> {
        *self = Self {
            allowed: best,
            ..Self::new(self.ladder)
        };
        self.allowed
    }

    /// `fits` is the allocation on the estimate (`estimate`, bits per second),
    /// `fits_with_margin` the one on the estimate divided by [`UP_MARGIN`], and `lowest` the
    /// track's lowest step that can be had at all (`None`: none, as on a path judged
    /// audio-only, which pauses at once). The first call takes `fits` as is: a new subscriber
    /// starts at what the (initial) estimate allows. Returns the step to forward now.
    pub fn update(
        &mut self,
        now: Instant,
        fits: Option<Step>,
        fits_with_margin: Option<Step>,
        estimate: f64,
        lowest: Option<Step>,
    ) -> Option<Step> {
        if !self.started {
            self.started = true;
            self.allowed = fits;
            return self.allowed;
        }
        let fits = self.put_off_pause(now, fits, lowest);
        let trying = self
            .last_up
            .filter(|(at, _)| now.saturating_duration_since(*at) < FAILED_UPGRADE);
        if fits < self.allowed {
            // Undoing a recent upgrade: it failed. Any other step down starts afresh: the
            // failures that made the hold long were about the layers above this one (a
            // video paused after failed tries at the top layer resumes after the usual hold).
            (self.hold, self.failed_at) = match trying {
                Some((_, made_on)) => ((self.hold * 2).min(MAX_UPGRADE_HOLD), Some(made_on)),
                None => (UP_HOLD, None),
            };
            self.allowed = fits;
            self.up_since = None;
            self.up_to = None;
            self.last_up = None;
            return self.allowed;
        }
        if self.last_up.is_some() && trying.is_none() {
            self.hold = UP_HOLD;
            self.last_up = None;
        }
        if self
            .failed_at
            .is_some_and(|failed| estimate > failed * PATH_CHANGE)
        {
            self.hold = UP_HOLD;
            self.failed_at = None;
        }
        if fits_with_margin > self.allowed {
            let (since, _) = *self.up_since.get_or_insert((now, estimate));
            let up_to = fits_with_margin.min(Some(self.ladder.next_layer_top(self.allowed)));
            self.up_to = up_to;
            if now.saturating_duration_since(since) >= self.hold {
                self.allowed = up_to;
                self.up_since = None;
                self.up_to = None;
                self.last_up = Some((now, estimate));
            }
        } else if let Some((_, started_on)) = self.up_since.take() {
            self.up_to = None;
            // It was affordable, and no longer is before the hold ended: the probe failed.
            // (After failed upgrades the hold may already be longer than this ceiling.)
            self.hold = (self.hold * 2).min(MAX_HOLD).max(self.hold);
            self.failed_at = Some(self.failed_at.map_or(started_on, |f| f.max(started_on)));
        }
        self.allowed
    }

    /// `fits`, except that a pause of a forwarded video is put off for [`PAUSE_GRACE`] at its
    /// lowest step.
    fn put_off_pause(
        &mut self,
        now: Instant,
        fits: Option<Step>,
        lowest: Option<Step>,
    ) -> Option<Step> {
        let (None, Some(allowed), Some(lowest)) = (fits, self.allowed, lowest) else {
            self.short_since = None;
            return fits;
        };
        let since = *self.short_since.get_or_insert(now);
        (now.saturating_duration_since(since) < PAUSE_GRACE).then_some(lowest.min(allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate, where it does not matter.
    const E: f64 = 1_000_000.0;

    fn ms(t: Instant, ms: u64) -> Instant {
        t + Duration::from_millis(ms)
    }

    #[test]
    fn starts_where_the_estimate_allows() {
        let t = Instant::now();
        let mut s = Selector::default();
        assert_eq!(s.update(t, Some(1), Some(0), E, None), Some(1));
    }

    #[test]
    fn goes_down_at_once_and_up_one_layer_after_the_hold() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(2), Some(2), E, None);
        assert_eq!(
            s.update(ms(t, 100), Some(0), Some(0), E, None),
            Some(0),
            "down at once"
        );
        // The path recovers: the top layer is affordable with margin from 20 s on.
        let mut at = 20_000;
        assert_eq!(s.update(ms(t, at), Some(2), Some(2), E, None), Some(0));
        at += 1_900;
        assert_eq!(
            s.update(ms(t, at), Some(2), Some(2), E, None),
            Some(0),
            "still holding"
        );
        at += 100;
        assert_eq!(
            s.update(ms(t, at), Some(2), Some(2), E, None),
            Some(1),
            "one step"
        );
        at += 2_000;
        assert_eq!(
            s.update(ms(t, at), Some(2), Some(2), E, None),
            Some(1),
            "hold again"
        );
        at += 1;
        s.update(ms(t, at), Some(2), Some(2), E, None);
        at += 2_000;
        assert_eq!(s.update(ms(t, at), Some(2), Some(2), E, None), Some(2));
    }

    #[test]
    fn an_upgrade_affordable_only_without_margin_is_not_made() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(0), Some(0), E, None);
        for second in 1..60 {
            assert_eq!(
                s.update(ms(t, second * 1000), Some(1), Some(0), E, None),
                Some(0)
            );
        }
    }

    /// Tries the upgrade until it happens (the estimate says "go up" all along); returns how
    /// long that took, in ms, and the time.
    fn upgrade(s: &mut Selector, t: Instant, mut now: u64) -> (u64, u64) {
        let start = now;
        let from = s.allowed();
        while s.allowed() == from {
            now += 100;
            s.update(ms(t, now), Some(2), Some(2), E, None);
        }
        (now - start, now)
    }

    #[test]
    fn failed_upgrades_back_off_exponentially_and_a_success_resets() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(0), Some(0), E, None);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let (wait, at) = upgrade(&mut s, t, now);
            waits.push(wait);
            // The path cannot carry it: back down a second later.
            now = at + 1_000;
            assert_eq!(s.update(ms(t, now), Some(0), Some(0), E, None), Some(0));
        }
        assert_eq!(waits, [2_100, 4_100, 8_100, 16_100, 16_100]);
        // This time the path carries it: three seconds later the upgrade has succeeded, and
        // the next one waits only the normal hold.
        let (_, at) = upgrade(&mut s, t, now);
        assert_eq!(s.allowed(), Some(1));
        now = at + FAILED_UPGRADE.as_millis() as u64;
        s.update(ms(t, now), Some(1), Some(1), E, None);
        let (wait, _) = upgrade(&mut s, t, now);
        assert_eq!(wait, 2_100);
        assert_eq!(s.allowed(), Some(2));
    }

    #[test]
    fn a_path_well_above_where_upgrades_failed_ends_their_backoff() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(0), Some(0), 600_000.0, None);
        let mut now = 0;
        // Upgrades made on 600 kbit/s fail three times: the wait is up to 16 s.
        for _ in 0..3 {
            let start = now;
            while s.allowed() == Some(0) {
                now += 100;
                s.update(ms(t, now), Some(1), Some(1), 600_000.0, None);
                assert!(now - start < 20_000, "upgraded");
            }
            now += 500;
            s.update(ms(t, now), Some(0), Some(0), 600_000.0, None);
        }
        // A little more estimate is the same path: still the long wait.
        now += 100;
        s.update(ms(t, now), Some(1), Some(1), 700_000.0, None);
        now += 2_000;
        assert_eq!(
            s.update(ms(t, now), Some(1), Some(1), 700_000.0, None),
            Some(0)
        );
        // Twice as much: the cap has been lifted, the usual hold.
        s.update(ms(t, now), Some(1), Some(1), 1_200_000.0, None);
        now += 2_000;
        assert_eq!(
            s.update(ms(t, now), Some(1), Some(1), 1_200_000.0, None),
            Some(1)
        );
    }

    #[test]
    fn a_probe_that_fails_during_the_hold_backs_off_too() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(0), Some(0), E, None);
        s.update(ms(t, 100), Some(1), Some(1), E, None);
        assert_eq!(s.pending_upgrade(), Some(1), "probing for layer 1");
        // The probe fills the path: the estimate drops and layer 1 is no longer affordable.
        assert_eq!(s.update(ms(t, 600), Some(0), Some(0), E, None), Some(0));
        assert_eq!(s.pending_upgrade(), None);
        // The next attempt holds twice as long.
        let (wait, _) = upgrade(&mut s, t, 10_000);
        assert_eq!(wait, 4_100);
    }

    #[test]
    fn after_failed_probes_a_path_well_above_them_waits_the_usual_hold() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(0), Some(0), 600_000.0, None);
        // Probes started on 600 kbit/s fail twice: the next wait is 4 s.
        for start in [1_000, 4_000] {
            s.update(ms(t, start), Some(1), Some(1), 600_000.0, None);
            s.update(ms(t, start + 500), Some(0), Some(0), 430_000.0, None);
        }
        // The cap lifts: the estimate climbs well above 600 kbit/s, and 2 s later the upgrade.
        s.update(ms(t, 10_000), Some(1), Some(1), 900_000.0, None);
        assert_eq!(
            s.update(ms(t, 12_000), Some(1), Some(1), 900_000.0, None),
            Some(1)
        );
    }

    #[test]
    fn a_step_down_that_undoes_no_upgrade_starts_the_backoff_afresh() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(1), Some(1), E, None);
        let mut now = 0;
        for _ in 0..2 {
            let (_, at) = upgrade(&mut s, t, now);
            now = at + 1_000;
            assert_eq!(
                s.update(ms(t, now), Some(1), Some(1), E, None),
                Some(1),
                "top layer failed"
            );
        }
        // Later the path gets worse: down to the lowest layer, then it recovers. Climbing
        // back waits the usual hold, not the one the failures at the top had built up.
        now += 5_000;
        assert_eq!(s.update(ms(t, now), Some(0), Some(0), E, None), Some(0));
        let (wait, _) = upgrade(&mut s, t, now);
        assert_eq!(wait, 2_100);
    }

    #[test]
    fn frame_rate_goes_down_at_once_and_up_with_its_layer() {
        let t = Instant::now();
        let mut s = Selector::new(Ladder::VIDEO);
        // 180p at 30 fps (step 2), then the path tightens: 15 fps, 7.5 fps, at once.
        s.update(t, Some(2), Some(2), E, None);
        assert_eq!(s.update(ms(t, 100), Some(1), Some(0), E, None), Some(1));
        assert_eq!(s.update(ms(t, 200), Some(0), Some(0), E, None), Some(0));
        // A little room: 15 fps after the hold.
        s.update(ms(t, 10_000), Some(1), Some(1), E, None);
        assert_eq!(s.pending_upgrade(), Some(1));
        assert_eq!(s.update(ms(t, 12_000), Some(1), Some(1), E, None), Some(1));
        // The cap lifts: one spatial layer per hold, each at the best frame rate that fits.
        s.update(ms(t, 20_000), Some(6), Some(6), E, None);
        assert_eq!(s.pending_upgrade(), Some(4), "360p at 30 fps");
        assert_eq!(s.update(ms(t, 22_000), Some(6), Some(6), E, None), Some(4));
        s.update(ms(t, 25_100), Some(6), Some(6), E, None);
        assert_eq!(s.update(ms(t, 27_100), Some(6), Some(6), E, None), Some(6));
        // From paused, a recovering path gets the lowest layer at the best rate that fits.
        s.update(ms(t, 35_000), None, None, E, None);
        s.update(ms(t, 40_000), Some(4), Some(4), E, None);
        assert_eq!(s.update(ms(t, 42_000), Some(4), Some(4), E, None), Some(2));
    }

    #[test]
    fn paused_video_resumes_on_the_lowest_layer_first() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(1), Some(1), E, None);
        assert_eq!(
            s.update(ms(t, 50), None, None, E, None),
            None,
            "no step can be had: paused at once"
        );
        s.update(ms(t, 20_000), Some(2), Some(2), E, None);
        assert_eq!(s.update(ms(t, 22_000), Some(2), Some(2), E, None), Some(0));
    }

    #[test]
    fn a_dip_below_the_lowest_step_keeps_it_for_the_grace() {
        let t = Instant::now();
        let mut s = Selector::default();
        s.update(t, Some(1), Some(1), E, Some(0));
        // No room even for the lowest layer: down to it at once, not paused.
        assert_eq!(s.update(ms(t, 100), None, None, E, Some(0)), Some(0));
        assert_eq!(s.update(ms(t, 2_000), None, None, E, Some(0)), Some(0));
        // The estimate is back within the grace: never paused, and no hold to wait out.
        assert_eq!(
            s.update(ms(t, 2_050), Some(0), Some(0), E, Some(0)),
            Some(0)
        );
        // A later dip gets a whole grace of its own, and a shortfall that lasts pauses.
        assert_eq!(s.update(ms(t, 5_000), None, None, E, Some(0)), Some(0));
        assert_eq!(s.update(ms(t, 6_900), None, None, E, Some(0)), Some(0));
        assert_eq!(s.update(ms(t, 7_000), None, None, E, Some(0)), None);
        assert_eq!(s.update(ms(t, 7_100), None, None, E, Some(0)), None);
        assert!(s.short_since.is_none(), "a paused video is not short");
    }
}
