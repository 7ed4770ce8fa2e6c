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

        // The recording is exported by itself: files, recording.json says ready, a webhook.
        assert_eq!(manifest["state"], "exporting");
        let ready = webhook(&mut hooks, "recording_ready").await;
        assert_eq!(ready["recording_id"].as_str(), Some(id.as_str()));
        assert_eq!(ready["room"], "history");
        let files = ready["files"].as_array().expect("files");
        assert_eq!(files.len(), 1, "the teacher's audio: {files:?}");
        assert_eq!(files[0]["format"], "ogg");
        let recording_dir = dir.0.join(&id);
        let ogg = recording_dir.join(files[0]["path"].as_str().expect("path"));
        assert!(ogg_duration_s(&ogg) > 1.5, "about 2 s of audio");
        let on_disk: serde_json::Value = serde_json::from_slice(
            &std::fs::read(recording_dir.join("recording.json")).expect("recording.json"),
        )
        .expect("JSON");
        assert_eq!(on_disk["state"], "ready");
        assert_eq!(on_disk["error"], serde_json::Value::Null);
        // Otherwise the one the API answered with.
        assert_eq!(on_disk["tracks"], manifest["tracks"]);
        assert_eq!(on_disk["participants"], manifest["participants"]);
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

/// The length of an Ogg Opus file, from its last granule position less the pre-skip; reading
/// it checks every page's CRC and that it starts with an Opus header.
fn ogg_duration_s(path: &Path) -> f64 {
    let file = std::fs::File::open(path).expect("the Ogg file");
    let mut reader = ogg::PacketReader::new(std::io::BufReader::new(file));
    let head = reader
        .read_packet()
        .expect("valid pages")
        .expect("a first packet");
    assert!(head.data.starts_with(b"OpusHead"), "an Opus header");
    let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]);
    let mut last_granule = 0;
    while let Some(packet) = reader.read_packet().expect("valid pages") {
        last_granule = packet.absgp_page();
    }
    last_granule.saturating_sub(u64::from(pre_skip)) as f64 / 48_000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recordings_api_lists_shows_exports_deletes_and_uploads() {
    let dir = TempDir::new("api");
    let uploads = TempDir::new("api-uploads");
    let (hook_url, mut hooks) = webhook_receiver().await;
    let mut config = Config::loopback_ephemeral();
    config.recording.dir = dir.0.clone();
    config.recording.upload = Some(format!("file://{}", uploads.0.display()));
    config.webhooks.url = Some(hook_url);
    let server = TestServer::start_with(config).await;
    let addr = server.server.http_addr();
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut teacher = server.join("art", "teacher", Role::Teacher).await;
        let (status, body) = admin(addr, "POST", "/api/admin/rooms/art/recording", true).await;
        assert_eq!(status, 201, "{body}");
        let id = body["recording_id"].as_str().expect("an id").to_owned();
        assert_eq!(
            recording_event(&mut teacher).await.0,
            RecordingState::Recording
        );
        let audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("publish");

        // Every bad request: its 4xx and JSON code.
        let one = format!("/api/admin/recordings/{id}");
        let export = format!("{one}/export");
        for (method, path, auth, expected) in [
            ("GET", "/api/admin/recordings", false, (401, "unauthorized")),
            ("GET", one.as_str(), false, (401, "unauthorized")),
            ("DELETE", one.as_str(), false, (401, "unauthorized")),
            ("POST", export.as_str(), false, (401, "unauthorized")),
            ("DELETE", one.as_str(), true, (409, "recording_running")),
            ("POST", export.as_str(), true, (409, "recording_running")),
            (
                "GET",
                "/api/admin/recordings/RC_000000000000",
                true,
                (404, "not_found"),
            ),
            (
                "DELETE",
                "/api/admin/recordings/RC_000000000000",
                true,
                (404, "not_found"),
            ),
            (
                "POST",
                "/api/admin/recordings/RC_000000000000/export",
                true,
                (404, "not_found"),
            ),
            (
                "GET",
                "/api/admin/recordings/RC_..%2F..%2Fetc",
                true,
                (400, "invalid_id"),
            ),
            (
                "DELETE",
                "/api/admin/recordings/..",
                true,
                (400, "invalid_id"),
            ),
            (
                "POST",
                "/api/admin/recordings/RC_x/export",
                true,
                (400, "invalid_id"),
            ),
        ] {
            let (status, body) = admin(addr, method, path, auth).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (expected.0, Some(expected.1)),
                "{method} {path}: {body}"
            );
        }
        let (status, list) = admin(addr, "GET", "/api/admin/recordings", true).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["recordings"][0]["id"], id.as_str());
        assert_eq!(list["recordings"][0]["state"], "recording");

        tokio::time::sleep(Duration::from_secs(2)).await;
        let (status, _) = admin(addr, "DELETE", "/api/admin/rooms/art/recording", true).await;
        assert_eq!(status, 200);
        drop(audio);
        let ready = webhook(&mut hooks, "recording_ready").await;
        let uploaded_to = format!("file://{}/{id}", uploads.0.display());
        assert_eq!(ready["uploaded_to"].as_str(), Some(uploaded_to.as_str()));

        // The upload copied the files and the export's manifest.
        let file = ready["files"][0]["path"]
            .as_str()
            .expect("a file")
            .to_owned();
        for name in [file.as_str(), "manifest.json"] {
            assert_eq!(
                std::fs::read(uploads.0.join(&id).join(name)).expect("uploaded"),
                std::fs::read(dir.0.join(&id).join(name)).expect("exported"),
                "{name}"
            );
        }

        let (status, list) = admin(addr, "GET", "/api/admin/recordings", true).await;
        assert_eq!(status, 200);
        let entry = &list["recordings"][0];
        assert_eq!(
            (entry["id"].as_str(), entry["room"].as_str()),
            (Some(id.as_str()), Some("art"))
        );
        assert_eq!(entry["state"], "ready");
        assert_eq!(entry["participants"][0]["identity"], "teacher");
        assert!(
            entry["duration_ms"].as_u64().expect("ended") >= 1_500,
            "{entry}"
        );
        assert!(
            entry["size_bytes"].as_u64().expect("size") > 1_000,
            "{entry}"
        );
        let (status, shown) = admin(addr, "GET", &one, true).await;
        assert_eq!(status, 200);
        assert_eq!(shown["recording"]["state"], "ready");
        assert_eq!(
            shown["recording"]["uploaded_to"].as_str(),
            Some(uploaded_to.as_str())
        );
        assert_eq!(shown["export"]["files"][0]["path"], file.as_str());

        // Exported again on demand; then deleted, and gone.
        let (status, exported) = admin(addr, "POST", &export, true).await;
        assert_eq!(status, 200, "{exported}");
        assert_eq!(exported["files"][0]["path"], file.as_str());
        let (status, _) = admin(addr, "DELETE", &one, true).await;
        assert_eq!(status, 204);
        assert!(!dir.0.join(&id).exists());
        let (status, body) = admin(addr, "GET", &one, true).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
    })
    .await
    .expect("test finished in time");
    server.server.shutdown().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `aula serve` recording every class into `dir`, listening on loopback: its process and HTTP
/// address once it listens. A port that was free a moment ago may be taken by another process
/// before the server binds it: the server then exits at once and is started again on other
/// ports (3 tries).
async fn spawn_recording_server(dir: &Path) -> (std::process::Child, SocketAddr) {
    for _ in 0..3 {
        let (http_port, udp_port) = (free_port(), free_port());
        let config = dir.join("aula.toml");
        let log = dir.join("aula.log");
        std::fs::write(
            &config,
            format!(
                "log_level = \"warn\"\n\n[http]\nbind = \"127.0.0.1:{http_port}\"\n\n\
                 [rtc]\nudp_bind = \"127.0.0.1:{udp_port}\"\nadvertised_ips = [\"127.0.0.1\"]\n\n\
                 [recording]\ndir = \"{}\"\nauto = [\"class\"]\n",
                dir.join("recordings").display()
            ),
        )
        .expect("config");
        let mut child = std::process::Command::new(aula_binary())
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("aula serve starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], http_port));
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return (child, addr);
            }
            if child.try_wait().expect("child status").is_some() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    log.contains("Address already in use"),
                    "aula serve exited: {log}"
                );
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                panic!("the server did not listen in time");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("the server's ports were taken by other processes three times")
}

/// Issue 13's crash test: the server is killed (SIGKILL) 10 s into a recording; what it left
/// on disk exports (`aula recording export <id>`) to a valid file at least 9 s long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_survives_kill_9_and_exports_at_least_9_of_its_10_seconds() {
    let dir = TempDir::new("kill9");
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let (mut child, addr) = spawn_recording_server(&dir.0).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let claims = aula_signaling::token::AccessClaims::new(
            "physics",
            "teacher",
            Role::Teacher,
            Duration::from_secs(600),
        );
        let token = aula_signaling::token::mint(&aula_signaling::token::ApiKeys::dev(), &claims)
            .expect("dev token");
        let mut teacher = Client::connect(&format!("ws://{addr}/ws"), &token)
            .await
            .expect("join");
        let _audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("publish");
        let (state, id, _) = recording_event(&mut teacher).await;
        assert_eq!(state, RecordingState::Recording);
        tokio::time::sleep(Duration::from_secs(10)).await;
        child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
        child.wait().expect("reaped");
        id
    })
    .await;
    let _ = child.kill();
    let id = outcome.expect("recorded for 10 s in time");

    let export = std::process::Command::new(aula_binary())
        .args(["recording", "export", &id, "--config"])
        .arg(dir.0.join("aula.toml"))
        .output()
        .expect("aula recording export runs");
    assert!(
        export.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    let recording = dir.0.join("recordings").join(&id);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(recording.join("manifest.json")).expect("manifest.json"),
    )
    .expect("JSON");
    let files = manifest["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{manifest}");
    assert_eq!(files[0]["format"], "ogg");
    let seconds = ogg_duration_s(&recording.join(files[0]["path"].as_str().expect("path")));
    assert!(seconds >= 9.0, "{seconds} s exported");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(recording.join("recording.json")).expect("recording.json"),
    )
    .expect("JSON");
    assert_eq!(
        state["state"], "ready",
        "the export marks it ready: {state}"
    );
}

/// A recording its server never ended is exported by the next server to start on its
/// directory: here the directory of a running recording is copied aside, as a `kill -9` would
/// leave it (the logs as far as the OS has them), and a second server starts on the copy.
/// `recording.json` then says `ready`, with an end, the backend gets `recording_ready`, and the
/// audio plays for all but at most the last second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_left_by_a_crash_is_exported_when_the_server_starts_again() {
    let dir = TempDir::new("left-running");
    let left = TempDir::new("left-by-crash");
    let mut config = Config::loopback_ephemeral();
    config.recording.dir = dir.0.clone();
    let server = TestServer::start_with(config).await;
    let addr = server.server.http_addr();
    let id = tokio::time::timeout(Duration::from_secs(60), async {
        let mut teacher = server.join("history", "teacher", Role::Teacher).await;
        let _audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("publish");
        let (status, body) = admin(addr, "POST", "/api/admin/rooms/history/recording", true).await;
        assert_eq!(status, 201, "{body}");
        let id = body["recording_id"].as_str().expect("an id").to_owned();
        assert_eq!(
            recording_event(&mut teacher).await.0,
            RecordingState::Recording
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (from, to) = (dir.0.join(&id), left.0.join(&id));
        std::fs::create_dir_all(&to).expect("copy's directory");
        for file in std::fs::read_dir(&from).expect("the recording's directory") {
            let file = file.expect("entry").file_name();
            std::fs::copy(from.join(&file), to.join(&file)).expect("copied");
        }
        id
    })
    .await
    .expect("recorded in time");
    server.server.shutdown().await;
    let copy = left.0.join(&id);
    let recording_json = || -> serde_json::Value {
        let json = std::fs::read(copy.join("recording.json")).expect("recording.json");
        serde_json::from_slice(&json).expect("JSON")
    };
    assert_eq!(
        recording_json()["state"],
        "recording",
        "as the crash left it"
    );

    let (hook_url, mut hooks) = webhook_receiver().await;
    let mut config = Config::loopback_ephemeral();
    config.recording.dir = left.0.clone();
    config.webhooks.url = Some(hook_url);
    let server = TestServer::start_with(config).await;
    let ready = webhook(&mut hooks, "recording_ready").await;
    assert_eq!(ready["recording_id"], id.as_str());
    let recording = recording_json();
    assert_eq!(recording["state"], "ready", "{recording}");
    let started = recording["started_at_unix_ms"].as_u64().expect("start");
    let ended = recording["ended_at_unix_ms"].as_u64().expect("an end");
    assert!(ended >= started + 1_500, "{recording}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("manifest.json")).expect("manifest.json"))
            .expect("JSON");
    let file = manifest["files"][0]["path"].as_str().expect("a file");
    let seconds = ogg_duration_s(&copy.join(file));
    assert!(seconds >= 1.5, "{seconds} s exported");
    server.server.shutdown().await;
}

/// Retention at work: the janitor sweeps at start, then hourly; with `keep_days = 7` it deletes
/// an exported recording started 10 days ago and keeps a recent one and an old one that was
/// never exported (its export cut short by a crash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_deletes_old_exported_recordings_only() {
    let dir = TempDir::new("janitor");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let day_ms = 24 * 3600 * 1000;
    let recordings = [
        ("RC_oldexported1", "ready", now_ms - 10 * day_ms),
        ("RC_newexported1", "ready", now_ms - day_ms),
        ("RC_oldexporting", "exporting", now_ms - 10 * day_ms),
    ];
    for (id, state, started) in recordings {
        let recording = dir.0.join(id);
        std::fs::create_dir_all(&recording).expect("dir");
        let manifest = serde_json::json!({
            "id": id, "room": "math", "started_by": "admin", "started_at_unix_ms": started,
            "ended_at_unix_ms": started + 60_000, "state": state, "error": null,
            "exported_at_unix_ms": null, "uploaded_to": null, "participants": [], "tracks": [],
        });
        std::fs::write(recording.join("recording.json"), manifest.to_string()).expect("write");
    }
    let mut config = Config::loopback_ephemeral();
    config.recording.dir = dir.0.clone();
    config.recording.keep_days = Some(7);
    let server = TestServer::start_with(config).await;
    let deadline = tokio::time::Instant::now() + STEP;
    while dir.0.join("RC_oldexported1").exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not deleted in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dir.0.join("RC_newexported1").exists(),
        "a recent one is kept"
    );
    assert!(
        dir.0.join("RC_oldexporting").exists(),
        "an unexported one is kept"
    );
    server.server.shutdown().await;
}

/// A disk that fails mid-recording (here: the recording's directory replaced by a file, so a
/// new track's log cannot be created): the class goes on, and the room and the backend are told
/// the recording failed, with why.
#[tokio::test]
async fn a_log_that_cannot_be_written_fails_the_recording_and_the_class_goes_on() {
    let dir = TempDir::new("disk-fails");
    let (hook_url, mut hooks) = webhook_receiver().await;
    let mut config = Config::loopback_ephemeral();
    config.recording.dir = dir.0.clone();
    config.webhooks.url = Some(hook_url);
    let server = TestServer::start_with(config).await;
    let addr = server.server.http_addr();
    tokio::time::timeout(Duration::from_secs(60), async {
        let teacher = server.join("geology", "teacher", Role::Teacher).await;
        let mut student = server.join("geology", "student", Role::Student).await;
        let (status, body) = admin(addr, "POST", "/api/admin/rooms/geology/recording", true).await;
        assert_eq!(status, 201, "{body}");
        let id = body["recording_id"].as_str().expect("an id").to_owned();
        let recording_dir = dir.0.join(&id);
        std::fs::remove_dir_all(&recording_dir).expect("the recording's directory");
        std::fs::write(&recording_dir, b"not a directory").expect("a file in its place");

        let _audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("publish");
        let track = wait_for(&mut student, |event| match event {
            ClientEvent::TrackPublished(track) => Some(track.sid),
            _ => None,
        })
        .await;
        let failed = wait_for(&mut student, |event| match event {
            ClientEvent::Room(ServerEvent::Recording {
                state: RecordingState::Failed,
                recording_id,
                ..
            }) => Some(recording_id),
            _ => None,
        })
        .await;
        assert_eq!(failed, id);
        let hook = webhook(&mut hooks, "recording_failed").await;
        assert_eq!(hook["recording_id"].as_str(), Some(id.as_str()));
        assert!(
            hook["error"]
                .as_str()
                .is_some_and(|e| e.contains("recording failed")),
            "{hook}"
        );
        // The room is no longer recorded, and the class goes on: the audio keeps coming.
        let (status, body) =
            admin(addr, "DELETE", "/api/admin/rooms/geology/recording", true).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("not_recording"))
        );
        let packets = packets_of(&mut student, &track, 20).await;
        assert_eq!(packets.len(), 20);
    })
    .await
    .expect("the test finishes in time");
}
