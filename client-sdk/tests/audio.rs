//! End to end over loopback: a real Aula server (signaling + SFU) in-process and SDK clients.
//!
//! A teacher publishes an Opus tone; students must receive it intact and in order: the same
//! payload bytes the teacher's encoder produced, consecutive sequence numbers and timestamps,
//! and audio that decodes to the tone.

mod common;

use std::time::Duration;

use aula_client::aula_protocol::{ErrorCode, Role};
use aula_client::{AudioSource, Client, ClientError, ClientEvent, ToneConfig};
use bytes::Bytes;
use common::*;

/// Packets each student checks: 1.2 s of audio.
const CHECKED: usize = 60;

/// The default tone: every payload distinct, so a run of received payloads has exactly one
/// place in the stream (see [`ToneConfig::DISTINCT_FRAMES_HZ`]).
const TONE: ToneConfig = ToneConfig {
    frequency_hz: ToneConfig::DISTINCT_FRAMES_HZ,
    amplitude: 0.5,
};

/// Checks one student's packets against the tone and returns where they started in it.
fn check_tone(who: &str, expected: &[Bytes], packets: &[aula_client::ReceivedPacket]) -> usize {
    assert_consecutive(who, packets);
    let start = align(who, expected, packets);

    // Skip the decoder's first frames: a late joiner starts mid-stream and Opus needs a few
    // frames to converge.
    let pcm = decode(&packets[5..]);
    let total = mean_square(&pcm);
    let at_tone = power_at(&pcm, TONE.frequency_hz);
    let off_tone = power_at(&pcm, TONE.frequency_hz * 1.5);
    // A sine of peak 0.5 full scale has mean square (0.5 * 32767)² / 2.
    let sine = (0.5f64 * 32767.0).powi(2) / 2.0;
    assert!(
        total > 0.5 * sine,
        "{who}: too quiet (mean square {total:.0})"
    );
    // A pure sine puts half its mean square at its own frequency (see `power_at`).
    assert!(
        at_tone > 0.4 * total && off_tone < 0.01 * total,
        "{who}: not the tone (at {at_tone:.0}, off {off_tone:.0}, total {total:.0})"
    );
    start
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teacher_audio_reaches_every_student_intact_and_in_order() {
    let server = TestServer::start().await;
    let room = "algebra";
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut early = [
            server.join(room, "student-1", Role::Student).await,
            server.join(room, "student-2", Role::Student).await,
        ];
        let teacher = server.join(room, "teacher", Role::Teacher).await;
        let teacher_sid = teacher.participant().sid.clone();
        let audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("publish");
        assert!(!audio.track_id().is_empty());

        // The early students learn of the track by event and receive from (nearly) the start.
        let mut runs = Vec::new();
        for (i, student) in early.iter_mut().enumerate() {
            let track = teacher_track(student, &teacher_sid).await;
            let packets = packets_of(student, &track, CHECKED).await;
            runs.push((format!("early student {}", i + 1), track, packets));
        }

        // The late student joins a second into the lesson and finds the track in the snapshot.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut late = server.join(room, "student-3", Role::Student).await;
        let track = teacher_track(&mut late, &teacher_sid).await;
        let packets = packets_of(&mut late, &track, CHECKED).await;
        runs.push(("late student".to_owned(), track, packets));

        // Enough frames to cover the whole test at 50 per second.
        let expected = expected_tone(TONE, 50 * 60);
        let mut starts = Vec::new();
        for (who, track, packets) in &runs {
            assert_eq!(track, &runs[0].1, "{who}: a different track sid");
            starts.push(check_tone(who, &expected, packets));
        }
        eprintln!("runs start at frames {starts:?}");
        assert!(
            starts[2] >= starts[0] + 40,
            "the late student started at frame {} but an early one at {}",
            starts[2],
            starts[0]
        );

        // The teacher leaves: every student sees the track go, then the teacher.
        teacher.leave().await.expect("leave");
        let track = runs[0].1.clone();
        for student in early.iter_mut().chain(std::iter::once(&mut late)) {
            wait_for(student, |event| match event {
                ClientEvent::TrackUnpublished {
                    track_sid,
                    participant_sid,
                } if track_sid == track => {
                    assert_eq!(participant_sid, teacher_sid);
                    Some(())
                }
                _ => None,
            })
            .await;
            wait_for(student, |event| match event {
                ClientEvent::ParticipantLeft { participant_sid }
                    if participant_sid == teacher_sid =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
            assert_eq!(student.dropped_packets(), 0);
        }
        drop(audio);
    })
    .await
    .expect("test finished in time");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_payloads_arrive_byte_for_byte() {
    let server = TestServer::start().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut student = server.join("lab", "student", Role::Student).await;
        let teacher = server.join("lab", "teacher", Role::Teacher).await;
        let audio = teacher
            .publish_audio(AudioSource::Manual)
            .await
            .expect("publish");

        // Numbered payloads of varying size; the SFU does not look inside audio payloads.
        let payload = |i: u32| {
            let mut bytes = i.to_be_bytes().to_vec();
            bytes.resize(4 + (i as usize * 7) % 200, i as u8);
            Bytes::from(bytes)
        };
        // The track goes live on its first packet, so send before waiting for it.
        let teacher_sid = teacher.participant().sid.clone();
        let sender = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            for i in 0..500 {
                ticker.tick().await;
                audio.send_payload(payload(i)).await.expect("send");
            }
        });
        let track = teacher_track(&mut student, &teacher_sid).await;
        let packets = packets_of(&mut student, &track, 100).await;
        assert_consecutive("student", &packets);
        let first = u32::from_be_bytes(packets[0].payload[..4].try_into().expect("4 bytes"));
        for (offset, packet) in packets.iter().enumerate() {
            assert_eq!(packet.payload, payload(first + offset as u32));
        }
        sender.abort();
    })
    .await
    .expect("test finished in time");
    server.server.shutdown().await;
}

#[tokio::test]
async fn server_refusals_surface_with_their_code() {
    let server = TestServer::start().await;
    tokio::time::timeout(Duration::from_secs(30), async {
        // A token signed with another secret.
        let forged = {
            let keys = aula_signaling::token::ApiKeys {
                key: "devkey".into(),
                secret: "not-the-secret-but-32-bytes-long-at-least".into(),
            };
            let claims = aula_signaling::token::AccessClaims::new(
                "lab",
                "mallory",
                Role::Teacher,
                Duration::from_secs(60),
            );
            aula_signaling::token::mint(&keys, &claims).expect("mint")
        };
        match Client::connect(&server.ws_url(), &forged).await {
            Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::Unauthorized),
            Err(other) => panic!("expected unauthorized, got {other}"),
            Ok(_) => panic!("a forged token was accepted"),
        }

        // Students may not publish: the refusal comes back from publish_audio.
        let mut student = server.join("lab", "student", Role::Student).await;
        match student.publish_audio(AudioSource::Manual).await {
            Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::Forbidden),
            Err(other) => panic!("expected forbidden, got {other}"),
            Ok(_) => panic!("a student published"),
        }
        assert_eq!(error_code(&mut student).await, ErrorCode::Forbidden);

        // A rendered size for a track the student does not receive is refused, the session
        // goes on (the browser SDK sends these for the videos it shows). Other errors of the
        // refused publish (its trickled candidate) may come first.
        student
            .set_rendered_size("TR_nope", 640, 360)
            .expect("queued");
        wait_for(&mut student, |event| match event {
            ClientEvent::Error {
                code: ErrorCode::UnknownTrack,
                ..
            } => Some(()),
            _ => None,
        })
        .await;
        student.leave().await.expect("leave");
    })
    .await
    .expect("test finished in time");
    server.server.shutdown().await;
}

/// The server closes a WebSocket it has not heard from for its idle timeout. The SDK sends
/// nothing on its own, so it stays only because tungstenite answers the server's pings: a
/// listen-only load-test client must not be dropped after 30 s.
#[tokio::test]
async fn an_idle_client_stays_joined() {
    let mut config = aula_signaling::Config::loopback_ephemeral();
    config.http.ws_idle_timeout_secs = 1;
    let server = TestServer::start_with(config).await;
    let mut student = server.join("lab", "student", Role::Student).await;
    // Three idle timeouts without a single application message.
    let quiet = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match student.next_event().await {
                Some(ClientEvent::Disconnected { reason }) => return reason,
                Some(_) => {}
                None => return "events ended".to_owned(),
            }
        }
    })
    .await;
    if let Ok(reason) = quiet {
        panic!("an idle client was disconnected: {reason}");
    }
    assert_eq!(server.server.participant_count(), 1);
    student.leave().await.expect("leave");
    server.server.shutdown().await;
}
