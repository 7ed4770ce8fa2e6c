//! The QoS timeline of a recording end to end (issue 13, item 3): a real server records a room
//! for about 3 s while a teacher publishes audio, a student sends its browser figures and a
//! chat line; `qos.jsonl` is then read back from the recording's directory.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::path::PathBuf;
use std::time::Duration;

use aula_client::aula_protocol::{ClientStats, ErrorCode, RecordingState, Role, ServerEvent};
use aula_client::{AudioSource, Client, ClientEvent, ToneConfig};
use aula_signaling::{Config, QOS_FILE, read_qos};
use common::*;
use serde_json::Value;

/// A directory of its own for the test, removed when it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for a `recording` event in `state`; returns the recording's id.
async fn recording(client: &mut Client, state: RecordingState) -> String {
    wait_for(client, |event| match event {
        ClientEvent::Room(ServerEvent::Recording {
            state: s,
            recording_id,
            ..
        }) if s == state => Some(recording_id),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_room_leaves_a_qos_timeline_of_samples_browser_stats_and_events() {
    let dir = TempDir(std::env::temp_dir().join(format!("aula-qos-e2e-{}", std::process::id())));
    let mut config = Config::loopback_ephemeral();
    config.recording.dir = dir.0.clone();
    let server = TestServer::start_with(config).await;
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut teacher = server.join("physics", "teacher", Role::Teacher).await;
        let mut student = server.join("physics", "student", Role::Student).await;
        let _audio = teacher
            .publish_audio(AudioSource::Tone(ToneConfig {
                frequency_hz: 440.0,
                amplitude: 0.5,
            }))
            .await
            .expect("publish");
        teacher.start_recording().expect("sent");
        let id = recording(&mut teacher, RecordingState::Recording).await;
        recording(&mut student, RecordingState::Recording).await;

        // Bad figures are refused, and the session goes on.
        let bad = ClientStats {
            audio_concealed_ratio: Some(2.0),
            ..ClientStats::default()
        };
        student.send_client_stats(bad).expect("sent");
        assert_eq!(error_code(&mut student).await, ErrorCode::BadMessage);
        let stats = ClientStats {
            audio_concealed_ratio: Some(0.03),
            packet_loss: Some(0.01),
            rtt_ms: Some(12.5),
            ..ClientStats::default()
        };
        student.send_client_stats(stats).expect("sent");
        student.chat("can you hear me?").expect("sent");
        tokio::time::sleep(Duration::from_secs(3)).await;
        teacher.stop_recording().expect("sent");
        recording(&mut teacher, RecordingState::Stopped).await;
        // The timeline is whole once the recording has ended (the teacher's stop is answered
        // only then); the event is sent first, so wait for the file to be closed.
        let path = dir.0.join(&id).join(QOS_FILE);
        let mut lines = Vec::new();
        for _ in 0..50 {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            lines = read_qos(&text).expect("every line is JSON");
            if lines.iter().any(|l| l["event"] == "recording_stopped") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let times: Vec<u64> = lines
            .iter()
            .map(|l| l["t_us"].as_u64().expect("t_us"))
            .collect();
        assert!(times.is_sorted(), "t_us never decreases: {times:?}");
        let teacher_sid = teacher.participant().sid.clone();
        let student_sid = student.participant().sid.clone();
        for sid in [&teacher_sid, &student_sid] {
            let samples: Vec<&Value> = lines
                .iter()
                .filter(|l| l["kind"] == "sample" && l["participant"] == sid.as_str())
                .collect();
            assert!(samples.len() >= 2, "samples of {sid}: {samples:?}");
            let first = samples[0]["t_us"].as_u64().unwrap();
            let second = samples[1]["t_us"].as_u64().unwrap();
            let apart = second - first;
            assert!(
                (900_000..=1_100_000).contains(&apart),
                "a second apart: {apart} µs"
            );
            assert!(samples[1]["send_bps"].is_number() && samples[1]["receive_bps"].is_number());
        }
        let teacher_sends = lines.iter().any(|l| {
            l["kind"] == "sample"
                && l["participant"] == teacher_sid.as_str()
                && l["send_bps"].as_f64().unwrap_or(0.0) > 10_000.0
        });
        assert!(
            teacher_sends,
            "the teacher's Opus shows in its send bitrate"
        );
        let stats: Vec<&Value> = lines
            .iter()
            .filter(|l| l["kind"] == "client_stats")
            .collect();
        assert_eq!(stats.len(), 1, "only the valid figures: {stats:?}");
        assert_eq!(stats[0]["participant"], student_sid.as_str());
        assert_eq!(stats[0]["audio_concealed_ratio"], 0.03);
        assert_eq!(stats[0]["rtt_ms"], 12.5);
        assert!(stats[0].get("fps").is_none(), "what the browser left out");
        let event = |name: &str, sid: &str| {
            lines
                .iter()
                .find(|l| l["kind"] == "event" && l["event"] == name && l["participant"] == sid)
        };
        let chat = event("chat", &student_sid).expect("the chat line");
        assert_eq!(chat["text"], "can you hear me?");
        // Both were in the room when the recording started; a joiner gets `join`.
        assert_eq!(event("present", &teacher_sid).unwrap()["role"], "teacher");
        assert!(event("present", &student_sid).is_some());
        teacher.start_recording().expect("sent");
        let second = recording(&mut teacher, RecordingState::Recording).await;
        let later = server.join("physics", "later", Role::Student).await;
        let later_sid = later.participant().sid.clone();
        later.leave().await.expect("leave");
        teacher.stop_recording().expect("sent");
        recording(&mut teacher, RecordingState::Stopped).await;
        let path = dir.0.join(&second).join(QOS_FILE);
        let mut lines = Vec::new();
        for _ in 0..50 {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            lines = read_qos(&text).expect("every line is JSON");
            if lines.iter().any(|l| l["event"] == "recording_stopped") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let of_later = |name: &str| {
            lines
                .iter()
                .find(|l| l["event"] == name && l["participant"] == later_sid.as_str())
                .cloned()
        };
        assert_eq!(of_later("join").expect("join")["identity"], "later");
        assert_eq!(of_later("leave").expect("leave")["reason"], "left");
    })
    .await
    .expect("test in time");
}

#[test]
fn a_torn_last_line_is_left_out() {
    let text = "{\"t_us\":1,\"kind\":\"event\",\"event\":\"a\"}\n{\"t_us\":2,\"kind\":\"sam";
    let lines = read_qos(text).expect("torn tail tolerated");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event"], "a");
}
