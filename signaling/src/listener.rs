//! The HTTP listener: accepts connections under the caps of [`crate::conn_limits`] and serves
//! each with hyper, with a deadline for its request header.
//!
//! `axum::serve` has neither: a client that connects and then sends half a header (or
//! nothing) kept its connection forever, and any number of them could. Here a connection
//! whose header is not complete within `header_read_timeout` is closed (the same deadline
//! closes idle keep-alive connections between requests), and a connection over a cap is
//! answered `503` with the usual JSON error body, then closed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn_limits::{ConnLimits, ConnPermit, Refusal};
use crate::server::stopped;

/// How long a refused connection is given to take its `503` before it is closed. The request
/// it sent is read and discarded meanwhile: closing a socket with unread input resets it, and
/// the reset can destroy the response before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// At most this much of a refused connection's request is read.
const REFUSAL_DRAIN_BYTES: usize = 16 * 1024;

/// After an accept error that is not about one connection (typically the process is out of file
/// descriptors), wait this long before accepting again rather than spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown`, then stops accepting, lets requests in flight
/// finish and returns once their connections closed. Upgraded connections (WebSockets) are
/// their sessions' business by then.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Arc<ConnLimits>,
    header_read_timeout: Duration,
    header_timeouts: prometheus::IntCounter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        // Reap finished connections so the set stays as large as what is open.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!("accept error: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        match limits.try_acquire(peer.ip()) {
            Ok(permit) => {
                let connection = Connection {
                    stream,
                    _permit: permit,
                };
                connections.spawn(serve_connection(
                    connection,
                    peer,
                    app.clone(),
                    header_read_timeout,
                    header_timeouts.clone(),
                    shutdown.clone(),
                ));
            }
            Err(refusal) => {
                tracing::debug!(%peer, reason = refusal.label(), "connection refused");
                connections.spawn(refuse(stream, refusal));
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Errors about one connection (the client gave up before we accepted it).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    connection: Connection,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    header_timeouts: prometheus::IntCounter,
    mut shutdown: watch::Receiver<bool>,
) {
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(connection), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped(&mut shutdown) => {
            // Finishes the request in flight, if any, then closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            header_timeouts.inc();
            tracing::debug!(%peer, "closed a connection that sent no complete header in time");
        }
        Err(e) => tracing::debug!(%peer, "HTTP connection ended: {e}"),
    }
}

/// Answers `503` with the JSON error body every route uses, then closes.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let body = json!({ "error": { "code": "too_many_connections", "message": refusal.message() } })
        .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// A client's socket with its [`ConnPermit`], so the permit is held exactly as long as the
/// socket is open, also after hyper hands it over to a WebSocket.
struct Connection {
    stream: TcpStream,
    _permit: ConnPermit,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
