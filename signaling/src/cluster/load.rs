//! Measuring this node's load for the directory: CPU, participants, egress bit rate.
//!
//! CPU time and bytes sent are counters; the load is their rate between two samples. Both are
//! read from what already exists (the process's CPU time as the Prometheus process collector
//! reads it, the SFU's `aula_udp_bytes_sent_total`) so the numbers match `/metrics`.

use std::time::Instant;

use prometheus::core::Collector as _;
use prometheus::process_collector::ProcessCollector;

use super::node::Load;

/// The SFU counter of every byte written to the media socket.
const EGRESS_BYTES_METRIC: &str = "aula_udp_bytes_sent_total";
const CPU_SECONDS_METRIC: &str = "process_cpu_seconds_total";

/// Counter readings at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_seconds: f64,
    egress_bytes: f64,
}

/// Turns counter readings into rates, from one call of [`LoadProbe::sample`] to the next.
pub struct LoadProbe {
    metrics: prometheus::Registry,
    process: ProcessCollector,
    last: Option<Sample>,
}

impl LoadProbe {
    /// `metrics` is the server's registry, where the SFU counts the bytes it sends.
    pub fn new(metrics: prometheus::Registry) -> Self {
        Self {
            metrics,
            process: ProcessCollector::for_self(),
            last: None,
        }
    }

    /// The load since the previous call (CPU and egress are 0 on the first).
    pub fn sample(&mut self, participants: u64) -> Load {
        let now = Sample {
            at: Instant::now(),
            cpu_seconds: counter(&self.process.collect(), CPU_SECONDS_METRIC),
            egress_bytes: counter(&self.metrics.gather(), EGRESS_BYTES_METRIC),
        };
        let load = rates(self.last, now, participants);
        self.last = Some(now);
        load
    }
}

/// The load between two samples; counters that went down (a restart) count as 0.
fn rates(before: Option<Sample>, now: Sample, participants: u64) -> Load {
    let Some(before) = before else {
        return Load {
            participants,
            ..Load::default()
        };
    };
    let secs = now.at.duration_since(before.at).as_secs_f64();
    if secs <= 0.0 {
        return Load {
            participants,
            ..Load::default()
        };
    }
    let rate = |a: f64, b: f64| ((b - a).max(0.0)) / secs;
    Load {
        cpu: rate(before.cpu_seconds, now.cpu_seconds),
        participants,
        egress_bps: (rate(before.egress_bytes, now.egress_bytes) * 8.0) as u64,
    }
}

/// The value of an unlabelled counter among `families`, 0 if absent.
fn counter(families: &[prometheus::proto::MetricFamily], name: &str) -> f64 {
    families
        .iter()
        .find(|f| f.name() == name)
        .and_then(|f| f.get_metric().first())
        .map(|m| m.get_counter().get_value())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_are_per_second_and_never_negative() {
        let at = Instant::now();
        let before = Sample {
            at,
            cpu_seconds: 10.0,
            egress_bytes: 1000.0,
        };
        let now = Sample {
            at: at + Duration::from_secs(2),
            cpu_seconds: 11.0,
            egress_bytes: 251_000.0,
        };
        let load = rates(Some(before), now, 7);
        assert!((load.cpu - 0.5).abs() < 1e-9, "{load:?}");
        assert_eq!(load.egress_bps, 1_000_000);
        assert_eq!(load.participants, 7);

        assert_eq!(rates(None, now, 3).egress_bps, 0);
        let reset = rates(
            Some(now),
            Sample {
                at: at + Duration::from_secs(3),
                ..before
            },
            0,
        );
        assert_eq!(reset.egress_bps, 0);
        assert_eq!(reset.cpu, 0.0);
    }

    #[test]
    fn reads_the_sfu_egress_counter() {
        let registry = prometheus::Registry::new();
        let sent = prometheus::IntCounter::new(EGRESS_BYTES_METRIC, "bytes").expect("metric");
        registry.register(Box::new(sent.clone())).expect("register");
        sent.inc_by(1234);
        assert_eq!(counter(&registry.gather(), EGRESS_BYTES_METRIC), 1234.0);
        assert_eq!(counter(&registry.gather(), "absent_total"), 0.0);
    }
}
