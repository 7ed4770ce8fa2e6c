//! Congestion control that counts resends.
//!
//! `rtc`'s NACK responder resends on a stream's RTX stream (RFC 4588), and its TWCC sender and
//! send history act only on the SSRCs bound to them: `rtc` binds a stream's media SSRC, never its
//! RTX SSRC. So no resend carried a transport-wide sequence number, the receiver's feedback
//! never named one, and the estimator could not see them. That matters exactly when it hurts:
//! after a full queue overflows, hundreds of NACKed packets are resent, the path carries them,
//! and an estimator that counts only the media measures the path as carrying far less than it
//! does, then cuts under the layers it could keep.
//!
//! [`WithRtx`] wraps one of those interceptors and binds each stream's RTX SSRC to it as well, as
//! a stream of its own with the same header extensions. Numbered like any other packet, a resend
//! is reported on, recorded in the history, and (lost again) requested again from the feedback
//! (`feedback_loss`).

use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// `I`, with every bound stream's RTX stream bound too.
pub struct WithRtx<I>(pub I);

/// The stream `info`'s resends go out on, if not on itself: its RTX stream, when the receiver
/// negotiated an RTX payload type. (`rtc` gives every video stream an RTX SSRC, but without
/// the payload type its responder resends on the media stream, as the same packet again.)
pub fn rtx_ssrc(info: &StreamInfo) -> Option<u32> {
    info.ssrc_rtx.filter(|_| info.payload_type_rtx.is_some())
}

/// The RTX stream of `info`, as a stream of its own, if it has one.
fn rtx_stream(info: &StreamInfo) -> Option<StreamInfo> {
    let ssrc = rtx_ssrc(info)?;
    Some(StreamInfo {
        ssrc,
        ssrc_rtx: None,
        ..info.clone()
    })
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for WithRtx<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.0.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.0.poll_write()
    }

    fn handle_event(&mut self, evt: ()) -> Result<(), Error> {
        self.0.handle_event(evt)
    }

    fn poll_event(&mut self) -> Option<()> {
        self.0.poll_event()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.0.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn close(&mut self) -> Result<(), Error> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for WithRtx<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.0.bind_local_stream(info);
        if let Some(rtx) = rtx_stream(info) {
            self.0.bind_local_stream(&rtx);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_local_stream(info);
        if let Some(rtx) = rtx_stream(info) {
            self.0.unbind_local_stream(&rtx);
        }
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use rtc::interceptor::{AttributedPacket, Packet, RTPHeaderExtension, TwccSenderBuilder};
    use rtc::shared::TransportContext;

    use super::*;

    const TWCC_ID: u8 = 3;

    fn packet(ssrc: u32, seq: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: vec![0; 100].into(),
            })),
        }
    }

    fn transport_seq(sender: &mut impl Interceptor, packet: TaggedPacket) -> Option<u16> {
        sender.handle_write(packet).unwrap();
        let Packet::Rtp(rtp) = sender.poll_write()?.message.packet else {
            return None;
        };
        let value = rtp.header.get_extension(TWCC_ID)?;
        Some(u16::from_be_bytes(value.get(..2)?.try_into().ok()?))
    }

    #[test]
    fn resends_on_the_rtx_stream_are_numbered_until_the_stream_goes() {
        let stream = StreamInfo {
            ssrc: 10,
            ssrc_rtx: Some(11),
            payload_type_rtx: Some(97),
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
                    .to_owned(),
                id: u16::from(TWCC_ID),
            }],
            ..Default::default()
        };
        // rtc's own sender numbers the media stream only.
        let mut bare = TwccSenderBuilder::new().build();
        bare.bind_local_stream(&stream);
        assert_eq!(transport_seq(&mut bare, packet(10, 1)), Some(0));
        assert_eq!(transport_seq(&mut bare, packet(11, 1)), None);

        let mut sender = WithRtx(TwccSenderBuilder::new().build());
        sender.bind_local_stream(&stream);
        assert_eq!(transport_seq(&mut sender, packet(10, 1)), Some(0));
        assert_eq!(transport_seq(&mut sender, packet(11, 1)), Some(1));
        assert_eq!(transport_seq(&mut sender, packet(10, 2)), Some(2));
        sender.unbind_local_stream(&stream);
        assert_eq!(transport_seq(&mut sender, packet(11, 2)), None);
    }
}
