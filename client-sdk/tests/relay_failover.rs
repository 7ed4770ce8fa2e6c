//! A relay node that dies mid-class (issue 14): the origin's link to it goes down, the origin
//! ends the sessions of the students placed there ("peer connection failed"), and their SDKs
//! join again by themselves (issue 16). The dead node has left the directory, so the origin
//! serves their media itself; they hear the teacher again within the reconnect window.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::time::Duration;

use aula_client::ClientEvent;
use aula_client::aula_protocol::LEFT_PEER_CONNECTION_FAILED;
use common::cluster::{TONE, TwoNodes, join_from, metric, teacher_playing_tone};
use common::*;
use tokio::time::Instant;

/// The server's default `reconnect_timeout_secs`: how long a participant may be gone.
const RECONNECT_WINDOW: Duration = Duration::from_secs(15);

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
        let mut students = Vec::new();
        for i in 1..=2 {
            students.push(join_from(&origin, room, &format!("learner-{i}"), "asia").await);
        }
        let expected = expected_tone(TONE, 50 * 90);
        let mut tracks = Vec::new();
        for (i, student) in students.iter_mut().enumerate() {
            let track = teacher_track(student, &teacher_sid).await;
            let packets = packets_of(student, &track, 50).await;
            let who = format!("learner {} on the relay", i + 1);
            assert_consecutive(&who, &packets);
            align(&who, &expected, &packets);
            tracks.push(track);
        }
        let relay_egress = metric(&relay, "aula_udp_bytes_sent_total", "").await;
        assert!(
            relay_egress > 2.0 * 50.0 * 60.0,
            "the students were served by the relay: it sent {relay_egress} bytes"
        );

        // The relay goes down mid-class.
        let origin_egress = metric(&origin, "aula_udp_bytes_sent_total", "").await;
        let died = Instant::now();
        let shutdown = tokio::spawn(relay.server.shutdown());

        for (i, (student, track)) in students.iter_mut().zip(&tracks).enumerate() {
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
            // The teacher's track, the same sid, on the new connection.
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
            align(&format!("{who} after the rejoin"), &expected, &packets);
        }
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
