//! The admin HTTP API: authentication, rooms, participants, the desk.

mod common;

use std::net::SocketAddr;

use aula_protocol::{ClientMessage, Role, ServerEvent, ServerFrame, ServerMessage};
use aula_signaling::token::ApiKeys;
use aula_signaling::{Config, start};
use base64::Engine as _;
use common::{Client, HttpResponse, http_with, token_with};

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
