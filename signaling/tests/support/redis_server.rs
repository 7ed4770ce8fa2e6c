//! A real `redis-server` for tests, on a free loopback port: shared by the cluster tests of the
//! control plane and the relay tests of the client SDK (included with `#[path]`).
#![allow(dead_code)] // Each including test uses part of it.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

/// The longest any condition is waited for.
pub const WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// A Redis on a free port, once it answers PING. Fails the test where `redis-server` is
    /// not installed (scripts/setup.sh installs it): a cluster test that skipped itself would
    /// pass without testing anything. A port that was free a moment ago may be taken by
    /// another process before Redis binds it: Redis then exits, and starts again on another.
    pub async fn start() -> Self {
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(server) = Self::try_start_on(port).await {
                return server;
            }
        }
        panic!("redis-server exited at start three times (ports taken?)")
    }

    /// A Redis on `port` (persistence off), once it answers PING.
    pub async fn start_on(port: u16) -> Self {
        Self::try_start_on(port)
            .await
            .unwrap_or_else(|| panic!("redis-server exited at start on port {port}"))
    }

    /// A Redis on `port`, once it answers PING; `None` if it exited first (port taken).
    async fn try_start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs it)");
        let mut server = Self { child, port };
        let deadline = Instant::now() + WAIT;
        while !server.answers_ping().await {
            if server
                .child
                .try_wait()
                .expect("redis-server status")
                .is_some()
            {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer in time"
            );
            sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    async fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut reply).await.is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(mut self) -> u16 {
        self.kill();
        self.port
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
