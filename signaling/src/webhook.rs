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
//! Requests go through `reqwest` with rustls, so `https://` endpoints work directly: their
//! certificate is checked against the Mozilla roots (`webpki-roots`, the same everywhere,
//! whatever the host has installed) plus, for a private CA, the PEM file `ca_file` names.
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::WebhooksConfig;

/// Backoff before the second attempt; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

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

/// The endpoint URL, checked: `http://` or `https://` with a host, no credentials.
pub fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?}: only http:// and https:// URLs"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{url:?}: credentials in the URL would be logged; use the signature"
        ));
    }
    Ok(parsed)
}

/// Root certificates from a PEM file, for an endpoint whose certificate a private CA signed.
pub fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not PEM certificates ({e})", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certificates)
}

/// The HTTP client for one endpoint: rustls, the web PKI roots plus `extra_roots`, a timeout
/// per attempt, and no redirects (a signed event goes where it was configured to, or fails).
fn client(
    extra_roots: Vec<reqwest::Certificate>,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aula/", env!("CARGO_PKG_VERSION")));
    for root in extra_roots {
        builder = builder.add_root_certificate(root);
    }
    builder.build()
}

/// The handle the server uses to emit events; cheap to clone, a no-op when disabled.
#[derive(Clone, Default)]
pub(crate) struct Webhooks {
    queue: Option<mpsc::UnboundedSender<Value>>,
}

impl Webhooks {
    /// Starts the delivery task when a URL is configured. The config was validated at load
    /// ([`crate::config`]); a URL or CA file that fails here anyway is logged and webhooks are
    /// off.
    pub fn start(config: &WebhooksConfig, secret: String) -> Self {
        let Some(url) = config.url.as_deref() else {
            return Self::default();
        };
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let roots = match &config.ca_file {
            Some(path) => load_ca_file(path),
            None => Ok(Vec::new()),
        };
        let ready = parse_url(url).and_then(|url| {
            let client = client(roots?, timeout).map_err(|e| e.to_string())?;
            Ok((url, client))
        });
        let (url, client) = match ready {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!("webhooks disabled: {e}");
                return Self::default();
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let attempts = config.max_attempts.max(1);
        tokio::spawn(deliver_all(rx, client, url, secret, attempts));
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
    client: reqwest::Client,
    url: reqwest::Url,
    secret: String,
    attempts: u32,
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
            let sent = client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .header("X-Aula-Event", &name)
                .body(body.clone())
                .send()
                .await;
            let why = match sent {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => format!("status {}", response.status()),
                // The chain names the cause (refused, timed out, certificate not trusted).
                Err(e) => error_chain(&e),
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

/// An error with its causes, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    fn urls_parse_or_say_why() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hooks")
                .expect("valid")
                .as_str(),
            "http://127.0.0.1:9000/hooks"
        );
        assert!(parse_url("https://backend.example/aula").is_ok());
        for bad in [
            "ftp://x",
            "http://",
            "https://",
            "http://a b/",
            "http://user:pw@h/",
            "not a url",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("aula-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(load_ca_file(&empty).unwrap_err().contains("no certificate"));
        assert!(load_ca_file(&dir.join("missing.pem")).is_err());
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, cert.cert.pem()).unwrap();
        assert_eq!(load_ca_file(&good).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
