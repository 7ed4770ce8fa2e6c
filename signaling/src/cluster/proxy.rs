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
//!
//! The participant's alternates (`super::alternates`: where to go if *this* node dies) are this
//! node's to say, not the origin's: the origin's are dropped here, and this node sends its own
//! after the origin's `joined` or `resumed`, and whenever they change.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message as Upstream;

use super::alternates::{self, Feed};

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
/// hop (each side answers its own); a close on one side closes the other. With `alternates`,
/// the client's alternates are sent from here (see the module docs).
pub async fn run(
    client: WebSocket,
    origin: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    first: String,
    on_origin_text: impl Fn(&str),
    mut alternates: Option<Feed>,
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
                    let text = text.as_str();
                    if alternates.is_some() && is_type(text, "alternates") {
                        continue;
                    }
                    on_origin_text(text);
                    if client_tx.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                    if (is_type(text, "joined") || is_type(text, "resumed"))
                        && send_alternates(&mut alternates, &mut client_tx).await.is_err()
                    {
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
            () = alternates::changed(&mut alternates) => {
                if send_alternates(&mut alternates, &mut client_tx).await.is_err() {
                    break;
                }
            }
        }
    }
    // The client's socket is dropped without a close frame: to its SDK, a dropped connection,
    // which it resumes.
    let _ = origin_tx.close().await;
}

/// Whether the server message `text` is of `kind` (its `type`). The server's messages are
/// serialized with their tag first, so this needs no parse.
fn is_type(text: &str, kind: &str) -> bool {
    text.strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.strip_prefix(kind))
        .is_some_and(|rest| rest.starts_with('"'))
}

/// Sends the client its alternates if they changed since it was last sent them.
async fn send_alternates(
    feed: &mut Option<Feed>,
    client: &mut futures_util::stream::SplitSink<WebSocket, Message>,
) -> Result<(), axum::Error> {
    let Some(event) = feed.as_mut().and_then(Feed::update) else {
        return Ok(());
    };
    match serde_json::to_string(&event) {
        Ok(text) => client.send(Message::Text(text.into())).await,
        Err(e) => {
            tracing::error!("cannot serialize {event:?}: {e}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_type;

    #[test]
    fn message_types_are_read_from_the_tag() {
        let alternates = serde_json::to_string(&aula_protocol::ServerEvent::Alternates {
            urls: vec!["ws://b:1/ws".into()],
        })
        .unwrap();
        assert!(is_type(&alternates, "alternates"));
        assert!(!is_type(&alternates, "alternate"));
        let resumed = serde_json::to_string(&aula_protocol::ServerEvent::Resumed {
            participant_sid: "PA_1".into(),
        })
        .unwrap();
        assert!(is_type(&resumed, "resumed"));
        // A chat line quoting one is a chat line.
        let chat = serde_json::to_string(&aula_protocol::ServerEvent::Chat {
            from: "PA_1".into(),
            name: "a".into(),
            text: alternates.clone(),
        })
        .unwrap();
        assert!(!is_type(&chat, "alternates"));
    }
}
