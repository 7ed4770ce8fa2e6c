//! A relay node that dies mid-class (issue 14): the origin's link to it goes down, the origin
//! ends the sessions of the students placed there ("peer connection failed"), and their SDKs
//! join again by themselves (issue 16). The origin then serves their media itself; they hear
//! the teacher again within the reconnect window. The node either shuts down (it leaves the
//! directory at once) or is killed (it stays there until its entry expires).

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::time::Duration;

use aula_client::Client;
use aula_client::ClientEvent;
use aula_client::aula_protocol::LEFT_PEER_CONNECTION_FAILED;
use common::cluster::{
    OriginAndRelayProcess, TONE, TwoNodes, join_from, metric, metric_at, teacher_playing_tone,
};
use common::*;
use tokio::time::Instant;

/// The server's default `reconnect_timeout_secs`: how long a participant may be gone.
const RECONNECT_WINDOW: Duration = Duration::from_secs(15);

/// What each student lived through once its relay died: told the session ended ("peer
/// connection failed"), joined again by itself as a new participant, and hears the teacher's
/// track (the same sid) on the new connection, every frame in order.
async fn rejoin_and_hear(students: &mut [Client], tracks: &[String], expected: &[bytes::Bytes]) {
    for (i, (student, track)) in students.iter_mut().zip(tracks).enumerate() {
        let who = format!("learner {}", i + 1);
        let old_sid = student.participant().sid.clone();
        let reason = wait_for(student, |event| match event {
            ClientEvent::Reconnecting { reason } => Some(reason),
            ClientEvent::Disconnected { reason } => panic!("{who} disconnected: {reason}"),
            _ => None,
        })
        .await;
        assert_eq!(reason, LEFT_PEER_CONNECTION_FAILED, "{who}");
        // The relay's last packets may still be queued behind the events (room events come
        // first); what came after the session ended is the new connection's.
        let ended = std::time::Instant::now();
        let (new_sid, previous_sid) = wait_for(student, |event| match event {
            ClientEvent::Rejoined {
                participant,
                previous_sid,
                ..
            } => Some((participant.sid, previous_sid)),
            ClientEvent::Disconnected { reason } => panic!("{who} disconnected: {reason}"),
            _ => None,
        })
        .await;
        assert_eq!(previous_sid, old_sid, "{who}");
        assert_ne!(new_sid, old_sid, "{who} is a new participant");
        assert_eq!(student.participant().sid, new_sid, "{who}");
        let mut packets = Vec::new();
        while packets.len() < 100 {
            let packet = wait_for(student, |event| match event {
                ClientEvent::Packet(p) if *p.track_sid == **track && p.received_at > ended => {
                    Some(p)
                }
                _ => None,
            })
            .await;
            packets.push(packet);
        }
        assert_consecutive(&format!("{who} after the rejoin"), &packets);
        align(&format!("{who} after the rejoin"), expected, &packets);
    }
}

/// Two students placed on the relay hear the teacher through it: their clients, and the
/// teacher's track as each receives it.
async fn students_on_the_relay(
    origin: &TestServer,
    room: &str,
    teacher_sid: &str,
    expected: &[bytes::Bytes],
) -> (Vec<Client>, Vec<String>) {
    let mut students = Vec::new();
    let mut tracks = Vec::new();
    for i in 1..=2 {
        let mut student = join_from(origin, room, &format!("learner-{i}"), "asia").await;
        let track = teacher_track(&mut student, teacher_sid).await;
        let packets = packets_of(&mut student, &track, 50).await;
        let who = format!("learner {i} on the relay");
        assert_consecutive(&who, &packets);
        align(&who, expected, &packets);
        students.push(student);
        tracks.push(track);
    }
    (students, tracks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_of_a_dead_relay_rejoin_by_themselves_and_hear_the_teacher_from_the_origin() {
    let nodes = TwoNodes::start("failover").await;
    let TwoNodes {
        redis: _redis,
        certs: _certs,
        origin,
        relay,
    } = nodes;
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "failover";
        let (_teacher, teacher_sid, _audio) = teacher_playing_tone(&origin, room).await;
        let expected = expected_tone(TONE, 50 * 90);
        let (mut students, tracks) =
            students_on_the_relay(&origin, room, &teacher_sid, &expected).await;
        let relay_egress = metric(&relay, "aula_udp_bytes_sent_total", "").await;
        assert!(
            relay_egress > 2.0 * 50.0 * 60.0,
            "the students were served by the relay: it sent {relay_egress} bytes"
        );

        // The relay goes down mid-class.
        let origin_egress = metric(&origin, "aula_udp_bytes_sent_total", "").await;
        let died = Instant::now();
        let shutdown = tokio::spawn(relay.server.shutdown());
        rejoin_and_hear(&mut students, &tracks, &expected).await;
        let back = died.elapsed();
        eprintln!("both students hear the teacher again {back:?} after the relay went down");
        assert!(
            back < RECONNECT_WINDOW,
            "back after {back:?}, beyond the reconnect window"
        );

        // Now from the origin's own SFU: it sent the students at least what they got since.
        let grew = metric(&origin, "aula_udp_bytes_sent_total", "").await - origin_egress;
        assert!(
            grew > 2.0 * 100.0 * 60.0,
            "the origin sent {grew} more bytes since the relay died"
        );
        tokio::time::timeout(Duration::from_secs(30), shutdown)
            .await
            .expect("the relay shut down in time")
            .expect("shutdown task");
    })
    .await
    .expect("the failover works in time");
}

/// The relay's process is killed (SIGKILL): it says goodbye to nobody, and stays in the
/// directory until its entry expires. The origin notices its link is gone (keepalives), ends
/// the sessions it had placed there, and the students, joining again by themselves, are not
/// placed on the dead node again: they hear the teacher from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_of_a_relay_killed_abruptly_rejoin_and_hear_the_teacher() {
    let OriginAndRelayProcess {
        redis: _redis,
        certs: _certs,
        origin,
        mut relay,
    } = OriginAndRelayProcess::start("killed").await;
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "killed";
        let (_teacher, teacher_sid, _audio) = teacher_playing_tone(&origin, room).await;
        let expected = expected_tone(TONE, 50 * 90);
        let (mut students, tracks) =
            students_on_the_relay(&origin, room, &teacher_sid, &expected).await;
        let relay_egress = metric_at(relay.http, "aula_udp_bytes_sent_total", "").await;
        assert!(
            relay_egress > 2.0 * 50.0 * 60.0,
            "the students were served by the relay process: it sent {relay_egress} bytes"
        );

        let died = Instant::now();
        relay.kill();
        rejoin_and_hear(&mut students, &tracks, &expected).await;
        let back = died.elapsed();
        eprintln!("both students hear the teacher again {back:?} after the relay was killed");
        assert!(
            back < RECONNECT_WINDOW,
            "back after {back:?}, beyond the reconnect window"
        );
    })
    .await
    .expect("the failover works in time");
}
