//! The `[cluster]` section and its `[cluster.relay]`: several nodes as one cluster, with their
//! defaults and the checks serde cannot make. Apart from the single node's sections because
//! a single node never reads them.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default for `[cluster] node_ttl_secs`: a dead node leaves the directory within seconds,
/// while a refresh or two may be late without it disappearing.
pub const DEFAULT_NODE_TTL_SECS: u64 = 10;

/// Default for `[cluster] refresh_secs`.
pub const DEFAULT_REFRESH_SECS: u64 = 3;

/// Default for `[cluster] lease_ttl_secs`: a dead origin's rooms can be claimed again this soon.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;

/// Several nodes as one cluster, sharing a directory in Redis (see `crate::cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The directory's Redis, `redis://[user:password@]host[:port][/db]`.
    pub redis_url: String,
    /// This node's id in the directory: letters, digits, `.`, `_`, `-`. Default: a random id
    /// drawn at each start (a restarted node is then a new node; the old entry expires).
    #[serde(default = "random_node_id")]
    pub node_id: String,
    /// The region the node serves, e.g. `eu-west`: same characters as `node_id`.
    pub region: String,
    /// Where clients and other nodes reach this node, `host:port` each; port 0 is the port
    /// `http.bind` bound.
    #[serde(default)]
    pub public_addrs: Vec<String>,
    /// Seconds the node's entry lives without a refresh; more than `refresh_secs`.
    #[serde(default = "default_node_ttl_secs")]
    pub node_ttl_secs: u64,
    /// Seconds between refreshes of the entry and of the cached directory; at least 1.
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
    /// Seconds a room's origin lease lasts unless renewed; more than `refresh_secs`.
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
    /// Relay links to other nodes (`[cluster.relay]`); without it the node shares the
    /// directory but serves every room's media itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayConfig>,
}

/// This node's end of the QUIC links between nodes (see `crate::cluster::relay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// UDP address the link endpoint binds.
    #[serde(default = "default_relay_bind")]
    pub bind: SocketAddr,
    /// Where other nodes reach it, `host:port` (published in the directory); port 0 is the
    /// port `bind` bound.
    pub addr: String,
    /// The cluster CA's certificate (`aula cluster ca`): only nodes it signed are trusted.
    pub ca_cert: PathBuf,
    /// This node's certificate and key (`aula cluster cert --node <node_id>`).
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// Test only: delay and loss added to everything this node sends on its relay links
    /// (load tests of a long path between nodes; see `aula_sfu::relay::impaired_socket`).
    /// Refused unless `[dev] test_impairment = true`. A path impaired both ways is both nodes
    /// set alike: 150 ms round trip = `delay_ms = 75` on each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<RelayImpairment>,
}

/// `[cluster.relay] impairment = { delay_ms = 75, loss = 0.01 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayImpairment {
    /// One-way delay added to each datagram sent, milliseconds (at most 10,000).
    #[serde(default)]
    pub delay_ms: u64,
    /// Share of the datagrams sent that are lost, 0 to 1, independently each.
    #[serde(default)]
    pub loss: f64,
    /// Seed of the loss pattern; default: derived from the node id, so that a rerun of the
    /// same nodes loses the same datagrams of the same sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// `loss` is checked to be a number in 0..=1 (never NaN), so equality is an equivalence.
impl Eq for RelayImpairment {}

impl RelayImpairment {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err((
                "cluster.relay.impairment",
                format!("loss must be between 0 and 1, not {}", self.loss),
            ));
        }
        if self.delay_ms > 10_000 {
            return Err((
                "cluster.relay.impairment",
                format!("delay_ms must be at most 10000, not {}", self.delay_ms),
            ));
        }
        Ok(())
    }
}

fn default_relay_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7884))
}

fn random_node_id() -> String {
    format!("node-{:08x}", rand::random::<u32>())
}

fn default_node_ttl_secs() -> u64 {
    DEFAULT_NODE_TTL_SECS
}

fn default_refresh_secs() -> u64 {
    DEFAULT_REFRESH_SECS
}

fn default_lease_ttl_secs() -> u64 {
    DEFAULT_LEASE_TTL_SECS
}

/// `host:port`, with a host and a valid port.
fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// An id that is safe in a Redis key and a log line.
pub(crate) fn is_cluster_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl ClusterConfig {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = redis::Client::open(self.redis_url.as_str()) {
            return Err((
                "cluster.redis_url",
                format!("{:?} is not a Redis URL: {e}", self.redis_url),
            ));
        }
        if !is_cluster_id(&self.node_id) {
            return Err((
                "cluster.node_id",
                "must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        if !is_cluster_id(&self.region) {
            return Err((
                "cluster.region",
                "must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        for addr in &self.public_addrs {
            if !is_host_port(addr) {
                return Err(("cluster.public_addrs", format!("{addr:?} is not host:port")));
            }
        }
        if let Some(relay) = &self.relay
            && !is_host_port(&relay.addr)
        {
            return Err((
                "cluster.relay.addr",
                format!("{:?} is not host:port", relay.addr),
            ));
        }
        if self.refresh_secs == 0 {
            return Err(("cluster.refresh_secs", "must be at least 1".into()));
        }
        if self.node_ttl_secs <= self.refresh_secs {
            return Err((
                "cluster.node_ttl_secs",
                "must be more than refresh_secs, or live nodes drop out between refreshes".into(),
            ));
        }
        if self.lease_ttl_secs <= self.refresh_secs {
            return Err((
                "cluster.lease_ttl_secs",
                "must be more than refresh_secs, or leases lapse between renewals".into(),
            ));
        }
        Ok(())
    }
}
