//! One class over several nodes (issue 14): the room's origin runs the room, nodes in the
//! learners' regions run their media, and QUIC links between the nodes carry each track once.
//!
//! How a participant is placed: the school's backend puts the learner's region in the access
//! token (`region`). The learner's signaling goes to the room's origin (room state, moderation,
//! hand queue all stay in one place); when the token's region is not the origin's and the
//! directory has a live node there with a relay link, the origin *places* the participant's
//! media on that node: every media command for it (its publish offer, subscriptions, ICE
//! candidates) is carried over the link to that node's SFU, whose answer and candidates point
//! the browser at it, and that node's media events for it come back over the link. The short,
//! lossy-sensitive path (browser to node) is local; the long one (node to origin) carries one
//! copy of each track whatever the number of learners behind it.
//!
//! [`ClusterMedia`] is the [`MediaPlane`](crate::media::MediaPlane) of a node with `[cluster.relay]`: it serves its own
//! participants with the local SFU and forwards the others' commands. When a participant
//! subscribes to a track published on another node, the track is first carried there: the node
//! that has it exports it (`SfuHandle::relay_export`) on the link and the other imports it,
//! once per link however many subscribers it has. A track between two non-origin nodes goes
//! through the origin (a star: each region keeps one link, to the origin).
//!
//! - `origin`: rooms' origin leases, and where a join is served (here, or carried to the
//!   origin by `crate::cluster::proxy`);
//! - `saved`: the state of the rooms held, saved in Redis for their next origin, and restored
//!   into a room taken over from a dead origin;
//! - `plane`: the `MediaPlane` commands, run here or on the node a participant is placed on,
//!   and carrying tracks between nodes;
//! - `peer`: one link: its control stream reader, its datagram reader, calls awaiting replies;
//! - [`wire`]: the calls and events on a link's control stream.
//!
//! A relay or origin that dies takes its links down: the other side drops what came over them
//! (tracks, placed participants, who then reconnect within the SDK's reconnect window).

mod origin;
mod peer;
mod plane;
mod saved;
pub mod wire;

pub use origin::Route;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use aula_protocol::PeerTarget;
use aula_sfu::relay::link::{Link, LinkConfig, RelayEndpoint, RelayMetrics};
use aula_sfu::relay::tls::{NodeTls, PemCert};
use aula_sfu::{RelayLink, SfuError, SfuEvent, SfuHandle};
use tokio::sync::{mpsc, watch};

use super::{ClusterCache, Directory, Lease, RoomStates};
use crate::config::{ClusterConfig, RelayConfig};
use peer::LinkPeer;
use wire::{Call, RemoteEvent};

/// The media plane of a node in a cluster with relay links (see the module docs).
pub struct ClusterMedia {
    sfu: SfuHandle,
    node_id: String,
    region: String,
    cache: ClusterCache,
    directory: Directory,
    endpoint: RelayEndpoint,
    /// Into the control plane's event dispatcher: the local SFU's events for participants
    /// served here, and those that came over links for participants placed elsewhere.
    events: mpsc::UnboundedSender<SfuEvent>,
    state: Mutex<State>,
    /// This media plane, for the tasks of the links it attaches.
    me: Weak<Self>,
    /// Serializes carrying tracks between nodes, so two subscribers never export one twice.
    carrying: tokio::sync::Mutex<()>,
    /// Serializes opening links, so that learners placed on a node while its link is still
    /// connecting share that link instead of each opening one (and each getting its own copy
    /// of every track: seen in the relay benchmark with students joining 20 ms apart).
    linking: tokio::sync::Mutex<()>,
    /// How long an origin's lease lives unrenewed: the longest a join waits for a dead
    /// origin's room.
    lease_ttl: Duration,
    /// How long a node whose link died (or could not be opened) gets no participants: until
    /// every node's copy of the directory has dropped a dead node's entry (its time to live
    /// and one refresh). A node killed outright stays listed until then, and each learner
    /// placed on it would wait for a link that cannot open (seen: 3 s each, one after another,
    /// for students joining again after their relay died).
    unreachable_for: Duration,
    /// Resume token -> the origin's WebSocket URL, for participants whose signaling this node
    /// carries.
    resume_routes: Mutex<VecDeque<(String, String)>>,
    /// The control plane's rooms, whose state is saved for the next origin and restored when
    /// this node takes a room over (see `saved`); set once the registry exists.
    rooms: OnceLock<saved::Rooms>,
    /// One takeover of a room at a time: a join that finds the room's lease ours waits for
    /// another join's takeover (the restoring of the room's saved state) before it is served.
    claims: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct State {
    next_link: u64,
    /// Links by room and peer node.
    links: HashMap<(String, String), Arc<LinkPeer>>,
    /// Origin side: participants whose media is on another node, and the link to it.
    placed: HashMap<String, Arc<LinkPeer>>,
    /// Origin side: nodes not to place participants on, until when (see `unreachable_for`).
    unreachable: HashMap<String, Instant>,
    /// Media node side: participants an origin placed here, and the link to it.
    owners: HashMap<String, Arc<LinkPeer>>,
    /// Origin side: tracks published on another node, and the link to it.
    remote_tracks: HashMap<String, Arc<LinkPeer>>,
    /// Tracks imported here, and the link they come on.
    imports: HashMap<String, Arc<LinkPeer>>,
    /// Tracks exported, by link id.
    exported: HashSet<(u64, String)>,
    /// Origin side: the rooms this node holds the lease of, with their participants.
    leases: HashMap<String, (Lease, HashSet<String>)>,
}

impl ClusterMedia {
    /// Starts serving relay links on `endpoint`, renewing this node's leases and saving its
    /// rooms' state, until `shutdown`. `sfu_events` are the local SFU's; the control plane
    /// reads the returned receiver instead.
    pub fn start(
        sfu: SfuHandle,
        sfu_events: mpsc::UnboundedReceiver<SfuEvent>,
        cache: ClusterCache,
        directory: Directory,
        config: &ClusterConfig,
        endpoint: RelayEndpoint,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<SfuEvent>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let media = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            sfu,
            node_id: cache.node_id().to_owned(),
            region: config.region.clone(),
            lease_ttl: Duration::from_secs(config.lease_ttl_secs),
            unreachable_for: Duration::from_secs(config.node_ttl_secs + config.refresh_secs),
            resume_routes: Mutex::new(VecDeque::new()),
            rooms: OnceLock::new(),
            claims: Mutex::new(HashMap::new()),
            cache,
            directory,
            endpoint,
            events,
            state: Mutex::new(State::default()),
            carrying: tokio::sync::Mutex::new(()),
            linking: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(Arc::clone(&media).route_local_events(sfu_events));
        tokio::spawn(Arc::clone(&media).accept_links(shutdown.clone()));
        tokio::spawn(Arc::clone(&media).renew_leases(shutdown.clone()));
        tokio::spawn(Arc::clone(&media).save_room_states(shutdown));
        (media, events_rx)
    }

    /// Gives this node's rooms to the origin side: from now on their state is saved for their
    /// next origin, and restored into rooms this node takes over. Its metrics go to `metrics`.
    /// Set once; later calls change nothing.
    pub fn keep_room_states(
        &self,
        rooms: Arc<dyn RoomStates>,
        metrics: &prometheus::Registry,
    ) -> prometheus::Result<()> {
        if self.rooms.get().is_some() {
            return Ok(());
        }
        let metrics = saved::RoomStateMetrics::register(metrics)?;
        let _ = self.rooms.set(saved::Rooms {
            states: rooms,
            metrics,
        });
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The local SFU's events: those about participants an origin placed here go back over its
    /// link, keyframe requests for imported tracks go to the node that exports them, the rest
    /// to this node's control plane.
    async fn route_local_events(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<SfuEvent>) {
        while let Some(event) = events.recv().await {
            match &event {
                SfuEvent::RelayKeyframeRequest { track_sid, layer } => {
                    if let Some(link) = self.import_link(track_sid) {
                        link.keyframe_request(track_sid, *layer);
                    }
                    continue;
                }
                SfuEvent::RelayNack {
                    track_sid,
                    layer,
                    seqs,
                } => {
                    if let Some(link) = self.import_link(track_sid) {
                        link.nack(track_sid, *layer, seqs.clone());
                    }
                    continue;
                }
                SfuEvent::RelayLayerDemand { track_sid, layers } => {
                    if let Some(link) = self.import_link(track_sid) {
                        link.layer_demand(track_sid, layers);
                    }
                    continue;
                }
                SfuEvent::RelayListenerLoss {
                    track_sid,
                    fraction,
                } => {
                    if let Some(link) = self.import_link(track_sid) {
                        link.listener_loss(track_sid, *fraction);
                    }
                    continue;
                }
                SfuEvent::RelaySenderReport { link, .. } => {
                    let peer = self
                        .lock()
                        .links
                        .values()
                        .find(|l| l.id() == *link)
                        .cloned();
                    if let Some(peer) = peer {
                        peer.sender_report(&event);
                    }
                    continue;
                }
                SfuEvent::TrackUnpublished { track_sid, .. } => self.track_gone(track_sid),
                _ => {}
            }
            let owner = RemoteEvent::participant_of(&event)
                .and_then(|participant| self.lock().owners.get(participant).cloned());
            let event = match owner {
                Some(owner) => match RemoteEvent::of(event) {
                    Ok(wire) => {
                        owner.send_event(&wire);
                        continue;
                    }
                    Err(event) => event,
                },
                None => event,
            };
            if self.events.send(event).is_err() {
                break;
            }
        }
    }

    /// A track of this node's SFU is gone: it is carried no more.
    fn track_gone(&self, track_sid: &str) {
        let links: Vec<Arc<LinkPeer>> = {
            let mut state = self.lock();
            state.exported.retain(|(_, sid)| sid != track_sid);
            state.imports.remove(track_sid);
            state.links.values().cloned().collect()
        };
        for link in links {
            self.count_tracks(&link);
        }
    }

    /// Updates `aula_relay_tracks` for `link`.
    fn count_tracks(&self, link: &Arc<LinkPeer>) {
        let (out, inbound) = {
            let state = self.lock();
            let out = state
                .exported
                .iter()
                .filter(|(id, _)| *id == link.id())
                .count();
            let inbound = state
                .imports
                .values()
                .filter(|other| Arc::ptr_eq(other, link))
                .count();
            (out, inbound)
        };
        link.link().set_tracks(out, inbound);
    }

    /// The link an imported track comes on.
    fn import_link(&self, track_sid: &str) -> Option<Arc<LinkPeer>> {
        self.lock().imports.get(track_sid).cloned()
    }

    /// Accepts links from other nodes. A hello for a room is refused when this node knows a
    /// newer lease of it (a former origin that lost its lease); a room it has not heard of yet
    /// is accepted (the origin may have claimed it since the last refresh of the directory).
    async fn accept_links(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.incoming() => incoming,
                () = crate::server::stopped(&mut shutdown) => break,
            };
            let Ok(incoming) = incoming else {
                break;
            };
            // Each attempt in its own task: one that stalls holds up no other.
            let media = Arc::clone(&self);
            tokio::spawn(async move {
                let established = media
                    .endpoint
                    .establish(incoming, |room| Some(media.known_epoch(room)))
                    .await;
                match established {
                    Ok(link) => {
                        let peer = link.peer();
                        tracing::info!(
                            room = peer.room,
                            node = peer.node_id,
                            "relay link accepted"
                        );
                        media.attach(link);
                    }
                    Err(e) => tracing::warn!("relay link refused: {e}"),
                }
            });
        }
        self.endpoint.close();
    }

    /// The link to `node` for `room`, opened under this node's lease of the room if need be.
    async fn link_to(&self, room: &str, node: &str, addr: &str) -> Result<Arc<LinkPeer>, SfuError> {
        let key = (room.to_owned(), node.to_owned());
        let _linking = self.linking.lock().await;
        if let Some(link) = self.lock().links.get(&key) {
            return Ok(Arc::clone(link));
        }
        let epoch = self
            .lock()
            .leases
            .get(room)
            .map(|(lease, _)| lease.epoch)
            .ok_or_else(|| SfuError::Internal(format!("this node is not room {room}'s origin")))?;
        let addr = resolve(addr).await?;
        let link = self
            .endpoint
            .connect(addr, node, room, epoch)
            .await
            .map_err(|e| SfuError::Internal(format!("relay link to {node}: {e}")))?;
        tracing::info!(room, node, %addr, epoch, "relay link opened");
        self.attach(link).ok_or(SfuError::Stopped)
    }

    /// Places no participant on `node` for [`Self::unreachable_for`].
    fn mark_unreachable(&self, node: &str) {
        let now = Instant::now();
        let mut state = self.lock();
        state.unreachable.retain(|_, until| *until > now);
        state
            .unreachable
            .insert(node.to_owned(), now + self.unreachable_for);
    }

    /// Whether `node` is not to get participants now (see [`Self::mark_unreachable`]).
    fn is_unreachable(&self, node: &str) -> bool {
        self.lock()
            .unreachable
            .get(node)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Starts serving a new link; `None` if this media plane is being dropped.
    fn attach(&self, link: Link) -> Option<Arc<LinkPeer>> {
        let me = self.me.upgrade()?;
        let key = (link.peer().room.clone(), link.peer().node_id.clone());
        let id = {
            let mut state = self.lock();
            state.next_link += 1;
            state.next_link
        };
        let peer = LinkPeer::start(id, link, &me);
        self.lock().links.insert(key, Arc::clone(&peer));
        Some(peer)
    }

    /// Runs a call of the origin on `link` against the local SFU (this node is where the origin
    /// placed the participant, or has a track it needs).
    async fn execute(
        &self,
        link: &Arc<LinkPeer>,
        call: Call,
    ) -> Result<serde_json::Value, SfuError> {
        let own = |participant: &str| {
            self.lock()
                .owners
                .insert(participant.to_owned(), Arc::clone(link));
        };
        let done = serde_json::Value::Null;
        match call {
            Call::PublishOffer {
                participant,
                sdp,
                tracks,
            } => {
                own(&participant);
                let answer = self.sfu.publish_offer(&participant, sdp, tracks).await?;
                return Ok(serde_json::Value::String(answer));
            }
            Call::SubscribeAnswer { participant, sdp } => {
                self.sfu.subscribe_answer(&participant, sdp).await?
            }
            Call::AddCandidate {
                participant,
                target,
                candidate,
            } => {
                self.sfu
                    .add_candidate(&participant, target, candidate)
                    .await?
            }
            Call::Subscribe {
                participant,
                track_sid,
            } => {
                own(&participant);
                self.sfu.subscribe(&participant, &track_sid).await?
            }
            Call::Unsubscribe {
                participant,
                track_sid,
            } => self.sfu.unsubscribe(&participant, &track_sid).await?,
            Call::RemoveParticipant { participant } => {
                self.lock().owners.remove(&participant);
                self.sfu.remove_participant(&participant).await?
            }
            Call::UnpublishTrack { track_sid } => self.sfu.unpublish_track(&track_sid).await?,
            Call::SetTrackPaused { track_sid, paused } => {
                self.sfu.set_track_paused(&track_sid, paused).await?
            }
            Call::NoteSelfMuted { track_sid, muted } => {
                self.sfu.note_self_muted(&track_sid, muted).await?
            }
            Call::RestartIce { participant } => self.sfu.restart_ice(&participant).await?,
            Call::SetStaff { participant } => {
                own(&participant);
                self.sfu.set_staff(&participant, true).await?
            }
            Call::SetRenderedSize {
                participant,
                track_sid,
                size,
            } => {
                self.sfu
                    .set_rendered_size(&participant, &track_sid, Some(size))
                    .await?
            }
            Call::Import { track } => self.import(link, track).await?,
            Call::Export { track_sid, index } => {
                let relay_link = RelayLink {
                    id: link.id(),
                    link: link.link(),
                };
                let track = self.sfu.relay_export(&track_sid, relay_link, index).await?;
                self.lock().exported.insert((link.id(), track_sid));
                self.count_tracks(link);
                return serde_json::to_value(track).map_err(|e| SfuError::Internal(e.to_string()));
            }
        }
        Ok(done)
    }

    /// An event that came over `link` about a participant placed on its node.
    fn remote_event(&self, link: &Arc<LinkPeer>, event: RemoteEvent) {
        match &event {
            RemoteEvent::TrackPublished { track, .. } => {
                self.lock()
                    .remote_tracks
                    .insert(track.sid.clone(), Arc::clone(link));
            }
            RemoteEvent::TrackUnpublished { track_sid, .. } => {
                self.lock().remote_tracks.remove(track_sid);
            }
            _ => {}
        }
        let _ = self.events.send(event.into_sfu_event());
    }

    /// A link went down: what came over it is gone. Tracks it brought are unpublished here;
    /// participants placed on its node fail (the origin's room logic then waits for them to
    /// reconnect); participants an origin placed here are removed (their origin is gone).
    async fn link_down(&self, link: &Arc<LinkPeer>) {
        self.sfu.relay_link_closed(link.id());
        // Tracks published over there go with their publishers, whose peers fail below.
        let (imports, placed, owned) = {
            let mut state = self.lock();
            let same = |other: &Arc<LinkPeer>| Arc::ptr_eq(other, link);
            state.links.retain(|_, other| !same(other));
            state.exported.retain(|(id, _)| *id != link.id());
            let take = |map: &mut HashMap<String, Arc<LinkPeer>>| {
                let gone: Vec<String> = map
                    .iter()
                    .filter(|(_, other)| same(other))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in &gone {
                    map.remove(key);
                }
                gone
            };
            take(&mut state.remote_tracks);
            (
                take(&mut state.imports),
                take(&mut state.placed),
                take(&mut state.owners),
            )
        };
        link.link().set_tracks(0, 0);
        // A link that dies with participants on it is a node gone (a room that ended has
        // none left): place nobody there until the directory has caught up.
        if !placed.is_empty() {
            self.mark_unreachable(&link.link().peer().node_id);
        }
        tracing::warn!(
            link = link.id(),
            tracks = imports.len(),
            placed = placed.len(),
            owned = owned.len(),
            "relay link down"
        );
        for track_sid in imports {
            let _ = self.sfu.unpublish_track(&track_sid).await;
        }
        for participant in placed {
            for target in [PeerTarget::Publish, PeerTarget::Subscribe] {
                let _ = self.events.send(SfuEvent::PeerState {
                    participant: participant.clone(),
                    target,
                    state: aula_sfu::PeerState::Failed,
                });
            }
        }
        for participant in owned {
            let _ = self.sfu.remove_participant(&participant).await;
        }
    }
}

/// This node's relay link endpoint as `[cluster.relay]` configures it: bound, with the cluster
/// CA's trust and the node's certificate, its metrics in `registry`. A `relay.addr` with port 0
/// is given the port bound, so that the directory publishes where the links really are (a node
/// bound to port 0 lets the OS choose one; that is how the tests start nodes without a race for
/// a free port).
pub fn endpoint(
    cluster: &mut ClusterConfig,
    registry: &prometheus::Registry,
) -> anyhow::Result<RelayEndpoint> {
    let Some(relay) = cluster.relay.as_mut() else {
        anyhow::bail!("no [cluster.relay] in the config");
    };
    let endpoint = bind_endpoint(&cluster.node_id, &cluster.region, relay, registry)?;
    let bound = endpoint
        .local_addr()
        .context("the relay link's bound address")?;
    relay.addr = super::with_bound_port(&relay.addr, bound.port());
    tracing::info!(bind = %relay.bind, addr = relay.addr, "relay links on");
    Ok(endpoint)
}

/// Binds `relay.bind` and makes the endpoint (impaired, if the test-only config asks).
fn bind_endpoint(
    node_id: &str,
    region: &str,
    relay: &RelayConfig,
    registry: &prometheus::Registry,
) -> anyhow::Result<RelayEndpoint> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {} (cluster.relay)", path.display()))
    };
    let node = PemCert {
        cert: read(&relay.node_cert)?,
        key: read(&relay.node_key)?,
    };
    let tls = NodeTls::new(&read(&relay.ca_cert)?, &node)
        .context("the cluster certificates in cluster.relay do not load")?;
    let socket = std::net::UdpSocket::bind(relay.bind)
        .with_context(|| format!("cannot bind the relay link on UDP {}", relay.bind))?;
    let metrics = RelayMetrics::register(registry).context("cannot register relay metrics")?;
    let Some(impairment) = &relay.impairment else {
        return Ok(RelayEndpoint::bind(
            socket,
            node_id,
            region,
            &tls,
            &LinkConfig::default(),
            metrics,
        )?);
    };
    // Test only (the config refuses it without `[dev] test_impairment`): delay and loss under
    // everything this node sends on its links.
    use aula_sfu::relay::impaired_socket::{ImpairedSocket, SendImpairment};
    let seed = impairment.seed.unwrap_or_else(|| {
        // FNV-1a of the node id: each node its own pattern, the same at every start.
        node_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    });
    let send = SendImpairment {
        delay: Duration::from_millis(impairment.delay_ms),
        loss: impairment.loss,
        seed,
    };
    tracing::warn!(
        delay_ms = impairment.delay_ms,
        loss = impairment.loss,
        seed,
        "relay links impaired for testing: everything this node sends on them is delayed and lost on purpose"
    );
    let socket = ImpairedSocket::bind(socket, send)
        .with_context(|| format!("cannot use UDP {} for the relay link", relay.bind))?;
    Ok(RelayEndpoint::with_socket(
        socket,
        node_id,
        region,
        &tls,
        &LinkConfig::default(),
        metrics,
    )?)
}

async fn resolve(addr: &str) -> Result<SocketAddr, SfuError> {
    tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| SfuError::Internal(format!("cannot resolve relay address {addr}")))
}
