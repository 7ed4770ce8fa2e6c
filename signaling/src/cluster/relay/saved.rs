//! The origin side of a room's saved state (see `crate::cluster::RoomState` for why): saving
//! the state of the rooms this node holds, and restoring it into a room this node takes over.
//!
//! Saves are coalesced: every [`SAVE_EVERY`] the state of each room held is read from the
//! registry and written only if it changed since the last save (a hand raised and lowered
//! within that time writes nothing); a class where nothing happens writes nothing (its saved
//! state lives on with its lease). Nothing here ever blocks or fails a room: the registry is
//! read under its lock, and the Redis writes happen in this task, after; a Redis that fails is
//! logged once, counted, and retried at the next tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, Registry};
use tokio::sync::watch;

use super::ClusterMedia;
use crate::cluster::{Lease, RoomState, RoomStates};

/// How often the state of the rooms held is compared with what was saved. Short enough that
/// a failover loses at most this much of the last moments (a hand raised just before).
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// The control plane's rooms, and the metrics of their saved states.
pub(super) struct Rooms {
    pub states: Arc<dyn RoomStates>,
    pub metrics: RoomStateMetrics,
}

/// Counts of what happened to saved room states.
pub(super) struct RoomStateMetrics {
    saves: IntCounter,
    refused: IntCounter,
    errors: IntCounter,
    restores: IntCounter,
}

impl RoomStateMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let saves = IntCounter::new(
            "aula_cluster_room_state_saves_total",
            "Room states this origin saved in Redis for the room's next origin",
        )?;
        let refused = IntCounter::new(
            "aula_cluster_room_state_refused_total",
            "Room state saves Redis refused: another node holds the room under a newer epoch",
        )?;
        let errors = IntCounter::new(
            "aula_cluster_room_state_errors_total",
            "Room state saves or loads that failed (Redis unreachable, or a malformed value)",
        )?;
        let restores = IntCounter::new(
            "aula_cluster_room_state_restores_total",
            "Rooms taken over from a dead origin whose saved state was restored here",
        )?;
        for counter in [&saves, &refused, &errors, &restores] {
            registry.register(Box::new(counter.clone()))?;
        }
        Ok(Self {
            saves,
            refused,
            errors,
            restores,
        })
    }
}

impl ClusterMedia {
    /// Gives `room`, whose lease this node just took (a new epoch, or its own lease from before
    /// a restart), the state its former origin saved. Called before the room's first join here
    /// is served. A Redis that fails leaves the room to start afresh, as before saved states.
    pub(super) async fn take_over(&self, room: &str, lease: &Lease) {
        let Some(rooms) = self.rooms.get() else {
            return;
        };
        let saved = match self.directory.room_state(room).await {
            Ok(Some(saved)) => saved,
            Ok(None) => return,
            Err(e) => {
                rooms.metrics.errors.inc();
                tracing::warn!(
                    room,
                    "cannot load the room's saved state; it starts afresh: {e}"
                );
                return;
            }
        };
        if saved.epoch > lease.epoch {
            // Only a save under the newest epoch is taken: not a state this node may use.
            tracing::warn!(
                room,
                saved = saved.epoch,
                epoch = lease.epoch,
                "the room's saved state is newer than this node's lease; not used"
            );
            return;
        }
        let participants = saved.state.participants.len();
        let locked = saved.state.locked;
        if rooms.states.restore(room, saved.state) {
            rooms.metrics.restores.inc();
            tracing::info!(
                room,
                from_epoch = saved.epoch,
                epoch = lease.epoch,
                participants,
                locked,
                "restored the room's state saved by its former origin"
            );
        } else {
            tracing::info!(
                room,
                "the room is live here already; its saved state is not used"
            );
        }
    }

    /// Saves the state of the rooms this node holds when it changed, until `shutdown`.
    pub(super) async fn save_room_states(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What was last saved (or refused) of each room held, under which epoch.
        let mut saved: HashMap<String, (u64, RoomState)> = HashMap::new();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = crate::server::stopped(&mut shutdown) => break,
            }
            let Some(rooms) = self.rooms.get() else {
                continue;
            };
            let held: Vec<(String, Lease)> = self
                .lock()
                .leases
                .iter()
                .map(|(room, (lease, _))| (room.clone(), lease.clone()))
                .collect();
            saved.retain(|room, _| held.iter().any(|(r, _)| r == room));
            for (room, lease) in held {
                let Some(state) = rooms.states.save(&room) else {
                    continue;
                };
                if saved
                    .get(&room)
                    .is_some_and(|(epoch, last)| *epoch == lease.epoch && *last == state)
                {
                    continue;
                }
                // Sessions are closed after the shutdown signal: a state read since may lack
                // participants who are only moving to another node, and must not be saved.
                if *shutdown.borrow() {
                    return;
                }
                match self
                    .directory
                    .save_room_state(&room, lease.epoch, &state)
                    .await
                {
                    Ok(true) => {
                        rooms.metrics.saves.inc();
                        if std::mem::take(&mut failing) {
                            tracing::info!("saving room states again");
                        }
                        saved.insert(room, (lease.epoch, state));
                    }
                    Ok(false) => {
                        // The lease's renewal fails too, and drops the room.
                        rooms.metrics.refused.inc();
                        tracing::warn!(
                            room,
                            epoch = lease.epoch,
                            "saving the room's state refused: another node holds it now"
                        );
                        saved.insert(room, (lease.epoch, state));
                    }
                    Err(e) => {
                        rooms.metrics.errors.inc();
                        if failing {
                            tracing::debug!(room, "still cannot save the room's state: {e}");
                        } else {
                            failing = true;
                            tracing::warn!(
                                room,
                                "cannot save the room's state (retrying; the class goes on): {e}"
                            );
                        }
                    }
                }
            }
        }
    }
}
