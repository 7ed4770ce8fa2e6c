//! A participant who connects to a node that is not its room's origin: the node carries its
//! signaling to the origin, so that the room's state stays in one place whichever node each
//! participant reaches (its region's, through a region-aware DNS name or a load balancer).
//!
//! The node opens a WebSocket to the origin's `/ws` on the participant's behalf, naming itself
//! as the participant's region (`?region=`, so the origin places its media here), sends the
//! participant's first message, then passes every text message through both ways unchanged.
//! The WebSocket between nodes is TCP next to the QUIC relay link, not a stream inside it:
//! signaling is a few messages a second and needs nothing the link adds.
//!
//! When the origin goes away, the participant's WebSocket is closed as a dropped one: its SDK
//! resumes or joins again through this node, which finds the room's new origin (or becomes it).

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message as Upstream;

/// How long the origin may take to accept the WebSocket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a participant's signaling could not be carried to the origin.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the room's origin node did not answer in time")]
    Timeout,
    #[error("cannot reach the room's origin node: {0}")]
    Connect(#[from] tokio_tungstenite::tungstenite::Error),
}

/// The WebSocket to the origin, opened (bounded by [`CONNECT_TIMEOUT`]).
pub async fn connect(
    url: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ProxyError,
> {
    let (socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| ProxyError::Timeout)??;
    Ok(socket)
}

/// Carries `client`'s signaling to the origin over `origin` until either side closes: `first`
/// (the client's join or resume, already read here) goes first. Ping and pong stay on each
/// hop (each side answers its own); a close on one side closes the other.
pub async fn run(
    client: WebSocket,
    origin: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    first: String,
    on_origin_text: impl Fn(&str),
) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut origin_tx, mut origin_rx) = origin.split();
    if origin_tx.send(Upstream::text(first)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            from_client = client_rx.next() => match from_client {
                Some(Ok(Message::Text(text))) => {
                    if origin_tx.send(Upstream::text(text.as_str())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Binary(data))) => {
                    if origin_tx.send(Upstream::binary(data)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            from_origin = origin_rx.next() => match from_origin {
                Some(Ok(Upstream::Text(text))) => {
                    on_origin_text(text.as_str());
                    if client_tx.send(Message::Text(text.as_str().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Upstream::Binary(data))) => {
                    if client_tx.send(Message::Binary(data)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Upstream::Close(frame))) => {
                    // The origin ended the session on purpose (leave, kick, class ended): say so.
                    let frame = frame.map(|f| axum::extract::ws::CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = client_tx.send(Message::Close(frame)).await;
                    return;
                }
                Some(Ok(_)) => {}
                // The origin is gone: the client sees a dropped connection and resumes.
                Some(Err(_)) | None => break,
            },
        }
    }
    // The client's socket is dropped without a close frame: to its SDK, a dropped connection,
    // which it resumes.
    let _ = origin_tx.close().await;
}
