//! The SFU's NACK responder: `rtc`'s, with its history sized by time instead of by count.
//!
//! `rtc`'s `NackResponderInterceptor` keeps, for every local stream that negotiated NACK, a
//! ring of 1,024 packet slots allocated when the stream is bound (about 115 KB per stream,
//! whatever the stream's rate). For a receive-only student that was the largest allocation of
//! its connection after the payloads themselves (issue 15). It also keeps packets far longer
//! than anything resends them: the SFU's own NACK trimming (`nack_age`) drops requests for
//! packets sent more than [`MAX_AGE`](crate::nack_age::MAX_AGE) ago, and 1,024 packets are six
//! seconds of a 1.5 Mbit/s layer and twenty of audio.
//!
//! [`ResendHistory`] answers NACKs the same way (the packet again, or as RFC 4588 RTX on the
//! stream's RTX SSRC with the original sequence number first, tagged
//! [`Attribute::Retransmission`] for the send history downstream), from a history per stream
//! holding what was sent in the last [`KEEP`]: its size follows the stream's rate (a few dozen
//! packets for a low layer, a few hundred for a top layer or a screen share's burst), and its
//! allocation shrinks back when the rate falls. Payloads are shared (`Bytes`), so a packet
//! forwarded to many students is one payload in all their histories.
//!
//! It sits in `rtc`'s NACK responder slot, so retransmissions are numbered, recorded and
//! metered exactly as before.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use rtc::shared::error::Error;

use crate::fec;
use crate::nack_age::MAX_AGE;

/// How long a sent packet is kept for resending: the age past which `nack_age` no longer lets
/// a NACK through, and a margin for the time the NACK spent in the chain.
pub const KEEP: Duration = Duration::from_millis(MAX_AGE.as_millis() as u64 + 200);

/// Most packets kept per stream whatever the rate: [`KEEP`] of 12,000 packets a second (over
/// 100 Mbit/s), a bound on memory should a stream burst beyond any video's rate.
const MAX_PACKETS: usize = 16_384;

/// The NACK responder (see the module docs).
#[derive(Default)]
pub struct ResendHistory {
    streams: HashMap<u32, Stream>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

struct Stream {
    /// Packets sent in the last [`KEEP`], oldest first, in sequence number order.
    sent: VecDeque<Kept>,
    /// The instant [`Kept::at_ms`] counts from: the first packet's.
    epoch: Option<Instant>,
    rtx: Option<(u32, u8)>,
    rtx_seq: u16,
}

/// One packet kept: what a resend needs of it, in 56 bytes rather than the 128 of an
/// `rtp::Packet` and its send time (the SSRC is the stream's).
struct Kept {
    /// When it was sent: milliseconds since the stream's epoch.
    at_ms: u32,
    seq: u16,
    marker: bool,
    payload_type: u8,
    timestamp: u32,
    payload: bytes::Bytes,
    /// The whole header, for the rare packet with more than the fields above (header
    /// extensions, CSRCs, padding): resent without RTX, it goes out as it was.
    header: Option<Box<rtc::rtp::header::Header>>,
}

impl Kept {
    fn new(at_ms: u32, packet: rtc::rtp::Packet) -> Self {
        let rtc::rtp::Packet { header, payload } = packet;
        let plain = header.extensions.is_empty()
            && !header.extension
            && header.csrc.is_empty()
            && !header.padding;
        Self {
            at_ms,
            seq: header.sequence_number,
            marker: header.marker,
            payload_type: header.payload_type,
            timestamp: header.timestamp,
            payload,
            header: (!plain).then(|| Box::new(header)),
        }
    }

    /// The packet as it was sent, on stream `ssrc`.
    fn packet(&self, ssrc: u32) -> rtc::rtp::Packet {
        let header = match &self.header {
            Some(header) => (**header).clone(),
            None => rtc::rtp::header::Header {
                version: 2,
                marker: self.marker,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                ssrc,
                ..Default::default()
            },
        };
        rtc::rtp::Packet {
            header,
            payload: self.payload.clone(),
        }
    }
}

impl Stream {
    /// Records a packet being sent at `now` and forgets those older than [`KEEP`].
    fn add(&mut self, now: Instant, packet: rtc::rtp::Packet) {
        let epoch = *self.epoch.get_or_insert(now);
        let at_ms = now.saturating_duration_since(epoch).as_millis() as u32;
        let seq = packet.header.sequence_number;
        match self.sent.back() {
            Some(newest) if !is_newer(seq, newest.seq) => {
                // Late or repeated: kept in order, if it is not there already.
                if let Err(at) = self.position(seq) {
                    self.sent.insert(at, Kept::new(at_ms, packet));
                }
            }
            _ => self.sent.push_back(Kept::new(at_ms, packet)),
        }
        let keep_ms = KEEP.as_millis() as u32;
        while self.sent.len() > MAX_PACKETS
            || self
                .sent
                .front()
                .is_some_and(|oldest| at_ms.wrapping_sub(oldest.at_ms) > keep_ms)
        {
            self.sent.pop_front();
        }
        // The rate fell (a lower layer, a pause): give back what a burst made it grow to.
        if self.sent.capacity() > 64 && self.sent.len() < self.sent.capacity() / 4 {
            self.sent.shrink_to(self.sent.len() * 2);
        }
    }

    /// Where `seq` is (`Ok`), or would go (`Err`), among the packets kept.
    fn position(&self, seq: u16) -> Result<usize, usize> {
        let Some(newest) = self.sent.back() else {
            return Err(0);
        };
        let newest = newest.seq;
        // Distance back from the newest: decreasing along the deque.
        let behind = |s: u16| newest.wrapping_sub(s);
        let wanted = behind(seq);
        // Consecutive numbers, the usual case: straight to it.
        if let Some(at) = (self.sent.len() - 1).checked_sub(usize::from(wanted))
            && self.sent[at].seq == seq
        {
            return Ok(at);
        }
        let at = self.sent.partition_point(|kept| behind(kept.seq) > wanted);
        match self.sent.get(at) {
            Some(kept) if kept.seq == seq => Ok(at),
            _ => Err(at),
        }
    }
}

/// Whether `a` comes after `b` in sequence number order (RFC 3550 wrap-around).
fn is_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl ResendHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Packets kept for stream `ssrc` (tests, measurements).
    pub fn kept(&self, ssrc: u32) -> usize {
        self.streams.get(&ssrc).map_or(0, |s| s.sent.len())
    }

    fn handle_nack(&mut self, now: Instant, nack: &TransportLayerNack) {
        let Some(stream) = self.streams.get_mut(&nack.media_ssrc) else {
            return;
        };
        for pair in &nack.nacks {
            for seq in *pair {
                let Ok(at) = stream.position(seq) else {
                    continue;
                };
                let original = &stream.sent[at];
                let packet = match stream.rtx {
                    Some((ssrc, payload_type)) => {
                        let mut payload = Vec::with_capacity(2 + original.payload.len());
                        payload.extend_from_slice(&seq.to_be_bytes());
                        payload.extend_from_slice(&original.payload);
                        let sequence_number = stream.rtx_seq;
                        stream.rtx_seq = stream.rtx_seq.wrapping_add(1);
                        rtc::rtp::Packet {
                            header: rtc::rtp::header::Header {
                                version: 2,
                                ssrc,
                                payload_type,
                                sequence_number,
                                timestamp: original.timestamp,
                                marker: original.marker,
                                ..Default::default()
                            },
                            payload: payload.into(),
                        }
                    }
                    None => original.packet(nack.media_ssrc),
                };
                self.write.push_back(TaggedPacket {
                    now,
                    transport: TransportContext::default(),
                    message: AttributedPacket::new(Packet::Rtp(packet))
                        .with(Attribute::Retransmission),
                });
            }
        }
    }
}

/// What a NACK for `packet` resends: the packet itself, but a video packet RED-wrapped for
/// FEC (see [`crate::fec`]) is kept unwrapped, so that its resend on RTX carries the payload
/// type RTX is associated with (the codec's), and an FEC packet is not kept: its loss is
/// repaired by the media's own resends.
fn to_keep(packet: &rtc::rtp::Packet) -> Option<rtc::rtp::Packet> {
    if packet.header.payload_type != fec::RED_PAYLOAD_TYPE {
        return Some(packet.clone());
    }
    let (payload_type, data) = fec::unwrap(&packet.payload)?;
    if payload_type == fec::ULPFEC_PAYLOAD_TYPE {
        return None;
    }
    let mut kept = packet.clone();
    kept.header.payload_type = payload_type;
    kept.payload = packet.payload.slice_ref(data);
    Some(kept)
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ResendHistory {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for packet in packets {
                if let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() {
                    self.handle_nack(msg.now, nack);
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(packet) = &msg.message.packet
            && let Some(stream) = self.streams.get_mut(&packet.header.ssrc)
            && let Some(kept) = to_keep(packet)
        {
            stream.add(msg.now, kept);
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for ResendHistory {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let nack = info
            .rtcp_feedback
            .iter()
            .any(|fb| fb.typ == "nack" && fb.parameter.is_empty());
        if nack {
            self.streams.insert(
                info.ssrc,
                Stream {
                    sent: VecDeque::new(),
                    epoch: None,
                    rtx: info.ssrc_rtx.zip(info.payload_type_rtx),
                    rtx_seq: 0,
                },
            );
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtc::interceptor::RTCPFeedback;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    use super::*;

    const SSRC: u32 = 0x5150;
    const RTX: u32 = 0x5151;

    fn bound(rtx: bool) -> ResendHistory {
        let mut history = ResendHistory::new();
        history.bind_local_stream(&StreamInfo {
            ssrc: SSRC,
            payload_type: 96,
            ssrc_rtx: rtx.then_some(RTX),
            payload_type_rtx: rtx.then_some(97),
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        history
    }

    fn send(history: &mut ResendHistory, now: Instant, ssrc: u32, seq: u16) {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ..Default::default()
            },
            payload: Bytes::from(seq.to_be_bytes().to_vec()),
        };
        history
            .handle_write(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet)),
            })
            .expect("written");
        assert!(history.poll_write().is_some(), "the packet goes on");
    }

    /// The packets a NACK for `seqs` makes the history send: (ssrc, seq, payload).
    fn nack(history: &mut ResendHistory, now: Instant, seqs: &[u16]) -> Vec<(u32, u16, Vec<u8>)> {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: seqs
                .iter()
                .map(|&packet_id| NackPair {
                    packet_id,
                    lost_packets: 0,
                })
                .collect(),
        };
        history
            .handle_read(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack)])),
            })
            .expect("read");
        assert!(history.poll_read().is_some(), "the NACK goes on");
        std::iter::from_fn(|| history.poll_write())
            .map(|msg| {
                assert!(msg.message.has(&Attribute::Retransmission));
                let Packet::Rtp(p) = msg.message.packet else {
                    panic!("RTP")
                };
                (p.header.ssrc, p.header.sequence_number, p.payload.to_vec())
            })
            .collect()
    }

    #[test]
    fn red_wrapped_video_is_resent_unwrapped_and_fec_is_not_resent() {
        let now = Instant::now();
        let mut history = bound(false);
        for (seq, payload) in [
            (10, fec::wrap(96, b"vp8")),
            (11, fec::placeholder(0, fec::Protection::OFF)),
        ] {
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc: SSRC,
                    sequence_number: seq,
                    payload_type: fec::RED_PAYLOAD_TYPE,
                    ..Default::default()
                },
                payload,
            };
            history
                .handle_write(TaggedPacket {
                    now,
                    transport: TransportContext::default(),
                    message: AttributedPacket::new(Packet::Rtp(packet)),
                })
                .expect("written");
            history.poll_write().expect("the packet goes on");
        }
        assert_eq!(
            nack(&mut history, now, &[10, 11]),
            [(SSRC, 10, b"vp8".to_vec())]
        );
        assert_eq!(history.streams[&SSRC].sent[0].payload_type, 96);
    }

    #[test]
    fn a_nacked_packet_is_resent_on_rtx_with_its_sequence_number_first() {
        let now = Instant::now();
        let mut history = bound(true);
        for seq in 10..20 {
            send(&mut history, now, SSRC, seq);
        }
        let resent = nack(&mut history, now, &[12, 15, 40]);
        assert_eq!(
            resent,
            vec![(RTX, 0, vec![0, 12, 0, 12]), (RTX, 1, vec![0, 15, 0, 15])]
        );
    }

    #[test]
    fn without_rtx_the_packet_itself_is_resent_and_other_streams_are_not_kept() {
        let now = Instant::now();
        let mut history = bound(false);
        send(&mut history, now, SSRC, 7);
        send(&mut history, now, 0x9999, 7);
        assert_eq!(nack(&mut history, now, &[7]), vec![(SSRC, 7, vec![0, 7])]);
        assert_eq!(history.kept(0x9999), 0);
    }

    #[test]
    fn packets_are_kept_for_a_time_not_a_count() {
        let start = Instant::now();
        let mut history = bound(true);
        // 1,000 packets a second for two seconds: the last KEEP of them are kept.
        for i in 0..2_000u16 {
            send(
                &mut history,
                start + Duration::from_millis(u64::from(i)),
                SSRC,
                i,
            );
        }
        let now = start + Duration::from_millis(1_999);
        let kept = history.kept(SSRC);
        assert_eq!(kept, KEEP.as_millis() as usize + 1);
        // The oldest still there is resent, the one before it is gone.
        let oldest = 2_000 - kept as u16;
        let resent: Vec<u16> = nack(&mut history, now, &[oldest - 1, oldest])
            .into_iter()
            .map(|(_, _, payload)| u16::from_be_bytes([payload[0], payload[1]]))
            .collect();
        assert_eq!(resent, vec![oldest]);
        // At 10 packets a second, its memory shrinks back.
        let mut at = now;
        for i in 0..40u16 {
            at += Duration::from_millis(100);
            send(&mut history, at, SSRC, 2_000 + i);
        }
        assert_eq!(history.kept(SSRC), 13);
        assert!(history.streams[&SSRC].sent.capacity() <= 64);
    }

    #[test]
    fn a_packet_with_more_than_the_usual_header_goes_out_again_as_it_was() {
        assert!(std::mem::size_of::<Kept>() <= 56);
        let now = Instant::now();
        let mut history = bound(false);
        let mut header = rtc::rtp::header::Header {
            version: 2,
            ssrc: SSRC,
            sequence_number: 9,
            timestamp: 1234,
            marker: true,
            payload_type: 96,
            csrc: vec![77],
            ..Default::default()
        };
        header
            .set_extension(1, Bytes::from_static(b"0"))
            .expect("extension");
        let packet = rtc::rtp::Packet {
            header: header.clone(),
            payload: Bytes::from_static(b"body"),
        };
        history
            .handle_write(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtp(packet.clone())),
            })
            .expect("written");
        history.poll_write();
        send(&mut history, now, SSRC, 10);
        assert!(history.streams[&SSRC].sent[1].header.is_none());
        nack(&mut history, now, &[]);
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: vec![NackPair {
                packet_id: 9,
                lost_packets: 1,
            }],
        };
        history
            .handle_read(TaggedPacket {
                now,
                transport: TransportContext::default(),
                message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(nack)])),
            })
            .expect("read");
        history.poll_read();
        let resent: Vec<rtc::rtp::Packet> = std::iter::from_fn(|| history.poll_write())
            .map(|msg| match msg.message.packet {
                Packet::Rtp(p) => p,
                _ => panic!("RTP"),
            })
            .collect();
        assert_eq!(resent.len(), 2);
        assert_eq!(resent[0], packet);
        let plain = &resent[1].header;
        assert_eq!(
            (
                plain.version,
                plain.ssrc,
                plain.sequence_number,
                plain.timestamp
            ),
            (2, SSRC, 10, 30_000)
        );
    }

    #[test]
    fn late_packets_and_wrapping_numbers_are_found() {
        let now = Instant::now();
        let mut history = bound(false);
        for seq in [65_534, 65_535, 1, 2, 0, 2] {
            send(&mut history, now, SSRC, seq);
        }
        assert_eq!(history.kept(SSRC), 5);
        let resent: Vec<u16> = nack(&mut history, now, &[65_535, 0, 1, 3])
            .into_iter()
            .map(|(_, seq, _)| seq)
            .collect();
        assert_eq!(resent, vec![65_535, 0, 1]);
    }
}
