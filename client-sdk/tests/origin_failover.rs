//! A learner connected straight to a room's origin node, which is killed (issue 14): the
//! learner's SDK finds the node unreachable and joins again, by itself, through the other node
//! the server had named ([`ServerEvent::Alternates`]), which takes the room over; the learner
//! hears the teacher again, with its raised hand given back.
//!
//! The teacher is connected to the other node, asia-1, whose signaling it carries to the origin
//! eu-1 (and its media stays on asia-1): the teacher's node survives, so it comes back the way
//! it already did (its own URL), and the learner can only come back through the alternates:
//! its only URL is dead. Without them it would knock on eu-1 until its minute ran out.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::time::Duration;

use aula_client::aula_protocol::{Role, ServerEvent};
use aula_client::{Client, ClientEvent};
use aula_signaling::token::{AccessClaims, ApiKeys, mint};
use common::cluster::{ProcessAndNode, TONE, metric, teacher_playing_tone};
use common::*;
use tokio::time::Instant;

/// The server's default `reconnect_timeout_secs`: how long a participant may be gone.
const RECONNECT_WINDOW: Duration = Duration::from_secs(15);

/// The alternates `client` is sent next.
async fn alternates(client: &mut Client) -> Vec<String> {
    wait_for(client, |event| match event {
        ClientEvent::Room(ServerEvent::Alternates { urls }) => Some(urls),
        _ => None,
    })
    .await
}

/// Waits until `client` says it is reconnecting and then is back as a new participant; its new
/// sid.
async fn rejoined(client: &mut Client, who: &str) -> String {
    wait_for(client, |event| match event {
        ClientEvent::Reconnecting { .. } => Some(()),
        ClientEvent::Disconnected { reason } => panic!("{who} disconnected: {reason}"),
        _ => None,
    })
    .await;
    let old_sid = client.participant().sid.clone();
    let (sid, previous_sid) = wait_for(client, |event| match event {
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
    assert_ne!(sid, old_sid, "{who} is a new participant");
    sid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_on_a_killed_origin_rejoins_through_the_alternate_and_hears_the_teacher() {
    let ProcessAndNode {
        redis: _redis,
        certs: _certs,
        mut process,
        node,
    } = ProcessAndNode::start("origin-killed").await;
    let origin_url = process.ws_url();
    let node_url = node.ws_url();
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "origin-killed";
        // Ana first, straight to eu-1: the room's origin is eu-1. Her token names no region.
        let claims = AccessClaims::new(room, "ana", Role::Student, Duration::from_secs(600));
        let token = mint(&ApiKeys::dev(), &claims).expect("token");
        let mut ana = tokio::time::timeout(STEP, Client::connect(&origin_url, &token))
            .await
            .expect("join in time")
            .expect("join");
        assert_eq!(
            alternates(&mut ana).await,
            vec![node_url.clone()],
            "eu-1 names asia-1 to its learner"
        );

        // The teacher through asia-1: its signaling goes to eu-1, its media stays on asia-1.
        let (mut teacher, teacher_sid, _audio) = teacher_playing_tone(&node, room).await;
        assert_eq!(
            alternates(&mut teacher).await,
            vec![origin_url.clone()],
            "asia-1 names its own alternates to the teacher it carries, not the origin's"
        );
        let expected = expected_tone(TONE, 50 * 90);
        let track = teacher_track(&mut ana, &teacher_sid).await;
        let packets = packets_of(&mut ana, &track, 50).await;
        assert_consecutive("ana on eu-1", &packets);
        align("ana on eu-1", &expected, &packets);

        // Her hand up, seen by the teacher, and saved for the room's next origin (every 0.5 s).
        let ana_sid = ana.participant().sid.clone();
        ana.raise_hand().expect("raise hand");
        wait_for(&mut teacher, |event| match event {
            ClientEvent::Room(ServerEvent::HandQueue { participant_sids })
                if participant_sids == vec![ana_sid.clone()] =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;

        // The origin's process is killed: no goodbye to anyone.
        let asia_egress = metric(&node, "aula_udp_bytes_sent_total", "").await;
        let died = Instant::now();
        process.kill();

        rejoined(&mut ana, "ana").await;
        let ana_back = died.elapsed();
        let teacher_sid = rejoined(&mut teacher, "the teacher").await;
        assert!(
            ana.participant().hand_raised,
            "ana's hand is up again on the new origin: {:?}",
            ana.participant()
        );
        // The teacher publishes again by itself: a new track, which ana hears.
        let track = teacher_track(&mut ana, &teacher_sid).await;
        let mut packets = Vec::new();
        while packets.len() < 100 {
            let packet = wait_for(&mut ana, |event| match event {
                ClientEvent::Packet(p) if *p.track_sid == *track => Some(p),
                _ => None,
            })
            .await;
            packets.push(packet);
        }
        let back = died.elapsed();
        assert_consecutive("ana after the failover", &packets);
        align("ana after the failover", &expected, &packets);
        eprintln!(
            "ana joined again through asia-1 {ana_back:?} after eu-1 was killed, \
             and heard 100 packets of the teacher {back:?} after"
        );
        assert!(
            back < RECONNECT_WINDOW,
            "back after {back:?}, beyond the reconnect window"
        );

        // Both are on asia-1 now, the room's new origin, which serves their media.
        assert_eq!(node.server.participant_count(), 2);
        let grew = metric(&node, "aula_udp_bytes_sent_total", "").await - asia_egress;
        assert!(
            grew > 100.0 * 60.0,
            "asia-1 sent ana the teacher: {grew} more bytes"
        );
    })
    .await
    .expect("the failover works in time");
}
