//! This node's copy of the directory, refreshed in the background.
//!
//! Everything that reads the directory reads this copy, never Redis directly, so a Redis
//! outage stops nothing that is running: the last directory stays in use (and is reported as
//! such) until Redis answers again. The same loop keeps this node's own entry alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus::{IntCounter, IntGauge, Registry};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::directory::{self, Directory};
use super::lease::Lease;
use super::load::LoadProbe;
use super::node::{NodeInfo, unix_millis};

/// How long a clean shutdown waits for Redis to drop this node's entry; past that, the entry
/// simply expires after its TTL.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// What this node announces besides its id, and how often.
#[derive(Debug, Clone)]
pub struct Settings {
    pub region: String,
    pub public_addrs: Vec<String>,
    /// Where other nodes reach this node's relay link, if it has one.
    pub relay_addr: Option<String>,
    /// How long the entry lives without a refresh.
    pub node_ttl: Duration,
    /// How often the entry is refreshed and the copy reloaded.
    pub refresh: Duration,
}

/// Whether Redis answered the last refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedisStatus {
    pub up: bool,
    /// When Redis stopped answering (or, if it never did, when the first attempt failed).
    #[serde(serialize_with = "unix_ms")]
    pub down_since: Option<SystemTime>,
}

/// The directory as last read.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Live nodes, this one included, sorted by id.
    pub nodes: Vec<NodeInfo>,
    /// Rooms that had an origin, by room.
    pub origins: HashMap<String, Lease>,
    pub redis: RedisStatus,
}

/// The cluster's metrics, registered only when the server runs in a cluster.
#[derive(Clone)]
struct ClusterMetrics {
    redis_up: IntGauge,
    nodes: IntGauge,
    redis_errors: IntCounter,
}

impl ClusterMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let redis_up = IntGauge::new(
            "aula_cluster_redis_up",
            "1 if the last directory refresh reached Redis, else 0",
        )?;
        let nodes = IntGauge::new(
            "aula_cluster_nodes",
            "Live nodes in the cached cluster directory, this one included",
        )?;
        let redis_errors = IntCounter::new(
            "aula_cluster_redis_errors_total",
            "Directory refreshes that failed to reach Redis",
        )?;
        registry.register(Box::new(redis_up.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        Ok(Self {
            redis_up,
            nodes,
            redis_errors,
        })
    }
}

/// A shared handle on the cached directory. Cheap to clone.
#[derive(Clone)]
pub struct ClusterCache {
    node_id: String,
    view: Arc<Mutex<View>>,
    /// Counts changes of the live nodes (one joined, one left, one moved), not of their load:
    /// what clients are told about other nodes follows it (`super::alternates`).
    members: Arc<watch::Sender<u64>>,
}

impl ClusterCache {
    /// An empty copy for node `node_id`, filled once [`ClusterCache::start_refreshing`] runs.
    /// Two steps so the copy can be handed out before what the refresh reads exists.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            view: Arc::new(Mutex::new(View::default())),
            members: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Changes whenever the live nodes do (not their load): a node joined or left the
    /// directory, or changed its region or addresses.
    pub fn members_changed(&self) -> watch::Receiver<u64> {
        self.members.subscribe()
    }

    /// Starts keeping this node registered and the copy fresh, every `settings.refresh`, until
    /// `shutdown` turns true (or its sender is dropped); then the task deregisters and ends.
    /// `participants` counts this node's participants, for its load; `metrics` is the server's
    /// registry (the cluster's metrics go there, the SFU's egress is read from there).
    pub fn start_refreshing(
        &self,
        settings: Settings,
        directory: Directory,
        metrics: &Registry,
        participants: impl Fn() -> u64 + Send + 'static,
        shutdown: watch::Receiver<bool>,
    ) -> prometheus::Result<JoinHandle<()>> {
        let refresher = Refresher {
            cache: self.clone(),
            directory,
            probe: LoadProbe::new(metrics.clone()),
            metrics: ClusterMetrics::register(metrics)?,
            settings,
        };
        Ok(tokio::spawn(refresher.run(participants, shutdown)))
    }

    /// This node's id in the directory.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// A copy of the directory as last read.
    pub fn view(&self) -> View {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The background loop behind a [`ClusterCache`].
struct Refresher {
    cache: ClusterCache,
    directory: Directory,
    probe: LoadProbe,
    metrics: ClusterMetrics,
    settings: Settings,
}

impl Refresher {
    async fn run(mut self, participants: impl Fn() -> u64, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = crate::server::stopped(&mut shutdown) => break,
            }
            let me = NodeInfo {
                id: self.cache.node_id.clone(),
                region: self.settings.region.clone(),
                public_addrs: self.settings.public_addrs.clone(),
                relay_addr: self.settings.relay_addr.clone(),
                load: self.probe.sample(participants()),
                updated_ms: unix_millis(SystemTime::now()),
            };
            let result = self.refresh(&me).await;
            self.record(result);
        }
        let id = &self.cache.node_id;
        match tokio::time::timeout(DEREGISTER_TIMEOUT, self.directory.deregister(id)).await {
            Ok(Ok(())) => tracing::info!(node = id, "left the cluster directory"),
            Ok(Err(e)) => {
                tracing::warn!(node = id, "cannot deregister (the entry will expire): {e}")
            }
            Err(_) => tracing::warn!(node = id, "deregistering timed out (the entry will expire)"),
        }
    }

    /// Writes our entry and reads the directory back.
    async fn refresh(
        &self,
        me: &NodeInfo,
    ) -> directory::Result<(Vec<NodeInfo>, HashMap<String, Lease>)> {
        self.directory.register(me, self.settings.node_ttl).await?;
        let nodes = self.directory.nodes().await?;
        let origins = self.directory.origins().await?;
        Ok((nodes, origins))
    }

    /// Keeps what was read, or keeps the old copy and reports the failure.
    fn record(&self, result: directory::Result<(Vec<NodeInfo>, HashMap<String, Lease>)>) {
        let mut view = self.cache.lock();
        match result {
            Ok((nodes, origins)) => {
                if let Some(since) = view.redis.down_since {
                    tracing::info!(
                        down_for_secs = since.elapsed().unwrap_or_default().as_secs(),
                        "Redis reachable again; cluster directory refreshed"
                    );
                }
                self.metrics.nodes.set(nodes.len() as i64);
                self.metrics.redis_up.set(1);
                let changed = !same_members(&view.nodes, &nodes);
                view.nodes = nodes;
                view.origins = origins;
                view.redis = RedisStatus {
                    up: true,
                    down_since: None,
                };
                drop(view);
                if changed {
                    self.cache.members.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                self.metrics.redis_errors.inc();
                self.metrics.redis_up.set(0);
                if view.redis.down_since.is_none() {
                    tracing::warn!(
                        "cluster directory unreachable, keeping the last copy ({} nodes): {e}",
                        view.nodes.len()
                    );
                    view.redis = RedisStatus {
                        up: false,
                        down_since: Some(SystemTime::now()),
                    };
                } else {
                    tracing::debug!("cluster directory still unreachable: {e}");
                }
            }
        }
    }
}

/// Whether two listings have the same nodes, where they are reached and in which region
/// (their load and freshness aside).
fn same_members(a: &[NodeInfo], b: &[NodeInfo]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.id == b.id
                && a.region == b.region
                && a.public_addrs == b.public_addrs
                && a.relay_addr == b.relay_addr
        })
}

/// `down_since` as milliseconds since the Unix epoch (null when up), as the API shows it.
fn unix_ms<S: serde::Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    at.map(unix_millis).serialize(s)
}
