//! The SFU's test impairment (`POST /test/impairment`, on with `[dev] test_impairment`) really
//! acts on media: a subscriber behind total loss receives nothing, behind a rate cap no more
//! than the cap, and everything again once it is cleared. Loopback only; every wait bounded.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::time::Duration;

use aula_client::aula_protocol::Role;
use aula_client::{AudioSource, Client, ClientEvent};
use aula_signaling::Config;
use bytes::Bytes;
use common::*;
use tokio::time::Instant;

/// Payload of every packet the teacher sends: 50 per second, about 100 kbit/s on the wire.
const PAYLOAD_BYTES: usize = 200;

/// Packets of `track` and their payload bytes received during `window`.
async fn received_during(client: &mut Client, track: &str, window: Duration) -> (usize, usize) {
    let deadline = Instant::now() + window;
    let (mut packets, mut bytes) = (0, 0);
    while let Ok(event) = tokio::time::timeout_at(deadline, client.next_event()).await {
        match event.expect("session still open") {
            ClientEvent::Packet(packet) if &*packet.track_sid == track => {
                packets += 1;
                bytes += packet.payload.len();
            }
            _ => {}
        }
    }
    (packets, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_impairment_acts_on_its_media_and_clears() {
    let mut config = Config::loopback_ephemeral();
    config.dev.test_impairment = true;
    let server = TestServer::start_with(config).await;
    let http = server.server.http_addr();
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut student = server.join("lab", "student1", Role::Student).await;
        let teacher = server.join("lab", "teacher", Role::Teacher).await;
        let audio = teacher
            .publish_audio(AudioSource::Manual)
            .await
            .expect("publish");
        let sender = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            // 60 s at most; the test ends long before.
            for i in 0..3000u32 {
                ticker.tick().await;
                let mut payload = vec![i as u8; PAYLOAD_BYTES];
                payload[..4].copy_from_slice(&i.to_be_bytes());
                if audio.send_payload(Bytes::from(payload)).await.is_err() {
                    break;
                }
            }
        });
        let track = wait_for(&mut student, |event| match event {
            ClientEvent::TrackPublished(track) => Some(track.sid),
            _ => None,
        })
        .await;
        packets_of(&mut student, &track, 10).await;

        // Total loss: after what was already on its way, nothing.
        let body = r#"{"room": "lab", "identity": "student1", "loss": 1.0}"#;
        assert_eq!(impair(http, body).await, 200);
        received_during(&mut student, &track, Duration::from_millis(300)).await;
        let (lost, _) = received_during(&mut student, &track, Duration::from_secs(1)).await;
        assert_eq!(lost, 0, "packets got through total loss");

        // Cleared: media flows again (the connection survived a second of silence both ways).
        let clear = r#"{"room": "lab", "identity": "student1"}"#;
        assert_eq!(impair(http, clear).await, 200);
        packets_of(&mut student, &track, 25).await;

        // A 32 kbit/s cap on a ~100 kbit/s stream: some packets, never more than the cap.
        let body = r#"{"room": "lab", "identity": "student1", "rate_kbps": 32}"#;
        assert_eq!(impair(http, body).await, 200);
        received_during(&mut student, &track, Duration::from_millis(500)).await;
        let window = Duration::from_secs(2);
        let (capped, bytes) = received_during(&mut student, &track, window).await;
        // The link's output never exceeds its rate; one datagram may straddle the window.
        let cap = 32_000 / 8 * window.as_secs() as usize + 2 * PAYLOAD_BYTES;
        eprintln!("through 32 kbit/s: {capped} packets, {bytes} payload bytes in {window:?}");
        assert!(
            bytes <= cap,
            "{bytes} payload bytes in {window:?} through 32 kbit/s"
        );
        assert!(
            capped > 0 && capped < 70,
            "{capped} of ~100 packets through the cap"
        );

        assert_eq!(impair(http, clear).await, 200);
        let (cleared, _) = received_during(&mut student, &track, Duration::from_secs(1)).await;
        assert!(cleared > 35, "only {cleared} packets in 1 s once cleared");
        assert_eq!(student.dropped_packets(), 0);
        sender.abort();
    })
    .await
    .expect("test finished in time");
    server.server.shutdown().await;
}
