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

/// What a participant's links add up to: the level, and the figures a person reading it would
/// want next to it (a teacher's tooltip: "12 % loss, 80 ms round trip").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkReport {
    pub level: ConnectionQuality,
    /// The worst loss of its links, a fraction.
    pub loss: f64,
    /// The longest measured round trip, if any link measured one.
    pub rtt: Option<Duration>,
}

/// A participant is as good as its worst link; with no figures yet, excellent.
pub fn report(samples: impl IntoIterator<Item = LinkSample>) -> LinkReport {
    let mut report = LinkReport {
        level: ConnectionQuality::Excellent,
        loss: 0.0,
        rtt: None,
    };
    for sample in samples {
        report.level = report.level.min(score(sample));
        report.loss = report.loss.max(sample.loss);
        report.rtt = report.rtt.max(sample.rtt);
    }
    report
}

/// Loss, in fraction, and round trip that must change before a report is sent again at the
/// same level: enough for a person to notice, so that a class's staff are not sent a message
/// per student at every sample.
const LOSS_STEP: f64 = 0.02;
const RTT_STEP: Duration = Duration::from_millis(50);

/// Whether `now` is worth telling after `told` was: a new level, or figures that moved by a
/// step or more.
pub fn worth_telling(told: Option<&LinkReport>, now: &LinkReport) -> bool {
    let Some(told) = told else {
        return true;
    };
    let rtt_moved = match (told.rtt, now.rtt) {
        (Some(a), Some(b)) => a.abs_diff(b) >= RTT_STEP,
        (a, b) => a.is_some() != b.is_some(),
    };
    told.level != now.level || (told.loss - now.loss).abs() >= LOSS_STEP || rtt_moved
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
        assert_eq!(report(links).level, ConnectionQuality::Poor);
        assert_eq!(report([]).level, ConnectionQuality::Excellent);
    }

    #[test]
    fn a_report_takes_the_worst_of_each_figure() {
        let r = report([
            sample(0.01, 5, Some(40)),
            sample(0.12, 5, None),
            sample(0.0, 5, Some(90)),
        ]);
        assert_eq!(r.level, ConnectionQuality::Poor);
        assert!((r.loss - 0.12).abs() < 1e-9);
        assert_eq!(r.rtt, Some(Duration::from_millis(90)));
        assert_eq!(report([]).level, ConnectionQuality::Excellent);
    }

    #[test]
    fn reports_are_sent_again_only_when_something_moved() {
        let told = report([sample(0.10, 5, Some(100))]);
        assert!(worth_telling(None, &told));
        assert!(!worth_telling(
            Some(&told),
            &report([sample(0.11, 5, Some(120))])
        ));
        assert!(
            worth_telling(Some(&told), &report([sample(0.13, 5, Some(100))])),
            "loss"
        );
        assert!(
            worth_telling(Some(&told), &report([sample(0.10, 5, Some(160))])),
            "rtt"
        );
        assert!(
            worth_telling(Some(&told), &report([sample(0.10, 5, None)])),
            "rtt gone"
        );
        assert!(
            worth_telling(Some(&told), &report([sample(0.01, 5, Some(100))])),
            "level"
        );
    }
}
