//! A dropped WebSocket is resumed by the SDK itself: the same participant goes on, the room
//! never sees it leave, room events and chat flow again, and the teacher's audio keeps
//! arriving. Real server on loopback; every wait bounded.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::time::Duration;

use aula_client::aula_protocol::{Role, ServerEvent};
use aula_client::{AudioSource, ClientEvent, ToneConfig};
use common::*;

#[tokio::test]
async fn a_dropped_connection_is_resumed_without_leaving_the_room() {
    // The test config removes a dropped participant at once; keep it as a real server does.
    let mut config = aula_signaling::Config::loopback_ephemeral();
    config.room.reconnect_timeout_secs = 15;
    let server = TestServer::start_with(config).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut teacher = server.join("algebra", "teacher", Role::Teacher).await;
        let mut student = server.join("algebra", "ana", Role::Student).await;
        let student_sid = student.participant().sid.clone();
        let _audio = teacher
            .publish_audio(AudioSource::Tone(ToneConfig {
                frequency_hz: ToneConfig::DISTINCT_FRAMES_HZ,
                amplitude: 0.5,
            }))
            .await
            .expect("publish");
        let track = wait_for(&mut student, |event| match event {
            ClientEvent::TrackPublished(track) => Some(track.sid),
            _ => None,
        })
        .await;
        packets_of(&mut student, &track, 20).await;

        student.drop_connection_for_test();
        wait_for(&mut student, |event| {
            matches!(event, ClientEvent::Reconnecting { .. }).then_some(())
        })
        .await;
        wait_for(&mut student, |event| {
            matches!(event, ClientEvent::Reconnected).then_some(())
        })
        .await;

        // The room saw the student reconnecting, then back, and never leaving.
        let mut states = Vec::new();
        while states.last().map(String::as_str) != Some("connected") {
            let event = wait_for(&mut teacher, |event| match event {
                ClientEvent::Room(ServerEvent::ParticipantState {
                    participant_sid,
                    state,
                }) if participant_sid == student_sid => Some(format!("{state:?}").to_lowercase()),
                ClientEvent::ParticipantLeft { participant_sid }
                    if participant_sid == student_sid =>
                {
                    panic!("the room saw the student leave")
                }
                _ => None,
            })
            .await;
            states.push(event);
        }
        assert_eq!(states, ["reconnecting", "connected"]);

        // Signaling works on the new socket both ways, and the audio kept coming.
        teacher.chat("still there?").expect("queued");
        wait_for(&mut student, |event| match event {
            ClientEvent::Room(ServerEvent::Chat { text, .. }) if text == "still there?" => Some(()),
            _ => None,
        })
        .await;
        student.chat("yes").expect("queued");
        wait_for(&mut teacher, |event| match event {
            ClientEvent::Room(ServerEvent::Chat { text, .. }) if text == "yes" => Some(()),
            _ => None,
        })
        .await;
        let after = packets_of(&mut student, &track, 20).await;
        assert_eq!(after.len(), 20);
        assert_eq!(student.participant().sid, student_sid);
    })
    .await
    .expect("the test finishes in time");
}
