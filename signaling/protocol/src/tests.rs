//! The protocol's tests: messages as they look on the wire, parse errors, and compatibility
//! with what older peers send. Apart from `lib.rs` for their length.

use super::*;

#[test]
fn client_stats_parse_flat_and_what_is_left_out_stays_out() {
    let text = r#"{"type":"client_stats","fps":24.5,"freezes":0,"frame_width":1280,"rtt_ms":null}"#;
    let ClientMessage::ClientStats(stats) = ClientMessage::parse(text).unwrap() else {
        panic!("not client_stats");
    };
    assert_eq!(stats.fps, Some(24.5));
    assert_eq!(stats.freezes, Some(0), "a measured 0 is kept");
    assert_eq!(stats.frame_width, Some(1280));
    assert_eq!(stats.frame_height, None);
    assert_eq!(stats.rtt_ms, None);
    assert_eq!(stats.validate(), Ok(()));
    let text = serde_json::to_string(&ClientMessage::ClientStats(stats)).unwrap();
    assert_eq!(
        text,
        r#"{"type":"client_stats","fps":24.5,"freezes":0,"frame_width":1280}"#
    );
    // An empty report is one too.
    let empty = ClientMessage::parse(r#"{"type":"client_stats"}"#).unwrap();
    assert_eq!(empty, ClientMessage::ClientStats(ClientStats::default()));
}

#[test]
fn client_stats_out_of_range_are_refused() {
    let ok = ClientStats {
        fps: Some(30.0),
        audio_concealed_ratio: Some(1.0),
        rtt_ms: Some(120.0),
        frame_width: Some(MAX_RENDERED_DIMENSION),
        ..ClientStats::default()
    };
    assert_eq!(ok.validate(), Ok(()));
    let bad = [
        ClientStats {
            fps: Some(-1.0),
            ..ok
        },
        ClientStats {
            fps: Some(f64::NAN),
            ..ok
        },
        ClientStats {
            fps: Some(1000.0),
            ..ok
        },
        ClientStats {
            audio_concealed_ratio: Some(1.5),
            ..ok
        },
        ClientStats {
            packet_loss: Some(f64::INFINITY),
            ..ok
        },
        ClientStats {
            rtt_ms: Some(1e9),
            ..ok
        },
        ClientStats {
            freezes: Some(5000),
            ..ok
        },
        ClientStats {
            frame_height: Some(MAX_RENDERED_DIMENSION + 1),
            ..ok
        },
    ];
    for stats in bad {
        assert!(stats.validate().is_err(), "{stats:?} passed");
    }
    // A wrong type is a parse error: bad_message too.
    let text = r#"{"type":"client_stats","fps":"fast"}"#;
    assert_eq!(
        ClientMessage::parse(text).unwrap_err().0,
        ErrorCode::BadMessage
    );
}

#[test]
fn messages_are_tagged_snake_case() {
    let json = serde_json::to_string(&ClientMessage::Join {
        version: 1,
        token: "t".into(),
    })
    .unwrap();
    assert_eq!(json, r#"{"type":"join","version":1,"token":"t"}"#);
    let msg = ServerMessage::Error {
        code: ErrorCode::BadSdp,
        message: "x".into(),
    };
    assert_eq!(
        serde_json::to_string(&msg).unwrap(),
        r#"{"type":"error","code":"bad_sdp","message":"x"}"#
    );
}

#[test]
fn candidate_uses_browser_field_names() {
    let text = r#"{"type":"candidate","target":"publish","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#;
    let ClientMessage::Candidate { target, candidate } = ClientMessage::parse(text).unwrap() else {
        panic!("not a candidate");
    };
    assert_eq!(target, PeerTarget::Publish);
    assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
    assert_eq!(candidate.sdp_m_line_index, Some(0));
}

#[test]
fn additions_are_backward_compatible() {
    // A participant and a room as the first release sent them (no hand, no lock).
    let old = r#"{"type":"joined","version":1,"participant":{"sid":"PA_1","identity":"a","name":"a","role":"student","tracks":[]},"room":{"name":"r","participants":[]}}"#;
    let ServerMessage::Joined {
        participant,
        room,
        permissions,
        ..
    } = serde_json::from_str(old).expect("old joined parses")
    else {
        panic!("not joined");
    };
    assert!(!participant.hand_raised && !room.locked && permissions.is_none());
    // Permissions tolerate missing fields; new roles round-trip.
    let p: Permissions = serde_json::from_str(r#"{"can_subscribe":true}"#).expect("partial");
    assert!(p.can_subscribe && !p.can_publish);
    for role in [Role::Assistant, Role::Agent, Role::Learner] {
        let json = serde_json::to_string(&role).expect("role");
        assert_eq!(
            serde_json::from_str::<Role>(&json).expect("role back"),
            role
        );
    }
    assert_eq!(
        serde_json::to_string(&Role::Assistant).expect("role"),
        r#""assistant""#
    );
}

#[test]
fn server_frame_parses_messages_and_events() {
    let msg: ServerFrame = serde_json::from_str(r#"{"type":"pong"}"#).expect("pong");
    assert_eq!(msg, ServerFrame::Message(ServerMessage::Pong));
    let ev: ServerFrame =
        serde_json::from_str(r#"{"type":"hand_queue","participant_sids":["PA_1"]}"#)
            .expect("hand queue");
    assert_eq!(
        ev,
        ServerFrame::Event(ServerEvent::HandQueue {
            participant_sids: vec!["PA_1".into()]
        })
    );
    assert!(serde_json::from_str::<ServerFrame>(r#"{"type":"nope"}"#).is_err());
    let alternates: ServerFrame =
        serde_json::from_str(r#"{"type":"alternates","urls":["ws://b:7880/ws"]}"#)
            .expect("alternates");
    assert_eq!(
        alternates,
        ServerFrame::Event(ServerEvent::Alternates {
            urls: vec!["ws://b:7880/ws".into()]
        })
    );
    let text = r#"{"type":"participant_state","participant_sid":"PA_1","state":"reconnecting"}"#;
    let ev = ServerEvent::ParticipantState {
        participant_sid: "PA_1".into(),
        state: ParticipantConnection::Reconnecting,
    };
    assert_eq!(serde_json::to_string(&ev).expect("serializes"), text);
    assert_eq!(
        serde_json::from_str::<ServerFrame>(text).expect("parses"),
        ServerFrame::Event(ev)
    );
}

#[test]
fn sources_have_a_kind() {
    assert_eq!(TrackSource::Microphone.kind(), TrackKind::Audio);
    assert_eq!(TrackSource::ScreenShareAudio.kind(), TrackKind::Audio);
    assert_eq!(TrackSource::Camera.kind(), TrackKind::Video);
    assert_eq!(TrackSource::ScreenShare.kind(), TrackKind::Video);
}

#[test]
fn permissions_check_sources() {
    let p = Permissions {
        can_publish: true,
        publish_sources: vec![PublishSource::Screen],
        ..Default::default()
    };
    assert!(p.allows(TrackSource::ScreenShare));
    assert!(p.allows(TrackSource::ScreenShareAudio));
    assert!(!p.allows(TrackSource::Camera));
    let hidden = Permissions {
        hidden: true,
        ..p.clone()
    };
    assert!(!hidden.allows(TrackSource::ScreenShare));
    let off = Permissions {
        can_publish: false,
        ..p
    };
    assert!(!off.allows(TrackSource::ScreenShare));
}

#[test]
fn track_settings_shape() {
    let text = r#"{"type":"track_settings","track_sid":"TR_1","width":640,"height":0}"#;
    let msg = ClientMessage::parse(text).expect("parses");
    assert_eq!(
        msg,
        ClientMessage::TrackSettings {
            track_sid: "TR_1".into(),
            width: 640,
            height: 0
        }
    );
    assert_eq!(serde_json::to_string(&msg).expect("serializes"), text);
    // Sizes are whole, non-negative pixels: a browser's fractional or negative value is a
    // client bug.
    for bad in [
        r#"{"type":"track_settings","track_sid":"TR_1","width":640.5,"height":360}"#,
        r#"{"type":"track_settings","track_sid":"TR_1","width":-1,"height":360}"#,
        r#"{"type":"track_settings","track_sid":"TR_1","width":640}"#,
    ] {
        assert_eq!(
            ClientMessage::parse(bad).unwrap_err().0,
            ErrorCode::BadMessage,
            "{bad}"
        );
    }
}

#[test]
fn bad_input_is_classified() {
    assert_eq!(
        ClientMessage::parse("{not json").unwrap_err().0,
        ErrorCode::BadMessage
    );
    assert_eq!(
        ClientMessage::parse(r#"{"type":"fly"}"#).unwrap_err().0,
        ErrorCode::BadMessage
    );
    let huge = "x".repeat(MAX_MESSAGE_BYTES + 1);
    assert_eq!(
        ClientMessage::parse(&huge).unwrap_err().0,
        ErrorCode::MessageTooLarge
    );
}
