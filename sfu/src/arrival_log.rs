//! Which lost packets of a publisher are still worth asking for.
//!
//! `rtc`'s NACK generator asks a publisher again and again for every packet missing from its
//! receive log, however long ago the loss was. After an outage of the publisher's path (a
//! teacher's Wi-Fi gone for 5 s) that is every packet of the outage: the SFU kept asking for
//! ~10 packets a second per layer for 15–20 s after the path came back, and the teacher resent
//! ~6,000 packets nobody could use any more, on the path that had just recovered.
//!
//! [`ArrivalLog`] remembers when each publisher packet arrived, and a NACK leaving the SFU is cut
//! down to the packets lost less than [`MAX_AGE`] ago: a missing packet is as old as the last
//! packet that arrived before it (a loss in a stream is sent right after its predecessor). The
//! rest is repaired by the keyframe the SFU asks for when a subscriber cannot decode.
//!
//! Pure: time is passed in, nothing here reads the clock or does I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use crate::forward::rewrite::SeqUnwrapper;
use crate::nack_age::{Trim, trim_nack};

/// How long ago a packet may have been lost and still be asked for: the same second the SFU
/// gives its own resends (`nack_age::MAX_AGE`), for the same reasons.
pub const MAX_AGE: Duration = crate::nack_age::MAX_AGE;

/// Arrivals kept per stream: a little more than [`MAX_AGE`] of a top simulcast layer (about
/// 300 packets a second).
const KEPT: usize = 512;

/// Arrival times of a publisher's recent packets, per stream.
#[derive(Debug, Default)]
pub struct ArrivalLog {
    streams: Vec<Stream>,
}

#[derive(Debug)]
struct Stream {
    ssrc: u32,
    unwrapper: SeqUnwrapper,
    /// (unwrapped sequence number, arrival), in increasing sequence order: late packets
    /// (reordered or resent) are not added, their place is already known.
    arrivals: VecDeque<(u64, Instant)>,
}

impl ArrivalLog {
    /// Notes a packet that arrived from the publisher.
    pub fn arrived(&mut self, ssrc: u32, seq: u16, now: Instant) {
        let index = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(index) => index,
            None => {
                self.streams.push(Stream {
                    ssrc,
                    unwrapper: SeqUnwrapper::default(),
                    arrivals: VecDeque::with_capacity(KEPT),
                });
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[index];
        let seq = stream.unwrapper.unwrap(u64::from(seq));
        if stream.arrivals.back().is_some_and(|(last, _)| *last >= seq) {
            return;
        }
        if stream.arrivals.len() == KEPT {
            stream.arrivals.pop_front();
        }
        stream.arrivals.push_back((seq, now));
    }

    /// Whether the missing packet `seq` of `ssrc` was lost recently enough to ask for: the last
    /// packet before it arrived at most [`MAX_AGE`] ago. Unknown streams are asked for (nothing
    /// says otherwise); a packet older than everything remembered is not.
    pub fn worth_asking(&self, ssrc: u32, seq: u16, now: Instant) -> bool {
        let Some(stream) = self.streams.iter().find(|s| s.ssrc == ssrc) else {
            return true;
        };
        // A copy: a lookup must not move the stream's highest sequence number.
        let seq = { stream.unwrapper }.unwrap(u64::from(seq));
        let before = stream.arrivals.partition_point(|(s, _)| *s < seq);
        match before.checked_sub(1).map(|i| stream.arrivals[i]) {
            Some((_, at)) => now.saturating_duration_since(at) <= MAX_AGE,
            None => false,
        }
    }

    /// Cuts an outgoing NACK down to the losses worth asking for (see [`Self::worth_asking`]).
    pub fn trim(&self, nack: &TransportLayerNack, now: Instant) -> Trim {
        trim_nack(nack, |seq| self.worth_asking(nack.media_ssrc, seq, now))
    }

    /// Forgets a stream the publisher stopped.
    pub fn forget(&mut self, ssrc: u32) {
        self.streams.retain(|s| s.ssrc != ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_recent_loss_is_asked_for_and_an_outages_are_not() {
        let t0 = Instant::now();
        let mut log = ArrivalLog::default();
        // 20 ms apart; 3 lost.
        for (seq, at) in [(1u16, 0u32), (2, 20), (4, 60)] {
            log.arrived(7, seq, t0 + at * MS);
        }
        assert!(log.worth_asking(7, 3, t0 + 100 * MS));
        // A 5 s outage from seq 5 to 254: the path returns with 255.
        log.arrived(7, 255, t0 + 5060 * MS);
        let back = t0 + 5070 * MS;
        assert!(!log.worth_asking(7, 5, back), "lost 5 s ago");
        assert!(!log.worth_asking(7, 254, back));
        // The loss of 3 is now old too.
        assert!(!log.worth_asking(7, 3, back));
        // After the outage, a fresh loss is asked for again.
        log.arrived(7, 257, back);
        assert!(log.worth_asking(7, 256, back + 10 * MS));
        assert!(log.worth_asking(99, 1, back), "unknown stream");
    }

    #[test]
    fn sequence_numbers_wrap_and_late_packets_change_nothing() {
        let t0 = Instant::now();
        let mut log = ArrivalLog::default();
        log.arrived(1, 65534, t0);
        log.arrived(1, 1, t0 + 40 * MS);
        log.arrived(1, 65535, t0 + 50 * MS); // late: its predecessor's time still counts
        assert!(log.worth_asking(1, 0, t0 + 500 * MS));
        assert!(!log.worth_asking(1, 0, t0 + 1100 * MS));
        log.forget(1);
        assert!(log.worth_asking(1, 0, t0 + 1100 * MS), "forgotten: unknown");
    }
}
