//! The control plane's defences against clients that hold resources: half-open HTTP
//! connections, connection floods from one address or many.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aula_protocol::Role;
use aula_signaling::{Config, Server, start};
use common::{Client, STEP, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
