//! A token bucket: the per-participant limit on chat and data messages.
//!
//! Chat and data are relayed to the whole room, so one client in a loop would multiply its
//! traffic by the class size; a bucket allows short bursts (a few quick lines) but bounds the
//! sustained rate. Time is passed in so the bucket is tested without sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `per_sec` tokens per second.
    pub fn new(burst: u32, per_sec: f64, now: Instant) -> Self {
        Self {
            capacity: f64::from(burst),
            per_sec,
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one. On refusal, returns how long until the next token.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 2.0, t0);
        for _ in 0..3 {
            assert!(bucket.take(t0).is_ok());
        }
        let wait = bucket.take(t0).expect_err("burst spent");
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        // Half a second refills one token at 2/s, not more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(bucket.take(t1).is_ok());
        assert!(bucket.take(t1).is_err());
        // A long pause refills to the burst, never beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.take(t2).is_ok());
        }
        assert!(bucket.take(t2).is_err());
    }
}
