//! One WebSocket to Janus and the session on it: requests with fresh transactions, waiting for
//! the reply that matches (bounded in time), and a backlog for everything that arrived
//! meanwhile so no notification (a `webrtcup`, a new publisher, an offer) is lost.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use super::api::{self, Incoming, Matched, Request, RequestError};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages kept for the main loop while a request waits; past this the oldest go (a healthy
/// run has a handful, so this only bounds a misbehaving server).
const BACKLOG_LIMIT: usize = 1024;
/// How long leaving waits for Janus to confirm the session is gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Connection {
    tx: SplitSink<Ws, Message>,
    rx: SplitStream<Ws>,
    backlog: VecDeque<Incoming>,
    next_transaction: u64,
    /// Set once `create` succeeded; every later request carries it.
    pub session: Option<u64>,
}

/// Why a request failed: Janus said no (the caller may accept some codes), or the connection
/// or the wait failed.
#[derive(Debug)]
pub enum CallError {
    Refused(RequestError),
    Transport(anyhow::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(e) => write!(f, "{e}"),
            CallError::Transport(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<anyhow::Error> for CallError {
    fn from(e: anyhow::Error) -> Self {
        CallError::Transport(e)
    }
}

impl Connection {
    /// Opens `ws://server/` with Janus's subprotocol (Janus refuses the upgrade without it).
    pub async fn open(server: SocketAddr, timeout: Duration) -> anyhow::Result<Self> {
        let mut request = format!("ws://{server}/").into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(api::SUBPROTOCOL),
        );
        let (ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request))
            .await
            .context("WebSocket connect to Janus timed out")?
            .context("WebSocket connect to Janus")?;
        let (tx, rx) = ws.split();
        Ok(Self {
            tx,
            rx,
            backlog: VecDeque::new(),
            next_transaction: 0,
            session: None,
        })
    }

    /// A request of verb `janus` with a fresh transaction and our session.
    pub fn request(&mut self, janus: &'static str) -> Request {
        self.next_transaction += 1;
        let mut request = Request::new(janus, format!("lt{}", self.next_transaction));
        request.session_id = self.session;
        request
    }

    /// Sends without waiting for the reply (trickle, keepalive: their `ack` is ignored).
    pub async fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        let text = serde_json::to_string(request)?;
        self.tx.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Sends `request` and waits up to `timeout` for its answer: the `success`/`error` of a
    /// synchronous request, or the `event` after the `ack` of an asynchronous one.
    pub async fn call(
        &mut self,
        request: Request,
        timeout: Duration,
    ) -> Result<Box<Incoming>, CallError> {
        self.send(&request).await?;
        let transaction = request.transaction;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.next_from_socket()).await {
                Ok(message) => message?,
                Err(_) => {
                    return Err(CallError::Transport(anyhow::anyhow!(
                        "no answer to {} (transaction {transaction}) within {timeout:?}",
                        request.janus
                    )));
                }
            };
            match api::match_reply(message, &transaction) {
                Matched::Done(Ok(reply)) => return Ok(reply),
                Matched::Done(Err(e)) => return Err(CallError::Refused(e)),
                Matched::Ack => {}
                Matched::NotMine(other) => self.keep(*other),
            }
        }
    }

    /// The next message for the main loop: the backlog first, then the socket.
    pub async fn next(&mut self) -> anyhow::Result<Incoming> {
        if let Some(message) = self.backlog.pop_front() {
            return Ok(message);
        }
        self.next_from_socket().await
    }

    async fn next_from_socket(&mut self) -> anyhow::Result<Incoming> {
        loop {
            let text = match self.rx.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => bail!("Janus closed the WebSocket"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("WebSocket: {e}"),
            };
            match serde_json::from_str::<Incoming>(&text) {
                Ok(message) => return Ok(message),
                Err(e) => warn!("unparsable Janus message ({e}): {text:.200}"),
            }
        }
    }

    fn keep(&mut self, message: Incoming) {
        if message.janus == api::Kind::Ack {
            return; // of a fire-and-forget request
        }
        if self.backlog.len() >= BACKLOG_LIMIT {
            debug!("Janus backlog full, dropping the oldest message");
            self.backlog.pop_front();
        }
        self.backlog.push_back(message);
    }

    /// Ends the session and closes the socket, best effort: the run is over either way. Waits
    /// (briefly) for `destroy`'s answer, because a socket closed first makes Janus drop the
    /// session itself and then log the `destroy` as a request for an unknown session.
    pub async fn close(mut self) {
        if self.session.is_some() {
            let destroy = self.request("destroy");
            let _ = self.call(destroy, CLOSE_TIMEOUT).await;
        }
        let _ = self.tx.close().await;
    }
}
