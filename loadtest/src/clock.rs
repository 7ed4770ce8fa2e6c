//! One monotonic clock for every client in the process.
//!
//! Publishers and subscribers live in the same process, so a send time written into a packet as
//! microseconds since a shared [`Epoch`] can be compared with the receive time directly: no clock
//! sync, no NTP, and the difference is the true end-to-end latency through the SFU.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    pub fn now() -> Self {
        Self(Instant::now())
    }

    /// Microseconds from the epoch to `at` (0 for instants before it).
    pub fn micros(self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0).as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn micros_since_epoch() {
        let epoch = Epoch::now();
        let later = Instant::now() + Duration::from_millis(3);
        assert!(epoch.micros(later) >= 3_000);
        // An instant before the epoch saturates instead of panicking.
        assert_eq!(Epoch(later).micros(Instant::now()), 0);
    }
}
