//! How many resends a path with a queue gets.
//!
//! A path that overflows loses packets in bursts, and the receiver NACKs every one of them:
//! hundreds, when a layer no longer fits. Resending them all into the same full queue keeps it
//! full, and the lower layer the allocator switches to cannot get through it: at a 500 kbit/s
//! cap an overflow drew 700–1,800 NACKed packets, and resending them all paused the video for
//! seconds. So while the path shows a queue, resends are limited to [`CONGESTED_SHARE`] of the
//! estimate; the newest lost packets are resent first (they belong to the frames still to be
//! shown). On a path without a queue (random loss, where resends are what keeps the picture
//! going) there is no limit.
//!
//! Pure: time is passed in.

use std::time::{Duration, Instant};

/// Share of the estimate resends may use while the path shows a queue.
pub const CONGESTED_SHARE: f64 = 0.15;
/// Resends are counted in packets; a video packet is about this large.
const PACKET_BYTES: f64 = 1_200.0;
/// Resends may catch up this much of their rate after a quiet moment.
const MAX_BURST: Duration = Duration::from_millis(200);

/// A token bucket of resends.
#[derive(Debug)]
pub struct ResendBudget {
    /// Resends that may go out now.
    tokens: f64,
    last: Option<Instant>,
}

impl Default for ResendBudget {
    fn default() -> Self {
        Self {
            tokens: f64::MAX,
            last: None,
        }
    }
}

impl ResendBudget {
    /// How many of `wanted` resends may go out now on a path whose estimate is `estimate_bps`,
    /// `congested` (showing a queue) or not. All of them without a queue or an estimate.
    pub fn take(
        &mut self,
        now: Instant,
        wanted: usize,
        estimate_bps: Option<f64>,
        congested: bool,
    ) -> usize {
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.last = Some(now);
        let Some(bps) = estimate_bps.filter(|_| congested) else {
            // A full bucket for when a queue forms.
            self.tokens = f64::MAX;
            return wanted;
        };
        let per_second = bps * CONGESTED_SHARE / 8.0 / PACKET_BYTES;
        let cap = (per_second * MAX_BURST.as_secs_f64()).max(1.0);
        self.tokens = (self.tokens.min(cap) + per_second * elapsed.as_secs_f64()).min(cap);
        let allowed = (self.tokens.floor() as usize).min(wanted);
        self.tokens -= allowed as f64;
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_queue_every_resend_goes_out() {
        let mut budget = ResendBudget::default();
        let now = Instant::now();
        assert_eq!(budget.take(now, 500, Some(500_000.0), false), 500);
        assert_eq!(budget.take(now, 500, None, true), 500, "no estimate");
    }

    #[test]
    fn with_a_queue_resends_get_a_share_of_the_estimate() {
        let mut budget = ResendBudget::default();
        let t0 = Instant::now();
        // 500 kbit/s: 15 % is 75 kbit/s, about 7.8 packets a second, 1.56 in a 200 ms burst.
        assert_eq!(
            budget.take(t0, 100, Some(500_000.0), true),
            1,
            "a burst's worth"
        );
        let mut sent = 0;
        for i in 1..=100u64 {
            let now = t0 + Duration::from_millis(100 * i);
            sent += budget.take(now, 100, Some(500_000.0), true);
        }
        assert!((70..=80).contains(&sent), "{sent} in 10 s");
        // The queue is gone: no limit again.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(budget.take(later, 100, Some(500_000.0), false), 100);
    }
}
