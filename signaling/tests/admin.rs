//! The admin HTTP API (authentication, rooms, participants, the desk) and signed webhooks,
//! delivered with retries to a tiny receiver on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aula_protocol::{ClientMessage, Role, ServerEvent, ServerFrame, ServerMessage};
use aula_signaling::token::ApiKeys;
use aula_signaling::{Config, start};
use base64::Engine as _;
use common::{Client, HttpResponse, STEP, http_with, token_with};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn basic() -> String {
    let keys = ApiKeys::dev();
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", keys.key, keys.secret));
    format!("Basic {encoded}")
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpResponse {
    http_with(addr, method, path, &[("Authorization", &basic())], body).await
}

fn error_code(response: &HttpResponse) -> String {
    response.json()["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {}", response.body))
        .to_owned()
}

#[tokio::test]
async fn every_bad_admin_request_gets_a_json_error_with_a_code() {
    let server = start(Config::loopback_ephemeral()).await.expect("starts");
    let addr = server.http_addr();

    let none = http_with(addr, "GET", "/api/admin/rooms", &[], "").await;
    assert_eq!(
        (none.status, error_code(&none).as_str()),
        (401, "unauthorized")
    );
    assert!(none.header("www-authenticate").is_some());

    let wrong = base64::engine::general_purpose::STANDARD.encode("devkey:not-the-secret");
    let wrong = http_with(
        addr,
        "GET",
        "/api/admin/rooms",
        &[("Authorization", &format!("Basic {wrong}"))],
        "",
    )
    .await;
    assert_eq!(
        (wrong.status, error_code(&wrong).as_str()),
        (401, "unauthorized")
    );

    // A valid token without the admin grant is forbidden; with it, allowed.
    let teacher = token_with("math", "t", Role::Teacher, |_| {});
    let r = http_with(
        addr,
        "GET",
        "/api/admin/rooms",
        &[("Authorization", &format!("Bearer {teacher}"))],
        "",
    )
    .await;
    assert_eq!((r.status, error_code(&r).as_str()), (403, "forbidden"));
    let ops = token_with("math", "ops", Role::Teacher, |c| c.admin = true);
    let r = http_with(
        addr,
        "GET",
        "/api/admin/rooms",
        &[("Authorization", &format!("Bearer {ops}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let cases = [
        ("POST", "/api/admin/rooms", "{not json", 400, "bad_request"),
        (
            "POST",
            "/api/admin/rooms",
            r#"{"name": ""}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/admin/rooms",
            r#"{"nom": "x"}"#,
            400,
            "bad_request",
        ),
        ("DELETE", "/api/admin/rooms/nope", "", 404, "not_found"),
        (
            "GET",
            "/api/admin/rooms/nope/participants",
            "",
            404,
            "not_found",
        ),
        (
            "PUT",
            "/api/admin/rooms/nope/participants/PA_x/permissions",
            r#"{"can_publish": true}"#,
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/admin/rooms/nope/participants/PA_x/mute",
            r#"{"track_sid": "TR_x"}"#,
            404,
            "not_found",
        ),
        (
            "DELETE",
            "/api/admin/rooms/nope/participants/PA_x",
            "",
            404,
            "not_found",
        ),
        ("PATCH", "/api/admin/rooms", "", 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let r = admin(addr, method, path, body).await;
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (status, code),
            "{method} {path} {body}: {}",
            r.body
        );
    }
    assert_eq!(
        admin(addr, "POST", "/api/admin/rooms", r#"{"name":"math"}"#)
            .await
            .status,
        201
    );
    let again = admin(addr, "POST", "/api/admin/rooms", r#"{"name":"math"}"#).await;
    assert_eq!(
        (again.status, error_code(&again).as_str()),
        (409, "conflict")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn admins_manage_rooms_participants_and_see_the_desk() {
    let server = start(Config::loopback_ephemeral()).await.expect("starts");
    let addr = server.http_addr();
    let (mut teacher, _) = Client::join(addr, "math", "teacher", Role::Teacher).await;
    let (mut student, joined) = Client::join(addr, "math", "student", Role::Student).await;
    let ServerMessage::Joined { participant, .. } = joined else {
        unreachable!("checked");
    };
    let s_sid = participant.sid;

    let rooms = admin(addr, "GET", "/api/admin/rooms", "").await.json();
    assert_eq!(rooms["rooms"][0]["name"], "math");
    assert_eq!(rooms["rooms"][0]["participants"], 2);
    let list = admin(addr, "GET", "/api/admin/rooms/math/participants", "")
        .await
        .json();
    assert_eq!(list["participants"].as_array().map(Vec::len), Some(2));

    // Permissions: the student may now publish its camera; it is told so.
    let r = admin(
        addr,
        "PUT",
        &format!("/api/admin/rooms/math/participants/{s_sid}/permissions"),
        r#"{"can_publish": true, "publish_sources": ["camera"], "can_subscribe": true}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ServerEvent::PermissionsChanged { permissions, .. } = student
        .event_until(|e| matches!(e, ServerEvent::PermissionsChanged { .. }))
        .await
    else {
        unreachable!("matched");
    };
    assert!(permissions.can_publish);

    // Muting a track the student does not have is a 404 with a code.
    let r = admin(
        addr,
        "POST",
        &format!("/api/admin/rooms/math/participants/{s_sid}/mute"),
        r#"{"track_sid": "TR_none"}"#,
    )
    .await;
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));

    // Remove the student, then delete the room.
    let r = admin(
        addr,
        "DELETE",
        &format!("/api/admin/rooms/math/participants/{s_sid}"),
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    let frames = student.expect_closed_frames().await;
    assert!(frames.contains(&ServerFrame::Message(ServerMessage::Left {
        reason: "removed by an administrator".into()
    })));
    assert_eq!(
        admin(addr, "DELETE", "/api/admin/rooms/math", "")
            .await
            .status,
        204
    );
    let frames = teacher.expect_closed_frames().await;
    assert!(frames.contains(&ServerFrame::Message(ServerMessage::Left {
        reason: "room deleted".into()
    })));
    let rooms = admin(addr, "GET", "/api/admin/rooms", "").await.json();
    assert_eq!(rooms["rooms"].as_array().map(Vec::len), Some(0));

    // The desk: one agent on duty for billing, one learner waiting for audio.
    let (mut agent, _) = Client::join(addr, "desk", "agent", Role::Agent).await;
    agent
        .send(&ClientMessage::GoOnDuty {
            skills: vec!["billing".into()],
            capacity: 2,
        })
        .await;
    agent.sync().await;
    let (mut learner, _) = Client::join(addr, "lobby", "ana", Role::Learner).await;
    learner
        .send(&ClientMessage::RequestHelp {
            topic: "audio".into(),
            language: "en".into(),
        })
        .await;
    learner.sync().await;
    let agents = admin(addr, "GET", "/api/admin/support/agents", "")
        .await
        .json();
    assert_eq!(agents["agents"][0]["skills"][0], "billing");
    assert_eq!(agents["agents"][0]["capacity"], 2);
    let queue = admin(addr, "GET", "/api/admin/support/queue", "")
        .await
        .json();
    assert_eq!(queue["queue"][0]["identity"], "ana");
    assert_eq!(queue["queue"][0]["topic"], "audio");
    server.shutdown().await;
}

/// A webhook receiver: answers 500 to the first request (to exercise the retry), 200 after;
/// forwards `(signature header, body)` of every request it answered 200.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (head, body) = loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_owned(), body.to_owned());
                    }
                }
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = stream
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
            if !first {
                let signature = head
                    .lines()
                    .find_map(|l| l.strip_prefix("X-Aula-Signature: "))
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send((signature, body));
            }
            first = false;
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_in_order() {
    let (hook_addr, mut hooks) = receiver().await;
    let mut config = Config::loopback_ephemeral();
    config.webhooks.url = Some(format!("http://{hook_addr}/aula"));
    let server = start(config).await.expect("starts");
    let addr = server.http_addr();

    let (mut teacher, _) = Client::join(addr, "math", "teacher", Role::Teacher).await;
    teacher.send(&ClientMessage::Leave).await;
    teacher.expect_closed().await;

    let mut events = Vec::new();
    while events.len() < 4 {
        let (signature, body) = tokio::time::timeout(STEP, hooks.recv())
            .await
            .expect("webhook in time")
            .expect("receiver running");
        let mut mac = Hmac::<Sha256>::new_from_slice(ApiKeys::dev().secret.as_bytes())
            .expect("any key length");
        mac.update(body.as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature, expected, "signature of {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(json["room"], "math");
        events.push(json["event"].as_str().unwrap_or_default().to_owned());
    }
    // The first delivery (room_started) failed once and was retried, so nothing was lost.
    assert_eq!(
        events,
        [
            "room_started",
            "participant_joined",
            "participant_left",
            "room_ended"
        ]
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
}
