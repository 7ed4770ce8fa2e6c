//! Just enough HTTP/1.0 for dev tokens and `/metrics` on a loopback server.
//!
//! HTTP/1.0 with `Connection: close` means the server neither keeps the connection nor
//! chunks the body: read to the end, split at the blank line. No client library needed for
//! a few requests to a server on this machine.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bodies larger than this are refused; `/metrics` of a busy server is far below it.
const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

/// GETs `path` from `addr`; returns the status code and the body.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await?;
        parse_response(&raw)
    })
    .await
    .with_context(|| format!("GET {path} timed out"))?
}

/// POSTs a JSON `body` to `path` on `addr`; returns the status code and the body.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await?;
        parse_response(&raw)
    })
    .await
    .with_context(|| format!("POST {path} timed out"))?
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response");
    };
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .context("no status code in HTTP response")?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query value (identities and rooms are ours, but stay correct anyway).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let (status, body) =
            parse_response(b"HTTP/1.0 200 OK\r\nContent-Type: x\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!((status, body.as_str()), (200, "{\"a\":1}"));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.0 abc\r\n\r\n").is_err());
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("class-1 a&b"), "class-1%20a%26b");
    }
}
