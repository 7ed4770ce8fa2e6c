//! Shared by the integration tests: a real Aula server on loopback and SDK clients against it.

pub mod cluster;

use std::time::Duration;

use aula_client::aula_protocol::{ErrorCode, Role};
use aula_client::{Client, ClientEvent, ReceivedPacket, ToneConfig, ToneEncoder};
use aula_signaling::token::{AccessClaims, ApiKeys, mint};
use aula_signaling::{Config, Server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bounds every wait in the tests, so a broken server fails the test instead of hanging it.
pub const STEP: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct TestServer {
    pub server: Server,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Config::loopback_ephemeral()).await
    }

    pub async fn start_with(config: Config) -> Self {
        init_tracing();
        let server = aula_signaling::start(config).await.expect("server starts");
        Self { server }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.server.http_addr())
    }

    pub fn token(&self, room: &str, identity: &str, role: Role) -> String {
        let claims = AccessClaims::new(room, identity, role, Duration::from_secs(600));
        mint(&ApiKeys::dev(), &claims).expect("dev token")
    }

    pub async fn join(&self, room: &str, identity: &str, role: Role) -> Client {
        let token = self.token(room, identity, role);
        tokio::time::timeout(STEP, Client::connect(&self.ws_url(), &token))
            .await
            .expect("join in time")
            .expect("join")
    }
}

/// POSTs a JSON body to `/test/impairment` (on with `[dev] test_impairment`); returns the
/// status code.
#[allow(dead_code)] // impairment.rs and rejoin.rs use it, audio.rs does not
pub async fn impair(http: std::net::SocketAddr, body: &str) -> u16 {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
        let request = format!(
            "POST /test/impairment HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    };
    let response = tokio::time::timeout(STEP, exchange)
        .await
        .expect("HTTP answer in time");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"))
}

/// The teacher's first track, from the student's room snapshot or its next `TrackPublished`.
pub async fn teacher_track(student: &mut Client, teacher_sid: &str) -> String {
    let known = student
        .room()
        .participants
        .iter()
        .find(|p| p.sid == teacher_sid)
        .and_then(|p| p.tracks.first())
        .map(|t| t.sid.clone());
    match known {
        Some(sid) => sid,
        None => {
            wait_for(student, |event| match event {
                ClientEvent::TrackPublished(track) if track.participant_sid == teacher_sid => {
                    Some(track.sid)
                }
                _ => None,
            })
            .await
        }
    }
}

/// Waits for the first event `pick` accepts, skipping the others.
pub async fn wait_for<T>(client: &mut Client, mut pick: impl FnMut(ClientEvent) -> Option<T>) -> T {
    tokio::time::timeout(STEP, async {
        loop {
            let event = client.next_event().await.expect("session still open");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    })
    .await
    .expect("event in time")
}

/// Waits for the server's next error; returns its code.
pub async fn error_code(client: &mut Client) -> ErrorCode {
    wait_for(client, |event| match event {
        ClientEvent::Error { code, .. } => Some(code),
        _ => None,
    })
    .await
}

/// Collects the first `count` packets of `track_sid`.
pub async fn packets_of(client: &mut Client, track_sid: &str, count: usize) -> Vec<ReceivedPacket> {
    let mut packets = Vec::with_capacity(count);
    while packets.len() < count {
        let packet = wait_for(client, |event| match event {
            ClientEvent::Packet(packet) if &*packet.track_sid == track_sid => Some(packet),
            _ => None,
        })
        .await;
        packets.push(packet);
    }
    packets
}

/// Asserts that `packets` are consecutive RTP packets: sequence numbers one apart and
/// timestamps one 20 ms frame apart (the SFU may offset both, but not stretch them).
pub fn assert_consecutive(who: &str, packets: &[ReceivedPacket]) {
    for pair in packets.windows(2) {
        assert_eq!(
            pair[1].seq,
            pair[0].seq.wrapping_add(1),
            "{who}: sequence gap or reorder after seq {}",
            pair[0].seq
        );
        assert_eq!(
            pair[1].timestamp,
            pair[0].timestamp.wrapping_add(960),
            "{who}: timestamp step after seq {}",
            pair[0].seq
        );
    }
}

/// The first `frames` payloads a publisher of `config` sends.
pub fn expected_tone(config: ToneConfig, frames: usize) -> Vec<bytes::Bytes> {
    let mut encoder = ToneEncoder::new(config).expect("encoder");
    (0..frames)
        .map(|_| encoder.next_frame().expect("encode"))
        .collect()
}

/// Where in `expected` the received payloads start, asserting that they then match frame for
/// frame. A subscriber that joins late starts mid-stream, so the start is searched for.
pub fn align(who: &str, expected: &[bytes::Bytes], packets: &[ReceivedPacket]) -> usize {
    let starts: Vec<usize> = (0..expected.len().saturating_sub(packets.len()))
        .filter(|&start| {
            packets
                .iter()
                .zip(&expected[start..])
                .all(|(packet, payload)| packet.payload == *payload)
        })
        .collect();
    assert!(
        !starts.is_empty(),
        "{who}: the {} received payloads are not a run of the publisher's tone",
        packets.len()
    );
    assert_eq!(
        starts.len(),
        1,
        "{who}: payloads match at several places, the tone is not unique enough"
    );
    starts[0]
}

/// Decodes Opus payloads to mono PCM.
pub fn decode(packets: &[ReceivedPacket]) -> Vec<i16> {
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).expect("decoder");
    let mut pcm = Vec::new();
    let mut frame = vec![0i16; 5760]; // the longest Opus frame, 120 ms
    for packet in packets {
        let n = decoder
            .decode(&packet.payload, &mut frame, false)
            .expect("decodable Opus");
        pcm.extend_from_slice(&frame[..n]);
    }
    pcm
}

/// Power of `pcm` at `frequency` (Goertzel), normalised so a full-length sine of amplitude A
/// gives about A²/4 — comparable with the mean square, which is A²/2 for a pure sine.
pub fn power_at(pcm: &[i16], frequency: f64) -> f64 {
    let w = std::f64::consts::TAU * frequency / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &sample in pcm {
        let s0 = f64::from(sample) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power / (pcm.len() as f64).powi(2)
}

pub fn mean_square(pcm: &[i16]) -> f64 {
    pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64
}

/// The workspace's `aula` binary (`AULA_BIN` to choose another), for tests that run the
/// server as its own process, to kill it. `scripts/test.sh` builds it before the tests.
pub fn aula_binary() -> std::path::PathBuf {
    let binary = std::env::var_os("AULA_BIN").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/aula"),
        std::path::PathBuf::from,
    );
    assert!(
        binary.exists(),
        "{} not found: build it first with `cargo build --bin aula` (or set AULA_BIN)",
        binary.display()
    );
    binary
}
