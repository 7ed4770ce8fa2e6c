//! Putting every stream on one timeline: the server's wall clock. Pure.
//!
//! A stream's RTP timestamps count in its own clock rate from a random start, so they say how
//! far apart two frames of one stream are, not when a frame happened next to another stream's.
//! The publisher's RTCP sender reports give that: RTP time T of this stream was time W on the
//! sender's wall clock. All streams of one sender share that clock, so a participant's camera
//! and microphone mapped through their reports line up as they were captured (lip sync), however
//! differently the network delayed them. The sender's clock is then moved onto the server's by
//! one offset per participant: the smallest (arrival − sender time) of its reports, the least
//! delayed one. Each frame maps through the latest report at or before it, so a long recording
//! follows the sender's clock rather than drifting from the rate alone.
//!
//! Without sender reports (none received yet, or a publisher that sends none) a stream falls
//! back to arrival time: the RTP timestamps, shifted so that the least delayed packet lands at
//! its arrival. That keeps the frames' spacing exact but can be off by the difference in delay
//! between two streams.

use crate::reorder::Stream;
use crate::rtp::SenderReport;

/// Where a stream's RTP timestamps fall on the server's wall clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClock {
    clock_rate: i64,
    mapping: Mapping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mapping {
    /// (unwrapped RTP timestamp, sender µs) of each report, by timestamp, and the offset from
    /// the sender's clock to the server's.
    Reports {
        points: Vec<(i64, i64)>,
        sender_to_server_us: i64,
    },
    /// Server µs of RTP timestamp 0.
    Arrival { zero_us: i64 },
}

/// The offset from a participant's clock to the server's, from all its sender reports: the
/// smallest (arrival − sender time). `None` without reports.
pub fn sender_offset(reports: &[SenderReport]) -> Option<i64> {
    reports.iter().map(|r| r.arrival_us - r.sender_us).min()
}

impl StreamClock {
    /// The clock of `stream`, from `reports` (its sender reports, in arrival order) and the
    /// participant's `sender_offset`, or from arrival times when either is missing.
    pub fn new(
        stream: &Stream,
        clock_rate: u32,
        reports: &[SenderReport],
        sender_offset: Option<i64>,
    ) -> StreamClock {
        let clock_rate = i64::from(clock_rate.max(1));
        let first = stream.packets.first();
        let mapping = match (first, reports.first(), sender_offset) {
            (Some(first), Some(_), Some(sender_to_server_us)) => {
                // Each report's timestamp unwrapped against the one before it (the first
                // against the stream's first packet): reports come seconds apart.
                let mut last = (first.packet.timestamp, first.timestamp);
                let mut points: Vec<(i64, i64)> = reports
                    .iter()
                    .map(|report| {
                        let step = report.rtp_timestamp.wrapping_sub(last.0) as i32;
                        last = (report.rtp_timestamp, last.1 + i64::from(step));
                        (last.1, report.sender_us)
                    })
                    .collect();
                points.sort_by_key(|&(timestamp, _)| timestamp);
                Mapping::Reports {
                    points,
                    sender_to_server_us,
                }
            }
            _ => Mapping::Arrival {
                zero_us: stream
                    .packets
                    .iter()
                    .map(|p| p.packet.arrival_us - p.timestamp * 1_000_000 / clock_rate)
                    .min()
                    .unwrap_or(0),
            },
        };
        StreamClock {
            clock_rate,
            mapping,
        }
    }

    /// Whether the clock comes from sender reports (rather than arrival times).
    pub fn from_reports(&self) -> bool {
        matches!(self.mapping, Mapping::Reports { .. })
    }

    /// The server wall-clock time (Unix µs) of unwrapped RTP timestamp `timestamp`.
    pub fn server_us(&self, timestamp: i64) -> i64 {
        match &self.mapping {
            Mapping::Reports {
                points,
                sender_to_server_us,
            } => {
                let after = points.partition_point(|&(t, _)| t <= timestamp);
                let (t, sender_us) = points[after.saturating_sub(1)];
                sender_us + (timestamp - t) * 1_000_000 / self.clock_rate + sender_to_server_us
            }
            Mapping::Arrival { zero_us } => zero_us + timestamp * 1_000_000 / self.clock_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reorder::Ordered;
    use crate::rtp::Packet;

    /// The sender's clock runs 2 s behind the server's.
    const SENDER_BEHIND_US: i64 = 2_000_000;

    /// A stream captured every `step_us` from sender time `start_us` for 10 s, with RTP
    /// timestamps from `first_timestamp`, each packet delayed by `delay_us` plus up to 30 ms of
    /// jitter; and a sender report a second, delayed likewise.
    fn captured(
        clock_rate: i64,
        first_timestamp: u32,
        step_us: i64,
        delay_us: i64,
    ) -> (Stream, Vec<SenderReport>) {
        let start_us = 1_700_000_000_000_000;
        let jitter = |i: i64| (i * 7919) % 30_000;
        let timestamp_at = |sender_us: i64| {
            first_timestamp.wrapping_add(((sender_us - start_us) * clock_rate / 1_000_000) as u32)
        };
        let packets = (0..10_000_000 / step_us)
            .map(|i| {
                let sender_us = start_us + i * step_us;
                let timestamp = timestamp_at(sender_us);
                Ordered {
                    packet: Packet {
                        ssrc: 1,
                        sequence: i as u16,
                        timestamp,
                        marker: true,
                        payload: vec![1],
                        arrival_us: sender_us + SENDER_BEHIND_US + delay_us + jitter(i),
                    },
                    index: i,
                    timestamp: i64::from(first_timestamp)
                        + (sender_us - start_us) * clock_rate / 1_000_000,
                }
            })
            .collect();
        let reports = (0..10)
            .map(|i| {
                let sender_us = start_us + i * 1_000_000 + 500;
                SenderReport {
                    ssrc: 1,
                    rtp_timestamp: timestamp_at(sender_us),
                    sender_us,
                    arrival_us: sender_us + SENDER_BEHIND_US + delay_us + jitter(i + 3),
                }
            })
            .collect();
        (Stream { ssrc: 1, packets }, reports)
    }

    #[test]
    fn sender_reports_line_up_streams_the_network_delayed_differently() {
        // Audio 20 ms late, video 150 ms late; the video timestamps wrap around.
        let (audio, audio_reports) = captured(48_000, 1_000, 20_000, 20_000);
        let (video, video_reports) = captured(90_000, u32::MAX - 400_000, 33_333, 150_000);
        let all: Vec<SenderReport> = audio_reports
            .iter()
            .chain(&video_reports)
            .copied()
            .collect();
        let offset = sender_offset(&all);
        let audio_clock = StreamClock::new(&audio, 48_000, &audio_reports, offset);
        let video_clock = StreamClock::new(&video, 90_000, &video_reports, offset);
        assert!(audio_clock.from_reports() && video_clock.from_reports());
        // Frames captured at the same instant (every 100 ms both have one) map together.
        for i in (0..300).step_by(3) {
            let video_us = video_clock.server_us(video.packets[i].timestamp);
            let audio_us = audio_clock.server_us(audio.packets[i * 5 / 3].timestamp);
            assert!(
                (video_us - audio_us).abs() <= 1_000,
                "{i}: {video_us} vs {audio_us}"
            );
        }
        // And on the server's clock, about when they were captured plus the least delay.
        let expected = audio.packets[0].packet.arrival_us;
        assert!((audio_clock.server_us(audio.packets[0].timestamp) - expected).abs() <= 31_000);

        // Without reports, arrival times put the video about 130 ms late.
        let video_by_arrival = StreamClock::new(&video, 90_000, &[], None);
        let audio_by_arrival = StreamClock::new(&audio, 48_000, &[], None);
        assert!(!video_by_arrival.from_reports());
        let skew = video_by_arrival.server_us(video.packets[30].timestamp)
            - audio_by_arrival.server_us(audio.packets[50].timestamp);
        assert!((120_000..=140_000).contains(&skew), "{skew}");
    }
}
