//! The tap's tests: a tap on its own, fed packets both ways as the chain would, with what it
//! passes on and counts checked. Apart from `tap.rs` for their length.

use std::time::Duration;

use rtc::interceptor::{AttributedPacket, RTCPFeedback};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers;
use rtc::shared::TransportContext;

use super::outbound::MAX_RESEND_COPIES;
use super::*;

const SSRC: u32 = 0xA1;
const RTX_SSRC: u32 = 0xA2;

/// Stream `SSRC`, with generic NACK negotiated.
fn nack_stream() -> StreamInfo {
    StreamInfo {
        ssrc: SSRC,
        rtcp_feedback: vec![RTCPFeedback {
            typ: "nack".to_owned(),
            parameter: String::new(),
        }],
        ..Default::default()
    }
}

/// A tap publishing into `estimate`, with `stream` bound.
fn tap_with(estimate: Option<SharedEstimate>, stream: StreamInfo) -> Tap {
    let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
    let mut tap = Tap::new(metrics, estimate, Arc::default());
    tap.bind_local_stream(&stream);
    tap
}

fn tap() -> Tap {
    tap_with(None, nack_stream())
}

fn tagged(now: Instant, message: AttributedPacket) -> TaggedPacket {
    TaggedPacket {
        now,
        transport: TransportContext::default(),
        message,
    }
}

#[test]
fn a_receivers_remb_is_recorded_in_the_connections_estimate() {
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    let estimate = SharedEstimate::new();
    let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
    let mut tap = Tap::new(metrics, Some(estimate.clone()), Arc::default());
    let remb: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverEstimatedMaximumBitrate {
        sender_ssrc: 1,
        bitrate: 700_000.0,
        ssrcs: vec![SSRC],
    });
    let message = AttributedPacket::new(Packet::Rtcp(vec![remb]));
    tap.handle_read(tagged(Instant::now(), message))
        .expect("read");
    assert!(tap.poll_read().is_some(), "passed on");
    assert_eq!(estimate.remb(), Some(700_000.0));
}

fn send(tap: &mut Tap, seq: u16, now: Instant, retransmission: bool) {
    let mut rtp = rtc::rtp::Packet::default();
    rtp.header.ssrc = SSRC;
    rtp.header.sequence_number = seq;
    let mut message = AttributedPacket::new(Packet::Rtp(rtp));
    if retransmission {
        message.add(Attribute::Retransmission);
    }
    tap.handle_write(tagged(now, message)).expect("write");
    assert!(tap.poll_write().is_some());
}

fn nack(seqs: &[u16]) -> Box<dyn rtc::rtcp::Packet> {
    Box::new(TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc: SSRC,
        nacks: nack_pairs_from_sequence_numbers(seqs),
    })
}

/// The publisher's packet `seq` arriving at the SFU.
fn arrive(tap: &mut Tap, seq: u16, now: Instant) {
    let mut rtp = rtc::rtp::Packet::default();
    rtp.header.ssrc = SSRC;
    rtp.header.sequence_number = seq;
    let message = AttributedPacket::new(Packet::Rtp(rtp));
    tap.handle_read(tagged(now, message)).expect("read");
    assert!(tap.poll_read().is_some());
}

/// The sequence numbers of the NACK the tap sends on when the SFU asks for `seqs`.
fn ask(tap: &mut Tap, seqs: &[u16], now: Instant) -> Vec<u16> {
    let message = AttributedPacket::new(Packet::Rtcp(vec![nack(seqs)]));
    tap.handle_write(tagged(now, message)).expect("write");
    let Some(out) = tap.poll_write() else {
        return Vec::new();
    };
    let Packet::Rtcp(packets) = out.message.packet else {
        panic!("RTCP in, RTCP out");
    };
    packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
        .collect()
}

#[test]
fn a_publisher_is_asked_only_for_recent_losses() {
    let mut tap = tap();
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    arrive(&mut tap, 1, t0);
    arrive(&mut tap, 3, t0 + 40 * ms);
    assert_eq!(ask(&mut tap, &[2], t0 + 50 * ms), [2]);
    // The path is gone for 5 s (4..=253 lost), then back.
    arrive(&mut tap, 254, t0 + 5040 * ms);
    let back = t0 + 5050 * ms;
    assert!(
        ask(&mut tap, &[2, 100, 253], back).is_empty(),
        "outage losses"
    );
    arrive(&mut tap, 256, back);
    assert_eq!(ask(&mut tap, &[100, 255], back + 10 * ms), [255]);
    assert_eq!(tap.metrics.nacks_withheld.get(), 4);
}

/// What of a compound packet the tap passes on, as NACKed seqs and the other packets' count.
fn receive(
    tap: &mut Tap,
    packets: Vec<Box<dyn rtc::rtcp::Packet>>,
    now: Instant,
) -> Option<(Vec<u16>, usize)> {
    let message = AttributedPacket::new(Packet::Rtcp(packets));
    tap.handle_read(tagged(now, message)).expect("read");
    let out = tap.poll_read()?;
    let Packet::Rtcp(packets) = out.message.packet else {
        panic!("RTCP in, RTCP out");
    };
    let nacks = packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
        .collect();
    let others = packets
        .iter()
        .filter(|p| !p.as_any().is::<TransportLayerNack>())
        .count();
    Some((nacks, others))
}

#[test]
fn stale_nacks_are_trimmed_before_the_responder() {
    let mut tap = tap();
    let t0 = Instant::now();
    send(&mut tap, 10, t0, false);
    send(&mut tap, 11, t0 + Duration::from_millis(900), false);
    // A resend of 10 must not make 10 look fresh again.
    send(&mut tap, 10, t0 + Duration::from_millis(900), true);
    let now = t0 + Duration::from_millis(1_500);

    let out = receive(&mut tap, vec![nack(&[10, 11])], now);
    assert_eq!(out, Some((vec![11], 0)));
    assert_eq!(tap.metrics.nack_stale.get(), 1);
    assert_eq!(tap.metrics.nacks_received.get(), 2);

    // Only stale NACKs in a compound with a report: the report goes on alone.
    let report: Box<dyn rtc::rtcp::Packet> = Box::new(ReceiverReport::default());
    let out = receive(&mut tap, vec![report, nack(&[10, 12])], now);
    assert_eq!(out, Some((vec![], 1)));
    assert_eq!(tap.metrics.nack_stale.get(), 3);

    // Only stale NACKs: nothing goes on.
    assert_eq!(receive(&mut tap, vec![nack(&[10])], now), None);

    // The stream unbinds: its log goes, and NACKs for it with it.
    tap.unbind_local_stream(&StreamInfo {
        ssrc: SSRC,
        ..Default::default()
    });
    assert_eq!(receive(&mut tap, vec![nack(&[11])], now), None);
}

#[test]
fn the_connections_own_nacks_and_keyframe_requests_are_counted_both_ways() {
    let mut tap = tap();
    let now = Instant::now();
    send(&mut tap, 10, now, false);
    let pli = || -> Box<dyn rtc::rtcp::Packet> { Box::new(PictureLossIndication::default()) };
    // Counted as they come in, stale or not: what the participant asked for.
    receive(&mut tap, vec![nack(&[10, 11, 12]), pli()], now);
    let message = AttributedPacket::new(Packet::Rtcp(vec![nack(&[5, 6]), pli(), pli()]));
    tap.handle_write(tagged(now, message)).expect("write");
    let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let feedback = &tap.feedback;
    assert_eq!(read(&feedback.nacks_received), 3);
    assert_eq!(read(&feedback.keyframe_requests_received), 1);
    assert_eq!(read(&feedback.nacks_sent), 2);
    assert_eq!(read(&feedback.keyframe_requests_sent), 2);
}

#[test]
fn what_transport_feedback_reports_lost_is_resent_like_a_nack() {
    use rtc::interceptor::RTPHeaderExtension;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    };
    const EXT: u8 = 5;
    let estimate = SharedEstimate::new();
    let stream = StreamInfo {
        rtp_header_extensions: vec![RTPHeaderExtension {
            uri: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
                .to_owned(),
            id: u16::from(EXT),
        }],
        ssrc_rtx: Some(RTX_SSRC),
        payload_type_rtx: Some(97),
        ..nack_stream()
    };
    let mut tap = tap_with(Some(estimate.clone()), stream);
    let now = Instant::now();
    let write = |tap: &mut Tap, ssrc, seq, transport_seq: u16, payload: &[u8], resend| {
        let mut rtp = rtc::rtp::Packet::default();
        rtp.header.ssrc = ssrc;
        rtp.header.sequence_number = seq;
        rtp.header
            .set_extension(EXT, transport_seq.to_be_bytes().to_vec().into())
            .expect("extension");
        rtp.payload = payload.to_vec().into();
        let mut message = AttributedPacket::new(Packet::Rtp(rtp));
        if resend {
            message.add(Attribute::Retransmission);
        }
        tap.handle_write(tagged(now, message)).expect("write");
        while tap.poll_write().is_some() {}
    };
    write(&mut tap, SSRC, 7, 40, &[], false);
    write(&mut tap, SSRC, 8, 41, &[], false);
    let run = |symbol, run_length| {
        PacketStatusChunk::RunLengthChunk(RunLengthChunk {
            type_tcc: StatusChunkTypeTcc::RunLengthChunk,
            packet_status_symbol: symbol,
            run_length,
        })
    };
    let feedback = TransportLayerCc {
        base_sequence_number: 40,
        packet_status_count: 2,
        packet_chunks: vec![
            run(SymbolTypeTcc::PacketNotReceived, 1),
            run(SymbolTypeTcc::PacketReceivedSmallDelta, 1),
        ],
        ..Default::default()
    };
    let out = receive(&mut tap, vec![Box::new(feedback.clone())], now);
    assert_eq!(
        out,
        Some((vec![7], 1)),
        "the feedback goes on with a NACK for 7"
    );
    assert_eq!(tap.metrics.feedback_nacks.get(), 1);
    assert_eq!(
        tap.metrics.nacks_received.get(),
        0,
        "the subscriber NACKed nothing"
    );
    assert_eq!(tap.feedback.nacks_received.load(Ordering::Relaxed), 0);

    // The responder resends 7 on the RTX stream (its payload names 7). The same loss
    // reported again is not asked for again, nor is the receiver's NACK for it a moment
    // later.
    write(&mut tap, RTX_SSRC, 0, 42, &[0, 7], true);
    let out = receive(&mut tap, vec![Box::new(feedback.clone())], now);
    assert_eq!(out, Some((vec![], 1)), "7 went out again since");
    assert_eq!(
        receive(&mut tap, vec![nack(&[7])], now),
        None,
        "just resent"
    );

    // The same report while the path shows a queue: the feedback goes on alone.
    estimate.set_congested(true);
    let out = receive(&mut tap, vec![Box::new(feedback)], now);
    assert_eq!(out, Some((vec![], 1)), "no NACK while congested");
    estimate.set_congested(false);

    // A feedback packet lost: the next one starts past where the last one ended. What only the
    // lost one reported on is resent on a path losing a fifth or more, not on a cleaner one.
    let received = |base| TransportLayerCc {
        base_sequence_number: base,
        packet_status_count: 1,
        packet_chunks: vec![run(SymbolTypeTcc::PacketReceivedSmallDelta, 1)],
        ..Default::default()
    };
    for (seq, transport_seq) in [(9, 43), (10, 44), (11, 45), (12, 46), (13, 47)] {
        write(&mut tap, SSRC, seq, transport_seq, &[], false);
    }
    let out = receive(&mut tap, vec![Box::new(received(44))], now);
    assert_eq!(
        out,
        Some((vec![], 1)),
        "at 0 % loss, 9 on 43 is left to a NACK"
    );
    estimate.set_loss(0.5);
    let out = receive(&mut tap, vec![Box::new(received(47))], now);
    assert_eq!(out, Some((vec![11, 12], 1)), "45 and 46 went unreported");
    assert_eq!(tap.metrics.unreported_nacks.get(), 2);
}

#[test]
fn a_second_request_for_a_packet_just_resent_is_not_answered() {
    let mut tap = tap();
    let t0 = Instant::now();
    send(&mut tap, 10, t0, false);
    send(&mut tap, 10, t0 + Duration::from_millis(20), true);
    let out = receive(&mut tap, vec![nack(&[10])], t0 + Duration::from_millis(40));
    assert_eq!(out, None, "resent 20 ms ago");
    let out = receive(&mut tap, vec![nack(&[10])], t0 + Duration::from_millis(150));
    assert_eq!(out, Some((vec![10], 0)), "a retry after the gap");
}

#[test]
fn a_path_with_a_queue_gets_only_its_budget_of_resends_the_newest_first() {
    let estimate = SharedEstimate::new();
    estimate.set_twcc(500_000.0);
    estimate.set_congested(true);
    let mut tap = tap_with(Some(estimate.clone()), nack_stream());
    let now = Instant::now();
    for seq in 0..10 {
        send(&mut tap, seq, now, false);
    }
    let lost: Vec<u16> = (0..10).collect();
    let out = receive(&mut tap, vec![nack(&lost)], now);
    assert_eq!(out, Some((vec![9], 0)), "one resend, the newest");
    assert_eq!(tap.metrics.nack_stale.get(), 9);

    estimate.set_congested(false);
    let out = receive(&mut tap, vec![nack(&lost)], now);
    assert_eq!(out, Some((lost, 0)), "no queue, no limit");
}

#[test]
fn resends_are_copied_so_that_losing_all_copies_is_rare() {
    assert_eq!(resend_copies(0.0), 1);
    assert_eq!(resend_copies(0.002), 1);
    assert_eq!(resend_copies(0.02), 2);
    assert_eq!(resend_copies(0.10), 3);
    assert_eq!(resend_copies(0.50), MAX_RESEND_COPIES);

    let estimate = SharedEstimate::new();
    estimate.set_loss(0.10);
    let metrics = SfuMetrics::register(&prometheus::Registry::new()).expect("fresh registry");
    let mut tap = Tap::new(metrics, Some(estimate.clone()), Arc::default());
    let written = |tap: &mut Tap| std::iter::from_fn(|| tap.poll_write()).count();
    let now = Instant::now();
    send(&mut tap, 1, now, false);
    assert_eq!(written(&mut tap), 0, "an original goes out once");
    send(&mut tap, 1, now, true);
    assert_eq!(
        written(&mut tap),
        2,
        "a resend on a lossy path, three times"
    );
    estimate.set_congested(true);
    send(&mut tap, 1, now, true);
    assert_eq!(written(&mut tap), 0, "a congested path gets no copies");
}

#[test]
fn nacks_for_video_sent_before_the_latest_keyframe_are_not_answered() {
    let stream = StreamInfo {
        mime_type: "video/VP8".to_owned(),
        ..nack_stream()
    };
    let mut tap = tap_with(None, stream);
    let now = Instant::now();
    for (seq, payload) in [(1, [0x10, 0x01]), (2, [0x10, 0x00]), (3, [0x00, 0x00])] {
        let mut rtp = rtc::rtp::Packet::default();
        rtp.header.ssrc = SSRC;
        rtp.header.sequence_number = seq;
        rtp.payload = payload.to_vec().into();
        let message = AttributedPacket::new(Packet::Rtp(rtp));
        tap.handle_write(tagged(now, message)).expect("write");
    }
    // Packet 2 starts a VP8 keyframe (S=1, P=0): packet 1 is of no use any more.
    let out = receive(&mut tap, vec![nack(&[1, 3])], now);
    assert_eq!(out, Some((vec![3], 0)));
    assert_eq!(tap.metrics.nack_stale.get(), 1);
}

#[test]
fn a_probe_asks_the_responder_for_copies_of_what_is_sent() {
    let estimate = SharedEstimate::new();
    let stream = StreamInfo {
        ssrc_rtx: Some(RTX_SSRC),
        payload_type_rtx: Some(97),
        ..nack_stream()
    };
    let mut tap = tap_with(Some(estimate.clone()), stream);
    assert_eq!(estimate.rtx_streams(), [RTX_SSRC], "known as an RTX stream");
    // What the tap asks the responder for on the read leg, and what else it passes on.
    let asked = |tap: &mut Tap| {
        let mut seqs = Vec::new();
        while let Some(out) = tap.poll_read() {
            let Packet::Rtcp(packets) = out.message.packet else {
                panic!("only requests");
            };
            for packet in &packets {
                let nack = packet
                    .as_any()
                    .downcast_ref::<TransportLayerNack>()
                    .expect("a NACK");
                assert_eq!(nack.media_ssrc, SSRC);
                seqs.extend(nack.nacks.iter().flat_map(|pair| pair.packet_list()));
            }
        }
        seqs
    };
    let t0 = Instant::now();
    // 12-byte packets every 10 ms: 9.6 kbit/s; a 9.6 kbit/s probe doubles it.
    estimate.set_probe(9_600.0);
    let mut requested = Vec::new();
    for i in 0..100u16 {
        send(
            &mut tap,
            i,
            t0 + Duration::from_millis(10 * u64::from(i)),
            false,
        );
        requested.extend(asked(&mut tap));
    }
    assert!((95..=100).contains(&requested.len()), "{requested:?}");
    assert_eq!(tap.metrics.probe_bytes.get(), 0, "nothing resent yet");

    // The responder resends one on the RTX stream: a probe copy, not a repair.
    let copy = *requested.last().expect("asked");
    let mut rtx = rtc::rtp::Packet::default();
    rtx.header.ssrc = RTX_SSRC;
    rtx.header.sequence_number = 0;
    rtx.payload = copy.to_be_bytes().to_vec().into();
    let message = AttributedPacket::new(Packet::Rtp(rtx.clone())).with(Attribute::Retransmission);
    tap.handle_write(tagged(t0 + Duration::from_secs(1), message))
        .expect("write");
    assert!(tap.poll_write().is_some(), "sent once");
    assert!(tap.poll_write().is_none());
    assert_eq!(tap.metrics.probe_bytes.get(), 14);
    assert_eq!(tap.metrics.retransmissions.get(), 0);
    // The same packet asked for by the receiver is a repair.
    let message = AttributedPacket::new(Packet::Rtp(rtx)).with(Attribute::Retransmission);
    tap.handle_write(tagged(t0 + Duration::from_secs(1), message))
        .expect("write");
    assert_eq!(tap.metrics.retransmissions.get(), 1);

    estimate.set_probe(0.0);
    send(&mut tap, 100, t0 + Duration::from_secs(2), false);
    assert!(asked(&mut tap).is_empty(), "no probe, no copies");

    // The video pauses; audio (no RTX stream) carries the probe: copies of the last video
    // packets.
    estimate.set_probe(9_600.0);
    let mut copies = Vec::new();
    for i in 0..20u16 {
        let mut audio = rtc::rtp::Packet::default();
        audio.header.ssrc = 0xB0;
        audio.header.sequence_number = i;
        let at = t0 + Duration::from_millis(3_000 + 10 * u64::from(i));
        tap.handle_write(tagged(at, AttributedPacket::new(Packet::Rtp(audio))))
            .expect("write");
        while tap.poll_write().is_some() {}
        copies.extend(asked(&mut tap));
    }
    assert!(!copies.is_empty(), "probed while only audio flows");
    assert!(copies.iter().all(|&seq| seq <= 100), "{copies:?}");

    // The video stream goes: nothing is left to copy.
    tap.unbind_local_stream(&StreamInfo {
        ssrc: SSRC,
        ..Default::default()
    });
    let mut audio = rtc::rtp::Packet::default();
    audio.header.ssrc = 0xB0;
    audio.header.sequence_number = 20;
    let at = t0 + Duration::from_secs(4);
    tap.handle_write(tagged(at, AttributedPacket::new(Packet::Rtp(audio))))
        .expect("write");
    assert!(asked(&mut tap).is_empty(), "no copies of an unbound stream");
}

#[test]
fn no_probe_copies_without_an_rtx_payload_type() {
    // `rtc` gives the stream an RTX SSRC, but the receiver negotiated no RTX: the responder
    // would resend the packet itself, which the receiver drops as a replay, unreported.
    let estimate = SharedEstimate::new();
    let stream = StreamInfo {
        ssrc_rtx: Some(RTX_SSRC),
        ..nack_stream()
    };
    let mut tap = tap_with(Some(estimate.clone()), stream);
    assert!(estimate.rtx_streams().is_empty());
    estimate.set_probe(1_000_000.0);
    let t0 = Instant::now();
    for i in 0..50u16 {
        send(
            &mut tap,
            i,
            t0 + Duration::from_millis(10 * u64::from(i)),
            false,
        );
        assert!(tap.poll_read().is_none(), "no copies asked for");
    }
}
