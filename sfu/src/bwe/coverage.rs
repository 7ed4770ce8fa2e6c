//! Which transport-wide sequence numbers the receiver's TWCC feedback has spoken about.
//!
//! `rtc` joins feedback with the send history and reports every packet older than the newest
//! one acknowledged as not arrived, whether a feedback packet said it was lost or no feedback
//! covering it ever came (the receiver's uplink lost it). Counted as loss, a lost feedback
//! packet is a run of false losses as long as a feedback interval. The estimator used to guess:
//! five or more losses in a row were taken for a lost feedback. That guess fails exactly where
//! the loss matters most: at 75 % loss, runs of five are a quarter of the packets, and a
//! student losing three packets in four measured about 55 % (and about 30 % once only its
//! audio was sent, a few packets per feedback), so the SFU never knew how bad the link was.
//!
//! Each feedback packet names the range it covers (base sequence number and status count), so
//! the SFU's tap notes those ranges here as the feedback arrives, before the congestion
//! controller reads it, and a packet not arrived counts as lost only if a feedback covered it.
//! Pure: no clock, no I/O.

use std::collections::VecDeque;

/// Ranges remembered: at one feedback every 50–100 ms, several seconds of them, far more than
/// the time between a feedback and the reports `rtc` makes of it.
const RANGES: usize = 64;

/// The transport-wide sequence number ranges of the most recent feedback packets.
#[derive(Debug, Default)]
pub struct FeedbackCoverage {
    /// (base sequence number, packet status count), oldest first.
    ranges: VecDeque<(u16, u16)>,
}

impl FeedbackCoverage {
    /// A feedback packet reported on `count` packets from `base` on.
    pub fn note(&mut self, base: u16, count: u16) {
        if count == 0 {
            return;
        }
        if self.ranges.len() == RANGES {
            self.ranges.pop_front();
        }
        self.ranges.push_back((base, count));
    }

    /// Whether a recent feedback packet reported on `seq` (arrived or lost).
    pub fn covers(&self, seq: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(base, count)| seq.wrapping_sub(base) < count)
    }
}

/// Transport-wide sequence numbers of packets sent twice (see `spaced_copies`): the receiver
/// reports such a number arrived if either copy did, so its loss is the loss of both.
#[derive(Debug, Default)]
pub struct Doubled {
    /// The most recent numbers, oldest first.
    numbers: VecDeque<u16>,
}

/// Numbers of doubled packets remembered: a few seconds of audio.
const DOUBLED: usize = 512;

impl Doubled {
    pub fn note(&mut self, seq: u16) {
        if self.numbers.len() == DOUBLED {
            self.numbers.pop_front();
        }
        self.numbers.push_back(seq);
    }

    pub fn contains(&self, seq: u16) -> bool {
        self.numbers.contains(&seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_number_is_covered_by_the_feedback_that_named_it() {
        let mut coverage = FeedbackCoverage::default();
        assert!(!coverage.covers(100));
        coverage.note(100, 10);
        assert!(coverage.covers(100) && coverage.covers(109));
        assert!(!coverage.covers(110), "the next feedback's, which was lost");
        assert!(!coverage.covers(99));
        // Across the wrap of the 16-bit numbers.
        coverage.note(65_530, 12);
        assert!(coverage.covers(65_535) && coverage.covers(0) && coverage.covers(5));
        assert!(!coverage.covers(6));
        // An empty feedback covers nothing.
        coverage.note(200, 0);
        assert!(!coverage.covers(200));
    }

    #[test]
    fn doubled_numbers_are_remembered_for_a_while() {
        let mut doubled = Doubled::default();
        doubled.note(7);
        assert!(doubled.contains(7) && !doubled.contains(8));
        for seq in 100..100 + DOUBLED as u16 {
            doubled.note(seq);
        }
        assert!(!doubled.contains(7), "forgotten");
    }

    #[test]
    fn only_recent_feedback_is_remembered() {
        let mut coverage = FeedbackCoverage::default();
        for i in 0..=RANGES as u16 {
            coverage.note(i * 10, 10);
        }
        assert!(!coverage.covers(0), "the oldest range was forgotten");
        assert!(coverage.covers(10) && coverage.covers(RANGES as u16 * 10 + 9));
    }
}
