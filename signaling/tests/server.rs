//! The real server (real SFU on a loopback UDP port) driven over a real WebSocket.

mod common;

use std::time::Duration;

use aula_protocol::{
    ClientMessage, ErrorCode, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Role, ServerMessage,
    TrackAnnouncement, TrackSource,
};
use aula_signaling::token::{self, AccessClaims, ApiKeys};
use aula_signaling::{Config, Server, WS_MAX_MESSAGE_BYTES, start};
use common::{Client, STEP, dev_token, eventually, http};
use tokio_tungstenite::tungstenite::Message;

async fn server() -> Server {
    start(Config::loopback_ephemeral())
        .await
        .expect("server starts on loopback")
}

fn join_msg(token: String) -> ClientMessage {
    ClientMessage::Join {
        version: PROTOCOL_VERSION,
        token,
    }
}

#[tokio::test]
async fn join_with_valid_token_gets_joined() {
    let server = server().await;
    assert!(server.http_addr().ip().is_loopback());
    assert!(server.udp_addr().ip().is_loopback());
    assert_ne!(server.udp_addr().port(), 0);

    let (_client, joined) = Client::join(server.http_addr(), "math", "alice", Role::Teacher).await;
    let ServerMessage::Joined {
        version,
        participant,
        room,
        ..
    } = joined
    else {
        unreachable!("Client::join checked the variant");
    };
    assert_eq!(version, PROTOCOL_VERSION);
    assert!(participant.sid.starts_with("PA_"), "{}", participant.sid);
    assert_eq!(participant.identity, "alice");
    assert_eq!(participant.name, "alice");
    assert_eq!(participant.role, Role::Teacher);
    assert_eq!(room.name, "math");
    assert!(room.participants.is_empty());
    assert_eq!(server.room_count(), 1);
    assert_eq!(server.participant_count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn two_participants_see_each_other_join_and_leave_and_no_state_leaks() {
    let server = server().await;
    let addr = server.http_addr();
    let (mut teacher, joined_t) = Client::join(addr, "math", "teacher", Role::Teacher).await;
    let ServerMessage::Joined { participant: t, .. } = joined_t else {
        unreachable!()
    };

    let (mut student, joined_s) = Client::join(addr, "math", "student", Role::Student).await;
    let ServerMessage::Joined {
        participant: s,
        room,
        ..
    } = joined_s
    else {
        unreachable!()
    };
    // The newcomer's snapshot lists the teacher; the teacher hears about the newcomer.
    assert_eq!(room.participants.len(), 1);
    assert_eq!(room.participants[0].sid, t.sid);
    match teacher.recv().await {
        ServerMessage::ParticipantJoined { participant } => {
            assert_eq!(participant.sid, s.sid);
            assert_eq!(participant.role, Role::Student);
        }
        other => panic!("expected ParticipantJoined, got {other:?}"),
    }

    // Another room is separate.
    let (other, joined_o) = Client::join(addr, "history", "x", Role::Student).await;
    let ServerMessage::Joined { room, .. } = joined_o else {
        unreachable!()
    };
    assert!(room.participants.is_empty());
    assert_eq!(server.room_count(), 2);

    // The student leaves politely; the teacher is told.
    student.send(&ClientMessage::Leave).await;
    let rest = student.expect_closed().await;
    assert_eq!(
        rest,
        vec![ServerMessage::Left {
            reason: "left".into()
        }]
    );
    assert_eq!(
        teacher.recv().await,
        ServerMessage::ParticipantLeft {
            participant_sid: s.sid.clone()
        }
    );

    // The teacher just drops the connection: cleanup still happens.
    teacher.close().await;
    other.close().await;
    eventually("registry empty", || {
        server.room_count() == 0 && server.participant_count() == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_bad_message_and_the_session_continues() {
    let server = server().await;
    let (mut c, _) = Client::join(server.http_addr(), "r", "a", Role::Student).await;
    c.send_text("{not json").await;
    assert_eq!(c.expect_error().await, ErrorCode::BadMessage);
    c.assert_alive().await;

    c.send_text(r#"{"type":"fly_to_the_moon"}"#).await;
    assert_eq!(c.expect_error().await, ErrorCode::BadMessage);
    c.send_text(r#"{"type":"mute_track"}"#).await; // missing fields
    assert_eq!(c.expect_error().await, ErrorCode::BadMessage);
    c.send_text("[]").await;
    assert_eq!(c.expect_error().await, ErrorCode::BadMessage);
    c.send_raw(Message::binary(vec![0u8, 1, 2])).await;
    assert_eq!(c.expect_error().await, ErrorCode::BadMessage);
    c.assert_alive().await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_type_is_bad_message_before_join_too() {
    let server = server().await;
    let mut c = Client::connect(server.http_addr()).await;
    c.send_text(r#"{"type":"teleport"}"#).await;
    assert_eq!(c.expect_error().await, ErrorCode::BadMessage);
    // Not joined yet: a valid non-join message is refused, but the socket stays usable.
    c.send(&ClientMessage::Ping).await;
    assert_eq!(c.expect_error().await, ErrorCode::NotJoined);
    c.send(&join_msg(dev_token("r", "a", Role::Student))).await;
    assert!(matches!(c.recv().await, ServerMessage::Joined { .. }));
    server.shutdown().await;
}

#[tokio::test]
async fn too_large_message_is_refused_and_the_session_continues() {
    let server = server().await;
    let (mut c, _) = Client::join(server.http_addr(), "r", "a", Role::Teacher).await;
    let big = format!(
        r#"{{"type":"subscribe_answer","sdp":"{}"}}"#,
        "x".repeat(MAX_MESSAGE_BYTES)
    );
    c.send_text(&big).await;
    assert_eq!(c.expect_error().await, ErrorCode::MessageTooLarge);
    c.assert_alive().await;

    // Beyond the WebSocket limit the server does not even buffer it: the socket is closed.
    let huge = "x".repeat(WS_MAX_MESSAGE_BYTES + 1);
    c.send_text(&huge).await;
    c.expect_closed().await;
    eventually("participant removed", || server.participant_count() == 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_token_is_unauthorized_and_closes() {
    let server = server().await;
    for bad in [
        "garbage".to_string(),
        String::new(),
        // Signed with another secret.
        token::mint(
            &ApiKeys {
                key: "devkey".into(),
                secret: "another-secret-another-secret-another".into(),
            },
            &AccessClaims::new("r", "a", Role::Teacher, Duration::from_secs(60)),
        )
        .expect("mint"),
    ] {
        let mut c = Client::connect(server.http_addr()).await;
        c.send(&join_msg(bad)).await;
        let msgs = c.expect_closed().await;
        assert!(
            matches!(
                &msgs[..],
                [ServerMessage::Error {
                    code: ErrorCode::Unauthorized,
                    ..
                }]
            ),
            "{msgs:?}"
        );
    }
    assert_eq!(server.participant_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn expired_token_is_unauthorized() {
    let server = server().await;
    let mut claims = AccessClaims::new("r", "a", Role::Teacher, Duration::from_secs(60));
    claims.nbf -= 7200;
    claims.exp -= 3600;
    let expired = token::mint(&ApiKeys::dev(), &claims).expect("mint");
    let mut c = Client::connect(server.http_addr()).await;
    c.send(&join_msg(expired)).await;
    match c.recv().await {
        ServerMessage::Error { code, message } => {
            assert_eq!(code, ErrorCode::Unauthorized);
            assert!(message.contains("expired"), "{message}");
        }
        other => panic!("expected unauthorized, got {other:?}"),
    }
    c.expect_closed().await;
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_version_is_unsupported_version() {
    let server = server().await;
    let mut c = Client::connect(server.http_addr()).await;
    c.send(&ClientMessage::Join {
        version: PROTOCOL_VERSION + 1,
        token: dev_token("r", "a", Role::Teacher),
    })
    .await;
    assert_eq!(c.expect_error().await, ErrorCode::UnsupportedVersion);
    c.expect_closed().await;
    assert_eq!(server.participant_count(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn second_join_is_already_joined() {
    let server = server().await;
    let (mut c, _) = Client::join(server.http_addr(), "r", "a", Role::Teacher).await;
    c.send(&join_msg(dev_token("r", "a", Role::Teacher))).await;
    assert_eq!(c.expect_error().await, ErrorCode::AlreadyJoined);
    c.assert_alive().await;
    assert_eq!(server.participant_count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn same_identity_twice_kicks_the_older_session() {
    let server = server().await;
    let addr = server.http_addr();
    let (mut old, _) = Client::join(addr, "r", "alice", Role::Teacher).await;
    let (mut watcher, _) = Client::join(addr, "r", "bob", Role::Student).await;
    let ServerMessage::ParticipantJoined { .. } = old.recv().await else {
        panic!("old session should see bob");
    };
    let (_new, joined) = Client::join(addr, "r", "alice", Role::Teacher).await;
    let ServerMessage::Joined { room, .. } = joined else {
        unreachable!()
    };
    assert_eq!(
        room.participants.len(),
        1,
        "only bob: the old alice is gone"
    );

    let msgs = old.expect_closed().await;
    assert_eq!(
        msgs,
        vec![ServerMessage::Left {
            reason: "duplicate identity".into()
        }]
    );
    assert!(matches!(
        watcher.recv().await,
        ServerMessage::ParticipantLeft { .. }
    ));
    assert!(matches!(
        watcher.recv().await,
        ServerMessage::ParticipantJoined { .. }
    ));
    assert_eq!(server.participant_count(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn student_publish_offer_is_forbidden() {
    let server = server().await;
    let (mut c, _) = Client::join(server.http_addr(), "r", "s", Role::Student).await;
    c.send(&ClientMessage::PublishOffer {
        sdp: "v=0\r\n".into(),
        tracks: vec![],
    })
    .await;
    assert_eq!(c.expect_error().await, ErrorCode::Forbidden);
    c.assert_alive().await;
    server.shutdown().await;
}

/// Needs the real SFU worker (landed in b3086cc): the SDP is parsed by the media plane.
#[tokio::test]
async fn teacher_garbage_sdp_is_bad_sdp_and_the_session_continues() {
    let server = server().await;
    let (mut c, _) = Client::join(server.http_addr(), "r", "t", Role::Teacher).await;
    c.send(&ClientMessage::PublishOffer {
        sdp: "this is not SDP".into(),
        tracks: vec![TrackAnnouncement {
            track_id: "cam".into(),
            source: TrackSource::Camera,
        }],
    })
    .await;
    assert_eq!(c.expect_error().await, ErrorCode::BadSdp);
    c.assert_alive().await;

    // Subscribe answer without any offer, and a garbage candidate: errors, not a dead session.
    c.send(&ClientMessage::SubscribeAnswer { sdp: "nope".into() })
        .await;
    assert!(matches!(
        c.expect_error().await,
        ErrorCode::BadSdp | ErrorCode::BadMessage
    ));
    c.send_text(r#"{"type":"candidate","target":"publish","candidate":{"candidate":"garbage"}}"#)
        .await;
    assert_eq!(c.expect_error().await, ErrorCode::BadCandidate);
    c.assert_alive().await;
    server.shutdown().await;
}

#[tokio::test]
async fn muting_a_track_that_is_not_yours_is_unknown_track() {
    let server = server().await;
    let (mut c, _) = Client::join(server.http_addr(), "r", "t", Role::Teacher).await;
    c.send(&ClientMessage::MuteTrack {
        track_sid: "TR_nope".into(),
        muted: true,
    })
    .await;
    assert_eq!(c.expect_error().await, ErrorCode::UnknownTrack);
    c.assert_alive().await;
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_participants_and_closes() {
    let server = server().await;
    let (mut c, _) = Client::join(server.http_addr(), "r", "t", Role::Teacher).await;
    let addr = server.http_addr();
    tokio::time::timeout(STEP, server.shutdown())
        .await
        .expect("shutdown in time");
    let msgs = c.expect_closed().await;
    assert_eq!(
        msgs,
        vec![ServerMessage::Left {
            reason: "server shutting down".into()
        }]
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn http_routes_healthz_dev_token_pages_and_json_errors() {
    let server = server().await;
    let addr = server.http_addr();

    let r = http(addr, "GET", "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));

    let r = http(
        addr,
        "GET",
        "/api/dev-token?room=math&identity=ana&role=student&name=Ana%20G",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let jwt = r.json()["token"].as_str().expect("token string").to_owned();
    let claims = token::verify(&ApiKeys::dev(), &jwt).expect("dev token verifies");
    assert_eq!(claims.room, "math");
    assert_eq!(claims.name, "Ana G");
    assert!(!claims.can_publish);
    // ... and is accepted for joining.
    let mut c = Client::connect(addr).await;
    c.send(&join_msg(jwt)).await;
    assert!(matches!(c.recv().await, ServerMessage::Joined { .. }));

    assert_eq!(claims.region, None);

    // A region for the cluster's placement (the class page's `?region=`).
    let r = http(
        addr,
        "GET",
        "/api/dev-token?room=math&identity=kenji&role=student&region=asia",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let jwt = r.json()["token"].as_str().expect("token string").to_owned();
    let claims = token::verify(&ApiKeys::dev(), &jwt).expect("dev token verifies");
    assert_eq!(claims.region.as_deref(), Some("asia"));

    let long_region = format!(
        "/api/dev-token?room=math&identity=ana&role=student&region={}",
        "r".repeat(token::MAX_ID_BYTES + 1)
    );
    for bad in [
        "/api/dev-token",
        "/api/dev-token?room=math&identity=ana&role=principal",
        "/api/dev-token?room=&identity=ana&role=student",
        "/api/dev-token?room=math&identity=ana&role=student&region=",
        "/api/dev-token?room=math&identity=ana&role=student&region=as%0Aia",
        long_region.as_str(),
    ] {
        let r = http(addr, "GET", bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "bad_request", "{bad}");
    }

    let r = http(addr, "GET", "/no/such/route").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"]["code"], "not_found");
    assert!(r.json()["error"]["message"].as_str().is_some());

    let r = http(addr, "POST", "/healthz").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");

    // /ws without an upgrade is a JSON 4xx too.
    let r = http(addr, "GET", "/ws").await;
    assert!((400..500).contains(&r.status), "{}", r.status);
    assert_eq!(r.json()["error"]["code"], "not_websocket");

    // Every module of the browser SDK is served at /sdk/<name>, as it is in the repository (the
    // entry point aula.js imports the others by relative URL); nothing else under /sdk/ is.
    let sdk_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/js");
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(&sdk_dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".js") {
            modules.push(name);
        }
    }
    assert!(modules.contains(&"aula.js".to_string()), "{modules:?}");
    assert!(modules.len() > 1, "{modules:?}");
    for name in &modules {
        let path = format!("/sdk/{name}");
        let r = http(addr, "GET", &path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/javascript")),
            "{path}: {:?}",
            r.header("content-type")
        );
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        assert!(r.body.contains("export"), "{path}: the SDK is ES modules");
        let file = std::fs::read_to_string(sdk_dir.join(name)).unwrap();
        assert_eq!(r.body, file, "{path} is the file in client-sdk/js");
    }
    for path in ["/sdk/nope.js", "/sdk/", "/sdk", "/sdk/aula"] {
        let r = http(addr, "GET", path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"]["code"], "not_found", "{path}");
    }
    for (path, ty) in [
        ("/", "text/html"),
        ("/class", "text/html"),
        ("/web/class.js", "text/javascript"),
        ("/web/class.css", "text/css"),
    ] {
        let r = http(addr, "GET", path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").is_some_and(|t| t.starts_with(ty)),
            "{path}"
        );
        assert!(!r.body.is_empty(), "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn dev_token_is_404_when_keys_are_configured() {
    let mut config = Config::loopback_ephemeral();
    let keys = ApiKeys {
        key: "school".into(),
        secret: "0123456789abcdef0123456789abcdef".into(),
    };
    config.keys.api_key = Some(keys.key.clone());
    config.keys.api_secret = Some(keys.secret.clone());
    let server = start(config).await.expect("server starts");
    let addr = server.http_addr();

    let r = http(
        addr,
        "GET",
        "/api/dev-token?room=math&identity=ana&role=teacher",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");

    // Dev tokens are refused; tokens from the configured keys are accepted.
    let mut c = Client::connect(addr).await;
    c.send(&join_msg(dev_token("r", "a", Role::Teacher))).await;
    assert_eq!(c.expect_error().await, ErrorCode::Unauthorized);
    let good = token::mint(
        &keys,
        &AccessClaims::new("r", "a", Role::Teacher, Duration::from_secs(60)),
    )
    .expect("mint");
    let mut c = Client::connect(addr).await;
    c.send(&join_msg(good)).await;
    assert!(matches!(c.recv().await, ServerMessage::Joined { .. }));
    server.shutdown().await;
}

fn short_idle_config() -> Config {
    let mut config = Config::loopback_ephemeral();
    config.http.ws_idle_timeout_secs = 1;
    config
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_idle_timeout() {
    let server = start(short_idle_config()).await.expect("server starts");
    let (_dead, _) = Client::join(server.http_addr(), "r", "ghost", Role::Student).await;
    let (mut alive, _) = Client::join(server.http_addr(), "r", "alive", Role::Teacher).await;
    assert_eq!(server.participant_count(), 2);
    // `_dead` never reads again, so it never answers a ping: the server must give up on it,
    // while `alive` keeps answering pings (by reading) and stays.
    let left = alive
        .recv_until(|m| matches!(m, ServerMessage::ParticipantLeft { .. }))
        .await;
    assert!(matches!(left, ServerMessage::ParticipantLeft { .. }));
    assert_eq!(server.participant_count(), 1);
    alive.stay_quiet_for(Duration::from_millis(2500)).await;
    alive.assert_alive().await;
    assert_eq!(server.participant_count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn socket_that_never_joins_is_closed() {
    let server = start(short_idle_config()).await.expect("server starts");
    let mut c = Client::connect(server.http_addr()).await;
    let msgs = c.expect_closed().await;
    assert!(
        matches!(
            &msgs[..],
            [ServerMessage::Error {
                code: ErrorCode::NotJoined,
                ..
            }]
        ),
        "{msgs:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_cover_both_planes() {
    let server = server().await;
    let addr = server.http_addr();
    let (mut c, _) = Client::join(addr, "r", "a", Role::Student).await;
    c.send_text("{oops").await;
    assert_eq!(c.expect_error().await, ErrorCode::BadMessage);
    c.assert_alive().await;

    let r = http(addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        r.header("content-type")
    );
    for line in [
        "aula_rooms 1",
        "aula_participants 1",
        "aula_signaling_errors_total{code=\"bad_message\"} 1",
        "aula_signaling_messages_total{type=\"join\"} 1",
        "aula_signaling_messages_total{type=\"ping\"} 1",
        "aula_websocket_connections 1",
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            r.body
        );
    }
    assert!(
        r.body.contains("aula_sfu_peers"),
        "the SFU's metrics are in the same registry"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn empty_room_is_kept_for_its_timeout_then_removed() {
    let mut config = Config::loopback_ephemeral();
    config.room.empty_timeout_secs = 2;
    let server = start(config).await.expect("server starts");
    let (c, _) = Client::join(server.http_addr(), "r", "a", Role::Teacher).await;
    c.close().await;
    eventually("participant gone", || server.participant_count() == 0).await;
    assert_eq!(server.room_count(), 1, "kept while the timeout runs");
    eventually("room removed after its timeout", || {
        server.room_count() == 0
    })
    .await;
    server.shutdown().await;
}
