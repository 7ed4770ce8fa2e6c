//! Rooms' origins, as this node sees them: the leases it holds (claimed at a room's first
//! join here, renewed while the room has participants, released when it empties), where a join
//! is served, and where a resume of a participant whose signaling this node carries goes.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use aula_protocol::ServerMessage;
use aula_sfu::SfuError;
use tokio::sync::watch;

use super::ClusterMedia;
use crate::cluster::{Claim, Lease};

/// How often the origin renews the leases of its rooms; well within the lease TTL.
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// How often a join retries the claim of a room whose origin is unreachable (its lease
/// lapses within the lease TTL if it is dead).
const CLAIM_RETRY: Duration = Duration::from_millis(500);

/// Resume tokens remembered for participants whose signaling this node carries (see
/// [`ClusterMedia::remember_resume`]); the oldest go first.
const RESUME_ROUTES: usize = 10_000;

/// Where a join for a room is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node is (now) the room's origin, or the directory cannot be reached.
    Here,
    /// Another node is: carry the participant's signaling there (`crate::cluster::proxy`).
    Origin { node: String, ws_url: String },
}

impl ClusterMedia {
    /// Where `participant`'s join of `room` is served: here if this node holds (or now wins)
    /// the room's lease, else the origin's node. A room whose origin is not in the directory
    /// (dead, its lease not lapsed yet) is waited for, up to the lease TTL, then claimed. With
    /// the directory unreachable the room is served here, as a single node would.
    pub async fn route(&self, room: &str, participant: &str) -> Result<Route, String> {
        let deadline = tokio::time::Instant::now() + self.lease_ttl + CLAIM_RETRY * 4;
        loop {
            if let Some((_, members)) = self.lock().leases.get_mut(room) {
                members.insert(participant.to_owned());
                return Ok(Route::Here);
            }
            let lease = match self.directory.claim_origin(room, &self.node_id).await {
                Ok(claim) => claim.lease().clone(),
                Err(e) => {
                    tracing::warn!(
                        room,
                        "cannot reach the directory (serving the room here): {e}"
                    );
                    return Ok(Route::Here);
                }
            };
            if lease.node == self.node_id {
                self.hold(room, lease, participant);
                return Ok(Route::Here);
            }
            if let Some(ws_url) = self.ws_url_of(&lease.node) {
                return Ok(Route::Origin {
                    node: lease.node,
                    ws_url,
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "the room's origin node {} is not reachable",
                    lease.node
                ));
            }
            tokio::time::sleep(CLAIM_RETRY).await;
        }
    }

    /// Keeps `lease` of `room`, now this node's, with `participant` among its members.
    fn hold(&self, room: &str, lease: Lease, participant: &str) {
        tracing::info!(room, epoch = lease.epoch, "this node is the room's origin");
        self.lock()
            .leases
            .entry(room.to_owned())
            .or_insert((lease, HashSet::new()))
            .1
            .insert(participant.to_owned());
    }

    /// The WebSocket URL of a live node, from its first public address.
    fn ws_url_of(&self, node: &str) -> Option<String> {
        let view = self.cache.view();
        let addr = view
            .nodes
            .iter()
            .find(|n| n.id == node)?
            .public_addrs
            .first()?;
        Some(format!("ws://{addr}/ws"))
    }

    /// Notes a message the origin sent to a participant whose signaling this node carries:
    /// its resume token, if it is `Joined`, so that a resume arriving here goes to that origin.
    pub fn remember_resume(&self, ws_url: &str, message: &str) {
        if !message.contains("resume_token") {
            return;
        }
        let Ok(ServerMessage::Joined { resume_token, .. }) = serde_json::from_str(message) else {
            return;
        };
        let Some(token) = resume_token.filter(|t| !t.is_empty()) else {
            return;
        };
        let mut routes = self
            .resume_routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        routes.push_back((token, ws_url.to_owned()));
        while routes.len() > RESUME_ROUTES {
            routes.pop_front();
        }
    }

    /// The origin a resume token was handed out by, if this node carried that participant.
    pub fn resume_route(&self, token: &str) -> Option<String> {
        let routes = self
            .resume_routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        routes
            .iter()
            .rev()
            .find(|(t, _)| t == token)
            .map(|(_, url)| url.clone())
    }

    /// The newest lease epoch of `room` this node knows: its own lease's, or the directory's.
    pub(super) fn known_epoch(&self, room: &str) -> u64 {
        let own = self
            .lock()
            .leases
            .get(room)
            .map_or(0, |(lease, _)| lease.epoch);
        let directory = self
            .cache
            .view()
            .origins
            .get(room)
            .map_or(0, |lease| lease.epoch);
        own.max(directory)
    }

    /// Keeps the leases of rooms with participants; releases the others.
    pub(super) async fn renew_leases(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = crate::server::stopped(&mut shutdown) => break,
            }
            let leases: Vec<(String, Lease, bool)> = self
                .lock()
                .leases
                .iter()
                .map(|(room, (lease, members))| (room.clone(), lease.clone(), members.is_empty()))
                .collect();
            for (room, lease, empty) in leases {
                if empty {
                    self.lock().leases.remove(&room);
                    if let Err(e) = self.directory.release(&room, &lease).await {
                        tracing::debug!(room, "cannot release the room's lease: {e}");
                    }
                    continue;
                }
                match self.directory.renew(&room, &lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(room, epoch = lease.epoch, "lost the room's origin lease");
                        self.lock().leases.remove(&room);
                    }
                    // Redis down: live rooms go on; the lease is renewed when it is back.
                    Err(e) => tracing::warn!(room, "cannot renew the room's lease: {e}"),
                }
            }
        }
    }

    /// Holds `room`'s origin lease for `participant` (claiming it on the room's first
    /// participant here). Redis down: the room is served here without a lease, as a single
    /// node would (it is said so in the log); held by another node: likewise, since this
    /// participant's signaling came here.
    pub(super) async fn hold_lease(&self, room: &str, participant: &str) -> Result<(), SfuError> {
        if let Some((_, members)) = self.lock().leases.get_mut(room) {
            members.insert(participant.to_owned());
            return Ok(());
        }
        match self.directory.claim_origin(room, &self.node_id).await {
            Ok(Claim::Won(lease)) | Ok(Claim::Held(lease)) if lease.node == self.node_id => {
                self.hold(room, lease, participant);
            }
            Ok(claim) => {
                tracing::warn!(
                    room,
                    origin = claim.lease().node,
                    "the room's origin is another node; serving this participant here"
                );
            }
            Err(e) => tracing::warn!(room, "cannot claim the room's lease (serving it here): {e}"),
        }
        Ok(())
    }
}
