//! The media plane commands of the room's participants: run on this node's SFU, or carried to
//! the node a participant is placed on; and the tracks carried between nodes so that every
//! subscriber's node has what it subscribes to (see the parent module's docs).

use std::future::Future;
use std::sync::Arc;

use aula_protocol::{IceCandidate, PeerTarget, TrackAnnouncement};
use aula_sfu::record::capture::{RecordingSpec, TrackLog};
use aula_sfu::relay::track::RelayedTrack;
use aula_sfu::{RelayLink, RenderedSize, SfuError};
use futures_util::future::BoxFuture;

use super::ClusterMedia;
use super::peer::LinkPeer;
use super::wire::Call;
use crate::media::MediaPlane;

impl ClusterMedia {
    /// Where `participant` has its media: `None` here.
    fn placement(&self, participant: &str) -> Option<Arc<LinkPeer>> {
        self.lock().placed.get(participant).cloned()
    }

    /// The node a track is published on: `None` here.
    fn track_home(&self, track_sid: &str) -> Option<Arc<LinkPeer>> {
        self.lock().remote_tracks.get(track_sid).cloned()
    }

    /// Sends a local track to the node on `link`, unless it is there already.
    async fn carry_out(&self, track_sid: &str, link: &Arc<LinkPeer>) -> Result<(), SfuError> {
        let key = (link.id(), track_sid.to_owned());
        if self.lock().exported.contains(&key) {
            return Ok(());
        }
        let relay_link = RelayLink {
            id: link.id(),
            link: link.link(),
        };
        let track = self
            .sfu
            .relay_export(track_sid, relay_link, link.next_index())
            .await?;
        link.call(Call::Import { track }).await?;
        self.lock().exported.insert(key);
        self.count_tracks(link);
        Ok(())
    }

    /// Brings a track published on the node on `link` here, unless it is here already.
    async fn carry_in(&self, track_sid: &str, link: &Arc<LinkPeer>) -> Result<(), SfuError> {
        if self.lock().imports.contains_key(track_sid) {
            return Ok(());
        }
        let index = link.next_index();
        let reply = link
            .call(Call::Export {
                track_sid: track_sid.to_owned(),
                index,
            })
            .await?;
        let track: RelayedTrack = serde_json::from_value(reply)
            .map_err(|e| SfuError::Internal(format!("bad export reply: {e}")))?;
        self.import(link, track).await
    }

    /// Imports `track`, whose packets come on `link`.
    pub(super) async fn import(
        &self,
        link: &Arc<LinkPeer>,
        track: RelayedTrack,
    ) -> Result<(), SfuError> {
        let sid = track.sid.clone();
        if self.lock().imports.contains_key(&sid) {
            // Already arriving on a link: a second copy would reach every subscriber twice.
            return Ok(());
        }
        link.expect_track(track.index, &sid);
        self.sfu.relay_import(track).await?;
        self.lock().imports.insert(sid, Arc::clone(link));
        self.count_tracks(link);
        Ok(())
    }

    /// Runs `call` on the node `participant` is placed on, or `local` here.
    async fn per_participant<T: serde::de::DeserializeOwned>(
        &self,
        participant: &str,
        call: impl FnOnce() -> Call,
        local: impl Future<Output = Result<T, SfuError>>,
    ) -> Result<T, SfuError> {
        match self.placement(participant) {
            Some(link) => decode(link.call(call()).await?),
            None => local.await,
        }
    }

    /// Runs `call` on the node `track_sid` is published on, or `local` here.
    async fn per_track(
        &self,
        track_sid: &str,
        call: impl FnOnce() -> Call,
        local: impl Future<Output = Result<(), SfuError>>,
    ) -> Result<(), SfuError> {
        match self.track_home(track_sid) {
            Some(link) => link.call(call()).await.map(drop),
            None => local.await,
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, SfuError> {
    serde_json::from_value(value).map_err(|e| SfuError::Internal(format!("bad reply: {e}")))
}

impl MediaPlane for ClusterMedia {
    fn place<'a>(
        &'a self,
        participant: &'a str,
        room: &'a str,
        region: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            self.hold_lease(room, participant).await?;
            let Some(region) = region.filter(|r| *r != self.region) else {
                return Ok(());
            };
            let view = self.cache.view();
            let node = view
                .nodes
                .iter()
                .filter(|n| n.region == region && n.id != self.node_id && n.relay_addr.is_some())
                .filter(|n| !self.is_unreachable(&n.id))
                .min_by_key(|n| n.load.participants);
            let Some(node) = node else {
                tracing::info!(
                    participant,
                    region,
                    "no relay node in the region; media served here"
                );
                return Ok(());
            };
            let addr = node.relay_addr.clone().unwrap_or_default();
            let link = match self.link_to(room, &node.id, &addr).await {
                Ok(link) => link,
                Err(error) => {
                    self.mark_unreachable(&node.id);
                    return Err(error);
                }
            };
            tracing::info!(
                participant,
                room,
                node = node.id,
                "media placed on a relay node"
            );
            self.lock().placed.insert(participant.to_owned(), link);
            Ok(())
        })
    }

    fn publish_offer<'a>(
        &'a self,
        participant: &'a str,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    ) -> BoxFuture<'a, Result<String, SfuError>> {
        Box::pin(async move {
            match self.placement(participant) {
                Some(link) => decode(
                    link.call(Call::PublishOffer {
                        participant: participant.to_owned(),
                        sdp,
                        tracks,
                    })
                    .await?,
                ),
                None => self.sfu.publish_offer(participant, sdp, tracks).await,
            }
        })
    }

    fn subscribe_answer<'a>(
        &'a self,
        participant: &'a str,
        sdp: String,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            match self.placement(participant) {
                Some(link) => link
                    .call(Call::SubscribeAnswer {
                        participant: participant.to_owned(),
                        sdp,
                    })
                    .await
                    .map(drop),
                None => self.sfu.subscribe_answer(participant, sdp).await,
            }
        })
    }

    fn add_candidate<'a>(
        &'a self,
        participant: &'a str,
        target: PeerTarget,
        candidate: IceCandidate,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            match self.placement(participant) {
                Some(link) => link
                    .call(Call::AddCandidate {
                        participant: participant.to_owned(),
                        target,
                        candidate,
                    })
                    .await
                    .map(drop),
                None => self.sfu.add_candidate(participant, target, candidate).await,
            }
        })
    }

    fn subscribe<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            let destination = self.placement(participant);
            let home = self.track_home(track_sid);
            {
                let _carrying = self.carrying.lock().await;
                let same = matches!((&home, &destination), (Some(h), Some(d)) if Arc::ptr_eq(h, d));
                if let (Some(home), false) = (&home, same) {
                    self.carry_in(track_sid, home).await?;
                }
                if let (Some(destination), false) = (&destination, same) {
                    self.carry_out(track_sid, destination).await?;
                }
            }
            self.per_participant(
                participant,
                || Call::Subscribe {
                    participant: participant.to_owned(),
                    track_sid: track_sid.to_owned(),
                },
                self.sfu.subscribe(participant, track_sid),
            )
            .await
        })
    }

    fn remove_participant<'a>(
        &'a self,
        participant: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            let placed = {
                let mut state = self.lock();
                for (_, members) in state.leases.values_mut() {
                    members.remove(participant);
                }
                state.placed.remove(participant)
            };
            match placed {
                Some(link) => link
                    .call(Call::RemoveParticipant {
                        participant: participant.to_owned(),
                    })
                    .await
                    .map(drop),
                None => self.sfu.remove_participant(participant).await,
            }
        })
    }

    fn unsubscribe<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(self.per_participant(
            participant,
            || Call::Unsubscribe {
                participant: participant.to_owned(),
                track_sid: track_sid.to_owned(),
            },
            self.sfu.unsubscribe(participant, track_sid),
        ))
    }

    fn unpublish_track<'a>(&'a self, track_sid: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(self.per_track(
            track_sid,
            || Call::UnpublishTrack {
                track_sid: track_sid.to_owned(),
            },
            self.sfu.unpublish_track(track_sid),
        ))
    }

    fn set_track_paused<'a>(
        &'a self,
        track_sid: &'a str,
        paused: bool,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(self.per_track(
            track_sid,
            move || Call::SetTrackPaused {
                track_sid: track_sid.to_owned(),
                paused,
            },
            self.sfu.set_track_paused(track_sid, paused),
        ))
    }

    fn note_self_muted<'a>(
        &'a self,
        track_sid: &'a str,
        muted: bool,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(self.per_track(
            track_sid,
            move || Call::NoteSelfMuted {
                track_sid: track_sid.to_owned(),
                muted,
            },
            self.sfu.note_self_muted(track_sid, muted),
        ))
    }

    fn restart_ice<'a>(&'a self, participant: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(self.per_participant(
            participant,
            || Call::RestartIce {
                participant: participant.to_owned(),
            },
            self.sfu.restart_ice(participant),
        ))
    }

    fn set_rendered_size<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
        size: RenderedSize,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(
            self.per_participant(
                participant,
                move || Call::SetRenderedSize {
                    participant: participant.to_owned(),
                    track_sid: track_sid.to_owned(),
                    size,
                },
                self.sfu
                    .set_rendered_size(participant, track_sid, Some(size)),
            ),
        )
    }

    fn set_staff<'a>(&'a self, participant: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(self.per_participant(
            participant,
            || Call::SetStaff {
                participant: participant.to_owned(),
            },
            self.sfu.set_staff(participant, true),
        ))
    }

    // Recordings capture on the origin: tracks published on other nodes are not recorded yet.

    fn start_recording(
        &self,
        spec: RecordingSpec,
    ) -> BoxFuture<'_, Result<std::time::Instant, SfuError>> {
        Box::pin(self.sfu.start_recording(spec))
    }

    fn record_participant<'a>(
        &'a self,
        id: &'a str,
        participant: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(self.sfu.record_participant(id, participant))
    }

    fn stop_recording<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<TrackLog>, SfuError>> {
        Box::pin(self.sfu.stop_recording(id))
    }
}
