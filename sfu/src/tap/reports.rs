//! What a peer's reception reports (RFC 3550 §6.4) say of the streams the SFU sends it: loss,
//! jitter and the round-trip time, for the connection quality and the QoS samples.
//!
//! `rtc` 0.21 parses these reports but never hands them to its statistics: the
//! `remote-inbound-rtp` figures of `get_stats` stay at zero (no round trip is ever measured).
//! So the tap reads them. The round trip needs the instant each sender report went out: a
//! report block echoes the middle 32 bits of that report's NTP time (LSR) and the delay since
//! it arrived (DLSR), and the round trip is the time from sending to the block's arrival less
//! that delay. Time is the caller's, as everywhere in the tap.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::rtcp::Packet;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;

use crate::qos::Reception;

/// Sender reports remembered per stream: a receiver echoes the latest it got, and reports go
/// out every second or so, so a few cover a report lost or late.
const SENT_KEPT: usize = 8;

/// The reception report blocks of a receiver or sender report; none for other RTCP.
pub(crate) fn blocks(packet: &dyn Packet) -> &[ReceptionReport] {
    let any = packet.as_any();
    if let Some(report) = any.downcast_ref::<ReceiverReport>() {
        &report.reports
    } else if let Some(report) = any.downcast_ref::<SenderReport>() {
        &report.reports
    } else {
        &[]
    }
}

/// A copy of a receiver or sender report with `edit` applied to its blocks; `None` for other
/// RTCP. (`rtc`'s packets can only be read through `dyn Any`, so an edit is a copy.)
pub(crate) fn edited(
    packet: &dyn Packet,
    edit: impl FnOnce(&mut [ReceptionReport]),
) -> Option<Box<dyn Packet>> {
    let any = packet.as_any();
    if let Some(report) = any.downcast_ref::<ReceiverReport>() {
        let mut report = report.clone();
        edit(&mut report.reports);
        Some(Box::new(report))
    } else if let Some(report) = any.downcast_ref::<SenderReport>() {
        let mut report = report.clone();
        edit(&mut report.reports);
        Some(Box::new(report))
    } else {
        None
    }
}

/// The local streams' clocks and the sender reports sent on them; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct ReportLog {
    clock_rates: HashMap<u32, u32>,
    /// Per local stream, recent sender reports: (middle 32 bits of their NTP time, when sent).
    sent: HashMap<u32, VecDeque<(u32, Instant)>>,
}

impl ReportLog {
    pub(crate) fn bind(&mut self, ssrc: u32, clock_rate: u32) {
        self.clock_rates.insert(ssrc, clock_rate);
    }

    pub(crate) fn unbind(&mut self, ssrc: u32) {
        self.clock_rates.remove(&ssrc);
        self.sent.remove(&ssrc);
    }

    /// A sender report with NTP time `ntp_time` went out on local stream `ssrc` at `now`.
    pub(crate) fn sent_report(&mut self, ssrc: u32, ntp_time: u64, now: Instant) {
        if !self.clock_rates.contains_key(&ssrc) {
            return;
        }
        let sent = self.sent.entry(ssrc).or_default();
        if sent.len() == SENT_KEPT {
            sent.pop_front();
        }
        sent.push_back(((ntp_time >> 16) as u32, now));
    }

    /// What a report block that arrived at `now` says of a local stream; `None` for a stream
    /// that is not one of ours.
    pub(crate) fn read(&self, block: &ReceptionReport, now: Instant) -> Option<Reception> {
        let clock_rate = *self.clock_rates.get(&block.ssrc)?;
        let jitter = if clock_rate > 0 {
            Duration::from_secs_f64(f64::from(block.jitter) / f64::from(clock_rate))
        } else {
            Duration::ZERO
        };
        let rtt = (block.last_sender_report != 0)
            .then(|| self.sent.get(&block.ssrc))
            .flatten()
            .and_then(|sent| {
                sent.iter()
                    .find(|(lsr, _)| *lsr == block.last_sender_report)
            })
            .map(|(_, at)| {
                let held = Duration::from_secs_f64(f64::from(block.delay) / 65_536.0);
                now.saturating_duration_since(*at).saturating_sub(held)
            });
        Some(Reception {
            loss: f64::from(block.fraction_lost) / 256.0,
            jitter,
            rtt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32, lsr: u32, delay: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost: 64,
            jitter: 900,
            last_sender_report: lsr,
            delay,
            ..Default::default()
        }
    }

    #[test]
    fn a_block_gives_loss_jitter_in_the_streams_clock_and_the_round_trip() {
        let mut log = ReportLog::default();
        let t0 = Instant::now();
        log.bind(7, 90_000);
        log.sent_report(7, 0x1234_5678_9ABC_DEF0, t0);
        // Held 0.25 s at the receiver (16,384 / 65,536 s), back 0.33 s after it was sent.
        let reception = log
            .read(
                &block(7, 0x5678_9ABC, 16_384),
                t0 + Duration::from_millis(330),
            )
            .expect("our stream");
        assert_eq!(reception.loss, 0.25);
        assert_eq!(reception.jitter, Duration::from_millis(10));
        assert_eq!(reception.rtt, Some(Duration::from_millis(80)));
    }

    #[test]
    fn no_round_trip_without_a_known_report_and_nothing_for_others_streams() {
        let mut log = ReportLog::default();
        let t0 = Instant::now();
        log.bind(7, 48_000);
        log.sent_report(7, 1 << 16, t0);
        let now = t0 + Duration::from_millis(50);
        assert_eq!(
            log.read(&block(7, 0, 0), now).unwrap().rtt,
            None,
            "no report echoed"
        );
        assert_eq!(
            log.read(&block(7, 99, 0), now).unwrap().rtt,
            None,
            "an unknown one"
        );
        assert_eq!(log.read(&block(8, 1, 0), now), None, "not our stream");
        log.unbind(7);
        assert_eq!(log.read(&block(7, 1, 0), now), None, "unbound");
    }

    #[test]
    fn only_the_latest_reports_are_kept() {
        let mut log = ReportLog::default();
        let t0 = Instant::now();
        log.bind(7, 48_000);
        for i in 1..=SENT_KEPT as u64 + 1 {
            log.sent_report(7, i << 16, t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(20);
        assert_eq!(
            log.read(&block(7, 1, 0), now).unwrap().rtt,
            None,
            "forgotten"
        );
        let oldest_kept = log.read(&block(7, 2, 0), now).unwrap();
        assert_eq!(oldest_kept.rtt, Some(Duration::from_secs(18)));
    }
}
