//! Signed webhooks, delivered in order with retries to a tiny receiver on 127.0.0.1, over plain
//! http and over https (a certificate generated here, trusted through `ca_file`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aula_protocol::{ClientMessage, Role};
use aula_signaling::token::ApiKeys;
use aula_signaling::{Config, start};
use common::{Client, STEP};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// One request as the receiver read it: `(signature header, body)`.
type Delivery = (String, String);

/// A webhook receiver: answers 500 to the first request (to exercise the retry), 200 after;
/// forwards `(signature header, body)` of every request it answered 200. With `tls`, it speaks
/// https with that acceptor.
async fn receiver(tls: Option<TlsAcceptor>) -> (SocketAddr, mpsc::UnboundedReceiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((stream, _)) = listener.accept().await {
            let answered = match &tls {
                // A client that does not trust the certificate aborts the handshake: no request.
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => answer(stream, first).await,
                    Err(_) => None,
                },
                None => answer(stream, first).await,
            };
            if let Some(delivery) = answered {
                if !first {
                    let _ = tx.send(delivery);
                }
                first = false;
            }
        }
    });
    (addr, rx)
}

/// Reads one request (head and `content-length` body) and answers it: 500 when `fail`.
async fn answer(mut stream: impl AsyncRead + AsyncWrite + Unpin, fail: bool) -> Option<Delivery> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = header(head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                break (head.to_owned(), body.to_owned());
            }
        }
    };
    let status = if fail {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    let _ = stream
        .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await;
    let _ = stream.shutdown().await;
    let signature = header(&head, "x-aula-signature").unwrap_or_default();
    Some((signature, body))
}

/// A header's value; names are case-insensitive (RFC 9110 §5.1).
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Joins and leaves a class, and checks the four events arrive signed and in order.
async fn expect_class_events(config: Config, hooks: &mut mpsc::UnboundedReceiver<Delivery>) {
    let server = start(config).await.expect("starts");
    let addr = server.http_addr();
    let (mut teacher, _) = Client::join(addr, "math", "teacher", Role::Teacher).await;
    teacher.send(&ClientMessage::Leave).await;
    teacher.expect_closed().await;

    let mut events = Vec::new();
    while events.len() < 4 {
        let (signature, body) = tokio::time::timeout(STEP, hooks.recv())
            .await
            .expect("webhook in time")
            .expect("receiver running");
        let mut mac = Hmac::<Sha256>::new_from_slice(ApiKeys::dev().secret.as_bytes())
            .expect("any key length");
        mac.update(body.as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature, expected, "signature of {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(json["room"], "math");
        events.push(json["event"].as_str().unwrap_or_default().to_owned());
    }
    // The first delivery (room_started) failed once and was retried, so nothing was lost.
    assert_eq!(
        events,
        [
            "room_started",
            "participant_joined",
            "participant_left",
            "room_ended"
        ]
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_in_order() {
    let (hook_addr, mut hooks) = receiver(None).await;
    let mut config = Config::loopback_ephemeral();
    config.webhooks.url = Some(format!("http://{hook_addr}/aula"));
    expect_class_events(config, &mut hooks).await;
}

/// A certificate for 127.0.0.1 and an acceptor serving it; the PEM is written to `dir`.
fn tls_endpoint(dir: &std::path::Path) -> (TlsAcceptor, std::path::PathBuf) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let pem = dir.join("webhook-ca.pem");
    std::fs::write(&pem, generated.cert.pem()).expect("write PEM");
    let key = rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![generated.cert.der().clone()], key)
    .expect("server config");
    (TlsAcceptor::from(Arc::new(config)), pem)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aula-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn webhooks_reach_an_https_endpoint_whose_ca_is_configured() {
    let dir = temp_dir("webhook-https");
    let (acceptor, ca_pem) = tls_endpoint(&dir);
    let (hook_addr, mut hooks) = receiver(Some(acceptor)).await;
    let mut config = Config::loopback_ephemeral();
    config.webhooks.url = Some(format!("https://{hook_addr}/aula"));
    config.webhooks.ca_file = Some(ca_pem);
    expect_class_events(config, &mut hooks).await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The control: the same endpoint without its CA configured is not trusted, so nothing is
/// delivered (the certificate is checked, not just encrypted to).
#[tokio::test]
async fn webhooks_refuse_an_https_endpoint_they_do_not_trust() {
    let dir = temp_dir("webhook-untrusted");
    let (acceptor, _) = tls_endpoint(&dir);
    let (hook_addr, mut hooks) = receiver(Some(acceptor)).await;
    let mut config = Config::loopback_ephemeral();
    config.webhooks.url = Some(format!("https://{hook_addr}/aula"));
    config.webhooks.max_attempts = 2;
    let server = start(config).await.expect("starts");
    let (mut teacher, _) = Client::join(server.http_addr(), "math", "teacher", Role::Teacher).await;
    teacher.send(&ClientMessage::Leave).await;
    teacher.expect_closed().await;
    let delivered = tokio::time::timeout(Duration::from_secs(2), hooks.recv()).await;
    assert!(
        delivered.is_err(),
        "delivered to an untrusted endpoint: {delivered:?}"
    );
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
