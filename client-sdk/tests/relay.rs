//! One class over two nodes (issue 14): a real Redis, an origin node and a relay node in
//! another region on loopback, each a whole Aula server with its own SFU, linked over QUIC with
//! certificates of a cluster CA made here.
//!
//! The teacher is on the origin; students whose tokens name the relay's region are placed on
//! the relay, so their media flows through it while their signaling stays with the origin.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::time::Duration;

use common::cluster::{TONE, TwoNodes, join_from, metric, teacher_playing_tone};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_on_a_relay_hear_the_teacher_through_one_copy_over_the_link() {
    let nodes = TwoNodes::start("copy").await;
    let (origin, relay) = (&nodes.origin, &nodes.relay);
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "overseas";
        let (_teacher, teacher_sid, _audio) = teacher_playing_tone(origin, room).await;

        let mut students = Vec::new();
        for i in 1..=3 {
            students.push(join_from(origin, room, &format!("learner-{i}"), "asia").await);
        }
        let expected = expected_tone(TONE, 50 * 60);
        for (i, student) in students.iter_mut().enumerate() {
            let track = teacher_track(student, &teacher_sid).await;
            let packets = packets_of(student, &track, 100).await;
            let who = format!("learner {}", i + 1);
            assert_consecutive(&who, &packets);
            align(&who, &expected, &packets);
        }

        // The students' media came from the relay's SFU, not the origin's.
        let relay_egress = metric(relay, "aula_udp_bytes_sent_total", "").await;
        assert!(relay_egress > 3.0 * 100.0 * 60.0, "relay sent {relay_egress} bytes");

        // Over the link, one copy: what the origin sent to the relay is about what one student
        // received, not three times that.
        let link_bytes = metric(origin, "aula_relay_bytes_sent_total", "peer=\"asia-1\"").await;
        let received = metric(relay, "aula_relay_bytes_received_total", "peer=\"eu-1\"").await;
        let one_student = relay_egress / 3.0;
        eprintln!("link: origin sent {link_bytes} B, relay received {received} B; one student's share {one_student} B");
        assert!(link_bytes > 0.0 && received > 0.0, "nothing crossed the link");
        assert!(
            (link_bytes - received).abs() < 0.1 * one_student,
            "the link's two ends disagree: sent {link_bytes}, received {received}"
        );
        assert!(
            link_bytes < 2.0 * one_student,
            "the link carried {link_bytes} B, more than one copy ({one_student} B per student)"
        );
        let carried = metric(origin, "aula_relay_tracks", "peer=\"asia-1\"").await;
        assert_eq!(carried, 1.0, "one track carried to the relay");
    })
    .await
    .expect("the relayed class works in time");
}

/// The directory is only needed to place newcomers: with Redis gone (past the leases' and the
/// nodes' time to live), a class already running goes on over the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_goes_on_through_the_relay_while_redis_is_down() {
    let mut nodes = TwoNodes::start("redis-down").await;
    let (origin, relay, redis) = (&nodes.origin, &nodes.relay, &mut nodes.redis);
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "outage";
        let (_teacher, teacher_sid, _audio) = teacher_playing_tone(origin, room).await;
        let mut student = join_from(origin, room, "learner", "asia").await;
        let track = teacher_track(&mut student, &teacher_sid).await;
        packets_of(&mut student, &track, 50).await;

        redis.kill();
        // Longer than the leases' and the entries' 3 s time to live.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(metric(origin, "aula_cluster_redis_up", "").await, 0.0);
        // Still flowing now: over the link, and from the relay to the student.
        let link_before = metric(relay, "aula_relay_bytes_received_total", "").await;
        let egress_before = metric(relay, "aula_udp_bytes_sent_total", "").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let link_after = metric(relay, "aula_relay_bytes_received_total", "").await;
        let egress_after = metric(relay, "aula_udp_bytes_sent_total", "").await;
        // 1.5 s of the tone is 75 packets of about 100 bytes.
        assert!(
            link_after - link_before > 4000.0,
            "the link carried {} B in 1.5 s while Redis was down",
            link_after - link_before
        );
        assert!(
            egress_after - egress_before > 4000.0,
            "the relay sent the student {} B in 1.5 s while Redis was down",
            egress_after - egress_before
        );
        let packets = packets_of(&mut student, &track, 100).await;
        assert_consecutive("learner during the outage", &packets);
    })
    .await
    .expect("the class goes on in time");
}

/// Learners of one region joining together, while the origin's link to their node is still
/// connecting (a 150 ms round trip here), share that one link: each opening its own would carry
/// one copy of every track per learner (seen in the relay benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_joining_together_share_one_link() {
    let nodes = TwoNodes::start_with_link_delay("together", Some(75)).await;
    let origin = &nodes.origin;
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "rush";
        let (_teacher, teacher_sid, _audio) = teacher_playing_tone(origin, room).await;
        let names: Vec<String> = (1..=4).map(|i| format!("learner-{i}")).collect();
        let joins = names
            .iter()
            .map(|name| join_from(origin, room, name, "asia"));
        let mut students = futures_util::future::join_all(joins).await;
        for student in &mut students {
            let track = teacher_track(student, &teacher_sid).await;
            packets_of(student, &track, 100).await;
        }
        // One copy of the teacher's audio crossed the link (its RTP plus a few bytes of framing
        // each), not one per learner.
        let link_bytes = metric(origin, "aula_relay_bytes_sent_total", "peer=\"asia-1\"").await;
        let teacher_bytes = metric(origin, "aula_rtp_bytes_received_total", "").await;
        eprintln!("link {link_bytes} B, teacher sent {teacher_bytes} B");
        assert!(
            link_bytes > 0.0 && link_bytes < 1.5 * teacher_bytes,
            "the link carried {link_bytes} B for the teacher's {teacher_bytes} B"
        );
    })
    .await
    .expect("the class works in time");
}

/// A learner on the relay who is invited on stage speaks to the class: its microphone is
/// published on the relay's SFU, carried to the origin over the link, and the teacher there
/// hears every frame of it, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_on_the_relay_invited_on_stage_is_heard_by_the_teacher_on_the_origin() {
    use aula_client::aula_protocol::ServerEvent;
    use aula_client::{AudioSource, ClientEvent};

    let nodes = TwoNodes::start("stage").await;
    let (origin, relay) = (&nodes.origin, &nodes.relay);
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "question";
        let (mut teacher, teacher_sid, _audio) = teacher_playing_tone(origin, room).await;
        let mut learner = join_from(origin, room, "learner", "asia").await;
        let learner_sid = learner.participant().sid.clone();
        // The learner hears the class through the relay first.
        let track = teacher_track(&mut learner, &teacher_sid).await;
        packets_of(&mut learner, &track, 20).await;

        learner.raise_hand().expect("queued");
        teacher.invite_to_stage(&learner_sid).expect("queued");
        wait_for(&mut learner, |event| match event {
            ClientEvent::Room(ServerEvent::PermissionsChanged {
                participant_sid,
                permissions,
            }) if participant_sid == learner_sid && permissions.can_publish => Some(()),
            _ => None,
        })
        .await;
        let _microphone = learner
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("a learner on stage publishes through the relay");

        let learner_track = teacher_track(&mut teacher, &learner_sid).await;
        let packets = packets_of(&mut teacher, &learner_track, 100).await;
        assert_consecutive("the teacher hearing the learner", &packets);
        align(
            "the teacher hearing the learner",
            &expected_tone(TONE, 50 * 60),
            &packets,
        );
        // The learner's media entered at the relay, and crossed the link to the origin.
        let from_relay = metric(relay, "aula_relay_bytes_sent_total", "peer=\"eu-1\"").await;
        assert!(
            from_relay > 100.0 * 60.0,
            "the relay sent {from_relay} B to the origin"
        );
    })
    .await
    .expect("the learner is heard in time");
}

/// A listener on the relay whose client sends no RED (the Rust SDK's) and whose path loses a
/// fifth of its packets: the relay reports that loss up the link, and the origin raises the
/// loss in its receiver reports to the teacher, whose Opus encoder then adds in-band FEC, the
/// repair such a listener can have (issue 16). Nothing is raised while the listener's path is
/// clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_listener_on_the_relay_has_the_teacher_asked_for_in_band_fec() {
    let nodes = TwoNodes::start("fec").await;
    let (origin, relay) = (&nodes.origin, &nodes.relay);
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "overseas-fec";
        let (_teacher, teacher_sid, _audio) = teacher_playing_tone(origin, room).await;
        let mut student = join_from(origin, room, "learner", "asia").await;
        let track = teacher_track(&mut student, &teacher_sid).await;
        packets_of(&mut student, &track, 100).await;
        let raised = || metric(origin, "aula_reports_loss_raised_total", "");
        assert_eq!(raised().await, 0.0, "raised for a clean listener");

        let sid = student.participant().sid.clone();
        let body = format!(r#"{{"participant_sid": "{sid}", "loss": 0.2}}"#);
        assert_eq!(impair(relay.server.http_addr(), &body).await, 200);
        // The loss is measured from the listener's feedback within a few seconds, crosses the
        // link, and the origin's next receiver report to the teacher carries it: 20 s at most.
        let mut reports = 0.0;
        for _ in 0..200 {
            reports = raised().await;
            if reports > 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            reports > 0.0,
            "the origin never raised its reports to the teacher"
        );
        let carried = metric(origin, "aula_relay_tracks", "peer=\"asia-1\"").await;
        assert_eq!(carried, 1.0, "the listener's audio came over the link");
    })
    .await
    .expect("the relayed class works in time");
}
