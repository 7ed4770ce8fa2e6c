//! The control plane's defences against clients that hold resources: half-open HTTP
//! connections, connection floods from one address or many, WebSockets that never join, and
//! oversized WebSocket messages.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aula_protocol::{ClientMessage, PROTOCOL_VERSION, Role, ServerMessage};
use aula_signaling::{Config, Server, start};
use common::{Client, STEP, http};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn server_with(edit: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::loopback_ephemeral();
    edit(&mut config);
    start(config).await.expect("server starts on loopback")
}

/// The value of a metric line `name` (with labels, if any) in `/metrics`; 0 when absent.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let r = http(addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Reads until the server closes `stream` (EOF or reset); panics if it is still open after
/// [`STEP`]. Returns what the server sent before closing.
async fn expect_server_closes(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {STEP:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Requests `/healthz` until one is refused (the server accepts, and so counts, the
/// connections a test opened asynchronously); panics if none is within [`STEP`].
async fn first_refusal(addr: SocketAddr) -> common::HttpResponse {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let r = http(addr, "GET", "/healthz").await;
        if r.status != 200 {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests `path` until it is served (a closed connection frees its place once the server
/// notices); panics if it is not within [`STEP`].
async fn first_served(addr: SocketAddr, path: &str) -> common::HttpResponse {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let r = http(addr, "GET", path).await;
        if r.status == 200 {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn half_open_connections_are_closed_after_the_header_timeout() {
    let server = server_with(|c| c.http.header_read_timeout_secs = 1).await;
    let addr = server.http_addr();
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: aula\r\nX-Slow: ")
        .await
        .expect("write a partial header");
    let mut silent = TcpStream::connect(addr).await.expect("connect");

    expect_server_closes(&mut partial).await;
    expect_server_closes(&mut silent).await;
    assert_eq!(metric(addr, "aula_http_header_timeouts_total").await, 2.0);
    // A complete request is still served (and its connection no longer counted after).
    assert_eq!(http(addr, "GET", "/healthz").await.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_total_cap_are_refused_with_503() {
    let server = server_with(|c| {
        c.http.max_connections = 3;
        c.http.max_connections_per_ip = 0;
    })
    .await;
    let addr = server.http_addr();
    // A WebSocket holds its connection for as long as it is open, like any other.
    let (mut ws, _) = Client::join(addr, "r", "t", Role::Teacher).await;
    let first = TcpStream::connect(addr).await.expect("connect");
    let _second = TcpStream::connect(addr).await.expect("connect");

    let refused = first_refusal(addr).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("connection"), Some("close"));
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "too_many_connections");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("the server")),
        "{error}"
    );
    ws.assert_alive().await;

    drop(first);
    let metrics = first_served(addr, "/metrics").await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aula_connections_refused_total{reason=\"max_connections\"}")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "aula_http_connections 3"),
        "the WebSocket, the idle connection and this request: {metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_with_503() {
    let server = server_with(|c| c.http.max_connections_per_ip = 2).await;
    let addr = server.http_addr();
    let first = TcpStream::connect(addr).await.expect("connect");
    let _second = TcpStream::connect(addr).await.expect("connect");

    let refused = first_refusal(addr).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "too_many_connections");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("your address")),
        "{error}"
    );

    drop(first);
    let metrics = first_served(addr, "/metrics").await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("aula_connections_refused_total{reason=\"max_connections_per_ip\"}")),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn websockets_over_the_unjoined_cap_are_refused_with_503() {
    let server = server_with(|c| c.http.max_unjoined_websockets = 2).await;
    let addr = server.http_addr();
    let (mut teacher, _) = Client::join(addr, "r", "t", Role::Teacher).await;
    let mut first = Client::connect(addr).await;
    let _second = Client::connect(addr).await;

    let refused = tokio::time::timeout(STEP, connect_async(format!("ws://{addr}/ws")))
        .await
        .expect("an answer in time");
    let Err(WsError::Http(response)) = refused else {
        panic!("expected an HTTP refusal, got {refused:?}");
    };
    assert_eq!(response.status(), 503);
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap_or_default())
            .expect("a JSON body");
    assert_eq!(body["error"]["code"], "too_many_connections");

    // Joining gives the place back; a joined socket never counted.
    first
        .send(&ClientMessage::Join {
            version: PROTOCOL_VERSION,
            token: common::dev_token("r", "s", Role::Student),
        })
        .await;
    assert!(matches!(first.recv().await, ServerMessage::Joined { .. }));
    let _third = Client::connect(addr).await;
    teacher.sync().await;
    assert_eq!(
        metric(
            addr,
            "aula_connections_refused_total{reason=\"max_unjoined_websockets\"}"
        )
        .await,
        1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_10_mb_frame_gets_close_code_1009() {
    let server = server_with(|_| {}).await;
    let addr = server.http_addr();
    let (mut ws, _) = tokio::time::timeout(STEP, connect_async(format!("ws://{addr}/ws")))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    // The server refuses it from the frame header; the rest may never be sent.
    let huge = Message::Binary(vec![b'x'; 10 * 1024 * 1024].into());
    let _ = tokio::time::timeout(STEP, ws.send(huge)).await;
    let deadline = tokio::time::Instant::now() + STEP;
    let close = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close frame in time"),
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(close.code, CloseCode::Size, "{close:?}");
    server.shutdown().await;
}
