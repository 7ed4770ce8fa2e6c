//! Forwarding through the real router and real `rtc` peers (ICE, DTLS, SRTP), on the in-memory
//! network of [`aula_sfu::sim`] with virtual time: deterministic and fast.

use std::time::Duration;

use aula_protocol::PeerTarget;
use aula_protocol::TrackKind;
use aula_sfu::PeerState;
use aula_sfu::red;
use aula_sfu::sim::{Sim, vp8_payload};
use rtc::rtcp::sender_report::SenderReport;

const STEP: Duration = Duration::from_millis(5);

/// Sends audio until the SFU has connected and opened the track (rtc opens a track on its
/// first packet), and returns the track's sid.
fn publish(sim: &mut Sim, publisher: usize) -> String {
    for _ in 0..500 {
        if let Some((_, sid)) = sim.published.first() {
            return sid.clone();
        }
        sim.send(publisher, b"warm-up");
        sim.step(STEP);
    }
    panic!("the SFU never published the track");
}

/// Sends keyframes until the SFU has opened the video track, and returns the track's sid.
fn publish_video(sim: &mut Sim, publisher: usize) -> String {
    for _ in 0..500 {
        if let Some((_, sid)) = sim.published.first() {
            return sid.clone();
        }
        sim.send(publisher, &vp8_payload(true, b"warm-up"));
        sim.step(STEP);
    }
    panic!("the SFU never published the video");
}

#[test]
fn every_subscriber_gets_every_audio_packet_in_order() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    let track = publish(&mut sim, teacher);
    let students = ["s1", "s2", "s3"];
    for s in students {
        sim.subscribe(s, &track);
    }
    // Let ICE and DTLS finish on the subscribe connections.
    assert!(sim.run_until(2_000, STEP, |s| s.router.stats().consumers == 3));
    for _ in 0..200 {
        sim.send(teacher, b"warm-up");
        sim.step(Duration::from_millis(20));
    }
    let baseline: Vec<usize> = students
        .iter()
        .map(|s| sim.client(s).received.len())
        .collect();
    assert!(
        baseline.iter().all(|n| *n > 0),
        "audio flowed to everyone: {baseline:?}"
    );

    for i in 0..100u32 {
        sim.send(teacher, format!("frame-{i}").as_bytes());
        sim.step(Duration::from_millis(20));
    }
    for (s, skip) in students.iter().zip(baseline) {
        let got = &sim.client(s).received[skip..];
        // The SFU sends audio as RED to subscribers that negotiated it (these do): the frame
        // is the primary block, after the two before it.
        let payloads: Vec<&[u8]> = got
            .iter()
            .map(|r| red::primary(&r.payload).expect("audio comes as RED"))
            .collect();
        for pair in got.windows(3) {
            let blocks = red::blocks(&pair[2].payload).unwrap().count();
            assert_eq!(
                blocks, 3,
                "{s}: two earlier frames repeated in every packet"
            );
        }
        let expected: Vec<Vec<u8>> = (0..100u32)
            .map(|i| format!("frame-{i}").into_bytes())
            .collect();
        assert_eq!(payloads.len(), 100, "{s} got {} packets", payloads.len());
        for (p, e) in payloads.iter().zip(&expected) {
            assert_eq!(p, &e.as_slice(), "{s}: payload mismatch");
        }
        for pair in got.windows(2) {
            assert_eq!(
                pair[1].seq,
                pair[0].seq.wrapping_add(1),
                "{s}: sequence gap"
            );
            assert_eq!(pair[1].ssrc, pair[0].ssrc, "{s}: one outgoing SSRC");
        }
    }
}

#[test]
fn unsubscribing_and_leaving_leave_no_state_behind() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    let track = publish(&mut sim, teacher);
    sim.subscribe("s1", &track);
    sim.subscribe("s2", &track);
    assert!(sim.run_until(1_000, STEP, |s| s.router.stats().consumers == 2));
    let now = sim.now;
    sim.router.unsubscribe(now, "s1", &track).unwrap();
    assert_eq!(sim.router.stats().consumers, 1);
    sim.router.remove_participant(now, "teacher");
    sim.step(STEP);
    let stats = sim.router.stats();
    assert_eq!((stats.producers, stats.consumers), (0, 0));
    sim.router.remove_participant(now, "s1");
    sim.router.remove_participant(now, "s2");
    assert_eq!(sim.router.stats().peers, 0, "every peer connection closed");
}

#[test]
fn a_burst_of_subscriptions_is_one_offer() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    let assistant = sim.add_publisher("assistant", TrackKind::Audio);
    let first = publish(&mut sim, teacher);
    let second = publish_other(&mut sim, assistant, &first);
    // A joining student is subscribed to everything at once, as the control plane does.
    sim.subscribe("student", &first);
    sim.subscribe("student", &second);
    assert!(sim.run_until(1_000, STEP, |s| s.subscribe_offers > 0));
    for _ in 0..100 {
        sim.step(STEP);
    }
    assert_eq!(sim.subscribe_offers, 1, "both tracks went out in one offer");
}

/// Like [`publish`], for a second publisher: waits for a track other than `known`.
fn publish_other(sim: &mut Sim, publisher: usize, known: &str) -> String {
    for _ in 0..500 {
        if let Some((_, sid)) = sim.published.iter().find(|(_, sid)| sid != known) {
            return sid.clone();
        }
        sim.send(publisher, b"warm-up");
        sim.step(STEP);
    }
    panic!("the SFU never published the second track");
}

#[test]
fn lost_video_packets_are_recovered_by_nack_and_retransmission() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Video);
    let track = publish_video(&mut sim, teacher);
    sim.subscribe("student", &track);
    assert!(sim.run_until(1_000, STEP, |s| s.subscribe_offers > 0));
    // Keyframes until the student's consumer is live and forwarding.
    for _ in 0..100 {
        if !sim.client("student").received.is_empty() {
            break;
        }
        sim.send(teacher, &vp8_payload(true, b"warm-up"));
        sim.step(Duration::from_millis(33));
    }
    assert!(
        !sim.client("student").received.is_empty(),
        "video reached the student"
    );
    let baseline = sim.client("student").received.len();

    // One datagram in seven from the SFU to the student is lost, and one in three of the
    // student's own (some NACKs among them). One keyframe, first: a packet lost just before a
    // later keyframe is not resent once that keyframe is out (the decoder starts over from
    // it), and this test is about every other loss.
    sim.drop_every_nth_to_clients = Some(7);
    sim.lossy_uplink = Some(("student".to_owned(), 3));
    for i in 0..150u32 {
        sim.send(
            teacher,
            &vp8_payload(i == 0, format!("frame-{i}").as_bytes()),
        );
        sim.step(Duration::from_millis(33));
    }
    // A loss is detected by the packet after it, so a few more frames follow the checked
    // ones; then give NACKs and retransmissions time to settle (they are lost 1 in 7 too).
    for i in 150..155u32 {
        sim.send(teacher, &vp8_payload(false, format!("tail-{i}").as_bytes()));
        sim.step(Duration::from_millis(33));
    }
    for _ in 0..100 {
        sim.step(Duration::from_millis(20));
    }
    let got: std::collections::HashSet<Vec<u8>> = sim.client("student").received[baseline..]
        .iter()
        .map(|r| r.payload[2..].to_vec())
        .collect();
    let missing: Vec<u32> = (0..150u32)
        .filter(|i| !got.contains(format!("frame-{i}").as_bytes()))
        .collect();
    assert!(missing.is_empty(), "never recovered: {missing:?}");
    let metrics = sim.router.metrics();
    assert!(
        metrics.nacks_received.get() > 0,
        "the student asked for the lost packets"
    );
    assert!(metrics.retransmissions.get() > 0, "the SFU resent them");
    assert!(
        metrics.feedback_nacks.get() > 0,
        "losses whose NACK was lost were resent from the transport-wide feedback"
    );
}

#[test]
fn a_moderator_can_pause_resume_and_stop_a_track() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("student-on-stage", TrackKind::Audio);
    let track = publish(&mut sim, teacher);
    sim.subscribe("s1", &track);
    let flowing = |sim: &mut Sim, teacher| {
        let before = sim.client("s1").received.len();
        for _ in 0..20 {
            sim.send(teacher, b"speech");
            sim.step(Duration::from_millis(20));
        }
        sim.client("s1").received.len() - before
    };
    assert!(sim.run_until(1_000, STEP, |s| s.subscribe_offers > 0));
    flowing(&mut sim, teacher);
    assert!(flowing(&mut sim, teacher) >= 19, "audio flows");

    let now = sim.now;
    sim.router.set_track_paused(now, &track, true).unwrap();
    assert_eq!(flowing(&mut sim, teacher), 0, "muted by the teacher");
    let now = sim.now;
    sim.router.set_track_paused(now, &track, false).unwrap();
    assert!(flowing(&mut sim, teacher) >= 19, "unmuted");

    let now = sim.now;
    sim.router.unpublish_track(now, &track).unwrap();
    assert_eq!(sim.router.stats().producers, 0);
    assert_eq!(flowing(&mut sim, teacher), 0, "stopped at once");
    assert!(
        sim.router.unpublish_track(now, &track).is_err(),
        "already gone"
    );
}

#[test]
fn a_vanished_subscriber_is_reported_failed_within_the_ice_timeout() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    let track = publish(&mut sim, teacher);
    sim.subscribe("student", &track);
    let connected = (
        "student".to_owned(),
        PeerTarget::Subscribe,
        PeerState::Connected,
    );
    assert!(sim.run_until(1_000, STEP, |s| s.peer_states.contains(&connected)));
    // The student's laptop lid closes: no more datagrams either way, and no goodbye.
    sim.cut_off.push("student".to_owned());
    let failed = (
        "student".to_owned(),
        PeerTarget::Subscribe,
        PeerState::Failed,
    );
    let start = sim.now;
    assert!(
        sim.run_until(3_500, Duration::from_millis(10), |s| s
            .peer_states
            .contains(&failed)),
        "ICE never gave up on the vanished student"
    );
    let took = sim.now - start;
    assert!(
        took <= Duration::from_secs(30),
        "declared failed after {took:?}, later than the 25 s ICE timeout allows"
    );
    // The control plane answers a failure by removing the participant: nothing is left.
    let now = sim.now;
    sim.router.remove_participant(now, "student");
    assert_eq!(sim.router.stats().consumers, 0);
}

/// The ICE ufrag of an SDP.
fn ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("an ice-ufrag")
        .trim()
        .to_owned()
}

/// An ICE restart (after a student's network changed) offers new credentials, as RFC 8445
/// requires: reused ones look like no restart to the browser, which then keeps its dead path.
/// Media goes on once the student answers.
#[test]
fn an_ice_restart_offers_new_credentials_and_media_goes_on() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    let track = publish(&mut sim, teacher);
    sim.subscribe("s1", &track);
    for _ in 0..200 {
        sim.send(teacher, b"warm-up");
        sim.step(Duration::from_millis(20));
    }
    assert!(!sim.client("s1").received.is_empty(), "audio flowed");
    let offers = sim.subscribe_offers;
    let before = ufrag(
        &sim.client("s1")
            .pc
            .remote_description()
            .expect("an offer")
            .sdp,
    );

    let now = sim.now;
    sim.router.restart_ice(now, "s1").expect("restarts");
    assert!(sim.run_until(500, STEP, |s| s.subscribe_offers > offers));
    let after = ufrag(
        &sim.client("s1")
            .pc
            .remote_description()
            .expect("an offer")
            .sdp,
    );
    assert_ne!(before, after, "the restart offer reuses the ufrag");

    let received = sim.client("s1").received.len();
    for i in 0..100u32 {
        sim.send(teacher, format!("after-{i}").as_bytes());
        sim.step(Duration::from_millis(20));
    }
    assert!(
        sim.client("s1").received.len() > received + 80,
        "media after the restart: {} packets",
        sim.client("s1").received.len() - received
    );
}

/// A student whose path comes back after an outage cannot decode what follows the frames it
/// lost: the SFU asks the teacher for a keyframe at once instead of waiting for the student's
/// browser to ask (seconds of frozen picture).
#[test]
fn a_keyframe_is_asked_for_as_soon_as_a_students_path_comes_back() {
    // 3 s; and past the ICE agent's 5 s to "disconnected", after which the path's return is
    // also its reconnection.
    for cut_frames in [90, 170, 240] {
        let mut sim = Sim::new();
        let teacher = sim.add_publisher("teacher", TrackKind::Video);
        let track = publish_video(&mut sim, teacher);
        sim.subscribe("student", &track);
        assert!(sim.run_until(1_000, STEP, |s| s.subscribe_offers > 0));
        for i in 0..150u32 {
            sim.send(teacher, &vp8_payload(i % 100 == 0, b"frame"));
            sim.step(Duration::from_millis(33));
        }
        assert!(!sim.client("student").received.is_empty(), "video flowed");

        // The student's Wi-Fi drops while the class goes on.
        sim.cut_off.push("student".to_owned());
        for _ in 0..cut_frames {
            sim.send(teacher, &vp8_payload(false, b"frame"));
            sim.step(Duration::from_millis(33));
        }
        let plis = sim.router.metrics().plis_sent.get();
        sim.cut_off.clear();
        for _ in 0..10 {
            sim.send(teacher, &vp8_payload(false, b"frame"));
            sim.step(Duration::from_millis(33));
        }
        assert!(
            sim.router.metrics().plis_sent.get() > plis,
            "after {cut_frames} frames cut: no keyframe asked for within 330 ms of the path \
             coming back"
        );
    }
}

/// How far each of a student's sender reports (of 48 kHz audio) is, in ticks, from a clock on
/// which the student's timestamp `at_report` belongs to instant `reported_at`.
fn offsets_from(
    reports: &[(std::time::Instant, SenderReport)],
    reported_at: std::time::Instant,
    at_report: u32,
) -> Vec<i64> {
    reports
        .iter()
        .map(|(at, report)| {
            let ticks = (*at - reported_at).as_secs_f64() * 48_000.0;
            let expected = at_report.wrapping_add(ticks as u32);
            i64::from(report.rtp_time.wrapping_sub(expected) as i32)
        })
        .collect()
}

/// A student's sender reports carry the teacher's clock: a teacher whose microphone takes
/// 100 ms to reach its packets says so in its report (the RTP timestamp of the moment it sends
/// the report is 4,800 ticks behind its last packet), and the SFU's reports to the student say
/// the same in the student's timestamps. `rtc` alone maps the last packet sent to the moment
/// it was sent, which put the difference in every student's lip sync.
#[test]
fn a_students_sender_reports_carry_the_teachers_clock() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    let track = publish(&mut sim, teacher);
    sim.subscribe("s1", &track);
    assert!(sim.run_until(2_000, STEP, |s| s.router.stats().consumers == 1));
    for _ in 0..100 {
        sim.send(teacher, b"warm-up");
        sim.step(Duration::from_millis(20));
    }
    let last_in = sim.last_timestamp(teacher);
    let last_out = sim
        .client("s1")
        .received
        .last()
        .expect("audio flowed")
        .timestamp;
    let reported_at = sim.now;
    sim.send_sender_report(teacher, last_in.wrapping_sub(4_800));
    let seen = sim.client("s1").sender_reports.len();
    for _ in 0..100 {
        sim.send(teacher, b"audio");
        sim.step(Duration::from_millis(20));
    }
    let offsets = offsets_from(
        &sim.client("s1").sender_reports[seen..],
        reported_at,
        last_out,
    );
    println!("student's reports, ticks from the teacher's clock 100 ms late: {offsets:?}");
    assert!(
        offsets.iter().any(|o| (o + 4_800).abs() <= 48),
        "a report within 1 ms of the teacher's clock: {offsets:?}"
    );
}

/// The same through a relay node: a track imported from the node its teacher is on gets the
/// teacher's sender reports from that node's control stream (`Router::relay_sender_report`),
/// and the students here get the teacher's clock in theirs.
/// A teacher's microphone as another node exports it (see `aula_sfu::relay`).
fn relayed_mic() -> aula_sfu::relay::track::RelayedTrack {
    aula_sfu::relay::track::RelayedTrack {
        sid: "TR_teacher_mic".into(),
        participant: "PA_teacher".into(),
        kind: TrackKind::Audio,
        source: aula_protocol::TrackSource::Microphone,
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        fmtp: "minptime=10;useinbandfec=1".into(),
        payload_type: 111,
        simulcast: false,
        index: 0,
    }
}

/// Packet `seq` of that microphone's stream `ssrc` on the link: 20 ms of Opus each.
fn relayed_opus(ssrc: u32, seq: u16) -> bytes::Bytes {
    let packet = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: 111,
            sequence_number: seq,
            timestamp: u32::from(seq) * 960,
            ssrc,
            ..Default::default()
        },
        payload: bytes::Bytes::from_static(b"opus"),
    };
    rtc::shared::marshal::Marshal::marshal(&packet)
        .unwrap()
        .freeze()
}

#[test]
fn a_relayed_teachers_clock_reaches_the_students_behind_the_relay() {
    let mut sim = Sim::new();
    let track = relayed_mic();
    let sid = track.sid.clone();
    sim.router.relay_import(track).expect("imported");
    const SSRC: u32 = 0xABC;
    let mut seq: u16 = 0;
    let mut relay_audio = |sim: &mut Sim| {
        seq += 1;
        let data = relayed_opus(SSRC, seq);
        let now = sim.now;
        sim.router.relay_packet(now, &sid, 0, &data);
        sim.step(Duration::from_millis(20));
        u32::from(seq) * 960
    };
    sim.subscribe("s1", &sid);
    for _ in 0..200 {
        relay_audio(&mut sim);
        if sim.router.stats().consumers == 1 && !sim.client("s1").received.is_empty() {
            break;
        }
    }
    let mut last_in = 0;
    for _ in 0..50 {
        last_in = relay_audio(&mut sim);
    }
    let last_out = sim
        .client("s1")
        .received
        .last()
        .expect("audio flowed")
        .timestamp;
    let reported_at = sim.now;
    sim.router
        .relay_sender_report(reported_at, &sid, SSRC, last_in.wrapping_sub(4_800));
    let seen = sim.client("s1").sender_reports.len();
    for _ in 0..100 {
        relay_audio(&mut sim);
    }
    let offsets = offsets_from(
        &sim.client("s1").sender_reports[seen..],
        reported_at,
        last_out,
    );
    println!("student's reports behind the relay: {offsets:?}");
    assert!(!offsets.is_empty(), "the student got sender reports");
    assert!(
        offsets.iter().all(|o| (o + 4_800).abs() <= 48),
        "every report since carries the teacher's clock: {offsets:?}"
    );
}

/// A packet of an imported track (from another node, or another shard's pipe) goes out to the
/// subscribers at once, not with the next datagram or timer: on a node or shard with few
/// subscribers that wait was tens of milliseconds.
#[test]
fn an_imported_packet_is_sent_on_at_once() {
    let mut sim = Sim::new();
    let track = relayed_mic();
    let sid = track.sid.clone();
    sim.router.relay_import(track).expect("imported");
    sim.subscribe("s1", &sid);
    let packet = |seq| relayed_opus(0xABC, seq);
    for seq in 1..200 {
        let now = sim.now;
        sim.router.relay_packet(now, &sid, 0, &packet(seq));
        sim.step(Duration::from_millis(20));
        if !sim.client("s1").received.is_empty() {
            break;
        }
    }
    assert!(!sim.client("s1").received.is_empty(), "audio flowed");
    sim.step(Duration::from_millis(20));
    while sim.router.poll_transmit().is_some() {}
    let now = sim.now;
    sim.router.relay_packet(now, &sid, 0, &packet(500));
    assert!(
        sim.router.poll_transmit().is_some(),
        "the copy is ready as soon as the packet is in"
    );
}

/// Keyframe requests from another shard or node have been limited on their side already (and
/// let through at once where a student's path came back): the publisher's side merges only
/// those of one moment, and does not hold one back for half a second behind an earlier one.
#[test]
fn a_relayed_keyframe_request_is_held_back_only_for_a_moment() {
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Video);
    let track = publish_video(&mut sim, teacher);
    let plis = |sim: &Sim| sim.router.metrics().plis_sent.get();
    let ask = |sim: &mut Sim| {
        let now = sim.now;
        sim.router.request_keyframe(now, &track, 0);
    };
    sim.step(Duration::from_secs(1));
    let before = plis(&sim);
    ask(&mut sim);
    assert_eq!(plis(&sim), before + 1, "asked at once");
    sim.step(Duration::from_millis(50));
    ask(&mut sim);
    assert_eq!(plis(&sim), before + 1, "merged with the one a moment ago");
    sim.step(Duration::from_millis(150));
    ask(&mut sim);
    assert_eq!(plis(&sim), before + 2, "200 ms later: asked again");
}
