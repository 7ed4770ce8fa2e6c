//! A publisher's retransmissions of simulcast layers, turned back into the packets they repair
//! (issue 16).
//!
//! Chrome publishes each simulcast layer with an RTX stream of its own (RFC 4588: its own SSRC
//! and payload type, each payload the original's sequence number, the OSN, then the original
//! payload). It signals no SSRCs for simulcast: a layer's packets name the layer by its RID in
//! the `rtp-stream-id` header extension, and its RTX packets by the layer's RID in
//! `repaired-rtp-stream-id` (rrid, RFC 8852), both with the MID.
//!
//! `rtc` 0.21 drops those RTX packets. It binds a layer by the RID its first packet carries
//! (`InterceptorHandler::bind_by_rid`), but returns early for a packet carrying an rrid
//! ("TODO: Add support of handling repair rtp stream id (rrid) #12"); and it recognises an RTX
//! packet only by an SSRC paired with a media SSRC by `a=ssrc-group:FID`
//! (`resolve_rtx_primary`), which a RID-only layer never has. So the packet crosses the
//! interceptor chain as a stream nobody bound, and the endpoint, finding no track for its SSRC,
//! drops it ("drop rtp packet"). The SFU's NACKs for a teacher's lost packets were answered and
//! the answers thrown away: a loss on the teacher's uplink stayed a hole in every student's
//! picture until the next keyframe, and the SFU kept asking (every 100 ms, until the loss was
//! a second old and `arrival_log` withheld it), so the teacher resent each lost packet about ten
//! times for nothing. Non-simulcast RTX, paired by FID, is de-encapsulated by `rtc` itself.
//!
//! [`RtxRepairInterceptor`] turns such a packet back into the original (SSRC and payload type
//! of the layer, sequence number the OSN, payload without it) in the chain, so that everything
//! after it sees a late packet of the layer, as if the original had arrived late:
//!
//! - Why in the chain, not in the router: the router gets only what `rtc`'s endpoint delivers,
//!   and before `rtc` the packets are encrypted. The chain is the one place that sees them
//!   decrypted before the endpoint drops them.
//! - Why at [`SLOT`]: application-ward of the tap (500), which counts what crosses the wire as it
//!   came, and wire-ward of `rtc`'s NACK generator (7_000), so the generator sees the lost
//!   sequence number arrive and stops asking for it. (`rtc`'s own FID de-encapsulation happens in
//!   the endpoint, after the chain, so the generator never learns of those repairs: see the
//!   README's weak-network section.) The arrival recorders (TWCC) are further on too; the
//!   repaired packet keeps its header extensions, so its transport-wide number is reported.
//! - What is taken for an RTX packet of a layer: one on an SSRC no stream was bound to, whose
//!   `repaired-rtp-stream-id` names the RID a bound layer's own packets carry (and whose MID, if
//!   both carry one, is the layer's), with another payload type than the layer's; from then on
//!   its SSRC and payload type alone (Chrome stops sending the extensions once a receiver
//!   reports on the stream, which the SFU does not, but a client may). `rtc` hands interceptors
//!   no RTX payload type for a RID-only layer (it does so only with an FID-paired SSRC), so the
//!   payload type is not checked against the codec's `apt`; that is safe because the only
//!   repair format the SFU negotiates for video is RTX (no RED, ULPFEC or FlexFEC for video;
//!   checked by a test here).
//! - What is not used: an RTX packet without an OSN (padding, which Chrome sends to probe the
//!   path), one whose original already arrived (Chrome also probes with copies of recent
//!   packets, and a resend can come twice), one older than the last [`WINDOW`] packets of its
//!   layer or from before the layer's first, and one ahead of the layer's newest (nothing asked
//!   for it). Each goes on unchanged, to be dropped by `rtc` after the chain as before (the
//!   arrival recorders still see it: the publisher's congestion control must hear that its
//!   probes arrived). So a subscriber never gets a packet twice from here.
//! - Why not FID-paired RTX as well, whose repairs `rtc`'s NACK generator never sees either
//!   (the SFU asked 7 more times for a packet the first resend had repaired, in the simulator):
//!   `rtc` binds such an RTX stream in its own right, so the generator keeps a receive log of
//!   the RTX sequence numbers too. Taking its packets away here would leave that log full of
//!   gaps, and the generator would NACK the RTX SSRC with RTX sequence numbers, which a sender
//!   may take for media ones. That needs `rtc` to change (see the README's weak networks).
//!
//! Pure apart from the interceptor plumbing: no clock, no I/O, and no input makes it panic
//! (`exercise`, also a fuzz target).

use std::collections::VecDeque;

use bytes::Bytes;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::{SDES_MID_URI, SDES_REPAIR_RTP_STREAM_ID_URI, SDES_RTP_STREAM_ID_URI};
use rtc::shared::error::Error;
use std::time::Instant;

use crate::metrics::SfuMetrics;

/// Position in the chain: just application-ward of the tap (`tap::SLOT`, 500), below every
/// built-in slot (`Slot::CongestionControl` is 1_000, the NACK generator 7_000).
pub const SLOT: usize = 600;

/// Packets of a layer remembered as arrived or not: about 3 s of a top layer (300 packets a
/// second), more than the second for which the SFU asks for a loss (`arrival_log::MAX_AGE`).
pub const WINDOW: u64 = 1024;

/// What [`RtxRepair::inspect`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not an RTX packet of a layer: left as it came.
    Passed,
    /// An RTX packet of a layer, now the packet it repairs.
    Repaired,
    /// An RTX packet of a layer that repairs nothing: left as it came.
    Unused(Unused),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unused {
    /// No original sequence number: padding.
    Empty,
    /// The original arrived already.
    Duplicate,
    /// Older than the layer's last [`WINDOW`] packets, or than its first.
    TooOld,
    /// Newer than the layer's newest packet, or the layer has none yet.
    Ahead,
}

/// The header extension ids a layer's packets are named by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    pub mid: Option<u8>,
    pub rid: Option<u8>,
    pub rrid: Option<u8>,
}

impl ExtensionIds {
    fn of(info: &StreamInfo) -> Self {
        let id = |uri: &str| {
            let found = info.rtp_header_extensions.iter().find(|e| e.uri == uri);
            found.and_then(|e| u8::try_from(e.id).ok())
        };
        Self {
            mid: id(SDES_MID_URI),
            rid: id(SDES_RTP_STREAM_ID_URI),
            rrid: id(SDES_REPAIR_RTP_STREAM_ID_URI),
        }
    }
}

/// The video streams of one connection that `rtc` bound without an RTX stream, and the RTX
/// streams found repairing them.
#[derive(Debug, Default)]
pub struct RtxRepair {
    layers: Vec<Layer>,
    /// RTX streams `rtc` knows itself (FID), bound in their own right: not layers.
    known_rtx: Vec<u32>,
}

#[derive(Debug)]
struct Layer {
    ssrc: u32,
    /// The payload type of its latest packet (that of its codec when bound).
    payload_type: u8,
    ids: ExtensionIds,
    /// MID and RID, as its packets carry them.
    mid: Option<Bytes>,
    rid: Option<Bytes>,
    /// The RTX stream found repairing it: SSRC and payload type.
    rtx: Option<(u32, u8)>,
    received: Received,
}

impl RtxRepair {
    /// A stream `rtc` bound. Only video streams without an RTX stream of `rtc`'s knowledge
    /// become layers; `rtc` de-encapsulates the others' RTX itself.
    pub fn bind(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.known_rtx.push(rtx);
            return;
        }
        let video = info.mime_type.get(..6);
        if self.known_rtx.contains(&info.ssrc)
            || !video.is_some_and(|m| m.eq_ignore_ascii_case("video/"))
        {
            return;
        }
        self.add_layer(info.ssrc, info.payload_type, ExtensionIds::of(info));
    }

    /// A video stream `ssrc` with payload type `payload_type`, its packets named by the
    /// extensions `ids`. A later stream with the same RID takes precedence (a new SSRC for the
    /// layer).
    pub fn add_layer(&mut self, ssrc: u32, payload_type: u8, ids: ExtensionIds) {
        self.unbind(ssrc);
        self.layers.push(Layer {
            ssrc,
            payload_type,
            ids,
            mid: None,
            rid: None,
            rtx: None,
            received: Received::default(),
        });
    }

    pub fn unbind(&mut self, ssrc: u32) {
        self.layers.retain(|layer| layer.ssrc != ssrc);
        self.known_rtx.retain(|&rtx| rtx != ssrc);
    }

    /// Looks at a packet from the publisher; an RTX packet of a layer that repairs a packet
    /// not yet arrived is rewritten into that packet.
    pub fn inspect(&mut self, packet: &mut rtc::rtp::Packet) -> Outcome {
        let header = &packet.header;
        if let Some(layer) = self.layers.iter_mut().find(|l| l.ssrc == header.ssrc) {
            layer.note(header);
            return Outcome::Passed;
        }
        let Some(layer) = self.repaired_layer(header) else {
            return Outcome::Passed;
        };
        let layer = &mut self.layers[layer];
        layer.rtx = Some((header.ssrc, header.payload_type));
        let Some(&[high, low]) = packet.payload.first_chunk::<2>() else {
            return Outcome::Unused(Unused::Empty);
        };
        let original = u16::from_be_bytes([high, low]);
        if let Err(unused) = layer.received.missing(original) {
            return Outcome::Unused(unused);
        }
        layer.received.mark(original);
        packet.header.ssrc = layer.ssrc;
        packet.header.payload_type = layer.payload_type;
        packet.header.sequence_number = original;
        // The sender strips the original's padding before resending (RFC 4588 section 4), and
        // `rtc` stripped this packet's own when it parsed it.
        packet.header.padding = false;
        packet.payload = packet.payload.slice(2..);
        Outcome::Repaired
    }

    /// The layer an RTX packet with this header repairs, if it is one: the layer whose RTX
    /// stream it is, or the newest layer its `repaired-rtp-stream-id` names.
    fn repaired_layer(&self, header: &rtc::rtp::header::Header) -> Option<usize> {
        let rtx = Some((header.ssrc, header.payload_type));
        if let Some(index) = self.layers.iter().rposition(|l| l.rtx == rtx) {
            return Some(index);
        }
        if !header.extension {
            return None;
        }
        self.layers.iter().rposition(|layer| {
            let extension = |id: Option<u8>| id.and_then(|id| header.get_extension(id));
            let named = extension(layer.ids.rrid).is_some_and(|rid| Some(rid) == layer.rid);
            let same_mid = match (extension(layer.ids.mid), &layer.mid) {
                (Some(mid), Some(layer_mid)) => mid == layer_mid,
                _ => true,
            };
            named && same_mid && header.payload_type != layer.payload_type
        })
    }
}

impl Layer {
    /// One of the layer's own packets arrived.
    fn note(&mut self, header: &rtc::rtp::header::Header) {
        self.payload_type = header.payload_type;
        if header.extension {
            // Copied (once): the extension's bytes may hold on to the whole datagram.
            let learn = |id: Option<u8>, known: &mut Option<Bytes>| {
                if let Some(value) = id.and_then(|id| header.get_extension(id))
                    && known.as_deref() != Some(&value[..])
                {
                    *known = Some(Bytes::copy_from_slice(&value));
                }
            };
            learn(self.ids.mid, &mut self.mid);
            learn(self.ids.rid, &mut self.rid);
        }
        self.received.mark(header.sequence_number);
    }
}

/// Which of a stream's last [`WINDOW`] sequence numbers arrived.
#[derive(Debug, Clone)]
struct Received {
    /// The newest sequence number, extended to 64 bits; `None` before the first.
    newest: Option<u64>,
    /// The oldest that arrived: anything older predates the stream as far as we know.
    oldest: u64,
    /// Bit `seq % WINDOW`: arrived.
    bits: [u64; (WINDOW / 64) as usize],
}

impl Default for Received {
    fn default() -> Self {
        Self {
            newest: None,
            oldest: 0,
            bits: [0; (WINDOW / 64) as usize],
        }
    }
}

impl Received {
    /// `seq` extended to 64 bits next to the newest one (within half the 16-bit space).
    fn extend(newest: u64, seq: u16) -> u64 {
        let ahead = seq.wrapping_sub(newest as u16) as i16;
        newest.wrapping_add_signed(i64::from(ahead))
    }

    fn bit(&mut self, ext: u64, arrived: bool) {
        let (word, bit) = ((ext % WINDOW / 64) as usize, ext % 64);
        if arrived {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
    }

    fn arrived(&self, ext: u64) -> bool {
        self.bits[(ext % WINDOW / 64) as usize] & (1 << (ext % 64)) != 0
    }

    fn mark(&mut self, seq: u16) {
        let Some(newest) = self.newest else {
            // Far from zero, so that earlier numbers extend without wrapping.
            let ext = (1 << 48) + u64::from(seq);
            self.newest = Some(ext);
            self.oldest = ext;
            self.bit(ext, true);
            return;
        };
        let ext = Self::extend(newest, seq);
        if ext > newest {
            if ext - newest >= WINDOW {
                self.bits = [0; (WINDOW / 64) as usize];
            } else {
                for skipped in newest + 1..ext {
                    self.bit(skipped, false);
                }
            }
            self.newest = Some(ext);
        } else if newest - ext >= WINDOW {
            return;
        }
        self.oldest = self.oldest.min(ext);
        self.bit(ext, true);
    }

    /// Whether `seq` is a packet that has not arrived and may still: `Err` says why not.
    fn missing(&self, seq: u16) -> Result<(), Unused> {
        let Some(newest) = self.newest else {
            return Err(Unused::Ahead);
        };
        let ext = Self::extend(newest, seq);
        if ext > newest {
            Err(Unused::Ahead)
        } else if ext < self.oldest || newest - ext >= WINDOW {
            Err(Unused::TooOld)
        } else if self.arrived(ext) {
            Err(Unused::Duplicate)
        } else {
            Ok(())
        }
    }
}

/// [`RtxRepair`] in a connection's interceptor chain, counting what it repairs in
/// `aula_rtx_repaired_total` and the RTX packets it does not use in `aula_rtx_unused_total`.
pub struct RtxRepairInterceptor {
    repair: RtxRepair,
    metrics: SfuMetrics,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RtxRepairInterceptor {
    pub fn new(metrics: SfuMetrics) -> Self {
        Self {
            repair: RtxRepair::default(),
            metrics,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxRepairInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(rtp) = &mut msg.message.packet {
            match self.repair.inspect(rtp) {
                Outcome::Passed => {}
                Outcome::Repaired => self.metrics.rtx_repaired.inc(),
                Outcome::Unused(_) => self.metrics.rtx_unused.inc(),
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for RtxRepairInterceptor {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.repair.bind(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.repair.unbind(info.ssrc);
    }
}

/// Runs arbitrary bytes through a repairer with two layers bound, as length-prefixed RTP
/// packets, checking what it claims of each: for the fuzz target and the tests. Never panics
/// on any input unless a claim fails.
#[doc(hidden)]
pub fn exercise(mut data: &[u8]) {
    use rtc::shared::marshal::Unmarshal;
    let ids = ExtensionIds {
        mid: Some(1),
        rid: Some(2),
        rrid: Some(3),
    };
    let mut repair = RtxRepair::default();
    repair.add_layer(0x10, 96, ids);
    repair.add_layer(0x11, 96, ids);
    while let Some((&len, rest)) = data.split_first() {
        let (raw, rest) = rest.split_at(usize::from(len).min(rest.len()));
        data = rest;
        let Ok(mut packet) = rtc::rtp::Packet::unmarshal(&mut &raw[..]) else {
            continue;
        };
        let before = packet.clone();
        match repair.inspect(&mut packet) {
            Outcome::Repaired => {
                assert!([0x10, 0x11].contains(&packet.header.ssrc));
                assert_eq!(packet.payload.len() + 2, before.payload.len());
                assert_eq!(
                    packet.header.sequence_number.to_be_bytes(),
                    before.payload[..2]
                );
                assert_eq!(packet.header.timestamp, before.header.timestamp);
            }
            Outcome::Passed | Outcome::Unused(_) => assert_eq!(packet, before),
        }
    }
}

#[cfg(test)]
mod tests {
    use rtc::interceptor::RTPHeaderExtension;

    use super::*;

    const LAYER: u32 = 0xA0;
    const RTX: u32 = 0xB0;
    const VP8: u8 = 96;
    const RTX_PT: u8 = 97;
    const IDS: ExtensionIds = ExtensionIds {
        mid: Some(1),
        rid: Some(2),
        rrid: Some(3),
    };

    /// A packet with the given extensions (id, value).
    fn packet(
        ssrc: u32,
        pt: u8,
        seq: u16,
        extensions: &[(u8, &str)],
        payload: &[u8],
    ) -> rtc::rtp::Packet {
        let mut packet = rtc::rtp::Packet::default();
        packet.header.version = 2;
        packet.header.ssrc = ssrc;
        packet.header.payload_type = pt;
        packet.header.sequence_number = seq;
        packet.header.timestamp = 9000;
        if !extensions.is_empty() {
            packet.header.extension = true;
            packet.header.extension_profile = 0xBEDE;
        }
        for &(id, value) in extensions {
            let value = Bytes::copy_from_slice(value.as_bytes());
            packet.header.set_extension(id, value).expect("fits");
        }
        packet.payload = Bytes::copy_from_slice(payload);
        packet
    }

    /// A layer's own packet, naming it "0"/`rid`.
    fn media(seq: u16, rid: &str) -> rtc::rtp::Packet {
        packet(LAYER, VP8, seq, &[(1, "0"), (2, rid)], b"frame")
    }

    /// Chrome's RTX packet for `original`, naming the layer `rrid`.
    fn rtx(rtx_seq: u16, original: u16, rrid: &str) -> rtc::rtp::Packet {
        let mut payload = original.to_be_bytes().to_vec();
        payload.extend_from_slice(b"frame");
        packet(RTX, RTX_PT, rtx_seq, &[(1, "0"), (3, rrid)], &payload)
    }

    fn repair_with_layer() -> RtxRepair {
        let mut repair = RtxRepair::default();
        repair.add_layer(LAYER, VP8, IDS);
        repair
    }

    #[test]
    fn an_rtx_packet_naming_a_layer_becomes_the_packet_it_repairs() {
        let mut repair = repair_with_layer();
        for seq in [10, 11, 13] {
            assert_eq!(repair.inspect(&mut media(seq, "h")), Outcome::Passed);
        }
        let mut resend = rtx(0, 12, "h");
        resend.header.padding = true;
        assert_eq!(repair.inspect(&mut resend), Outcome::Repaired);
        let header = &resend.header;
        assert_eq!(
            (header.ssrc, header.payload_type, header.sequence_number),
            (LAYER, VP8, 12)
        );
        assert!(!header.padding);
        assert_eq!(header.timestamp, 9000, "as is");
        assert_eq!(&resend.payload[..], b"frame");

        // Twice: the second is of no use.
        let mut again = rtx(1, 12, "h");
        assert_eq!(
            repair.inspect(&mut again),
            Outcome::Unused(Unused::Duplicate)
        );
        assert_eq!(again, rtx(1, 12, "h"), "left as it came");
    }

    #[test]
    fn a_learnt_rtx_stream_is_known_by_its_ssrc_without_extensions() {
        let mut repair = repair_with_layer();
        for seq in [1, 2, 4, 6] {
            repair.inspect(&mut media(seq, "f"));
        }
        assert_eq!(repair.inspect(&mut rtx(0, 3, "f")), Outcome::Repaired);
        let mut bare = packet(RTX, RTX_PT, 1, &[], &[0, 5, 0xAA]);
        assert_eq!(repair.inspect(&mut bare), Outcome::Repaired);
        assert_eq!(bare.header.sequence_number, 5);
        // The layer's own packets stop naming it too (after a receiver report): still known.
        assert_eq!(
            repair.inspect(&mut packet(LAYER, VP8, 8, &[], b"")),
            Outcome::Passed
        );
        let mut late = packet(RTX, RTX_PT, 2, &[], &[0, 7]);
        assert_eq!(repair.inspect(&mut late), Outcome::Repaired);
        assert!(
            late.payload.is_empty(),
            "an empty original payload is a payload"
        );
    }

    #[test]
    fn what_repairs_nothing_is_left_alone() {
        let mut repair = repair_with_layer();
        // Before any packet of the layer: nothing to repair yet.
        assert_eq!(
            repair.inspect(&mut rtx(0, 3, "h")),
            Outcome::Passed,
            "no layer names itself h yet"
        );
        for seq in 100..=110 {
            if seq != 105 {
                repair.inspect(&mut media(seq, "h"));
            }
        }
        let cases = [
            (rtx(1, 111, "h"), Outcome::Unused(Unused::Ahead)),
            (rtx(2, 99, "h"), Outcome::Unused(Unused::TooOld)),
            (rtx(3, 104, "h"), Outcome::Unused(Unused::Duplicate)),
            // Padding only, as Chrome probes.
            (
                packet(RTX, RTX_PT, 4, &[(1, "0"), (3, "h")], &[]),
                Outcome::Unused(Unused::Empty),
            ),
            (
                packet(RTX, RTX_PT, 5, &[(1, "0"), (3, "h")], &[7]),
                Outcome::Unused(Unused::Empty),
            ),
            // Another stream naming another layer's RID, another MID, the layer's own payload
            // type, or the layer's RID as its own (no rrid).
            (
                packet(0xC3, RTX_PT, 6, &[(1, "0"), (3, "q")], &[0, 105]),
                Outcome::Passed,
            ),
            (
                packet(0xC0, RTX_PT, 7, &[(1, "1"), (3, "h")], &[0, 105]),
                Outcome::Passed,
            ),
            (
                packet(0xC1, VP8, 8, &[(1, "0"), (3, "h")], &[0, 105]),
                Outcome::Passed,
            ),
            (
                packet(0xC2, RTX_PT, 9, &[(1, "0"), (2, "h")], &[0, 105]),
                Outcome::Passed,
            ),
        ];
        for (mut packet, outcome) in cases {
            let before = packet.clone();
            assert_eq!(repair.inspect(&mut packet), outcome, "{before:?}");
            assert_eq!(packet, before, "unchanged");
        }
        assert_eq!(repair.inspect(&mut rtx(10, 105, "h")), Outcome::Repaired);
    }

    #[test]
    fn the_window_follows_the_layer_across_the_sequence_wrap() {
        let mut repair = repair_with_layer();
        for seq in (65_530..=65_535).chain(0..10) {
            if seq != 65_534 && seq != 3 {
                repair.inspect(&mut media(seq, "q"));
            }
        }
        assert_eq!(repair.inspect(&mut rtx(0, 65_534, "q")), Outcome::Repaired);
        assert_eq!(repair.inspect(&mut rtx(1, 3, "q")), Outcome::Repaired);
        assert_eq!(
            repair.inspect(&mut rtx(2, 65_529, "q")),
            Outcome::Unused(Unused::TooOld),
            "before the layer's first"
        );
        // A long gap: what fell out of the window is too old, the gap itself missing.
        repair.inspect(&mut media(2_000, "q"));
        assert_eq!(
            repair.inspect(&mut rtx(3, 900, "q")),
            Outcome::Unused(Unused::TooOld)
        );
        assert_eq!(repair.inspect(&mut rtx(4, 1_999, "q")), Outcome::Repaired);
        assert_eq!(repair.inspect(&mut rtx(5, 1_000, "q")), Outcome::Repaired);
    }

    #[test]
    fn layers_of_the_same_rid_in_two_sections_are_told_apart_by_mid() {
        let mut repair = repair_with_layer();
        repair.add_layer(0xA1, VP8, IDS);
        for seq in [1, 3] {
            repair.inspect(&mut media(seq, "h"));
            let mut screen = packet(0xA1, VP8, seq, &[(1, "1"), (2, "h")], b"");
            repair.inspect(&mut screen);
        }
        let mut camera = rtx(0, 2, "h");
        assert_eq!(repair.inspect(&mut camera), Outcome::Repaired);
        assert_eq!(camera.header.ssrc, LAYER);
        let mut screen = packet(0xB1, RTX_PT, 0, &[(1, "1"), (3, "h")], &[0, 2]);
        assert_eq!(repair.inspect(&mut screen), Outcome::Repaired);
        assert_eq!(screen.header.ssrc, 0xA1);
    }

    #[test]
    fn streams_rtc_pairs_with_rtx_itself_and_audio_are_not_layers() {
        let extensions = vec![
            RTPHeaderExtension {
                uri: SDES_MID_URI.to_owned(),
                id: 1,
            },
            RTPHeaderExtension {
                uri: SDES_RTP_STREAM_ID_URI.to_owned(),
                id: 2,
            },
            RTPHeaderExtension {
                uri: SDES_REPAIR_RTP_STREAM_ID_URI.to_owned(),
                id: 3,
            },
        ];
        let video = StreamInfo {
            ssrc: LAYER,
            payload_type: VP8,
            mime_type: "video/VP8".to_owned(),
            rtp_header_extensions: extensions,
            ..Default::default()
        };
        let mut repair = RtxRepair::default();
        repair.bind(&video);
        assert_eq!(repair.layers.len(), 1);
        assert_eq!(repair.layers[0].ids, IDS);
        repair.unbind(LAYER);
        assert!(repair.layers.is_empty());

        // FID-paired: `rtc` de-encapsulates its RTX; its RTX stream is bound in its own right.
        repair.bind(&StreamInfo {
            ssrc_rtx: Some(RTX),
            payload_type_rtx: Some(RTX_PT),
            ..video.clone()
        });
        repair.bind(&StreamInfo {
            ssrc: RTX,
            payload_type: RTX_PT,
            ..video.clone()
        });
        repair.bind(&StreamInfo {
            ssrc: 0xD0,
            mime_type: "audio/opus".to_owned(),
            ..video
        });
        assert!(repair.layers.is_empty());
    }

    /// `rtc` says nothing of a RID-only layer's RTX payload type, so any other payload type
    /// naming the layer in `repaired-rtp-stream-id` is taken for its RTX. That holds only while
    /// RTX is the one repair format the SFU negotiates for video.
    #[test]
    fn the_sfu_negotiates_no_video_repair_format_but_rtx() {
        use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
        let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
        let mut pc = crate::peer::build(
            String::new(),
            String::new(),
            &metrics,
            crate::peer::Role::Publisher,
            Default::default(),
            Instant::now(),
        )
        .expect("peer");
        pc.add_transceiver_from_kind(RtpCodecKind::Video, None)
            .expect("video transceiver");
        let sdp = pc.create_offer(None).expect("offer").sdp;
        let video = sdp.split("m=video").nth(1).expect("a video section");
        let video = video.split("\nm=").next().unwrap_or(video);
        let formats: Vec<&str> = video
            .lines()
            .filter_map(|line| line.strip_prefix("a=rtpmap:"))
            .filter_map(|map| map.split([' ', '/']).nth(1))
            .collect();
        assert!(formats.contains(&"rtx"), "{formats:?}");
        for format in formats {
            assert!(
                ["VP8", "VP9", "H264", "H265", "AV1", "rtx"].contains(&format),
                "{format} in the SFU's video formats: see `repaired_layer`"
            );
        }
    }

    /// Stable stand-in for the fuzz target: random packets, random truncations, extensions
    /// naming the layers, none may panic.
    #[test]
    fn arbitrary_packets_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let mut data = Vec::new();
            for _ in 0..40 {
                let mut packet = packet(
                    [0x10, 0x11, 0x20, 0x21][next() as usize % 4],
                    [96, 97, 98][next() as usize % 3],
                    next() as u16 % 64,
                    &[
                        (1, "0"),
                        ([2, 3][next() as usize % 2], ["q", "h"][next() as usize % 2]),
                    ],
                    &next().to_be_bytes()[..next() as usize % 9],
                );
                packet.header.padding = next() % 5 == 0;
                let raw = rtc::shared::marshal::Marshal::marshal(&packet).expect("marshals");
                let len = (next() as usize % (raw.len() + 1)).min(255);
                let raw = if next() % 3 == 0 {
                    &raw[..len]
                } else {
                    &raw[..raw.len().min(255)]
                };
                data.push(raw.len() as u8);
                data.extend_from_slice(raw);
            }
            exercise(&data);
        }
        exercise(&[]);
        exercise(&[200, 0x80]);
    }
}
