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
//! - `load`: measuring this node's load for its entry.

mod cache;
pub mod certs;
mod directory;
mod lease;
mod load;
mod node;
pub mod proxy;
pub mod relay;

pub use cache::{ClusterCache, RedisStatus, Settings, View};
pub use directory::{Directory, DirectoryError};
pub use lease::{Claim, Lease};
pub use load::LoadProbe;
pub use node::{Load, NodeInfo, unix_millis};

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ClusterConfig;

/// Starts keeping this node in the directory `config` names, filling `cache` (see
/// [`ClusterCache::start_refreshing`]). Fails only on what no retry fixes (a bad URL, metrics
/// already registered); an unreachable Redis is reported by the cache and retried.
pub fn join(
    config: &ClusterConfig,
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
        public_addrs: config.public_addrs.clone(),
        relay_addr: config.relay.as_ref().map(|r| r.addr.clone()),
        node_ttl: Duration::from_secs(config.node_ttl_secs),
        refresh: Duration::from_secs(config.refresh_secs),
    };
    Ok(cache.start_refreshing(settings, directory, metrics, participants, shutdown)?)
}
