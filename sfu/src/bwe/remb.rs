//! REMB (draft-alvestrand-rmcat-remb): a receiver's own estimate of what it can take, the
//! fallback for receivers that do not send TWCC feedback.

use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;

/// The bitrate of the REMB among `packets`, if any (a malformed value counts as none). The
/// SFU's tap (`crate::tap`) reads it as inbound RTCP goes by and records it in the
/// connection's [`super::SharedEstimate`].
pub fn remb_of(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Option<f64> {
    packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
        .map(|remb| f64::from(remb.bitrate))
        .rfind(|bps| bps.is_finite() && *bps > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_sane_remb_counts() {
        let remb = |bitrate| -> Box<dyn rtc::rtcp::Packet> {
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 1,
                bitrate,
                ssrcs: vec![2],
            })
        };
        assert_eq!(remb_of(&[]), None);
        assert_eq!(remb_of(&[remb(500_000.0)]), Some(500_000.0));
        assert_eq!(
            remb_of(&[remb(500_000.0), remb(f32::NAN)]),
            Some(500_000.0),
            "a NaN is ignored"
        );
        assert_eq!(remb_of(&[remb(-1.0)]), None);
    }
}
