//! Back where it was after an outage (issue 16, item 6): a participant lost not by its own choice
//! (its media path failed, or it was not resumed within the reconnect window) and joining again
//! with the same identity, as the SDKs do by themselves, gets back its stage and its raised hand
//! at its place in the queue. What a moderator did meanwhile wins, and leaving on purpose is
//! not an outage.

mod common;

use std::net::SocketAddr;

use aula_protocol::{
    ClientMessage, ErrorCode, ParticipantConnection, PeerTarget, Permissions, Role, ServerEvent,
    ServerMessage, TrackAnnouncement, TrackSource,
};
use aula_sfu::{PeerState, SfuEvent};
use aula_signaling::{Config, Server};
use common::Client;
use common::media::start_with_fake_media;
use tokio::sync::mpsc;

/// A server whose dropped participants are kept `reconnect_secs` for a resume, and a way to
/// inject the SFU's events.
async fn server(reconnect_secs: u64) -> (Server, mpsc::UnboundedSender<SfuEvent>) {
    let mut config = Config::loopback_ephemeral();
    config.room.reconnect_timeout_secs = reconnect_secs;
    let (server, _media, events) = start_with_fake_media(config).await;
    (server, events)
}

struct Joined {
    sid: String,
    permissions: Permissions,
    hand_raised: bool,
}

fn joined(msg: &ServerMessage) -> Joined {
    match msg {
        ServerMessage::Joined {
            participant,
            permissions,
            ..
        } => Joined {
            sid: participant.sid.clone(),
            permissions: permissions.clone().expect("permissions in joined"),
            hand_raised: participant.hand_raised,
        },
        other => panic!("not joined: {other:?}"),
    }
}

async fn join(addr: SocketAddr, identity: &str, role: Role) -> (Client, Joined) {
    let (client, msg) = Client::join(addr, "class", identity, role).await;
    (client, joined(&msg))
}

/// The teacher invites `sid` on stage and waits until the server has done it.
async fn invite(teacher: &mut Client, sid: &str) {
    teacher
        .send(&ClientMessage::InviteToStage {
            participant_sid: sid.to_owned(),
        })
        .await;
    wait_permissions(teacher, sid, true).await;
}

/// Waits for `sid`'s `permissions_changed` saying whether it may publish.
async fn wait_permissions(client: &mut Client, sid: &str, can_publish: bool) {
    client
        .event_until(|e| {
            matches!(e, ServerEvent::PermissionsChanged { participant_sid, permissions }
                if participant_sid == sid && permissions.can_publish == can_publish)
        })
        .await;
}

async fn wait_left(client: &mut Client, sid: &str) {
    client
        .message_until(
            |m| matches!(m, ServerMessage::ParticipantLeft { participant_sid } if participant_sid == sid),
        )
        .await;
}

async fn wait_queue(client: &mut Client, sids: &[&str]) {
    client
        .event_until(|e| {
            matches!(e, ServerEvent::HandQueue { participant_sids } if participant_sids == sids)
        })
        .await;
}

fn camera_offer() -> ClientMessage {
    ClientMessage::PublishOffer {
        sdp: "not really SDP".into(),
        tracks: vec![TrackAnnouncement {
            track_id: "cam".into(),
            source: TrackSource::Camera,
        }],
    }
}

#[tokio::test]
async fn a_student_on_stage_whose_media_failed_rejoins_on_stage_and_may_publish() {
    let (server, sfu) = server(5).await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut student, before) = join(addr, "ana", Role::Student).await;
    assert!(!before.permissions.can_publish);
    invite(&mut teacher, &before.sid).await;
    wait_permissions(&mut student, &before.sid, true).await;

    // Its media path fails: the server ends the session, as it does after the ICE timeout.
    sfu.send(SfuEvent::PeerState {
        participant: before.sid.clone(),
        target: PeerTarget::Publish,
        state: PeerState::Failed,
    })
    .expect("server running");
    assert_eq!(
        student.expect_closed().await,
        vec![ServerMessage::Left {
            reason: "peer connection failed".into()
        }]
    );
    wait_left(&mut teacher, &before.sid).await;

    // The SDK joins again with the same token: a new participant, on stage from its `joined`.
    let (mut student, after) = join(addr, "ana", Role::Student).await;
    assert_ne!(after.sid, before.sid);
    assert!(after.permissions.can_publish, "{:?}", after.permissions);
    assert!(after.permissions.allows(TrackSource::Camera));
    // Told as usual, and the teacher too.
    wait_permissions(&mut student, &after.sid, true).await;
    wait_permissions(&mut teacher, &after.sid, true).await;
    student.send(&camera_offer()).await;
    student
        .message_until(|m| matches!(m, ServerMessage::PublishAnswer { .. }))
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_raised_hand_comes_back_at_its_place_after_the_reconnect_window() {
    let (server, _sfu) = server(1).await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut a, a_joined) = join(addr, "a", Role::Student).await;
    let (mut b, b_joined) = join(addr, "b", Role::Student).await;
    let (mut c, c_joined) = join(addr, "c", Role::Student).await;
    let (a_sid, c_sid) = (a_joined.sid.as_str(), c_joined.sid.as_str());
    for hand in [&mut a, &mut b, &mut c] {
        hand.raise_hand_and_sync().await;
    }
    wait_queue(&mut teacher, &[a_sid, &b_joined.sid, c_sid]).await;

    // B's network goes; it is not back within the window and is removed.
    b.close().await;
    teacher
        .event_until(|e| {
            matches!(e, ServerEvent::ParticipantState { participant_sid, state: ParticipantConnection::Reconnecting }
                if *participant_sid == b_joined.sid)
        })
        .await;
    // Its hand leaves the queue as it leaves the room.
    wait_queue(&mut teacher, &[a_sid, c_sid]).await;
    wait_left(&mut teacher, &b_joined.sid).await;
    // Meanwhile D raises its hand: it stays behind B.
    let (mut d, d_joined) = join(addr, "d", Role::Student).await;
    d.raise_hand_and_sync().await;
    wait_queue(&mut teacher, &[a_sid, c_sid, &d_joined.sid]).await;

    let (mut b, back) = join(addr, "b", Role::Student).await;
    assert!(back.hand_raised, "joined says its hand is up");
    assert!(!back.permissions.can_publish, "a hand is not the stage");
    let queue = [a_sid, &back.sid, c_sid, &d_joined.sid];
    wait_queue(&mut teacher, &queue).await;
    wait_queue(&mut b, &queue).await;
    server.shutdown().await;
}

#[tokio::test]
async fn what_a_moderator_did_while_it_was_away_wins() {
    let (server, _sfu) = server(1).await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut on_stage, stage_joined) = join(addr, "on-stage", Role::Student).await;
    let (mut hand, hand_joined) = join(addr, "hand", Role::Student).await;
    invite(&mut teacher, &stage_joined.sid).await;
    wait_permissions(&mut on_stage, &stage_joined.sid, true).await;
    hand.raise_hand_and_sync().await;
    wait_queue(&mut teacher, &[&hand_joined.sid]).await;

    // Both drop; while they are reconnecting the teacher takes one off stage and dismisses
    // the other's hand.
    on_stage.close().await;
    hand.close().await;
    teacher
        .send(&ClientMessage::RemoveFromStage {
            participant_sid: stage_joined.sid.clone(),
        })
        .await;
    wait_permissions(&mut teacher, &stage_joined.sid, false).await;
    teacher
        .send(&ClientMessage::LowerHand {
            participant_sid: Some(hand_joined.sid.clone()),
        })
        .await;
    wait_queue(&mut teacher, &[]).await;
    wait_left(&mut teacher, &stage_joined.sid).await;
    wait_left(&mut teacher, &hand_joined.sid).await;

    let (mut on_stage, back) = join(addr, "on-stage", Role::Student).await;
    assert!(!back.permissions.can_publish, "{:?}", back.permissions);
    on_stage.send(&camera_offer()).await;
    assert_eq!(on_stage.error_code().await, ErrorCode::Forbidden);
    let (_hand, back) = join(addr, "hand", Role::Student).await;
    assert!(!back.hand_raised);
    let seen = teacher.sync().await;
    assert!(
        !seen.iter().any(|f| matches!(
            f,
            aula_protocol::ServerFrame::Event(ServerEvent::HandQueue { participant_sids })
                if !participant_sids.is_empty()
        )),
        "{seen:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_student_who_left_comes_back_as_a_plain_student() {
    let (server, _sfu) = server(5).await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut student, before) = join(addr, "ana", Role::Student).await;
    invite(&mut teacher, &before.sid).await;
    student.raise_hand_and_sync().await;
    student.send(&ClientMessage::Leave).await;
    student.expect_closed().await;
    wait_left(&mut teacher, &before.sid).await;

    let (mut student, after) = join(addr, "ana", Role::Student).await;
    assert!(!after.permissions.can_publish);
    assert!(!after.hand_raised);
    student.send(&camera_offer()).await;
    assert_eq!(student.error_code().await, ErrorCode::Forbidden);
    server.shutdown().await;
}

#[tokio::test]
async fn a_lock_after_the_loss_wins() {
    let (server, sfu) = server(5).await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut student, before) = join(addr, "ana", Role::Student).await;
    invite(&mut teacher, &before.sid).await;
    sfu.send(SfuEvent::PeerState {
        participant: before.sid.clone(),
        target: PeerTarget::Subscribe,
        state: PeerState::Failed,
    })
    .expect("server running");
    student.expect_closed().await;
    wait_left(&mut teacher, &before.sid).await;

    teacher
        .send(&ClientMessage::LockRoom { locked: true })
        .await;
    teacher.sync().await;
    let mut refused = Client::connect(addr).await;
    refused
        .send(&ClientMessage::Join {
            version: aula_protocol::PROTOCOL_VERSION,
            token: common::dev_token("class", "ana", Role::Student),
        })
        .await;
    assert_eq!(refused.expect_error().await, ErrorCode::RoomLocked);
    teacher
        .send(&ClientMessage::LockRoom { locked: false })
        .await;
    teacher.sync().await;
    let (_student, after) = join(addr, "ana", Role::Student).await;
    assert!(!after.permissions.can_publish, "forgotten when locked");
    server.shutdown().await;
}

#[tokio::test]
async fn a_new_session_replacing_its_own_older_one_keeps_the_stage() {
    // A rejoin that arrives before the server noticed the old connection was gone.
    let (server, _sfu) = server(5).await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut old, before) = join(addr, "ana", Role::Student).await;
    invite(&mut teacher, &before.sid).await;
    let (_new, after) = join(addr, "ana", Role::Student).await;
    assert!(after.permissions.can_publish);
    assert_eq!(
        old.expect_closed().await.last(),
        Some(&ServerMessage::Left {
            reason: "duplicate identity".into()
        })
    );
    wait_permissions(&mut teacher, &after.sid, true).await;
    server.shutdown().await;
}
