//! The SDK's one error type.

use aula_protocol::{ErrorCode, PeerTarget};

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server replied with [`aula_protocol::ServerMessage::Error`].
    #[error("server refused ({code:?}): {message}")]
    Server { code: ErrorCode, message: String },
    #[error("bad server URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Boxed because tungstenite's error is large and would bloat every `Result` of the SDK.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server sent something the protocol does not allow at that point.
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("WebRTC: {0}")]
    WebRtc(#[from] rtc::shared::error::Error),
    #[error("Opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// ICE or DTLS of one of the two peer connections gave up.
    #[error("the {0:?} connection failed")]
    MediaFailed(PeerTarget),
    /// This SDK publishes one audio track per client; a second would need renegotiation.
    #[error("this client already publishes audio")]
    AlreadyPublishing,
    /// The WebSocket or the task behind a handle has ended.
    #[error("the session is closed")]
    Closed,
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}
