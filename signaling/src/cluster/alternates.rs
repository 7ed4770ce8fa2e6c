//! Where a client may reconnect when its node dies: the other live nodes, best first, sent to
//! it as [`ServerEvent::Alternates`] (issue 14).
//!
//! A learner connected straight to a node that dies (its room's origin, or the node carrying
//! its signaling there) would otherwise retry that node's URL until it gave up; only a
//! region-aware DNS name or the school's backend could send it elsewhere. Each node therefore
//! tells the clients whose WebSocket it holds which other nodes they may use: the live nodes of
//! the client's region first (a nearby one keeps its media short), then the others, at most
//! [`MAX_ALTERNATES`]. Within each group the order is a rendezvous hash of the client's
//! identity and the node's id: stable for one learner (a rejoin goes where the last one went),
//! spread over the nodes for a class (the learners of a dead node do not all land on one).
//!
//! Only nodes with a relay link are listed: rooms move between them (any of them can carry a
//! participant's signaling to a room's origin, or take a room over from a dead one), whereas a
//! node of a directory-only cluster serves its own rooms, and a learner sent there would be in
//! another class of the same name. The list follows the directory: a [`Feed`] resends it
//! when the live nodes change ([`ClusterCache::members_changed`]), and each `joined` and
//! `resumed` is followed by it.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use aula_protocol::{MAX_ALTERNATES, ServerEvent};
use tokio::sync::watch;

use super::{ClusterCache, NodeInfo};

/// The WebSocket URL of a node reached at `addr` (`host:port`).
pub fn ws_url(addr: &str) -> String {
    format!("ws://{addr}/ws")
}

/// The alternates of a client of `region` (identified by `key`, its identity) connected to node
/// `me`, from the live `nodes`: see the module docs.
pub fn alternates(nodes: &[NodeInfo], me: &str, region: &str, key: &str) -> Vec<String> {
    let mut candidates: Vec<(bool, u64, &NodeInfo)> = nodes
        .iter()
        .filter(|n| n.id != me && n.relay_addr.is_some() && !n.public_addrs.is_empty())
        .map(|n| (n.region != region, score(key, &n.id), n))
        .collect();
    // Own region first, then the highest score.
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.id.cmp(&b.2.id)));
    candidates
        .into_iter()
        .take(MAX_ALTERNATES)
        .map(|(_, _, n)| ws_url(&n.public_addrs[0]))
        .collect()
}

/// The rendezvous (highest random weight) score of `node` for `key`.
fn score(key: &str, node: &str) -> u64 {
    // SipHash with fixed keys: the same order on every node of one build.
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    node.hash(&mut hasher);
    hasher.finish()
}

/// One client's alternates, kept up to date with the directory.
pub struct Feed {
    cache: ClusterCache,
    changes: watch::Receiver<u64>,
    region: String,
    key: String,
    /// What the client was last sent; `None` before the first.
    sent: Option<Vec<String>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("region", &self.region)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// The feed of a client of `region` known by `key` (its identity, else anything stable for
    /// the session) on this node.
    pub fn new(cache: &ClusterCache, region: &str, key: &str) -> Self {
        Self {
            cache: cache.clone(),
            changes: cache.members_changed(),
            region: region.to_owned(),
            key: key.to_owned(),
            sent: None,
        }
    }

    /// The event to send the client now: the list, if it is not the one it was last sent
    /// (always the first time).
    pub fn update(&mut self) -> Option<ServerEvent> {
        let urls = {
            let view = self.cache.view();
            alternates(&view.nodes, self.cache.node_id(), &self.region, &self.key)
        };
        if self.sent.as_ref() == Some(&urls) {
            return None;
        }
        self.sent = Some(urls.clone());
        Some(ServerEvent::Alternates { urls })
    }

    /// Waits until the live nodes changed (then [`Feed::update`] says whether the client's list
    /// did). Cancel-safe. Never returns once the directory is gone (the server stopping).
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// [`Feed::changed`] of `feed`, or never without one.
pub async fn changed(feed: &mut Option<Feed>) {
    match feed {
        Some(feed) => feed.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Load;

    fn node(id: &str, region: &str, relay: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            region: region.into(),
            public_addrs: vec![format!("{id}.example:7880")],
            relay_addr: relay.then(|| format!("{id}.example:7884")),
            load: Load::default(),
            updated_ms: 0,
        }
    }

    #[test]
    fn own_region_first_never_itself_nor_nodes_without_a_link() {
        let nodes = [
            node("asia-1", "asia", true),
            node("eu-1", "eu", true),
            node("eu-2", "eu", true),
            node("eu-3", "eu", false),
            node("us-1", "us", true),
        ];
        let list = alternates(&nodes, "eu-1", "eu", "ana");
        assert_eq!(list[0], "ws://eu-2.example:7880/ws");
        assert_eq!(list.len(), 3, "{list:?}");
        assert!(list[1..].contains(&"ws://asia-1.example:7880/ws".to_owned()));
        assert!(list[1..].contains(&"ws://us-1.example:7880/ws".to_owned()));
        // A learner of asia on eu-1: asia-1 first.
        let list = alternates(&nodes, "eu-1", "asia", "ana");
        assert_eq!(list[0], "ws://asia-1.example:7880/ws");
        // Alone: nothing.
        assert!(alternates(&nodes[1..2], "eu-1", "eu", "ana").is_empty());
    }

    #[test]
    fn bounded_stable_and_spread_over_a_region() {
        let nodes: Vec<NodeInfo> = (0..10)
            .map(|i| node(&format!("eu-{i}"), "eu", true))
            .collect();
        let list = alternates(&nodes, "eu-0", "eu", "ana");
        assert_eq!(list.len(), MAX_ALTERNATES);
        assert_eq!(list, alternates(&nodes, "eu-0", "eu", "ana"), "stable");
        // The learners of eu-0 do not all go to the same node first.
        let firsts: std::collections::HashSet<String> = (0..50)
            .map(|i| alternates(&nodes, "eu-0", "eu", &format!("learner-{i}"))[0].clone())
            .collect();
        assert!(firsts.len() >= 5, "{firsts:?}");
    }
}
