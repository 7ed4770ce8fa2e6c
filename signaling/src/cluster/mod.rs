//! Running several Aula nodes as one cluster (issue 14). So far: the cluster directory.
//!
//! With `[cluster]` in the config, each node registers itself in Redis (id, region, public
//! addresses, load) and keeps a cached copy of every live node and room origin; rooms get an
//! origin node through leases with rising epochs. Relaying rooms between nodes and placing
//! participants are not built yet. Without `[cluster]` nothing here runs.
//!
//! - `node`, `lease`: what the directory holds, its keys and JSON (pure, unit tested);
//! - [`Directory`]: the Redis side (all of the I/O);
//! - [`ClusterCache`]: the node's background-refreshed copy, which survives Redis outages;
//! - [`alternates`]: the other nodes a client may reconnect to when its node dies;
//! - `load`: measuring this node's load for its entry;
//! - `room_state`: what a room's origin saves in Redis so that the class (its lock, hands,
//!   stage) survives the origin's death: the next origin restores it.

pub mod alternates;
mod cache;
pub mod certs;
mod directory;
mod lease;
mod load;
mod node;
pub mod proxy;
pub mod relay;
mod room_state;

pub use cache::{ClusterCache, RedisStatus, Settings, View};
pub use directory::{Directory, DirectoryError};
pub use lease::{Claim, Lease};
pub use load::LoadProbe;
pub use node::{Load, NodeInfo, unix_millis};
pub use room_state::{MAX_SAVED, RoomState, RoomStates, Saved, SavedParticipant};

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ClusterConfig;

/// Starts keeping this node in the directory `config` names, filling `cache` (see
/// [`ClusterCache::start_refreshing`]). Fails only on what no retry fixes (a bad URL, metrics
/// already registered); an unreachable Redis is reported by the cache and retried.
pub fn join(
    config: &ClusterConfig,
    http_port: u16,
    cache: &ClusterCache,
    metrics: &prometheus::Registry,
    participants: impl Fn() -> u64 + Send + 'static,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let directory = Directory::open(
        &config.redis_url,
        Duration::from_secs(config.lease_ttl_secs),
    )?;
    let settings = Settings {
        region: config.region.clone(),
        public_addrs: config
            .public_addrs
            .iter()
            .map(|addr| with_bound_port(addr, http_port))
            .collect(),
        relay_addr: config.relay.as_ref().map(|r| r.addr.clone()),
        node_ttl: Duration::from_secs(config.node_ttl_secs),
        refresh: Duration::from_secs(config.refresh_secs),
    };
    Ok(cache.start_refreshing(settings, directory, metrics, participants, shutdown)?)
}

/// `addr` (`host:port`, as the config validated it) with port 0 replaced by `bound_port`: an
/// address in the config may name "the port this node bound", so that a node bound to port 0
/// (the OS picks a free one) publishes where it really is. That is how tests start nodes
/// without racing other processes for a free port.
pub(crate) fn with_bound_port(addr: &str, bound_port: u16) -> String {
    match addr.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{bound_port}"),
        _ => addr.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::with_bound_port;

    #[test]
    fn port_0_in_an_address_is_the_port_bound() {
        assert_eq!(with_bound_port("127.0.0.1:0", 40123), "127.0.0.1:40123");
        assert_eq!(with_bound_port("[::1]:0", 40123), "[::1]:40123");
        assert_eq!(
            with_bound_port("eu-1.school.example:0", 7),
            "eu-1.school.example:7"
        );
        // Any other port is what the operator means (a proxy, a NAT): kept.
        assert_eq!(
            with_bound_port("eu-1.school.example:443", 7),
            "eu-1.school.example:443"
        );
        assert_eq!(with_bound_port("10.0.0.1:7880", 7), "10.0.0.1:7880");
    }
}
