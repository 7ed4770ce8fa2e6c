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

/// Opens a WebSocket to `ws_url` and joins with `token`, within `timeout` in all. A refusal
/// is [`ClientError::Server`].
pub(crate) async fn join(
    ws_url: &str,
    token: &str,
    timeout: Duration,
) -> Result<Joined, ClientError> {
    tokio::time::timeout(timeout, async {
        let (mut sink, mut stream) = open(ws_url, timeout).await?;
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
    })
    .await
    .map_err(|_| ClientError::Timeout("Joined"))?
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
/// [`ClientError::Server`] (the session is over); anything else may be tried again.
pub(crate) async fn try_resume(
    ws_url: &str,
    resume_token: &str,
) -> Result<(WsSink, WsStream), ClientError> {
    tokio::time::timeout(ATTEMPT_TIMEOUT, async {
        let (mut sink, mut stream) = open(ws_url, ATTEMPT_TIMEOUT).await?;
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
    })
    .await
    .map_err(|_| ClientError::Timeout("Resumed"))?
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
