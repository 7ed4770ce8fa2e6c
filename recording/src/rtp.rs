//! The two kinds of packet a capture log holds, parsed with the `rtc` crate's RTP and RTCP
//! parsers: RTP (media) and RTCP sender reports (the map from a stream's RTP clock to the
//! sender's wall clock). Pure.

use rtc::rtcp::sender_report::SenderReport as RtcpSenderReport;
use rtc::shared::marshal::Unmarshal;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// An RTP packet of a log, with the time it reached the SFU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// The payload, padding removed.
    pub payload: Vec<u8>,
    /// When the SFU received it: the server's wall clock, Unix µs.
    pub arrival_us: i64,
}

/// What an RTCP sender report says: RTP time `rtp_timestamp` of stream `ssrc` was sender
/// wall-clock time `sender_us` (Unix µs on the publisher's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    pub rtp_timestamp: u32,
    pub sender_us: i64,
    /// When the SFU received it: the server's wall clock, Unix µs.
    pub arrival_us: i64,
}

/// The RTP packet in `bytes`, if they are one.
pub fn parse_rtp(bytes: &[u8], arrival_us: i64) -> Option<Packet> {
    let packet = rtc::rtp::packet::Packet::unmarshal(&mut &bytes[..]).ok()?;
    Some(Packet {
        ssrc: packet.header.ssrc,
        sequence: packet.header.sequence_number,
        timestamp: packet.header.timestamp,
        marker: packet.header.marker,
        payload: packet.payload.to_vec(),
        arrival_us,
    })
}

/// The sender reports in `bytes`, an RTCP packet or compound packet; none if it is not one.
pub fn parse_sender_reports(bytes: &[u8], arrival_us: i64) -> Vec<SenderReport> {
    let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &bytes[..]) else {
        return Vec::new();
    };
    packets
        .iter()
        .filter_map(|packet| packet.as_any().downcast_ref::<RtcpSenderReport>())
        .map(|report| SenderReport {
            ssrc: report.ssrc,
            rtp_timestamp: report.rtp_time,
            sender_us: ntp_to_unix_us(report.ntp_time),
            arrival_us,
        })
        .collect()
}

/// A 64-bit NTP timestamp (seconds since 1900 . 32-bit fraction) as Unix microseconds.
pub fn ntp_to_unix_us(ntp: u64) -> i64 {
    let secs = (ntp >> 32) as i64 - NTP_UNIX_OFFSET_SECS as i64;
    let micros = ((ntp & 0xffff_ffff) * 1_000_000) >> 32;
    secs * 1_000_000 + micros as i64
}

/// Unix microseconds as a 64-bit NTP timestamp (for tests and test data).
pub fn unix_us_to_ntp(unix_us: i64) -> u64 {
    let secs = unix_us.div_euclid(1_000_000) as u64 + NTP_UNIX_OFFSET_SECS;
    let micros = unix_us.rem_euclid(1_000_000) as u64;
    (secs << 32) | ((micros << 32).div_ceil(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Marshal;

    #[test]
    fn ntp_and_unix_time_round_trip_to_the_microsecond() {
        for unix_us in [0, 1_700_000_000_123_456, 1_999_999_999_999_999] {
            assert_eq!(ntp_to_unix_us(unix_us_to_ntp(unix_us)), unix_us);
        }
    }

    #[test]
    fn reads_a_sender_report_out_of_a_compound_packet() {
        let report = RtcpSenderReport {
            ssrc: 42,
            ntp_time: unix_us_to_ntp(1_700_000_000_500_000),
            rtp_time: 90_000,
            ..Default::default()
        };
        let goodbye = rtc::rtcp::goodbye::Goodbye {
            sources: vec![42],
            reason: Default::default(),
        };
        let mut bytes = report.marshal().unwrap().to_vec();
        bytes.extend_from_slice(&goodbye.marshal().unwrap());
        let reports = parse_sender_reports(&bytes, 7);
        assert_eq!(
            reports,
            vec![SenderReport {
                ssrc: 42,
                rtp_timestamp: 90_000,
                sender_us: 1_700_000_000_500_000,
                arrival_us: 7,
            }]
        );
        assert_eq!(parse_sender_reports(&[1, 2, 3], 7), vec![]);
    }
}
