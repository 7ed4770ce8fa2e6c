//! RFC 3550 §6.4.1 interarrival jitter, as a receiver report would state it.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Jitter {
    clock_rate: u32,
    /// Previous packet's arrival and RTP timestamp.
    last: Option<(Instant, u32)>,
    /// In RTP clock units, smoothed with gain 1/16.
    jitter: f64,
}

impl Jitter {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            last: None,
            jitter: 0.0,
        }
    }

    /// Feeds a packet that arrived in order at `arrival` with RTP timestamp `timestamp`.
    pub fn record(&mut self, arrival: Instant, timestamp: u32) {
        if let Some((last_arrival, last_ts)) = self.last {
            let arrival_delta = arrival
                .saturating_duration_since(last_arrival)
                .as_secs_f64()
                * f64::from(self.clock_rate);
            // RTP timestamps wrap; a signed difference reads across the wrap.
            let ts_delta = f64::from(timestamp.wrapping_sub(last_ts) as i32);
            let d = (arrival_delta - ts_delta).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last = Some((arrival, timestamp));
    }

    pub fn millis(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn steady_stream_has_no_jitter_and_a_late_packet_shows() {
        let t0 = Instant::now();
        let mut j = Jitter::new(48_000);
        for i in 0..100u32 {
            j.record(
                t0 + Duration::from_millis(20 * u64::from(i)),
                i.wrapping_mul(960),
            );
        }
        assert!(j.millis() < 0.01, "{}", j.millis());
        // One packet 16 ms late: |D| = 16 ms, jitter moves by 1/16 of it.
        j.record(t0 + Duration::from_millis(20 * 100 + 16), 100 * 960);
        assert!((j.millis() - 1.0).abs() < 0.01, "{}", j.millis());
    }

    #[test]
    fn timestamp_wrap_is_not_a_jump() {
        let t0 = Instant::now();
        let mut j = Jitter::new(90_000);
        j.record(t0, u32::MAX - 1499);
        j.record(t0 + Duration::from_micros(33_333), 1500);
        assert!(j.millis() < 0.01, "{}", j.millis());
    }
}
