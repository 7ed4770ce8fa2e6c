//! Recording a room end to end over loopback (issue 13, items 1 and 2): a real server, SDK
//! participants, the admin API and the WebSocket messages; the capture log is read back from
//! disk with `aula_sfu::record`.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aula_client::aula_protocol::{ErrorCode, RecordingState, Role, ServerEvent};
use aula_client::{AudioSource, Client, ClientEvent, ToneConfig};
use aula_sfu::record::format::{Entry, Record};
use aula_sfu::record::reader::SegmentReader;
use aula_sfu::record::segment_files::segments;
use aula_signaling::Config;
use aula_signaling::config::RoomKind;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TONE: ToneConfig = ToneConfig {
    frequency_hz: ToneConfig::DISTINCT_FRAMES_HZ,
    amplitude: 0.5,
};

/// The dev keys as HTTP Basic credentials (`devkey:devsecret-...`).
const ADMIN: &str = "Basic ZGV2a2V5OmRldnNlY3JldC1jaGFuZ2UtbWUtaW4tcHJvZHVjdGlvbi0wMTIzNDU2Nzg5";

/// A directory of its own for one test, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("aula-rec-e2e-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `(status, JSON body)` of one admin request.
async fn admin(addr: SocketAddr, method: &str, path: &str, auth: bool) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let auth = if auth {
        format!("Authorization: {ADMIN}\r\n")
    } else {
        String::new()
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    tokio::time::timeout(STEP, stream.read_to_string(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split_whitespace()
        .nth(1)
        .expect("status")
        .parse()
        .expect("number");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A webhook endpoint that answers 200 and passes on each event's JSON.
async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            let body = loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).to_string();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break Some(body.to_owned());
                }
            };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
            if let Some(body) = body.and_then(|b| serde_json::from_str(&b).ok()) {
                let _ = tx.send(body);
            }
        }
    });
    (url, rx)
}

async fn webhook(
    hooks: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    event: &str,
) -> serde_json::Value {
    tokio::time::timeout(STEP, async {
        loop {
            let hook = hooks.recv().await.expect("receiver running");
            if hook["event"] == event {
                return hook;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {event} webhook"))
}

/// Waits for a `recording` event; returns its state, id and who started it.
async fn recording_event(client: &mut Client) -> (RecordingState, String, String) {
    wait_for(client, |event| match event {
        ClientEvent::Room(ServerEvent::Recording {
            state,
            recording_id,
            started_by,
        }) => Some((state, recording_id, started_by)),
        _ => None,
    })
    .await
}

async fn error_code(client: &mut Client) -> ErrorCode {
    wait_for(client, |event| match event {
        ClientEvent::Error { code, .. } => Some(code),
        _ => None,
    })
    .await
}

/// Every record of a log, all segments in order.
fn read_log(dir: &Path, name: &str) -> Vec<Record> {
    let mut records = Vec::new();
    for (_, path) in segments(dir, name).expect("recording directory") {
        let data = std::fs::read(path).expect("segment");
        let reader = SegmentReader::new(&data).expect("segment header");
        records.extend(reader.map(|r| r.expect("no corruption")));
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_recorded_over_the_admin_api_leaves_a_log_of_its_audio() {
    let dir = TempDir::new("admin");
    let (hook_url, mut hooks) = webhook_receiver().await;
    let mut config = Config::loopback_ephemeral();
    config.recording.dir = dir.0.clone();
    config.webhooks.url = Some(hook_url);
    let server = TestServer::start_with(config).await;
    let addr = server.server.http_addr();
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut teacher = server.join("history", "teacher", Role::Teacher).await;
        let mut student = server.join("history", "student", Role::Student).await;

        // Bad requests first: each gets its 4xx and JSON code.
        let path = "/api/admin/rooms/history/recording";
        let (status, body) = admin(addr, "POST", path, false).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let (status, body) = admin(addr, "POST", "/api/admin/rooms/nowhere/recording", true).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
        let (status, body) = admin(addr, "DELETE", path, true).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("not_recording"))
        );
        // A student may not record.
        student.start_recording().expect("sent");
        assert_eq!(error_code(&mut student).await, ErrorCode::Forbidden);

        let (status, body) = admin(addr, "POST", path, true).await;
        assert_eq!(status, 201, "{body}");
        let id = body["recording_id"].as_str().expect("an id").to_owned();
        let (status, body) = admin(addr, "POST", path, true).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("already_recording"))
        );
        for client in [&mut teacher, &mut student] {
            assert_eq!(
                recording_event(client).await,
                (RecordingState::Recording, id.clone(), "admin".to_owned())
            );
        }
        teacher.start_recording().expect("sent");
        assert_eq!(error_code(&mut teacher).await, ErrorCode::AlreadyRecording);
        let started = webhook(&mut hooks, "recording_started").await;
        assert_eq!(
            (started["room"].as_str(), started["recording_id"].as_str()),
            (Some("history"), Some(id.as_str()))
        );

        // Two seconds of the teacher's voice; a latecomer is told the room is recorded.
        let audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut latecomer = server.join("history", "latecomer", Role::Student).await;
        assert_eq!(
            recording_event(&mut latecomer).await.0,
            RecordingState::Recording
        );

        let (status, manifest) = admin(addr, "DELETE", path, true).await;
        assert_eq!(status, 200, "{manifest}");
        drop(audio);
        for client in [&mut teacher, &mut student, &mut latecomer] {
            assert_eq!(recording_event(client).await.0, RecordingState::Stopped);
        }
        let ended = webhook(&mut hooks, "recording_ended").await;
        assert_eq!(ended["recording_id"].as_str(), Some(id.as_str()));

        // The manifest on disk is the one the API answered with.
        let recording_dir = dir.0.join(&id);
        let on_disk: serde_json::Value = serde_json::from_slice(
            &std::fs::read(recording_dir.join("recording.json")).expect("recording.json"),
        )
        .expect("JSON");
        assert_eq!(on_disk, manifest);
        assert_eq!(manifest["room"], "history");
        assert!(manifest["ended_at_unix_ms"].as_u64().is_some());
        let participants = manifest["participants"].as_array().expect("participants");
        assert_eq!(participants.len(), 3, "the latecomer too: {participants:?}");
        let tracks = manifest["tracks"].as_array().expect("tracks");
        assert_eq!(tracks.len(), 1, "{tracks:?}");
        let track = &tracks[0];
        assert_eq!(track["source"], "microphone");
        assert_eq!(track["participant"], teacher.participant().sid.as_str());
        assert_eq!(track["error"], serde_json::Value::Null);
        assert_eq!(track["dropped"], 0);

        // The log: about 2 s of 20 ms Opus packets, in order, and the publisher's reports.
        let records = read_log(&recording_dir, track["log"].as_str().expect("log name"));
        assert_eq!(
            records.len() as u64,
            track["records"].as_u64().expect("records")
        );
        let rtp: Vec<&[u8]> = records
            .iter()
            .filter_map(|r| match &r.entry {
                Entry::Rtp(bytes) => Some(&bytes[..]),
                _ => None,
            })
            .collect();
        assert!((80..=150).contains(&rtp.len()), "{} packets", rtp.len());
        let seqs: Vec<u16> = rtp
            .iter()
            .map(|p| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "sequence numbers in order: {seqs:?}"
        );
        assert!(
            records
                .iter()
                .any(|r| matches!(&r.entry, Entry::SenderReport(sr) if sr[1] == 200)),
            "a sender report from the publisher"
        );
        assert!(records.windows(2).all(|w| w[0].time_us <= w[1].time_us));

        // A teacher may record too, over the WebSocket.
        teacher.start_recording().expect("sent");
        let (state, second, by) = recording_event(&mut student).await;
        assert_eq!((state, by.as_str()), (RecordingState::Recording, "teacher"));
        assert_ne!(second, id);
        teacher.stop_recording().expect("sent");
        assert_eq!(
            recording_event(&mut student).await.0,
            RecordingState::Stopped
        );
        teacher.stop_recording().expect("sent");
        assert_eq!(error_code(&mut teacher).await, ErrorCode::NotRecording);
    })
    .await
    .expect("test finished in time");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_recording_starts_with_the_room_and_ends_when_it_empties() {
    let dir = TempDir::new("auto");
    let (hook_url, mut hooks) = webhook_receiver().await;
    let mut config = Config::loopback_ephemeral();
    config.recording.dir = dir.0.clone();
    config.recording.auto = vec![RoomKind::Class];
    config.webhooks.url = Some(hook_url);
    let server = TestServer::start_with(config).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut teacher = server.join("geography", "teacher", Role::Teacher).await;
        let (state, id, by) = recording_event(&mut teacher).await;
        assert_eq!((state, by.as_str()), (RecordingState::Recording, "auto"));
        assert_eq!(
            webhook(&mut hooks, "recording_started").await["recording_id"],
            id.as_str()
        );
        teacher.leave().await.expect("leave");
        let ended = webhook(&mut hooks, "recording_ended").await;
        assert_eq!(ended["recording_id"], id.as_str());
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.0.join(&id).join("recording.json")).expect("recording.json"),
        )
        .expect("JSON");
        assert_eq!(manifest["started_by"], "auto");
        assert!(manifest["ended_at_unix_ms"].as_u64().is_some());
    })
    .await
    .expect("test finished in time");
    server.server.shutdown().await;
}
