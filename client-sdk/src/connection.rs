//! The WebSocket to the signaling server, and how a dropped one is resumed.
//!
//! A network change (Wi-Fi to mobile data, a laptop lid) drops the WebSocket while the
//! server keeps the participant for its reconnect timeout. The client then opens new sockets
//! and sends `Resume` with the token from `Joined`, at once and then with a growing delay,
//! until the server answers `Resumed` (the same participant goes on: tracks, subscriptions,
//! the subscribe connection restarted by a new offer from the server), refuses (the session
//! is over), or [`RESUME_WINDOW`] passes.
//!
//! When the session itself is over for a reason that is nobody's decision (the server ended it
//! because its media path failed, [`aula_protocol::LEFT_PEER_CONNECTION_FAILED`], or the resume
//! was refused or its window passed), the client joins again with the same access token:
//! at once, then after 0.5 s, doubling up to 5 s between attempts, for [`REJOIN_WINDOW`]
//! ([`rejoin_delay`]). An attempt the server refuses for good (the token expired or is not
//! allowed, the room is locked, another protocol version) ends the session.
//!
//! In a cluster the server names other nodes the client may use if its own dies
//! ([`ServerEvent::Alternates`]). Both resuming and joining again try the current node first;
//! an attempt that cannot open a WebSocket there at all (refused, timed out: the node is down,
//! not just busy) moves on to the next of [`Targets`]: the alternates in the server's order,
//! then the URL the application gave. A node that answers is kept for the next attempts, with
//! the same delays and windows as above. A resume sent to another node is refused unless that
//! node carried the session (the participant lived on the dead node), and the client then joins
//! again there with its token: any node of the cluster checks it and finds the room (taking it
//! over when its origin died), and the server gives back the stage and the raised hand.
//!
//! All outgoing messages go through one queue to whichever socket is current
//! ([`write_loop`]); messages queued while no socket is up are dropped, as the browser SDK
//! does: what they would have changed is either re-sent by the application after
//! [`ClientEvent::Reconnected`] or already the server's state.
//!
//! [`ClientEvent::Reconnected`]: crate::ClientEvent::Reconnected

use std::time::Duration;

use aula_protocol::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, ParticipantInfo, RoomInfo, ServerEvent,
    ServerFrame, ServerMessage,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::debug;

use crate::error::ClientError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type WsSink = SplitSink<Ws, Message>;
pub(crate) type WsStream = SplitStream<Ws>;

/// How long a dropped session is tried again: the server's default reconnect timeout
/// (`reconnect_timeout_secs`, 15 s), after which it has removed us anyway.
pub(crate) const RESUME_WINDOW: Duration = Duration::from_secs(15);
/// Delays between resume attempts: the first at once, then doubling up to the cap.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// How long one attempt may take (handshake plus `Resumed` or `Joined`).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a lost session is joined again before the client gives up: a minute offline (a
/// train tunnel, a lift) is survived. Counted from when rejoining starts, i.e. after the
/// resume window when the WebSocket dropped. The server keeps a lost participant's stage and
/// raised hand for two minutes (`REMEMBERED_FOR` in the server's `rejoin` module), which covers
/// this window, its last attempt and the resume window before it.
pub(crate) const REJOIN_WINDOW: Duration = Duration::from_secs(60);
/// Delays between rejoin attempts: the first at once, then 0.5 s doubling up to 5 s.
const FIRST_REJOIN_RETRY: Duration = Duration::from_millis(500);
const MAX_REJOIN_RETRY: Duration = Duration::from_secs(5);

/// What the server said in `Joined`, with the socket it said it on.
pub(crate) struct Joined {
    pub(crate) sink: WsSink,
    pub(crate) stream: WsStream,
    pub(crate) participant: ParticipantInfo,
    pub(crate) room: RoomInfo,
    pub(crate) resume_token: Option<String>,
}

/// Where the client connects, in the order it tries them when its node is unreachable: the
/// node it is on (or last reached), the alternates that node named, then the URL the
/// application gave (a region-aware DNS name, say); each once.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    current: String,
    alternates: Vec<String>,
    original: String,
    /// Which of [`Targets::order`] the next attempt goes to.
    at: usize,
}

impl Targets {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            current: url.to_owned(),
            alternates: Vec::new(),
            original: url.to_owned(),
            at: 0,
        }
    }

    /// The server's latest alternates (each list replaces the last), reached the way the
    /// application's URL is (see [`adapt`]).
    pub(crate) fn set_alternates(&mut self, urls: &[String]) {
        self.alternates = urls.iter().map(|u| adapt(u, &self.original)).collect();
        self.at = 0;
    }

    fn order(&self) -> Vec<&str> {
        let mut order: Vec<&str> = Vec::with_capacity(self.alternates.len() + 2);
        let all = std::iter::once(&self.current)
            .chain(&self.alternates)
            .chain(std::iter::once(&self.original));
        for url in all {
            if !order.contains(&url.as_str()) {
                order.push(url);
            }
        }
        order
    }

    /// Where the next attempt goes.
    pub(crate) fn url(&self) -> String {
        let order = self.order();
        order[self.at % order.len()].to_owned()
    }

    /// The last attempt could not open a WebSocket: the next goes to the next URL.
    pub(crate) fn unreachable(&mut self) {
        self.at = (self.at + 1) % self.order().len();
    }

    /// The last attempt's node answered: it is where the client is now.
    pub(crate) fn reached(&mut self, url: &str) {
        self.current = url.to_owned();
        self.at = 0;
    }

    /// The node the client is on, or last reached.
    pub(crate) fn current(&self) -> &str {
        &self.current
    }
}

/// An alternate `url` (as the server names it, `ws://host:port/ws`) reached like `like`, the
/// application's URL: over `wss` if that is (the nodes' TLS front end is not the server's to
/// know), with its query (`?region=`) if the alternate has none.
fn adapt(url: &str, like: &str) -> String {
    let mut url = match (like.starts_with("wss://"), url.strip_prefix("ws://")) {
        (true, Some(rest)) => format!("wss://{rest}"),
        _ => url.to_owned(),
    };
    if !url.contains('?')
        && let Some((_, query)) = like.split_once('?')
    {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A reconnect attempt that failed; `unreachable` when no WebSocket could be opened at all
/// (refused, timed out, not resolved), as when the node is down.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: ClientError,
    pub(crate) unreachable: bool,
}

impl Failed {
    fn unreachable(error: ClientError) -> Self {
        Self {
            error,
            unreachable: true,
        }
    }
}

impl From<ClientError> for Failed {
    fn from(error: ClientError) -> Self {
        Self {
            error,
            unreachable: false,
        }
    }
}

/// Opens a WebSocket to `ws_url` and joins with `token`, within `timeout` in all. A refusal
/// is [`ClientError::Server`].
pub(crate) async fn join(
    ws_url: &str,
    token: &str,
    timeout: Duration,
) -> Result<Joined, ClientError> {
    join_at(ws_url, token, timeout).await.map_err(|f| f.error)
}

/// [`join`], telling an unreachable node from other failures.
pub(crate) async fn join_at(
    ws_url: &str,
    token: &str,
    timeout: Duration,
) -> Result<Joined, Failed> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut sink, mut stream) = open(ws_url, timeout).await.map_err(Failed::unreachable)?;
    let joined = tokio::time::timeout_at(deadline, async {
        send(
            &mut sink,
            &ClientMessage::Join {
                version: PROTOCOL_VERSION,
                token: token.to_owned(),
            },
        )
        .await?;
        loop {
            match receive(&mut stream).await? {
                ServerFrame::Message(ServerMessage::Joined {
                    participant,
                    room,
                    resume_token,
                    ..
                }) => {
                    return Ok(Joined {
                        sink,
                        stream,
                        participant,
                        room,
                        resume_token,
                    });
                }
                ServerFrame::Message(ServerMessage::Error { code, message }) => {
                    return Err(ClientError::Server { code, message });
                }
                other => debug!("before Joined, ignoring {other:?}"),
            }
        }
    });
    Ok(joined.await.map_err(|_| ClientError::Timeout("Joined"))??)
}

/// Whether a refused join is final: trying the same token again cannot help (it is invalid,
/// expired or not allowed, the room is locked, the server speaks another version). Other
/// refusals (`internal`: the media plane could not take us yet) are tried again.
pub(crate) fn refused_for_good(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthorized
            | ErrorCode::Forbidden
            | ErrorCode::RoomLocked
            | ErrorCode::UnsupportedVersion
    )
}

/// Opens a WebSocket to `ws_url`.
pub(crate) async fn open(
    ws_url: &str,
    timeout: Duration,
) -> Result<(WsSink, WsStream), ClientError> {
    let (ws, _response) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(ws_url))
        .await
        .map_err(|_| ClientError::Timeout("the WebSocket handshake"))??;
    Ok(ws.split())
}

/// One attempt to resume: a new socket, `Resume`, and the server's `Resumed`. A refusal is
/// [`ClientError::Server`] (the session is over there); anything else may be tried again.
pub(crate) async fn try_resume(
    ws_url: &str,
    resume_token: &str,
) -> Result<(WsSink, WsStream), Failed> {
    let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
    let (mut sink, mut stream) = open(ws_url, ATTEMPT_TIMEOUT)
        .await
        .map_err(Failed::unreachable)?;
    let resumed = tokio::time::timeout_at(deadline, async {
        send(
            &mut sink,
            &ClientMessage::Resume {
                version: PROTOCOL_VERSION,
                resume_token: resume_token.to_owned(),
            },
        )
        .await?;
        loop {
            match receive(&mut stream).await? {
                ServerFrame::Event(ServerEvent::Resumed { .. }) => return Ok((sink, stream)),
                ServerFrame::Message(ServerMessage::Error { code, message }) => {
                    return Err(ClientError::Server { code, message });
                }
                other => debug!("before Resumed, ignoring {other:?}"),
            }
        }
    });
    Ok(resumed
        .await
        .map_err(|_| ClientError::Timeout("Resumed"))??)
}

/// The delay before resume attempt `n` (0-based).
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    FIRST_RETRY
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_RETRY)
}

/// The delay before rejoin attempt `n` (0-based): at once, then 0.5 s doubling up to 5 s.
pub(crate) fn rejoin_delay(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    FIRST_REJOIN_RETRY
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_REJOIN_RETRY)
}

/// Sends what the session queues to the current socket. `sockets` hands it a new socket after
/// a resume (`Some`) or tells it the current one is gone (`None`). Ends when every sender of
/// `outgoing` is gone (the client was dropped), closing the socket politely.
pub(crate) async fn write_loop(
    first: WsSink,
    mut sockets: mpsc::UnboundedReceiver<Option<WsSink>>,
    mut outgoing: mpsc::UnboundedReceiver<ClientMessage>,
) {
    let mut sink = Some(first);
    let mut reader_alive = true;
    loop {
        tokio::select! {
            biased;
            socket = sockets.recv(), if reader_alive => match socket {
                Some(socket) => sink = socket,
                None => reader_alive = false,
            },
            message = outgoing.recv() => {
                let Some(message) = message else { break };
                if let Some(current) = sink.as_mut()
                    && let Err(e) = send(current, &message).await
                {
                    debug!("WebSocket write: {e}");
                    sink = None;
                }
            }
        }
    }
    if let Some(mut sink) = sink {
        let _ = sink.close().await;
    }
}

pub(crate) async fn send(sink: &mut WsSink, message: &ClientMessage) -> Result<(), ClientError> {
    let json = serde_json::to_string(message)
        .map_err(|e| ClientError::Protocol(format!("encoding {message:?}: {e}")))?;
    sink.send(Message::text(json)).await?;
    Ok(())
}

/// The next server frame. `Closed` when the socket ends; `Protocol` for an unparsable one.
pub(crate) async fn receive(stream: &mut WsStream) -> Result<ServerFrame, ClientError> {
    loop {
        let message = match stream.next().await {
            None => return Err(ClientError::Closed),
            Some(message) => message?,
        };
        match message {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str()).map_err(|e| {
                    ClientError::Protocol(format!("unparsable server message {text}: {e}"))
                });
            }
            Message::Close(_) => return Err(ClientError::Closed),
            // Pings are answered by tungstenite itself; the protocol uses no binary frames.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_node_moves_on_to_the_alternates_then_the_given_url() {
        let mut targets = Targets::new("ws://school.example/ws?region=eu");
        assert_eq!(targets.url(), "ws://school.example/ws?region=eu");
        // Without alternates there is only the one URL.
        targets.unreachable();
        assert_eq!(targets.url(), "ws://school.example/ws?region=eu");
        targets.reached("ws://eu-1:7880/ws");
        targets.set_alternates(&["ws://eu-2:7880/ws".into(), "ws://asia-1:7880/ws".into()]);
        let mut tried = Vec::new();
        for _ in 0..5 {
            tried.push(targets.url());
            targets.unreachable();
        }
        assert_eq!(
            tried,
            [
                "ws://eu-1:7880/ws",
                "ws://eu-2:7880/ws?region=eu",
                "ws://asia-1:7880/ws?region=eu",
                "ws://school.example/ws?region=eu",
                "ws://eu-1:7880/ws",
            ]
        );
        // A node that answers is where the next attempts go.
        let eu2 = targets.url();
        assert_eq!(eu2, "ws://eu-2:7880/ws?region=eu");
        targets.reached(&eu2);
        assert_eq!(targets.url(), eu2);
        assert_eq!(targets.current(), eu2);
        // Its own list names eu-1 again, not itself: never the same URL twice.
        targets.set_alternates(&["ws://eu-2:7880/ws".into(), "ws://eu-1:7880/ws".into()]);
        targets.unreachable();
        assert_eq!(targets.url(), "ws://eu-1:7880/ws?region=eu");
    }

    #[test]
    fn alternates_keep_the_applications_tls() {
        assert_eq!(
            adapt("ws://eu-2.example:443/ws", "wss://school.example/ws"),
            "wss://eu-2.example:443/ws"
        );
        assert_eq!(
            adapt("ws://eu-2.example:7880/ws", "ws://eu-1.example:7880/ws"),
            "ws://eu-2.example:7880/ws"
        );
    }

    #[test]
    fn retries_start_at_once_then_back_off_to_the_cap() {
        let delays: Vec<Duration> = (0..8).map(retry_delay).collect();
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], FIRST_RETRY);
        assert_eq!(delays[2], FIRST_RETRY * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delays[7], MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
        // Enough attempts fit in the window to ride out a short outage several times over.
        let mut spent = Duration::ZERO;
        let mut attempts = 0;
        while spent < RESUME_WINDOW {
            spent += retry_delay(attempts);
            attempts += 1;
        }
        assert!(attempts >= 8, "{attempts}");
    }

    #[test]
    fn rejoins_start_at_once_then_back_off_from_half_a_second_to_five() {
        let delays: Vec<Duration> = (0..8).map(rejoin_delay).collect();
        assert_eq!(
            delays,
            [0, 500, 1000, 2000, 4000, 5000, 5000, 5000].map(Duration::from_millis)
        );
        assert_eq!(rejoin_delay(u32::MAX), MAX_REJOIN_RETRY);
        // A minute of trying is a dozen and more attempts, never more than 5 s apart.
        let mut spent = Duration::ZERO;
        let mut attempts = 0;
        while spent < REJOIN_WINDOW {
            spent += rejoin_delay(attempts);
            attempts += 1;
        }
        assert!(attempts >= 15, "{attempts}");
    }
}
