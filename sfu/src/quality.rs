//! Connection quality of a participant, from what its links report: loss, jitter and RTT.
//!
//! Teachers and support agents need one word per person ("poor" next to a student's name tells
//! them why that student cannot hear), so the numbers are reduced to three levels. The
//! thresholds follow what degrades real-time audio first: a few percent of loss is audible
//! without FEC, jitter above a few tens of milliseconds grows the receiver's buffer, and a
//! round trip above a few hundred milliseconds makes conversation awkward.

use std::time::Duration;

pub use aula_protocol::ConnectionQuality;

/// One link's recent figures. `loss` is a fraction (0.0..=1.0) over the last interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSample {
    pub loss: f64,
    pub jitter: Duration,
    pub rtt: Option<Duration>,
}

/// Upper bounds (exclusive) for each level: (loss, jitter, rtt).
const EXCELLENT: (f64, Duration, Duration) =
    (0.02, Duration::from_millis(30), Duration::from_millis(300));
const GOOD: (f64, Duration, Duration) =
    (0.08, Duration::from_millis(100), Duration::from_millis(700));

/// The metric label of a level.
pub fn label(level: ConnectionQuality) -> &'static str {
    match level {
        ConnectionQuality::Poor => "poor",
        ConnectionQuality::Good => "good",
        ConnectionQuality::Excellent => "excellent",
    }
}

/// The level of one link: the worst of its three figures decides.
pub fn score(sample: LinkSample) -> ConnectionQuality {
    let within = |(loss, jitter, rtt): (f64, Duration, Duration)| {
        sample.loss < loss && sample.jitter < jitter && sample.rtt.is_none_or(|r| r < rtt)
    };
    if within(EXCELLENT) {
        ConnectionQuality::Excellent
    } else if within(GOOD) {
        ConnectionQuality::Good
    } else {
        ConnectionQuality::Poor
    }
}

/// A participant is as good as its worst link; with no figures yet, excellent.
pub fn participant(samples: impl IntoIterator<Item = LinkSample>) -> ConnectionQuality {
    samples
        .into_iter()
        .map(score)
        .min()
        .unwrap_or(ConnectionQuality::Excellent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(loss: f64, jitter_ms: u64, rtt_ms: Option<u64>) -> LinkSample {
        LinkSample {
            loss,
            jitter: Duration::from_millis(jitter_ms),
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn levels_by_the_worst_figure() {
        assert_eq!(
            score(sample(0.0, 5, Some(40))),
            ConnectionQuality::Excellent
        );
        assert_eq!(score(sample(0.05, 5, Some(40))), ConnectionQuality::Good);
        assert_eq!(score(sample(0.0, 50, Some(40))), ConnectionQuality::Good);
        assert_eq!(score(sample(0.0, 5, Some(400))), ConnectionQuality::Good);
        assert_eq!(score(sample(0.10, 5, Some(40))), ConnectionQuality::Poor);
        assert_eq!(score(sample(0.0, 5, Some(900))), ConnectionQuality::Poor);
        assert_eq!(
            score(sample(0.0, 5, None)),
            ConnectionQuality::Excellent,
            "no RTT yet"
        );
    }

    #[test]
    fn a_participant_is_its_worst_link() {
        let links = [sample(0.0, 5, Some(40)), sample(0.2, 5, Some(40))];
        assert_eq!(participant(links), ConnectionQuality::Poor);
        assert_eq!(participant([]), ConnectionQuality::Excellent);
    }
}
