//! The loss a subscriber's path shows, read from its transport-wide feedback.
//!
//! Three things make a packet the receiver did not report arrived something other than one
//! packet lost at random:
//! - no feedback reported on it (the feedback was lost: nothing is known, see
//!   [`super::coverage`]);
//! - it was one of a run of losses sent over an [`OUTAGE`] (the path was gone for a moment);
//! - it went out twice (`spaced_copies`): the receiver reports its number arrived if either
//!   copy did, so its loss is the loss of both, p² on a path losing p (64 % at 80 %). Counted
//!   as one packet, the worst links read as better than they were; such packets are counted
//!   apart and their loss read as √(share lost) per copy. (Counting the copy that may have
//!   been lost from the loss measured before fed back on itself: a link back to 0 % read as
//!   lossy for seconds.)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

use super::coverage::{Doubled, FeedbackCoverage};
use super::estimator::RATE_WINDOW;

/// Reported losses in a row sent over this long are an outage of the path (Wi-Fi gone for a
/// moment), not the random loss of a bad link: the first feedback after the path comes back
/// reports everything sent meanwhile as lost, and counted, that second would read as 100 %
/// loss and take the student's video away just as it could resume. Random loss at 75 % puts
/// 25 packets (half a second of audio alone) in a row once in a thousand runs.
pub const OUTAGE: Duration = Duration::from_millis(500);

/// Packets reported on and lost, those sent once and those sent twice apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    pub known: usize,
    pub lost: usize,
    pub known_twice: usize,
    pub lost_twice: usize,
}

impl Losses {
    pub fn add(&mut self, other: Losses) {
        self.known += other.known;
        self.lost += other.lost;
        self.known_twice += other.known_twice;
        self.lost_twice += other.lost_twice;
    }

    /// What was counted since `earlier`, a total this one has grown from.
    pub fn since(&self, earlier: &Losses) -> Losses {
        Losses {
            known: self.known.saturating_sub(earlier.known),
            lost: self.lost.saturating_sub(earlier.lost),
            known_twice: self.known_twice.saturating_sub(earlier.known_twice),
            lost_twice: self.lost_twice.saturating_sub(earlier.lost_twice),
        }
    }

    /// Copies sent, and the share of them lost (0 with nothing known).
    pub fn copies_and_share(&self) -> (f64, f64) {
        let twice = self.known_twice as f64;
        let copies = self.known as f64 + 2.0 * twice;
        let lost_copies = if twice > 0.0 {
            self.lost as f64 + 2.0 * twice * (self.lost_twice as f64 / twice).sqrt()
        } else {
            self.lost as f64
        };
        (copies, lost_copies / copies.max(1.0))
    }

    /// The share of copies lost; 0 with nothing known.
    pub fn fraction(&self) -> f64 {
        self.copies_and_share().1
    }

    /// The share of copies lost; `None` with fewer than ten copies known.
    pub fn share(&self) -> Option<f64> {
        let (copies, share) = self.copies_and_share();
        (copies >= 10.0).then_some(share)
    }
}

/// What a batch of reports says about loss: a packet that did not arrive is lost only if a
/// feedback packet reported on it, and not in a run of losses longer than an [`OUTAGE`].
pub fn losses<'a>(
    reports: impl IntoIterator<Item = &'a PacketReport>,
    coverage: &FeedbackCoverage,
    doubled: &Doubled,
) -> Losses {
    let mut out = Losses::default();
    // The current run of reported losses: (first departure, last departure, lost once, lost
    // twice).
    let mut run: Option<(Instant, Instant, usize, usize)> = None;
    let close = |run: Option<(Instant, Instant, usize, usize)>, out: &mut Losses| {
        if let Some((first, last, once, twice)) = run
            && last.saturating_duration_since(first) < OUTAGE
        {
            out.known += once;
            out.lost += once;
            out.known_twice += twice;
            out.lost_twice += twice;
        }
    };
    for report in reports {
        let twice = report.is_twcc && doubled.contains(report.twcc_sequence_number);
        if report.arrived {
            if twice {
                out.known_twice += 1;
            } else {
                out.known += 1;
            }
            close(run.take(), &mut out);
        } else if report.is_twcc && coverage.covers(report.twcc_sequence_number) {
            let (first, _, once, doubled) =
                run.unwrap_or((report.departure, report.departure, 0, 0));
            run = Some(if twice {
                (first, report.departure, once, doubled + 1)
            } else {
                (first, report.departure, once + 1, doubled)
            });
        }
    }
    close(run, &mut out);
    out
}

/// The batches of the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct LossWindow(VecDeque<(Instant, Losses)>);

impl LossWindow {
    pub fn push(&mut self, now: Instant, batch: Losses) {
        self.0.push_back((now, batch));
        while self
            .0
            .front()
            .is_some_and(|w| now.saturating_duration_since(w.0) > RATE_WINDOW)
        {
            self.0.pop_front();
        }
    }

    /// Lost share of the copies reported (`None` with too few reports).
    pub fn share(&self) -> Option<f64> {
        let mut all = Losses::default();
        for (_, batch) in &self.0 {
            all.add(*batch);
        }
        all.share()
    }
}

#[cfg(test)]
mod tests {
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    use super::*;

    /// Reports of packets numbered from 0, `gap` apart: `+` arrived, `-` did not.
    fn batch(pattern: &str, gap: Duration) -> Vec<PacketReport> {
        let start = Instant::now();
        pattern
            .chars()
            .enumerate()
            .map(|(id, c)| PacketReport {
                ssrc: 1,
                id: id as u64,
                rtp_sequence_number: id as u16,
                is_twcc: true,
                twcc_sequence_number: id as u16,
                size: 1000,
                arrived: c == '+',
                departure: start + gap * id as u32,
                arrival: (c == '+').then_some(Duration::ZERO),
                ecn: Ecn::default(),
            })
            .collect()
    }

    fn once(known: usize, lost: usize) -> Losses {
        Losses {
            known,
            lost,
            ..Losses::default()
        }
    }

    #[test]
    fn a_packet_no_feedback_reported_on_is_unknown_not_lost() {
        let batch = |pattern: &str| batch(pattern, Duration::from_millis(1));
        let mut coverage = FeedbackCoverage::default();
        coverage.note(0, 4);
        coverage.note(10, 6);
        let none = Doubled::default();
        // Packets 4 to 9: their feedback was lost. Any run of losses a feedback reported
        // counts, however long (at 75 % loss runs of five are common).
        assert_eq!(
            losses(&batch("+-+-------------+"), &coverage, &none),
            once(11, 8),
            "0-3 and 10-15 reported (8 lost), 4-9 unknown, 16 arrived"
        );
        let uncovered = FeedbackCoverage::default();
        assert_eq!(losses(&batch("++++"), &uncovered, &none), once(4, 0));
    }

    #[test]
    fn an_outage_reported_lost_is_not_random_loss() {
        // 20 ms apart: 40 lost in a row span 780 ms, 10 span 180 ms.
        let batch = |pattern: &str| batch(pattern, Duration::from_millis(20));
        let mut coverage = FeedbackCoverage::default();
        coverage.note(0, 100);
        let none = Doubled::default();
        let outage = format!("++{}++", "-".repeat(40));
        assert_eq!(losses(&batch(&outage), &coverage, &none), once(4, 0));
        let bad_link = format!("++{}++", "-".repeat(10));
        assert_eq!(losses(&batch(&bad_link), &coverage, &none), once(14, 10));
    }

    #[test]
    fn packets_sent_twice_read_as_the_loss_of_each_copy() {
        // At 80 % loss per copy, a packet sent twice is reported lost 64 % of the time.
        let pattern = format!("{}{}", "+".repeat(9), "-".repeat(16)).repeat(4);
        let batch = batch(&pattern, Duration::from_millis(1));
        let mut coverage = FeedbackCoverage::default();
        coverage.note(0, 100);
        let mut doubled = Doubled::default();
        for seq in 0..100 {
            doubled.note(seq);
        }
        let twice = losses(&batch, &coverage, &doubled);
        assert_eq!((twice.known_twice, twice.lost_twice), (100, 64));
        assert!(
            (twice.fraction() - 0.8).abs() < 1e-9,
            "{}",
            twice.fraction()
        );
        let counted_once = losses(&batch, &coverage, &Doubled::default());
        assert_eq!(counted_once.share(), Some(0.64), "the loss of both copies");
        // A window mixing both: 10 of 20 sent once lost, and every doubled packet arrived.
        let mut window = LossWindow::default();
        let now = Instant::now();
        window.push(now, once(20, 10));
        window.push(
            now,
            Losses {
                known_twice: 10,
                ..Losses::default()
            },
        );
        assert_eq!(window.share(), Some(10.0 / 40.0));
    }
}
