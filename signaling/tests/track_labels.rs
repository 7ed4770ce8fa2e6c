//! A track's announced source must match what the track is (issue 11, item 4). Grants are
//! checked on the source a `publish_offer` announces, so a label that could lie would let a
//! microphone-only token publish video by calling it `microphone`. The real server (real SFU)
//! refuses such offers with `track_mismatch`, and answers the same offer labelled truthfully.

mod common;

use aula_protocol::{
    ClientMessage, ErrorCode, PublishSource, Role, ServerMessage, TrackAnnouncement, TrackSource,
};
use aula_signaling::{Config, Server, start};
use common::{Client, token_with};

async fn server() -> Server {
    start(Config::loopback_ephemeral())
        .await
        .expect("server starts on loopback")
}

/// A browser-like publish offer with one sending m-section of `media` ("audio" or "video")
/// whose track id (in `a=msid` and `a=ssrc ... msid:`) is `track_id`.
fn offer(media: &str, track_id: &str) -> String {
    let (payload_type, rtpmap) = match media {
        "audio" => (111, "opus/48000/2"),
        _ => (96, "VP8/90000"),
    };
    let fingerprint = ["AB"; 32].join(":");
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS stream",
        &format!("m={media} 9 UDP/TLS/RTP/SAVPF {payload_type}"),
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Xq3b",
        "a=ice-pwd:7a9cSb2lJk4mPqRsTuVwXyZ0",
        &format!("a=fingerprint:sha-256 {fingerprint}"),
        "a=setup:actpass",
        "a=mid:0",
        "a=sendonly",
        &format!("a=msid:stream {track_id}"),
        "a=rtcp-mux",
        &format!("a=rtpmap:{payload_type} {rtpmap}"),
        "a=ssrc:1234 cname:publisher",
        &format!("a=ssrc:1234 msid:stream {track_id}"),
        "",
    ]
    .join("\r\n")
}

/// Joins room `r` with a token that may publish only `sources`.
async fn publisher(server: &Server, identity: &str, sources: Vec<PublishSource>) -> Client {
    let token = token_with("r", identity, Role::Teacher, |claims| {
        claims.publish_sources = sources;
    });
    Client::join_token(server.http_addr(), token).await.0
}

/// Sends a publish offer and returns the error code it is refused with, or `None` if answered.
async fn publish(
    client: &mut Client,
    sdp: String,
    track_id: &str,
    source: TrackSource,
) -> Option<ErrorCode> {
    client
        .send(&ClientMessage::PublishOffer {
            sdp,
            tracks: vec![TrackAnnouncement {
                track_id: track_id.into(),
                source,
            }],
        })
        .await;
    match client
        .recv_until(|m| {
            matches!(
                m,
                ServerMessage::PublishAnswer { .. } | ServerMessage::Error { .. }
            )
        })
        .await
    {
        ServerMessage::Error { code, .. } => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn video_announced_as_microphone_is_refused_for_a_microphone_only_token() {
    let server = server().await;
    let mut mic_only = publisher(&server, "mic-only", vec![PublishSource::Microphone]).await;
    assert_eq!(
        publish(
            &mut mic_only,
            offer("video", "cam"),
            "cam",
            TrackSource::Microphone
        )
        .await,
        Some(ErrorCode::TrackMismatch),
        "video labelled microphone"
    );
    // The refused offer left nothing behind: a truthful microphone offer is answered.
    assert_eq!(
        publish(
            &mut mic_only,
            offer("audio", "mic"),
            "mic",
            TrackSource::Microphone
        )
        .await,
        None,
        "audio labelled microphone"
    );
    mic_only.assert_alive().await;
    server.shutdown().await;
}

#[tokio::test]
async fn audio_announced_as_camera_is_refused() {
    let server = server().await;
    let mut camera = publisher(&server, "camera", vec![PublishSource::Camera]).await;
    assert_eq!(
        publish(
            &mut camera,
            offer("audio", "mic"),
            "mic",
            TrackSource::Camera
        )
        .await,
        Some(ErrorCode::TrackMismatch),
        "audio labelled camera"
    );
    assert_eq!(
        publish(
            &mut camera,
            offer("audio", "mic"),
            "mic",
            TrackSource::ScreenShare
        )
        .await,
        Some(ErrorCode::Forbidden),
        "a source the token lacks is still forbidden first"
    );
    assert_eq!(
        publish(
            &mut camera,
            offer("video", "cam"),
            "cam",
            TrackSource::Camera
        )
        .await,
        None,
        "video labelled camera"
    );
    server.shutdown().await;
}
