//! Probing a subscriber's path before an upgrade commits to it.
//!
//! The SFU cannot change a subscriber's rate smoothly, only jump between simulcast layers, and
//! a jump the path cannot carry costs a frozen picture: the queue overflows, and going back
//! down needs a keyframe of the lower layer. So while an upgrade is pending (the estimate has
//! room for it and the selector is holding), the connection's tap sends *copies* of video
//! packets it sends anyway, adding what the upgrade would add. If the path cannot carry the
//! sum, the queue grows, the estimator cuts to what the path carried, the upgrade is no longer
//! pending and the copies stop: a brief queue instead of a frozen picture. If it can, the
//! upgrade is made when the hold ends.
//!
//! A copy is a resend on the stream's RTX stream (RFC 4588), as libwebrtc probes with RTX
//! "redundant payloads": the tap asks `rtc`'s NACK responder for the packets just sent, as if
//! the receiver had NACKed them ([`ProbeRequests`]). Each copy gets an RTX sequence number and
//! a transport-wide one (`bwe::rtx`), so the receiver reports its arrival like any packet and
//! the estimator measures the path with the probe's bytes in it. The receiver discards the
//! duplicate, or uses it if the original was lost.
//!
//! (Copies used to be SRTP replays of the packet itself: cheaper, but the receiver drops a
//! replay before its feedback sees it, so a probe's bytes filled the path unseen and a path
//! that shrank during a probe was measured at a fraction of what it carried.)
//!
//! [`ProbeBucket`] decides how many copies go with each packet; time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Copies may catch up at most this much of the probe rate after a quiet moment, so that a
/// probe is a steady rate, not a burst.
pub const MAX_BURST: Duration = Duration::from_millis(50);
/// At most this many copies of one packet.
pub const MAX_COPIES: usize = 4;

/// A token bucket of probe bytes.
#[derive(Debug, Default)]
pub struct ProbeBucket {
    /// Bytes that may be sent as copies now.
    budget: f64,
    last: Option<Instant>,
}

impl ProbeBucket {
    /// How many copies of a packet of `len` bytes to send along with it, to add `rate_bps` to
    /// what the path carries.
    pub fn copies(&mut self, now: Instant, rate_bps: f64, len: usize) -> usize {
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.last = Some(now);
        if rate_bps <= 0.0 || len == 0 {
            self.budget = 0.0;
            return 0;
        }
        let bytes_per_second = rate_bps / 8.0;
        // Enough room for one large packet, so that a low probe rate still gets out.
        let cap = (bytes_per_second * MAX_BURST.as_secs_f64()).max(1_500.0);
        self.budget = (self.budget + bytes_per_second * elapsed.as_secs_f64()).min(cap);
        let copies = ((self.budget / len as f64) as usize).min(MAX_COPIES);
        self.budget -= (copies * len) as f64;
        copies
    }
}

/// Probe copies asked of the NACK responder not yet seen going out: at most this many (a
/// packet the responder no longer has is never resent, and must not be remembered forever).
pub const MAX_PENDING: usize = 64;

/// The packets asked of the NACK responder as probe copies, as (stream, sequence number), until
/// their resends go out: those are probe bytes, not repairs.
#[derive(Debug, Default)]
pub struct ProbeRequests(VecDeque<(u32, u16)>);

impl ProbeRequests {
    /// Notes that `seqs` of stream `ssrc` are being asked for as probe copies.
    pub fn ask(&mut self, ssrc: u32, seqs: &[u16]) {
        self.0.extend(seqs.iter().map(|&seq| (ssrc, seq)));
        while self.0.len() > MAX_PENDING {
            self.0.pop_front();
        }
    }

    /// Whether a resend of `seq` of stream `ssrc` is a probe copy asked for; forgets it.
    pub fn answered(&mut self, ssrc: u32, seq: u16) -> bool {
        match self.0.iter().position(|&asked| asked == (ssrc, seq)) {
            Some(at) => {
                self.0.remove(at);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_add_the_probe_rate_and_stop_with_it() {
        let t = Instant::now();
        let mut bucket = ProbeBucket::default();
        // 400 kbit/s of 1000-byte packets (one every 20 ms), probing 200 kbit/s more.
        let mut copied = 0;
        for i in 0..500u64 {
            let now = t + Duration::from_millis(20 * i);
            copied += bucket.copies(now, 200_000.0, 1_000);
        }
        let rate = copied as f64 * 8_000.0 / 10.0;
        assert!((180_000.0..=220_000.0).contains(&rate), "{rate}");
        // No probe: no copies, and the next probe starts with at most one packet's worth.
        assert_eq!(bucket.copies(t + Duration::from_secs(11), 0.0, 1_000), 0);
        assert_eq!(
            bucket.copies(t + Duration::from_secs(12), 200_000.0, 1_000),
            1
        );
    }

    #[test]
    fn a_quiet_moment_does_not_make_a_burst() {
        let t = Instant::now();
        let mut bucket = ProbeBucket::default();
        bucket.copies(t, 1_000_000.0, 200);
        // Five quiet seconds later only 50 ms of the rate has been saved up: 6250 bytes are
        // 31 copies of 200 bytes, at most four with each packet.
        let later = t + Duration::from_secs(5);
        let mut total = 0;
        loop {
            let copies = bucket.copies(later, 1_000_000.0, 200);
            assert!(copies <= MAX_COPIES);
            if copies == 0 {
                break;
            }
            total += copies;
        }
        assert_eq!(total, 31);
    }

    #[test]
    fn a_resend_asked_for_as_a_probe_is_recognised_once() {
        let mut asked = ProbeRequests::default();
        asked.ask(7, &[10, 9]);
        assert!(asked.answered(7, 9));
        assert!(!asked.answered(7, 9), "once");
        assert!(!asked.answered(8, 10), "another stream's");
        assert!(asked.answered(7, 10));
        // Never answered: forgotten once enough newer ones are asked.
        asked.ask(7, &[1]);
        for seq in 100..100 + MAX_PENDING as u16 {
            asked.ask(7, &[seq]);
        }
        assert!(!asked.answered(7, 1));
        assert!(asked.answered(7, 100));
    }
}
