//! Publish offers the server cannot take are refused with a code that says why (issue 11,
//! item 8), and the publisher can still offer again: the real server (real SFU) over a real
//! WebSocket.

mod common;

use aula_protocol::{
    ClientMessage, ErrorCode, Role, ServerMessage, TrackAnnouncement, TrackSource,
};
use aula_signaling::{Config, Server, start};
use common::Client;

async fn server() -> Server {
    start(Config::loopback_ephemeral())
        .await
        .expect("server starts on loopback")
}

/// One sending m-section of a publish offer.
struct Section {
    media: &'static str,
    track_id: &'static str,
    /// `a=rtpmap` value of its only codec, e.g. `VP8/90000`.
    codec: &'static str,
    /// Its `a=ssrc` (none: no `a=ssrc` lines at all).
    ssrc: Option<u32>,
}

impl Section {
    fn new(media: &'static str, track_id: &'static str, codec: &'static str, ssrc: u32) -> Self {
        Self {
            media,
            track_id,
            codec,
            ssrc: Some(ssrc),
        }
    }

    fn source(&self) -> TrackSource {
        match (self.media, self.track_id) {
            ("audio", _) => TrackSource::Microphone,
            (_, "screen") => TrackSource::ScreenShare,
            _ => TrackSource::Camera,
        }
    }
}

/// A browser-like bundled publish offer; `version` is the `o=` line's (a re-offer counts up).
fn offer(version: u32, sections: &[Section]) -> String {
    let fingerprint = ["AB"; 32].join(":");
    let mids: Vec<String> = (0..sections.len()).map(|i| i.to_string()).collect();
    let mut lines = vec![
        "v=0".to_owned(),
        format!("o=- 4611731400430051336 {version} IN IP4 127.0.0.1"),
        "s=-".to_owned(),
        "t=0 0".to_owned(),
        format!("a=group:BUNDLE {}", mids.join(" ")),
        "a=msid-semantic: WMS stream".to_owned(),
    ];
    for (mid, section) in sections.iter().enumerate() {
        // One payload type per codec: within a bundle a type means the same codec everywhere.
        let payload_type = match section.codec {
            "opus/48000/2" => 111,
            "VP8/90000" => 96,
            _ => 120,
        };
        lines.extend([
            format!("m={} 9 UDP/TLS/RTP/SAVPF {payload_type}", section.media),
            "c=IN IP4 0.0.0.0".to_owned(),
            "a=rtcp:9 IN IP4 0.0.0.0".to_owned(),
            "a=ice-ufrag:Xq3b".to_owned(),
            "a=ice-pwd:7a9cSb2lJk4mPqRsTuVwXyZ0".to_owned(),
            format!("a=fingerprint:sha-256 {fingerprint}"),
            "a=setup:actpass".to_owned(),
            format!("a=mid:{mid}"),
            "a=sendonly".to_owned(),
            format!("a=msid:stream {}", section.track_id),
            "a=rtcp-mux".to_owned(),
            format!("a=rtpmap:{payload_type} {}", section.codec),
        ]);
        if let Some(ssrc) = section.ssrc {
            lines.push(format!("a=ssrc:{ssrc} cname:publisher"));
            lines.push(format!("a=ssrc:{ssrc} msid:stream {}", section.track_id));
        }
    }
    lines.push(String::new());
    lines.join("\r\n")
}

/// Sends the offer with each section announced as its source; the answer's SDP, or the code
/// and message it was refused with.
async fn publish(
    client: &mut Client,
    version: u32,
    sections: &[Section],
) -> Result<String, (ErrorCode, String)> {
    let tracks = sections
        .iter()
        .map(|s| TrackAnnouncement {
            track_id: s.track_id.into(),
            source: s.source(),
        })
        .collect();
    client
        .send(&ClientMessage::PublishOffer {
            sdp: offer(version, sections),
            tracks,
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
        ServerMessage::PublishAnswer { sdp } => Ok(sdp),
        ServerMessage::Error { code, message } => Err((code, message)),
        _ => unreachable!("matched an answer or an error"),
    }
}

#[tokio::test]
async fn an_offer_without_ssrc_lines_is_bad_sdp() {
    let server = server().await;
    let (mut teacher, _) = Client::join(server.http_addr(), "r", "t", Role::Teacher).await;
    let without_ssrc = [
        Section {
            ssrc: None,
            ..Section::new("audio", "mic", "opus/48000/2", 0)
        },
        Section {
            ssrc: None,
            ..Section::new("video", "cam", "VP8/90000", 0)
        },
    ];
    let refused = publish(&mut teacher, 1, &without_ssrc).await;
    let Err((code, message)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(code, ErrorCode::BadSdp, "{message}");
    assert!(message.contains("a=ssrc"), "{message}");

    // The same offer with its SSRCs is answered.
    let with_ssrc = [
        Section::new("audio", "mic", "opus/48000/2", 1111),
        Section::new("video", "cam", "VP8/90000", 2222),
    ];
    publish(&mut teacher, 1, &with_ssrc)
        .await
        .expect("the complete offer is answered");
    server.shutdown().await;
}

#[tokio::test]
async fn a_video_codec_the_server_cannot_receive_is_unsupported_codec() {
    let server = server().await;
    let (mut teacher, _) = Client::join(server.http_addr(), "r", "t", Role::Teacher).await;
    let unsupported = [
        Section::new("audio", "mic", "opus/48000/2", 1111),
        Section::new("video", "cam", "FOO/90000", 2222),
    ];
    let refused = publish(&mut teacher, 1, &unsupported).await;
    let Err((code, message)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(code, ErrorCode::UnsupportedCodec, "{message}");
    assert!(
        message.contains("video (mid 1) offers only FOO/90000"),
        "{message}"
    );

    // The same refused as a renegotiation (a screen share added to a camera already
    // published) leaves the negotiated state as it was: the next offer is answered.
    let camera = [
        Section::new("audio", "mic", "opus/48000/2", 1111),
        Section::new("video", "cam", "VP8/90000", 2222),
    ];
    publish(&mut teacher, 1, &camera)
        .await
        .expect("a supported offer is answered");
    let with_screen = [
        Section::new("audio", "mic", "opus/48000/2", 1111),
        Section::new("video", "cam", "VP8/90000", 2222),
        Section::new("video", "screen", "FOO/90000", 3333),
    ];
    let refused = publish(&mut teacher, 2, &with_screen).await;
    assert!(
        matches!(&refused, Err((ErrorCode::UnsupportedCodec, m)) if m.contains("video (mid 2)")),
        "{refused:?}"
    );
    let with_screen = [
        Section::new("audio", "mic", "opus/48000/2", 1111),
        Section::new("video", "cam", "VP8/90000", 2222),
        Section::new("video", "screen", "VP8/90000", 3333),
    ];
    publish(&mut teacher, 3, &with_screen)
        .await
        .expect("the corrected re-offer is answered");
    server.shutdown().await;
}
