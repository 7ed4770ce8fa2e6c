//! Rooms' origins, as this node sees them: the leases it holds (claimed at a room's first
//! join here, renewed while the room has participants, released when it empties), where a join
//! is served, and where a resume of a participant whose signaling this node carries goes.
//!
//! A room this node takes (a new epoch after its origin died, or its own lease from before a
//! restart) gets the state its former origin saved before its first join here is served (see
//! `saved`); other joins of the room meanwhile wait for that before they are served.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use aula_protocol::ServerMessage;
use aula_sfu::SfuError;
use tokio::sync::watch;

use super::ClusterMedia;
use crate::cluster::{DirectoryError, Lease};

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
            let lease = match self.claim(room, participant).await {
                Ok(None) => return Ok(Route::Here),
                Ok(Some(lease)) => lease,
                Err(e) => {
                    tracing::warn!(
                        room,
                        "cannot reach the directory (serving the room here): {e}"
                    );
                    return Ok(Route::Here);
                }
            };
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

    /// Holds `room` for `participant`: `None` when this node holds its lease (held already, or
    /// claimed now, its saved state restored), else the lease of the node that holds it.
    async fn claim(&self, room: &str, participant: &str) -> Result<Option<Lease>, DirectoryError> {
        let held = |media: &Self| {
            let mut state = media.lock();
            let (_, members) = state.leases.get_mut(room)?;
            members.insert(participant.to_owned());
            Some(())
        };
        if held(self).is_some() {
            return Ok(None);
        }
        let lease = self
            .directory
            .claim_origin(room, &self.node_id)
            .await?
            .lease()
            .clone();
        if lease.node != self.node_id {
            return Ok(Some(lease));
        }
        // Ours: the first join to get here takes the room over; the others (told the lease is
        // held, by us) wait for that, so that none is served before the state is restored.
        let lock = Arc::clone(self.claims_lock().entry(room.to_owned()).or_default());
        {
            let _taking_over = lock.lock().await;
            if held(self).is_none() {
                self.take_over(room, &lease).await;
                self.hold(room, lease, participant);
            }
        }
        drop(lock);
        let mut claims = self.claims_lock();
        if claims.get(room).is_some_and(|l| Arc::strong_count(l) == 1) {
            claims.remove(room);
        }
        Ok(None)
    }

    fn claims_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>
    {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
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
                    // A room gone from the registry ended: its saved state goes with the lease.
                    // One still here (kept empty, or taken over and nobody back yet) keeps it
                    // until it expires, for whichever node serves the room next.
                    let ended = self
                        .rooms
                        .get()
                        .is_none_or(|rooms| rooms.states.save(&room).is_none());
                    let released = if ended {
                        self.directory.release_ended(&room, &lease).await
                    } else {
                        self.directory.release(&room, &lease).await
                    };
                    if let Err(e) = released {
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
        match self.claim(room, participant).await {
            Ok(None) => {}
            Ok(Some(lease)) => {
                tracing::warn!(
                    room,
                    origin = lease.node,
                    "the room's origin is another node; serving this participant here"
                );
            }
            Err(e) => tracing::warn!(room, "cannot claim the room's lease (serving it here): {e}"),
        }
        Ok(())
    }
}
