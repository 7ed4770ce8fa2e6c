//! Test helpers: a real server on loopback (in the test's process, or the built `aula serve`),
//! a WebSocket client speaking the protocol, a tiny HTTP GET, and tokens signed with the dev
//! keys; [`media`]: a fake media plane for servers started in the test's process. Every wait is
//! bounded.

#![allow(dead_code)] // each test binary uses a different subset

pub mod media;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use aula_protocol::{
    ClientMessage, PROTOCOL_VERSION, Role, ServerEvent, ServerFrame, ServerMessage,
};
use aula_signaling::token::{self, AccessClaims, ApiKeys};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// The longest any single expected event may take (generous for a loaded 2-core CI machine).
pub const STEP: Duration = Duration::from_secs(10);

pub fn dev_token(room: &str, identity: &str, role: Role) -> String {
    let claims = AccessClaims::new(room, identity, role, Duration::from_secs(600));
    token::mint(&ApiKeys::dev(), &claims).expect("minting with the dev keys works")
}

/// A token with the role's defaults changed by `edit` (grants tests).
pub fn token_with(
    room: &str,
    identity: &str,
    role: Role,
    edit: impl FnOnce(&mut AccessClaims),
) -> String {
    let mut claims = AccessClaims::new(room, identity, role, Duration::from_secs(600));
    edit(&mut claims);
    token::mint(&ApiKeys::dev(), &claims).expect("minting with the dev keys works")
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let (ws, _) = tokio::time::timeout(STEP, connect_async(format!("ws://{addr}/ws")))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        Self { ws }
    }

    /// Connects and joins; returns the client and its `Joined` message.
    pub async fn join(
        addr: SocketAddr,
        room: &str,
        identity: &str,
        role: Role,
    ) -> (Self, ServerMessage) {
        let mut client = Self::connect(addr).await;
        client
            .send(&ClientMessage::Join {
                version: PROTOCOL_VERSION,
                token: dev_token(room, identity, role),
            })
            .await;
        let joined = client.recv().await;
        assert!(
            matches!(joined, ServerMessage::Joined { .. }),
            "expected Joined, got {joined:?}"
        );
        (client, joined)
    }

    /// Connects and joins with `token`; returns the client and its `Joined` message.
    pub async fn join_token(addr: SocketAddr, token: String) -> (Self, ServerMessage) {
        let mut client = Self::connect(addr).await;
        client
            .send(&ClientMessage::Join {
                version: PROTOCOL_VERSION,
                token,
            })
            .await;
        let joined = client.recv().await;
        assert!(
            matches!(joined, ServerMessage::Joined { .. }),
            "expected Joined, got {joined:?}"
        );
        (client, joined)
    }

    /// The next message or event (pings skipped). Panics on close or timeout.
    pub async fn recv_frame(&mut self) -> ServerFrame {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a message in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-protocol text {text}: {e}"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// Skips frames until an event matches `pred` (at most 50 frames).
    pub async fn event_until(&mut self, pred: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
        for _ in 0..50 {
            if let ServerFrame::Event(e) = self.recv_frame().await
                && pred(&e)
            {
                return e;
            }
        }
        panic!("no matching event within 50 messages");
    }

    /// Skips frames until a message matches `pred` (at most 50 frames).
    pub async fn message_until(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        for _ in 0..50 {
            if let ServerFrame::Message(m) = self.recv_frame().await
                && pred(&m)
            {
                return m;
            }
        }
        panic!("no matching message within 50 messages");
    }

    /// Raises this client's hand and waits until the server has handled it.
    pub async fn raise_hand_and_sync(&mut self) {
        self.send(&ClientMessage::RaiseHand).await;
        self.sync().await;
    }

    /// Asserts the server closes the socket; returns the frames before the close.
    pub async fn expect_closed_frames(&mut self) -> Vec<ServerFrame> {
        let mut before = Vec::new();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("socket not closed; got {before:?}"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return before,
                Ok(Some(Ok(Message::Text(text)))) => before.push(
                    serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("non-protocol text {text}: {e}")),
                ),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Skips frames until an error arrives; returns its code.
    pub async fn error_code(&mut self) -> aula_protocol::ErrorCode {
        match self
            .message_until(|m| matches!(m, ServerMessage::Error { .. }))
            .await
        {
            ServerMessage::Error { code, .. } => code,
            _ => unreachable!("matched an error"),
        }
    }

    /// Ping/Pong round trip skipping anything queued before the pong: proves the session is
    /// still served, and that everything the server queued before it has been read.
    pub async fn sync(&mut self) -> Vec<ServerFrame> {
        self.send(&ClientMessage::Ping).await;
        let mut before = Vec::new();
        for _ in 0..50 {
            match self.recv_frame().await {
                ServerFrame::Message(ServerMessage::Pong) => return before,
                other => before.push(other),
            }
        }
        panic!("no pong within 50 messages: {before:?}");
    }

    pub async fn send(&mut self, msg: &ClientMessage) {
        let text = serde_json::to_string(msg).expect("client messages serialize");
        self.send_raw(Message::text(text)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_raw(Message::text(text)).await;
    }

    pub async fn send_raw(&mut self, msg: Message) {
        tokio::time::timeout(STEP, self.ws.send(msg))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// The next protocol message (pings and pongs skipped, and room events such as the
    /// permissions staff are sent: tests of those use [`Client::recv_frame`]). Panics on close
    /// or timeout.
    pub async fn recv(&mut self) -> ServerMessage {
        self.try_recv()
            .await
            .unwrap_or_else(|end| panic!("expected a message, got {end}"))
    }

    /// The next protocol message (room events skipped, as in [`Client::recv`]), or why none
    /// came (closed / timed out).
    pub async fn try_recv(&mut self) -> Result<ServerMessage, String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| "timeout".to_string())?;
            match frame {
                None => return Err("end of stream".into()),
                Some(Err(e)) => return Err(format!("error: {e}")),
                Some(Ok(Message::Text(text))) => {
                    match serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent non-protocol text {text}: {e}"))
                    {
                        ServerFrame::Message(message) => return Ok(message),
                        ServerFrame::Event(_) => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(_))) => panic!("server sent a binary frame"),
            }
        }
    }

    /// Skips messages until one matches `pred` (bounded by [`STEP`] per message and 50 messages).
    pub async fn recv_until(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        for _ in 0..50 {
            let msg = self.recv().await;
            if pred(&msg) {
                return msg;
            }
        }
        panic!("no matching message within 50 messages");
    }

    /// Asserts the server closes the socket (after any messages, which are returned).
    pub async fn expect_closed(&mut self) -> Vec<ServerMessage> {
        let mut before = Vec::new();
        for _ in 0..50 {
            match self.try_recv().await {
                Ok(msg) => before.push(msg),
                Err(end) if end == "timeout" => panic!("socket not closed; got {before:?}"),
                Err(_) => return before,
            }
        }
        panic!("socket not closed; got {before:?}");
    }

    /// An error reply's code.
    pub async fn expect_error(&mut self) -> aula_protocol::ErrorCode {
        match self.recv().await {
            ServerMessage::Error { code, .. } => code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Ping/Pong round trip: proves the session is still served.
    pub async fn assert_alive(&mut self) {
        self.send(&ClientMessage::Ping).await;
        assert_eq!(self.recv().await, ServerMessage::Pong);
    }

    /// Reads (so that the WebSocket library answers the server's pings) for `dur`, asserting that
    /// no protocol message and no close arrives meanwhile.
    pub async fn stay_quiet_for(&mut self, dur: Duration) {
        let deadline = tokio::time::Instant::now() + dur;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(STEP, self.ws.close(None)).await;
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A minimal HTTP/1.1 request (`Connection: close`, body read to EOF).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    http_with(addr, method, path, &[], "").await
}

/// [`http`] with extra headers and a body (sent as JSON when not empty).
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut extra = String::new();
        for (k, v) in headers {
            extra.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            extra.push_str("Content-Type: application/json\r\n");
        }
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        raw
    };
    let raw = tokio::time::timeout(STEP, fut)
        .await
        .expect("HTTP response in time");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers: headers.to_owned(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Polls `cond` every 20 ms until it holds, for at most [`STEP`].
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `aula serve` run from the built binary on ephemeral loopback ports (a config file moves
/// them there: the defaults are fixed ports), with `flags` after `serve`. Dropping it kills
/// the process and removes the config file.
pub struct ServeProcess {
    pub child: Child,
    /// Where its HTTP server listens, from its ready line.
    pub http: SocketAddr,
    /// What it wrote to stderr until it was ready; [`ServeProcess::read_log_after_exit`]
    /// adds the rest.
    pub log: String,
    lines: Receiver<String>,
    config: PathBuf,
}

impl ServeProcess {
    /// Starts it and returns once it has said it is ready (at most 30 s).
    pub fn start(name: &str, flags: &[&str]) -> Self {
        let config =
            std::env::temp_dir().join(format!("aula-test-{}-{name}.toml", std::process::id()));
        std::fs::write(
            &config,
            "[http]\nbind = \"127.0.0.1:0\"\n[rtc]\nudp_bind = \"127.0.0.1:0\"\nadvertised_ips = [\"127.0.0.1\"]\n",
        )
        .expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_aula"))
            .arg("serve")
            .args(flags)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn aula serve");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                let _ = child.kill();
                panic!("aula serve did not report ready in time:\n{log}");
            };
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.split("Aula ready: http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr
                    .parse::<SocketAddr>()
                    .expect("the ready line names the address");
            }
        };
        Self {
            child,
            http,
            log,
            lines,
            config,
        }
    }

    /// Once the process has exited: adds the rest of its stderr to [`ServeProcess::log`]
    /// (the reader then reaches the end soon; bounded anyway).
    pub fn read_log_after_exit(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push_str(&line);
            self.log.push('\n');
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
