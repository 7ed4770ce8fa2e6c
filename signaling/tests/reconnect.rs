//! Reconnect: a participant whose connection drops stays in the room for the reconnect
//! timeout and resumes on a new connection with its resume token (same sid, what was sent
//! meanwhile delivered, ICE restarted); after the timeout it is removed. The others are told
//! when it drops and when it comes back.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aula_protocol::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, ParticipantConnection, Role, ServerEvent,
    ServerFrame, ServerMessage,
};
use aula_sfu::SfuEvent;
use aula_signaling::{Config, Server};
use common::media::{Call, FakeMedia, start_with_fake_media};
use common::{Client, eventually};
use tokio::sync::mpsc;

async fn server(reconnect_secs: u64) -> (Server, Arc<FakeMedia>, mpsc::UnboundedSender<SfuEvent>) {
    let mut config = Config::loopback_ephemeral();
    config.room.reconnect_timeout_secs = reconnect_secs;
    start_with_fake_media(config).await
}

fn sid_and_token(joined: &ServerMessage) -> (String, String) {
    match joined {
        ServerMessage::Joined {
            participant,
            resume_token,
            ..
        } => (
            participant.sid.clone(),
            resume_token
                .clone()
                .expect("a resume token when reconnects are on"),
        ),
        other => panic!("not joined: {other:?}"),
    }
}

async fn resume(addr: SocketAddr, token: &str) -> Client {
    let mut client = Client::connect(addr).await;
    client
        .send(&ClientMessage::Resume {
            version: PROTOCOL_VERSION,
            resume_token: token.to_owned(),
        })
        .await;
    client
}

#[tokio::test]
async fn a_dropped_participant_resumes_with_its_queue_and_an_ice_restart() {
    let (server, media, _events) = server(5).await;
    let addr = server.http_addr();
    let (mut teacher, _) = Client::join(addr, "class", "teacher", Role::Teacher).await;
    let (student, joined) = Client::join(addr, "class", "student", Role::Student).await;
    let (s_sid, token) = sid_and_token(&joined);
    teacher.sync().await;

    // The network goes away.
    student.close().await;
    // Still in the room: nobody is told it left, and chat meanwhile is kept for it.
    teacher
        .send(&ClientMessage::Chat {
            text: "still there?".into(),
        })
        .await;
    let seen = teacher.sync().await;
    assert!(
        !seen.iter().any(|f| matches!(
            f,
            ServerFrame::Message(ServerMessage::ParticipantLeft { .. })
        )),
        "{seen:?}"
    );
    assert_eq!(server.participant_count(), 2);

    let mut student = resume(addr, &token).await;
    assert_eq!(
        student.recv_frame().await,
        ServerFrame::Event(ServerEvent::Resumed {
            participant_sid: s_sid.clone()
        })
    );
    student
        .event_until(|e| matches!(e, ServerEvent::Chat { text, .. } if text == "still there?"))
        .await;
    eventually("ICE restarted", || {
        media.has(&Call::RestartIce(s_sid.clone()))
    })
    .await;
    // The same participant continues: it can act, and the room still counts two.
    student.send(&ClientMessage::RaiseHand).await;
    teacher
        .event_until(|e| {
            *e == ServerEvent::HandQueue {
                participant_sids: vec![s_sid.clone()],
            }
        })
        .await;
    assert_eq!(server.participant_count(), 2);

    // A made-up token resumes nobody.
    let mut guess = resume(addr, "not-a-resume-token").await;
    assert_eq!(guess.expect_error().await, ErrorCode::Unauthorized);
    guess.expect_closed().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_participant_not_back_in_time_is_removed() {
    let (server, _media, _events) = server(1).await;
    let addr = server.http_addr();
    let (mut teacher, _) = Client::join(addr, "class", "teacher", Role::Teacher).await;
    let (student, joined) = Client::join(addr, "class", "student", Role::Student).await;
    let (s_sid, token) = sid_and_token(&joined);
    teacher.sync().await;
    student.close().await;
    let started = tokio::time::Instant::now();
    teacher
        .message_until(|m| matches!(m, ServerMessage::ParticipantLeft { participant_sid } if *participant_sid == s_sid))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "removed after the timeout, not at once ({:?})",
        started.elapsed()
    );
    let mut late = resume(addr, &token).await;
    assert_eq!(late.expect_error().await, ErrorCode::Unauthorized);
    server.shutdown().await;
}

#[tokio::test]
async fn the_others_see_a_dropped_participant_reconnecting_then_back_then_gone() {
    let (server, _media, _events) = server(2).await;
    let addr = server.http_addr();
    let (mut teacher, _) = Client::join(addr, "class", "teacher", Role::Teacher).await;
    let (student, joined) = Client::join(addr, "class", "student", Role::Student).await;
    let (s_sid, token) = sid_and_token(&joined);
    teacher.sync().await;
    let state = |state| ServerEvent::ParticipantState {
        participant_sid: s_sid.clone(),
        state,
    };

    student.close().await;
    teacher
        .event_until(|e| *e == state(ParticipantConnection::Reconnecting))
        .await;
    let mut student = resume(addr, &token).await;
    assert!(matches!(
        student.recv_frame().await,
        ServerFrame::Event(ServerEvent::Resumed { .. })
    ));
    teacher
        .event_until(|e| *e == state(ParticipantConnection::Connected))
        .await;
    // Only the others are told: the participant's own queue held nothing about itself.
    let own = student.sync().await;
    assert!(
        !own.iter()
            .any(|f| matches!(f, ServerFrame::Event(ServerEvent::ParticipantState { .. }))),
        "{own:?}"
    );

    student.close().await;
    teacher
        .event_until(|e| *e == state(ParticipantConnection::Reconnecting))
        .await;
    teacher
        .message_until(|m| matches!(m, ServerMessage::ParticipantLeft { participant_sid } if *participant_sid == s_sid))
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn leaving_on_purpose_is_not_kept() {
    let (server, _media, _events) = server(30).await;
    let addr = server.http_addr();
    let (mut teacher, _) = Client::join(addr, "class", "teacher", Role::Teacher).await;
    let (mut student, joined) = Client::join(addr, "class", "student", Role::Student).await;
    let (s_sid, _) = sid_and_token(&joined);
    teacher.sync().await;
    student.send(&ClientMessage::Leave).await;
    student.expect_closed().await;
    teacher
        .message_until(|m| matches!(m, ServerMessage::ParticipantLeft { participant_sid } if *participant_sid == s_sid))
        .await;
    assert_eq!(server.participant_count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_resume_takes_over_a_connection_that_still_looks_alive() {
    // After a network change the old socket is dead but the server cannot tell yet: the new
    // connection must not wait for the idle timeout.
    let (server, _media, _events) = server(5).await;
    let addr = server.http_addr();
    let (mut teacher, _) = Client::join(addr, "class", "teacher", Role::Teacher).await;
    let (mut old, joined) = Client::join(addr, "class", "student", Role::Student).await;
    let (s_sid, token) = sid_and_token(&joined);
    teacher.sync().await;

    let mut new = resume(addr, &token).await;
    assert_eq!(
        new.recv_frame().await,
        ServerFrame::Event(ServerEvent::Resumed {
            participant_sid: s_sid.clone()
        })
    );
    old.expect_closed_frames().await;
    new.assert_alive().await;
    let seen = teacher.sync().await;
    assert!(
        !seen.iter().any(|f| matches!(
            f,
            ServerFrame::Message(ServerMessage::ParticipantLeft { .. })
        )),
        "{seen:?}"
    );
    assert_eq!(server.participant_count(), 2);
    // And the resumed connection can itself be resumed later.
    new.close().await;
    let mut again = resume(addr, &token).await;
    assert!(matches!(
        again.recv_frame().await,
        ServerFrame::Event(ServerEvent::Resumed { .. })
    ));
    server.shutdown().await;
}
