//! The SDK's moderation and chat calls against a real server on loopback: a student raises a
//! hand, the teacher sees the queue and invites, the student's permissions change, chat goes
//! both ways, a student's moderation attempt is refused, and locking refuses a new student.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use aula_client::ClientEvent;
use aula_client::aula_protocol::{ErrorCode, Role, ServerEvent};
use common::*;

#[tokio::test]
async fn hands_stage_chat_and_lock_through_the_sdk() {
    let server = TestServer::start().await;
    let mut teacher = server.join("algebra", "teacher", Role::Teacher).await;
    let mut student = server.join("algebra", "ana", Role::Student).await;
    let student_sid = student.participant().sid.clone();

    student.raise_hand().expect("queued");
    let queue = wait_for(&mut teacher, |event| match event {
        ClientEvent::Room(ServerEvent::HandQueue { participant_sids })
            if !participant_sids.is_empty() =>
        {
            Some(participant_sids)
        }
        _ => None,
    })
    .await;
    assert_eq!(queue, std::slice::from_ref(&student_sid));

    teacher.invite_to_stage(&student_sid).expect("queued");
    let permissions = wait_for(&mut student, |event| match event {
        ClientEvent::Room(ServerEvent::PermissionsChanged {
            participant_sid,
            permissions,
        }) if participant_sid == student_sid => Some(permissions),
        _ => None,
    })
    .await;
    assert!(permissions.can_publish, "on stage: {permissions:?}");

    student
        .chat("can you repeat the last step?")
        .expect("queued");
    let (from, text) = wait_for(&mut teacher, |event| match event {
        ClientEvent::Room(ServerEvent::Chat { from, text, .. }) => Some((from, text)),
        _ => None,
    })
    .await;
    assert_eq!(
        (from.as_str(), text.as_str()),
        (student_sid.as_str(), "can you repeat the last step?")
    );
    teacher.chat("sure").expect("queued");
    let text = wait_for(&mut student, |event| match event {
        ClientEvent::Room(ServerEvent::Chat { text, .. }) if text == "sure" => Some(text),
        _ => None,
    })
    .await;
    assert_eq!(text, "sure");

    // A student may not moderate: the server refuses with a code.
    student.lock_room(true).expect("queued");
    let code = error_code(&mut student).await;
    assert_eq!(code, ErrorCode::Forbidden);

    teacher.lock_room(true).expect("queued");
    wait_for(&mut teacher, |event| match event {
        ClientEvent::Room(ServerEvent::RoomLocked { locked: true }) => Some(()),
        _ => None,
    })
    .await;
    let token = server.token("algebra", "late", Role::Student);
    let refused = aula_client::Client::connect(&server.ws_url(), &token).await;
    assert!(
        matches!(refused, Err(aula_client::ClientError::Server { .. })),
        "a locked class let a student in"
    );
}
