//! Two cluster nodes on loopback for the relay tests (issue 14): a real Redis, the cluster CA
//! and certificates made here, an origin node and a relay node in another region, each a whole
//! Aula server with its own SFU, linked over QUIC.
#![allow(dead_code)] // Only the cluster tests use it; every test includes `common`.

#[path = "../../../signaling/tests/support/redis_server.rs"]
pub mod redis_server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aula_client::aula_protocol::Role;
use aula_client::{AudioSource, Client, PublishedAudio, ToneConfig};
use aula_sfu::relay::tls::{generate_ca, issue_node_cert};
use aula_signaling::Config;
use aula_signaling::cluster::{Directory, NodeInfo};
use aula_signaling::config::{ClusterConfig, RelayConfig};
use aula_signaling::token::{AccessClaims, ApiKeys, mint};
use redis_server::RedisServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{STEP, TestServer};

/// Writes the cluster CA and the certificates of `nodes` into `dir`.
pub fn make_certs(dir: &Path, nodes: &[&str]) {
    let ca = generate_ca().expect("CA");
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    for node in nodes {
        let cert = issue_node_cert(&ca, node).expect("node certificate");
        std::fs::write(dir.join(format!("{node}.pem")), &cert.cert).unwrap();
        std::fs::write(dir.join(format!("{node}.key")), &cert.key).unwrap();
    }
}

/// The config of node `node` of `region`: short TTLs and refreshes, a relay link on a free
/// loopback port (the OS's choice), the certificates in `certs`, the test impairment route on;
/// with `link_delay_ms`, what the node sends on its links is delayed that long (the test-only
/// link impairment).
pub fn node_config(
    redis: &str,
    certs: &Path,
    node: &str,
    region: &str,
    link_delay_ms: Option<u64>,
) -> Config {
    // Through serde, as the config file is read: fields added to `[cluster.relay]` later
    // have their defaults.
    let mut relay = serde_json::json!({
        // Port 0: the OS picks a free port, and the node publishes the one it bound.
        "bind": "127.0.0.1:0",
        "addr": "127.0.0.1:0",
        "ca_cert": certs.join("ca.pem"),
        "node_cert": certs.join(format!("{node}.pem")),
        "node_key": certs.join(format!("{node}.key")),
    });
    if let Some(delay_ms) = link_delay_ms {
        relay["impairment"] = serde_json::json!({ "delay_ms": delay_ms });
    }
    let relay: RelayConfig = serde_json::from_value(relay).expect("a relay config");
    let mut config = Config {
        cluster: Some(ClusterConfig {
            redis_url: redis.to_owned(),
            node_id: node.to_owned(),
            region: region.to_owned(),
            // Port 0: the port the node bound for HTTP, as it publishes it.
            public_addrs: vec!["127.0.0.1:0".to_owned()],
            node_ttl_secs: 3,
            refresh_secs: 1,
            lease_ttl_secs: 3,
            relay: Some(relay),
        }),
        ..Config::loopback_ephemeral()
    };
    // A test may put a participant of either node on a weak network (`POST /test/impairment`).
    config.dev.test_impairment = true;
    config
}

/// A student of `region` joining through the origin.
pub async fn join_from(origin: &TestServer, room: &str, identity: &str, region: &str) -> Client {
    let mut claims = AccessClaims::new(room, identity, Role::Student, Duration::from_secs(600));
    claims.region = Some(region.to_owned());
    let token = mint(&ApiKeys::dev(), &claims).expect("token");
    tokio::time::timeout(STEP, Client::connect(&origin.ws_url(), &token))
        .await
        .expect("join in time")
        .expect("join")
}

/// The sum of a counter's samples in a server's `/metrics` whose labels contain `labels`.
pub async fn metric(server: &TestServer, name: &str, labels: &str) -> f64 {
    metric_at(server.server.http_addr(), name, labels).await
}

/// [`metric`] of the server at `http`.
pub async fn metric_at(http: SocketAddr, name: &str, labels: &str) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|line| line.starts_with(name) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Redis, the cluster CA and two nodes: the origin `eu-1` (region eu) and the relay `asia-1`
/// (region asia), both in the directory and in each other's copy of it. A test may take it
/// apart (to shut a node down).
pub struct TwoNodes {
    pub redis: RedisServer,
    pub certs: CertsDir,
    pub origin: TestServer,
    pub relay: TestServer,
}

/// The directory of the cluster's certificates, removed when dropped.
pub struct CertsDir(pub PathBuf);

impl CertsDir {
    /// A new directory with the cluster CA and the certificates of `eu-1` and `asia-1`.
    fn for_both_nodes(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("aula-relay-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        make_certs(&dir, &["eu-1", "asia-1"]);
        Self(dir)
    }
}

impl Drop for CertsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TwoNodes {
    /// Redis and the two nodes, once each node's directory lists both.
    pub async fn start(tag: &str) -> Self {
        Self::start_with_link_delay(tag, None).await
    }

    /// [`TwoNodes::start`], each node delaying what it sends on its links `link_delay_ms`.
    pub async fn start_with_link_delay(tag: &str, link_delay_ms: Option<u64>) -> Self {
        let redis = RedisServer::start().await;
        let certs = CertsDir::for_both_nodes(tag);
        let config =
            |node, region| node_config(&redis.url(), &certs.0, node, region, link_delay_ms);
        let origin = TestServer::start_with(config("eu-1", "eu")).await;
        let relay = TestServer::start_with(config("asia-1", "asia")).await;
        both_listed(&redis).await;
        Self {
            redis,
            certs,
            origin,
            relay,
        }
    }
}

/// Waits until the directory lists both nodes, and one refresh more (1 s), so that the
/// origin's copy of the directory has the relay. The relay's entry, as published.
async fn both_listed(redis: &RedisServer) -> NodeInfo {
    listed(redis)
        .await
        .into_iter()
        .find(|n| n.id == "asia-1")
        .expect("the relay's entry")
}

/// Waits until the directory lists both nodes, and one refresh more (1 s), so that each
/// node's copy of the directory has the other. Both entries, as published.
async fn listed(redis: &RedisServer) -> Vec<NodeInfo> {
    let directory = Directory::open(&redis.url(), Duration::from_secs(3)).unwrap();
    let mut nodes = Vec::new();
    for _ in 0..100 {
        nodes = directory.nodes().await.unwrap_or_default();
        if nodes.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nodes.len(), 2, "both nodes registered: {nodes:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes
}

/// Like [`TwoNodes`], but the relay runs as its own `aula serve` process, so that a test can
/// kill it abruptly (SIGKILL: no goodbye to the directory or to its links).
pub struct OriginAndRelayProcess {
    pub redis: RedisServer,
    pub certs: CertsDir,
    pub origin: TestServer,
    pub relay: NodeProcess,
}

/// An `aula serve` process, killed when dropped; `http` is where it listens (the port it
/// bound, as the directory has it).
pub struct NodeProcess {
    child: std::process::Child,
    pub http: SocketAddr,
}

impl NodeProcess {
    /// Starts `aula serve` as node `node` of `region` (see [`node_config`]), its config file
    /// and log (`NODE.log`) in `certs`. `http` is unknown (port 0) until the directory lists
    /// it.
    pub fn spawn(redis: &RedisServer, certs: &CertsDir, node: &str, region: &str) -> Self {
        let config = node_config(&redis.url(), &certs.0, node, region, None);
        let config_file = certs.0.join(format!("{node}.toml"));
        std::fs::write(
            &config_file,
            toml::to_string(&config).expect("the config as TOML"),
        )
        .unwrap();
        let child = std::process::Command::new(super::aula_binary())
            .args(["serve", "--config"])
            .arg(&config_file)
            .current_dir(&certs.0)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(certs.0.join(format!("{node}.log"))).unwrap())
            .spawn()
            .expect("aula serve starts");
        Self {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// The WebSocket URL of the node.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and the process reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl OriginAndRelayProcess {
    pub async fn start(tag: &str) -> Self {
        let redis = RedisServer::start().await;
        let certs = CertsDir::for_both_nodes(tag);
        let origin =
            TestServer::start_with(node_config(&redis.url(), &certs.0, "eu-1", "eu", None)).await;
        let mut relay = NodeProcess::spawn(&redis, &certs, "asia-1", "asia");
        let entry = both_listed(&redis).await;
        relay.http = entry.public_addrs[0]
            .parse()
            .expect("the relay publishes its HTTP address");
        Self {
            redis,
            certs,
            origin,
            relay,
        }
    }
}

/// Like [`OriginAndRelayProcess`] the other way round: node `eu-1` (region eu) runs as its
/// own `aula serve` process, to be killed, and `asia-1` (region asia) in this one. Whichever
/// a room's first join reaches is its origin.
pub struct ProcessAndNode {
    pub redis: RedisServer,
    pub certs: CertsDir,
    pub process: NodeProcess,
    pub node: TestServer,
}

impl ProcessAndNode {
    pub async fn start(tag: &str) -> Self {
        let redis = RedisServer::start().await;
        let certs = CertsDir::for_both_nodes(tag);
        let mut process = NodeProcess::spawn(&redis, &certs, "eu-1", "eu");
        let node =
            TestServer::start_with(node_config(&redis.url(), &certs.0, "asia-1", "asia", None))
                .await;
        let entries = listed(&redis).await;
        let entry = entries
            .iter()
            .find(|n| n.id == "eu-1")
            .expect("eu-1's entry");
        process.http = entry.public_addrs[0]
            .parse()
            .expect("eu-1 publishes its HTTP address");
        Self {
            redis,
            certs,
            process,
            node,
        }
    }
}

/// The tone the teachers of the relay tests play: every payload distinct.
pub const TONE: ToneConfig = ToneConfig {
    frequency_hz: ToneConfig::DISTINCT_FRAMES_HZ,
    amplitude: 0.5,
};

/// A teacher on `origin` playing [`TONE`] in `room`: the client, its sid and its track.
pub async fn teacher_playing_tone(
    origin: &TestServer,
    room: &str,
) -> (Client, String, PublishedAudio) {
    let teacher = origin.join(room, "teacher", Role::Teacher).await;
    let sid = teacher.participant().sid.clone();
    let audio = teacher
        .publish_audio(AudioSource::Tone(TONE))
        .await
        .expect("publish");
    (teacher, sid, audio)
}
