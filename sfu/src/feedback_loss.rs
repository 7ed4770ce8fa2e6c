//! Which sent packets a receiver's transport-wide feedback reports lost, as NACKs.
//!
//! A receiver asks for a lost packet with a NACK as soon as it sees the gap. On a lossy link
//! the NACK is lost as often as the media, and a receive-only browser asks again only a round
//! trip later; it cannot measure the RTT and assumes 100 ms. With the resend's own trip, the
//! frame arrives too late to play on time, and the picture freezes.
//!
//! The receiver's TWCC feedback, sent every 50–100 ms for congestion control, says the same
//! thing on its own: a packet it lists as not received is lost, unless it is merely late. The
//! SFU's tap turns those into NACKs for `rtc`'s responder, so every loss gets a second,
//! independent request, and both are lost for 1 loss in 100 instead of 1 in 10 at 10 % loss.
//! A packet that has already gone out again since the copy reported lost (the receiver's own
//! NACK came first, as it usually does) is not asked for twice: the resend carried a
//! transport-wide number of its own, on the media stream or on its RTX stream (numbered by
//! `bwe::rtx`).
//!
//! A resend reported lost is asked for again once; a second resend reported lost is left to
//! the receiver's own NACK. At heavy loss the first helps (a lost resend otherwise waits for
//! the receiver's next NACK, itself lost as often). Without the limit, a resend the receiver
//! drops unreported would be resent every feedback interval until it is too old: a receiver
//! that negotiated no RTX gets a probe copy as the very packet again, which its SRTP replay
//! check drops before its feedback sees it, and Aula's load-test clients (`rtc` peers without
//! RTX) drew 8,000 resends in 10 s from 20 of them on a lossless link that way. (Probe copies
//! now go only to receivers with RTX, see `tap`; the limit keeps any other receiver that
//! leaves resends unreported out of such a loop.)
//!
//! A feedback packet can be lost too, and the receiver does not report its packets again: each
//! feedback covers the numbers from where the one before it ended. So a feedback that starts
//! past where the last one received ended shows that the numbers between were reported in a
//! feedback that never came ([`TransportLog::unreported`]), and the packets sent on them are
//! asked for as reported losses are, without knowing whether they arrived. At 50 % loss both ways, half of all
//! losses are reported only in feedback that is itself lost, and for one in four neither that
//! nor the receiver's NACK arrives: without this, the next chance is the receiver's NACK a
//! round trip later, lost half the time again. A gap of over [`MAX_UNREPORTED`] numbers is an
//! outage, not a lost report: what it held is too old to resend, and a keyframe restores the
//! picture (see `router::forwarding`).
//!
//! [`TransportLog`] remembers which RTP packet each recent transport-wide sequence number was
//! stamped on. Pure: no clock, no I/O.

use std::time::Instant;

use rtc::interceptor::StreamInfo;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};

/// The transport-wide sequence number header extension.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Packets remembered at first, indexed by the low bits of the transport-wide sequence number.
const MIN_RING: usize = 256;

/// Most packets remembered. The ring doubles (up to this) when a number would take the slot of
/// a packet sent less than `nack_age::MAX_AGE` ago, after which a resend is not worth sending
/// anyway (and far longer than feedback takes to come back): it holds that long of the
/// connection's packets whatever their rate, and a student's costs what its rate needs (issue
/// 15: 24 KB per connection before, for 2,048 packets).
const MAX_RING: usize = 16_384;

/// The most numbers between two feedback packets that are resent unreported: at a class's
/// rates (tens to hundreds of packets a second) one or two lost reports, not an outage.
const MAX_UNREPORTED: u16 = 64;

/// What one transport-wide sequence number was stamped on.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Sent {
    transport_seq: u16,
    ssrc: u32,
    seq: u16,
    /// A resend (or probe copy), not the first transmission.
    resend: bool,
    /// When it was sent: milliseconds since the log's epoch.
    at_ms: u32,
}

/// Which RTP packet each of a connection's recent transport-wide sequence numbers went out on.
#[derive(Default)]
pub struct TransportLog {
    /// The header extension's id, once a stream that carries it is bound.
    extension_id: Option<u8>,
    /// Allocated with the first packet recorded: connections without TWCC pay nothing.
    /// [`MIN_RING`] to [`MAX_RING`] slots, a power of two.
    ring: Option<Box<[Option<Sent>]>>,
    /// The first packet's instant, which `Sent::at_ms` counts from.
    epoch: Option<Instant>,
    /// The newest transport-wide sequence number recorded.
    newest: u16,
    /// One past the newest number a feedback packet has reported on.
    reported_to: Option<u16>,
}

/// The id a stream negotiated for the transport-wide sequence number's header extension.
pub fn transport_cc_id(info: &StreamInfo) -> Option<u8> {
    info.rtp_header_extensions
        .iter()
        .find(|ext| ext.uri == TRANSPORT_CC_URI)
        .map(|ext| ext.id as u8)
}

/// The transport-wide sequence number in `header`, under extension id `id`.
pub fn transport_seq(header: &rtc::rtp::header::Header, id: u8) -> Option<u16> {
    let value = header.get_extension(id)?;
    Some(u16::from_be_bytes(value.get(..2)?.try_into().ok()?))
}

impl TransportLog {
    /// Learns the extension's id from a local stream that negotiated it (every stream of a
    /// bundled connection shares it).
    pub fn bind(&mut self, info: &StreamInfo) {
        if let Some(id) = transport_cc_id(info) {
            self.extension_id = Some(id);
        }
    }

    /// Records that the outgoing RTP packet with `header` (a first transmission, or a `resend`)
    /// carries packet `seq` of stream `ssrc` (a resend on an RTX stream carries another
    /// stream's), by the transport-wide sequence number in `header`, if it has one; it is sent
    /// `now`.
    pub fn record(
        &mut self,
        header: &rtc::rtp::header::Header,
        ssrc: u32,
        seq: u16,
        resend: bool,
        now: Instant,
    ) {
        let Some(id) = self.extension_id else { return };
        let Some(transport_seq) = transport_seq(header, id) else {
            return;
        };
        let epoch = *self.epoch.get_or_insert(now);
        let at_ms = now.saturating_duration_since(epoch).as_millis() as u32;
        let ring = self
            .ring
            .get_or_insert_with(|| vec![None; MIN_RING].into_boxed_slice());
        let max_age_ms = crate::nack_age::MAX_AGE.as_millis() as u32;
        // The slot holds another packet still worth resending: too few slots for this rate.
        while ring.len() < MAX_RING
            && ring[usize::from(transport_seq) & (ring.len() - 1)].is_some_and(|held| {
                held.transport_seq != transport_seq && at_ms.wrapping_sub(held.at_ms) <= max_age_ms
            })
        {
            let len = ring.len() * 2;
            let mut grown = vec![None; len].into_boxed_slice();
            for sent in ring.iter().flatten() {
                grown[usize::from(sent.transport_seq) & (len - 1)] = Some(*sent);
            }
            *ring = grown;
        }
        ring[usize::from(transport_seq) & (ring.len() - 1)] = Some(Sent {
            transport_seq,
            ssrc,
            seq,
            resend,
            at_ms,
        });
        self.newest = transport_seq;
    }

    /// NACKs, one per stream, for the first transmissions `feedback` reports not received that
    /// have not gone out again since.
    pub fn nacks(&self, feedback: &TransportLayerCc) -> Vec<TransportLayerNack> {
        self.lost(feedback, not_received(feedback))
    }

    /// NACKs, as [`Self::nacks`] makes them, for the packets numbered between where the
    /// feedback before ended and where `feedback` starts: reported in a feedback packet that
    /// was lost (see the module docs).
    pub fn unreported(&mut self, feedback: &TransportLayerCc) -> Vec<TransportLayerNack> {
        let base = feedback.base_sequence_number;
        let end = base.wrapping_add(feedback.packet_status_count);
        let ahead = |of: u16, than: u16| (1..0x8000).contains(&of.wrapping_sub(than));
        let from = self.reported_to;
        if from.is_none_or(|to| ahead(end, to)) {
            self.reported_to = Some(end);
        }
        let Some(to) = from.filter(|&to| ahead(base, to)) else {
            return Vec::new();
        };
        let gap = base.wrapping_sub(to);
        if gap > MAX_UNREPORTED {
            return Vec::new();
        }
        self.lost(feedback, (0..gap).map(|i| to.wrapping_add(i)))
    }

    /// NACKs for the packets numbered `numbers`, as [`Self::nacks`] asks for them.
    fn lost(
        &self,
        feedback: &TransportLayerCc,
        numbers: impl Iterator<Item = u16>,
    ) -> Vec<TransportLayerNack> {
        let Some(ring) = &self.ring else {
            return Vec::new();
        };
        let slots = ring.len();
        let lookup = |transport_seq: u16| {
            ring[usize::from(transport_seq) & (slots - 1)]
                .filter(|sent| sent.transport_seq == transport_seq)
        };
        // Sent again since: a later transport-wide number carried the same packet. Scans at
        // most the ring; only lost packets are looked up.
        let sent_again = |lost: Sent| {
            let ahead = self.newest.wrapping_sub(lost.transport_seq);
            (1..=ahead.min(slots.min(usize::from(u16::MAX)) as u16)).any(|step| {
                lookup(lost.transport_seq.wrapping_add(step))
                    .is_some_and(|later| later.ssrc == lost.ssrc && later.seq == lost.seq)
            })
        };
        // A resend, resent before: the second resend of a packet is not asked for again.
        let resent_before = |lost: Sent| {
            (1..slots.min(usize::from(u16::MAX)) as u16).any(|step| {
                lookup(lost.transport_seq.wrapping_sub(step)).is_some_and(|earlier| {
                    earlier.resend && earlier.ssrc == lost.ssrc && earlier.seq == lost.seq
                })
            })
        };
        let mut lost: Vec<Sent> = numbers
            .filter_map(lookup)
            .filter(|&sent| !sent_again(sent))
            .filter(|&sent| !sent.resend || !resent_before(sent))
            .collect();
        lost.sort_by_key(|sent| sent.ssrc);
        lost.chunk_by(|a, b| a.ssrc == b.ssrc)
            .map(|stream| {
                let seqs: Vec<u16> = stream.iter().map(|sent| sent.seq).collect();
                TransportLayerNack {
                    sender_ssrc: feedback.sender_ssrc,
                    media_ssrc: stream[0].ssrc,
                    nacks: nack_pairs_from_sequence_numbers(&seqs),
                }
            })
            .collect()
    }
}

/// The transport-wide sequence numbers a feedback packet lists as not received.
fn not_received(feedback: &TransportLayerCc) -> impl Iterator<Item = u16> + '_ {
    let symbols = feedback.packet_chunks.iter().flat_map(|chunk| {
        let (symbol, run, list): (_, usize, &[SymbolTypeTcc]) = match chunk {
            PacketStatusChunk::RunLengthChunk(run) => (
                Some(run.packet_status_symbol),
                usize::from(run.run_length),
                &[],
            ),
            PacketStatusChunk::StatusVectorChunk(vector) => (None, 0, &vector.symbol_list),
        };
        std::iter::repeat_n(symbol, run)
            .flatten()
            .chain(list.iter().copied())
    });
    // A chunk may describe more packets than the feedback covers (a status vector is padded
    // to its full width): only the first `packet_status_count` count.
    symbols
        .take(usize::from(feedback.packet_status_count))
        .enumerate()
        .filter(|(_, symbol)| *symbol == SymbolTypeTcc::PacketNotReceived)
        .map(|(offset, _)| feedback.base_sequence_number.wrapping_add(offset as u16))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
    };

    use super::*;

    const EXT: u8 = 3;
    const VIDEO: u32 = 0xB0;
    const AUDIO: u32 = 0xA0;

    fn log() -> TransportLog {
        let mut log = TransportLog::default();
        log.bind(&StreamInfo {
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: TRANSPORT_CC_URI.to_owned(),
                id: u16::from(EXT),
            }],
            ..Default::default()
        });
        log
    }

    fn send(log: &mut TransportLog, transport_seq: u16, ssrc: u32, seq: u16) {
        record(log, transport_seq, ssrc, seq, false);
    }

    fn resend(log: &mut TransportLog, transport_seq: u16, ssrc: u32, seq: u16) {
        record(log, transport_seq, ssrc, seq, true);
    }

    fn record(log: &mut TransportLog, transport_seq: u16, ssrc: u32, seq: u16, resend: bool) {
        let mut header = rtc::rtp::header::Header {
            ssrc,
            sequence_number: seq,
            ..Default::default()
        };
        header
            .set_extension(EXT, Bytes::copy_from_slice(&transport_seq.to_be_bytes()))
            .expect("one-byte extension");
        // 10 ms apart, in the order of their numbers.
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        let now = start + std::time::Duration::from_millis(10 * u64::from(transport_seq));
        log.record(&header, ssrc, seq, resend, now);
    }

    use SymbolTypeTcc::{PacketNotReceived as LOST, PacketReceivedSmallDelta as GOT};

    /// Feedback from `base` with one status vector of `symbols` (two-bit symbols, up to 7).
    fn feedback(base: u16, symbols: &[SymbolTypeTcc]) -> TransportLayerCc {
        let mut symbol_list = symbols.to_vec();
        symbol_list.resize(7, LOST);
        TransportLayerCc {
            sender_ssrc: 1,
            base_sequence_number: base,
            packet_status_count: symbols.len() as u16,
            packet_chunks: vec![PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list,
            })],
            ..Default::default()
        }
    }

    /// The NACKs as (media SSRC, sequence numbers).
    fn asked(nacks: Vec<TransportLayerNack>) -> Vec<(u32, Vec<u16>)> {
        nacks
            .into_iter()
            .map(|nack| {
                let seqs = nack
                    .nacks
                    .iter()
                    .flat_map(|pair| pair.packet_list())
                    .collect();
                (nack.media_ssrc, seqs)
            })
            .collect()
    }

    #[test]
    fn packets_reported_not_received_are_asked_for_per_stream() {
        let mut log = log();
        for (transport_seq, ssrc, seq) in [
            (100, AUDIO, 7),
            (101, VIDEO, 50),
            (102, VIDEO, 51),
            (103, AUDIO, 8),
            (104, VIDEO, 52),
        ] {
            send(&mut log, transport_seq, ssrc, seq);
        }
        // The padding after the fifth symbol reads "not received" but covers nothing.
        let nacks = log.nacks(&feedback(100, &[GOT, LOST, GOT, LOST, LOST]));
        assert_eq!(asked(nacks), vec![(AUDIO, vec![8]), (VIDEO, vec![50, 52])]);
    }

    /// A feedback packet lost: the next one starts past where the one before ended, and the
    /// packets numbered in between are asked for, though they may have arrived; not one
    /// already sent again (its receiver's NACK came through).
    #[test]
    fn packets_only_a_lost_feedback_reported_on_are_asked_for() {
        let mut log = log();
        for n in 0..12 {
            send(&mut log, n, VIDEO, 100 + n);
        }
        resend(&mut log, 12, VIDEO, 104);
        assert!(
            log.unreported(&feedback(0, &[GOT; 3])).is_empty(),
            "the first"
        );
        // The feedback on 3-5 is lost; the next one reports on 6-8.
        assert_eq!(
            asked(log.unreported(&feedback(6, &[GOT; 3]))),
            [(VIDEO, vec![103, 105])]
        );
        // A late or repeated report, and the next in line, leave nothing unreported.
        assert!(log.unreported(&feedback(3, &[GOT; 3])).is_empty());
        assert!(log.unreported(&feedback(9, &[GOT; 2])).is_empty());
        assert!(log.unreported(&feedback(11, &[GOT; 2])).is_empty());
    }

    /// Feedback missing for more numbers than one or two lost reports cover: the path was out,
    /// and what was sent meanwhile is not resent blindly.
    #[test]
    fn a_gap_longer_than_lost_reports_is_an_outage() {
        let mut log = log();
        for n in 0..200 {
            send(&mut log, n, VIDEO, n);
        }
        assert!(log.unreported(&feedback(0, &[GOT; 2])).is_empty());
        let past = 2 + MAX_UNREPORTED + 1;
        assert!(log.unreported(&feedback(past, &[GOT; 2])).is_empty());
        assert_eq!(
            asked(log.unreported(&feedback(past + 4, &[GOT]))).len(),
            1,
            "and after it, lost reports are noticed again"
        );
    }

    #[test]
    fn a_packet_sent_again_since_is_not_asked_for_twice() {
        let mut log = log();
        send(&mut log, 200, VIDEO, 10);
        send(&mut log, 201, VIDEO, 11);
        // The receiver's NACK for 10 came first: the responder resent it on a later number.
        resend(&mut log, 202, VIDEO, 10);
        let nacks = log.nacks(&feedback(200, &[LOST, LOST]));
        assert_eq!(asked(nacks), vec![(VIDEO, vec![11])]);

        // The resend is reported lost too: asked for once more; that one lost is left to the
        // receiver's NACK (see the module docs).
        let nacks = log.nacks(&feedback(202, &[LOST]));
        assert_eq!(asked(nacks), vec![(VIDEO, vec![10])]);
        resend(&mut log, 203, VIDEO, 10);
        assert!(log.nacks(&feedback(203, &[LOST])).is_empty());
    }

    #[test]
    fn run_length_chunks_and_numbers_wrapping_around() {
        let mut log = log();
        for (i, transport_seq) in [65_534u16, 65_535, 0, 1].into_iter().enumerate() {
            send(&mut log, transport_seq, VIDEO, 500 + i as u16);
        }
        let feedback = TransportLayerCc {
            base_sequence_number: 65_534,
            packet_status_count: 4,
            packet_chunks: vec![
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: GOT,
                    run_length: 1,
                }),
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: LOST,
                    run_length: 2,
                }),
            ],
            ..Default::default()
        };
        assert_eq!(asked(log.nacks(&feedback)), vec![(VIDEO, vec![501, 502])]);
    }

    #[test]
    fn numbers_never_recorded_or_long_overwritten_are_ignored() {
        let mut log = log();
        assert!(
            log.nacks(&feedback(0, &[LOST])).is_empty(),
            "nothing sent yet"
        );
        // 10 ms apart: number 0 is older than MAX_AGE when MIN_RING takes its slot.
        for transport_seq in 0..=MIN_RING as u16 {
            send(&mut log, transport_seq, VIDEO, transport_seq);
        }
        // Number 0's slot now holds number MIN_RING: 0 is unknown, 1 is still known.
        let nacks = log.nacks(&feedback(0, &[LOST, LOST]));
        assert_eq!(asked(nacks), vec![(VIDEO, vec![1])]);
        assert!(
            log.nacks(&feedback(5_000, &[LOST])).is_empty(),
            "never sent"
        );
    }

    #[test]
    fn the_ring_grows_to_hold_max_age_of_a_fast_connection() {
        let mut log = log();
        let start = Instant::now();
        // 4,000 packets a second for a second.
        for transport_seq in 0..4_000u16 {
            let mut header = rtc::rtp::header::Header::default();
            header
                .set_extension(EXT, Bytes::copy_from_slice(&transport_seq.to_be_bytes()))
                .expect("one-byte extension");
            let now = start + std::time::Duration::from_micros(250 * u64::from(transport_seq));
            log.record(&header, VIDEO, transport_seq, false, now);
        }
        let slots = log.ring.as_ref().map_or(0, |ring| ring.len());
        assert_eq!(slots, 4_096);
        // The first packet, sent a second ago, is still known.
        let nacks = log.nacks(&feedback(0, &[LOST]));
        assert_eq!(asked(nacks), vec![(VIDEO, vec![0])]);
    }

    #[test]
    fn nothing_is_recorded_without_the_extension() {
        let mut log = TransportLog::default();
        send(&mut log, 1, VIDEO, 1);
        assert!(log.nacks(&feedback(1, &[LOST])).is_empty());
    }
}
