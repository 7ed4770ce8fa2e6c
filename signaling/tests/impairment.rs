//! `POST /test/impairment`: absent without the test switch; with it, bad values are 400,
//! unknown rooms and identities 404, and a joined participant's impairment is set and cleared.
//! (That the SFU then really drops its media is checked with the Rust SDK, in
//! `client-sdk/tests/impairment.rs`.)

mod common;

use std::net::SocketAddr;

use aula_protocol::{Role, ServerMessage};
use aula_signaling::{Config, start};
use common::{Client, HttpResponse, ServeProcess, http_with};
use serde_json::json;

async fn post(addr: SocketAddr, body: &str) -> HttpResponse {
    http_with(addr, "POST", "/test/impairment", &[], body).await
}

fn error_code(response: &HttpResponse) -> String {
    response.json()["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {}", response.body))
        .to_owned()
}

fn with_switch() -> Config {
    let mut config = Config::loopback_ephemeral();
    config.dev.test_impairment = true;
    config
}

#[tokio::test]
async fn without_the_switch_the_route_does_not_exist() {
    let server = start(Config::loopback_ephemeral()).await.expect("starts");
    let (client, _) = Client::join(server.http_addr(), "r", "student1", Role::Student).await;
    let response = post(
        server.http_addr(),
        r#"{"room": "r", "identity": "student1", "loss": 1.0}"#,
    )
    .await;
    assert_eq!(response.status, 404, "{}", response.body);
    assert_eq!(error_code(&response), "not_found");
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn with_the_switch_values_are_checked_and_participants_found() {
    let server = start(with_switch()).await.expect("starts");
    let addr = server.http_addr();
    let (client, joined) = Client::join(addr, "r", "student1", Role::Student).await;
    let ServerMessage::Joined { participant, .. } = joined else {
        unreachable!("join returns Joined")
    };

    for bad in [
        r#"{"room": "r", "identity": "student1", "loss": 2.0}"#,
        r#"{"room": "r", "identity": "student1", "loss": -0.5}"#,
        r#"{"room": "r", "identity": "student1", "delay_ms": -20}"#,
        r#"{"room": "r", "identity": "student1", "delay_ms": 3600000}"#,
        r#"{"room": "r", "identity": "student1", "rate_kbps": "fast"}"#,
        r#"{"room": "r", "identity": "student1", "jitter_ms": 5}"#,
        r#"{"room": "r"}"#,
        "not json",
    ] {
        let response = post(addr, bad).await;
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
        assert_eq!(error_code(&response), "bad_request", "{bad}");
    }

    for unknown in [
        r#"{"room": "r", "identity": "nobody", "loss": 0.5}"#,
        r#"{"room": "elsewhere", "identity": "student1", "loss": 0.5}"#,
    ] {
        let response = post(addr, unknown).await;
        assert_eq!(response.status, 404, "{unknown}: {}", response.body);
        assert_eq!(error_code(&response), "not_found", "{unknown}");
    }

    let set = post(
        addr,
        r#"{"room": "r", "identity": "student1", "loss": 0.1, "rate_kbps": 500, "delay_ms": 20}"#,
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(
        set.json(),
        json!({
            "room": "r",
            "identity": "student1",
            "participant_sid": participant.sid,
            "impairment": {"loss": 0.1, "rate_kbps": 500, "delay_ms": 20, "queue_ms": 200},
        })
    );

    // By sid alone, as on a node that serves the participant's media but not its room.
    for bad in [
        json!({"participant_sid": "", "loss": 0.1}),
        json!({"participant_sid": participant.sid, "room": "r", "loss": 0.1}),
    ] {
        let response = post(addr, &bad.to_string()).await;
        assert_eq!(response.status, 400, "{bad}: {}", response.body);
    }
    let by_sid = post(
        addr,
        &json!({"participant_sid": participant.sid, "delay_ms": 20}).to_string(),
    )
    .await;
    assert_eq!(by_sid.status, 200, "{}", by_sid.body);
    assert_eq!(by_sid.json()["participant_sid"], json!(participant.sid));
    assert_eq!(by_sid.json()["impairment"]["delay_ms"], json!(20));

    let cleared = post(addr, r#"{"room": "r", "identity": "student1"}"#).await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assert_eq!(cleared.json()["impairment"], json!(null));

    // Only POST is served there.
    let get = http_with(addr, "GET", "/test/impairment", &[], "").await;
    assert_eq!(get.status, 405);

    client.close().await;
    server.shutdown().await;
}

/// The CLI flag turns the route on in the real binary.
#[tokio::test]
async fn the_serve_flag_turns_the_route_on() {
    let serve = ServeProcess::start("impairment", &["--test-impairment"]);
    // A missing route answers 404 too, so ask something only the route refuses, with 400.
    let response = post(serve.http, r#"{"room": "r", "identity": "i", "loss": 7}"#).await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(
        serve.log.contains("/test/impairment is on"),
        "no warning in:\n{}",
        serve.log
    );
}
