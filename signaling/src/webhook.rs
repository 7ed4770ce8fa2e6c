//! Webhooks: room, participant and support events POSTed to the application's backend.
//!
//! Each event is a JSON object (`{"event": "participant_joined", "room": ..., ...}`) sent with
//! `X-Aula-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact body under the API secret
//! (computed by the `hmac` and `sha2` crates), so the backend can check it came from this server
//! and was not altered. `X-Aula-Event` repeats the event name for routing without parsing.
//!
//! Delivery is off the hot path: events go into an unbounded queue served by one task, in
//! order, each tried up to `max_attempts` times with exponential backoff (100 ms, 200 ms, ...)
//! on connection errors, timeouts and non-2xx answers, then dropped with a warning. A dead
//! backend thus delays only the webhooks, never a join.
//!
//! Only `http://` endpoints: the request is a plain HTTP/1.1 POST written here (no client
//! library is in the dependency tree); put a TLS-terminating proxy next to the server for
//! `https` backends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::WebhooksConfig;

/// Backoff before the second attempt; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Largest response head read back (only the status line matters).
const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Aula-Signature";

/// `sha256=<hex HMAC-SHA256 of body under secret>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A parsed `http://host:port/path` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to (and send as `Host`).
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs (put a TLS proxy in front)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty()
            || authority.contains('@')
            || authority.chars().any(char::is_whitespace)
        {
            return Err(format!("{url:?}: bad host"));
        }
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("{url:?}: bad path"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }
}

/// The handle the server uses to emit events; cheap to clone, a no-op when disabled.
#[derive(Clone, Default)]
pub(crate) struct Webhooks {
    queue: Option<mpsc::UnboundedSender<Value>>,
}

impl Webhooks {
    /// Starts the delivery task when a URL is configured.
    pub fn start(config: &WebhooksConfig, secret: String) -> Self {
        let Some(endpoint) = config.url.as_deref().and_then(|u| Endpoint::parse(u).ok()) else {
            return Self::default();
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let attempts = config.max_attempts.max(1);
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        tokio::spawn(deliver_all(rx, endpoint, secret, attempts, timeout));
        Self { queue: Some(tx) }
    }

    /// Queues `event` with these fields (plus `event` and `created_at`).
    pub fn emit(&self, event: &str, mut fields: Value) {
        let Some(queue) = &self.queue else { return };
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), json!(event));
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            map.insert("created_at".into(), json!(now));
        }
        let _ = queue.send(fields);
    }
}

async fn deliver_all(
    mut rx: mpsc::UnboundedReceiver<Value>,
    endpoint: Endpoint,
    secret: String,
    attempts: u32,
    timeout: Duration,
) {
    while let Some(event) = rx.recv().await {
        let name = event
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let body = event.to_string();
        let signature = sign(&secret, body.as_bytes());
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=attempts {
            match tokio::time::timeout(timeout, post(&endpoint, &name, &body, &signature)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => break,
                outcome => {
                    let why = match outcome {
                        Ok(Ok(status)) => format!("status {status}"),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "timed out".to_owned(),
                    };
                    if attempt == attempts {
                        tracing::warn!(event = name, attempts, "webhook dropped: {why}");
                    } else {
                        tracing::debug!(event = name, attempt, "webhook failed, retrying: {why}");
                        tokio::time::sleep(backoff).await;
                        backoff = backoff.saturating_mul(2);
                    }
                }
            }
        }
    }
}

/// One POST; returns the response status.
async fn post(
    endpoint: &Endpoint,
    event: &str,
    body: &str,
    signature: &str,
) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(&endpoint.authority).await?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{SIGNATURE_HEADER}: {signature}\r\nX-Aula-Event: {event}\r\nConnection: close\r\n\r\n{body}",
        endpoint.path,
        endpoint.authority,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line is all we need; stop at the end of the head or the size limit.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_RESPONSE_BYTES {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    text.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn endpoints_parse_or_say_why() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:9000/hooks").expect("valid"),
            Endpoint {
                authority: "127.0.0.1:9000".into(),
                path: "/hooks".into()
            }
        );
        assert_eq!(
            Endpoint::parse("http://backend").expect("valid").authority,
            "backend:80"
        );
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://a b/",
            "http://u@h/",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
