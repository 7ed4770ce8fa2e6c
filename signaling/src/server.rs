//! The running server: HTTP listener, SFU, event dispatcher, and the state they share.
//!
//! Ownership is a tree so that shutdown is a matter of dropping: [`Server`] owns the shutdown
//! signal; the HTTP task, every session and the event dispatcher hold an `Arc<AppState>`, which
//! owns the media plane handle. When all of them have stopped, the last `AppState` drops, and
//! with it the SFU handle (the SFU thread ends when its command channel closes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use aula_protocol::{Permissions, Role, ServerEvent, ServerMessage, StreamState};
use aula_sfu::{PeerState, SfuEvent, SfuHandle};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::cluster::relay::ClusterMedia;
use crate::cluster::{ClusterCache, LoadProbe};
use crate::config::Config;
use crate::conn_limits::ConnLimits;
use crate::media::MediaPlane;
use crate::metrics::SignalingMetrics;
use crate::moderation::MediaEffect;
use crate::recording::Recorder;
use crate::room::{self, EmptiedRoom, JoinOutcome, Member, Refused, Registry};
use crate::session::Parked;
use crate::support::desk::{Desk, DeskEffects};
use crate::token::ApiKeys;
use crate::webhook::Webhooks;
use serde_json::json;

/// `left` reason in a support room whose session ended.
const REASON_SUPPORT_ENDED: &str = "support session ended";

/// How long [`Server::shutdown`] waits for each stage before giving up on it.
const SHUTDOWN_STAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the HTTP handlers, the sessions and the SFU event dispatcher.
pub(crate) struct AppState {
    /// Behind its own `Arc` so that delayed empty-room removals do not keep `AppState` alive.
    registry: Arc<Mutex<Registry>>,
    media: Arc<dyn MediaPlane>,
    keys: ApiKeys,
    empty_timeout: Duration,
    idle_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    /// Both planes' metrics, served at `/metrics`.
    metrics_registry: prometheus::Registry,
    metrics: SignalingMetrics,
    /// The support desk; its own lock, never taken together with the registry's.
    desk: Mutex<Desk>,
    webhooks: Webhooks,
    recorder: Recorder,
    /// Participants whose socket dropped, by resume token (see `session::park`).
    parked: Mutex<HashMap<String, Parked>>,
    /// Sessions being served, by resume token, to hand a participant over to a resuming socket.
    live: Mutex<HashMap<String, Arc<Notify>>>,
    reconnect_timeout: Duration,
    /// Places for WebSockets that have not joined yet: until then a socket costs memory and a
    /// task without anyone having shown a token, so there are only so many.
    unjoined: Arc<Semaphore>,
    /// The SFU that `POST /test/impairment` impairs: only with the `[dev] test_impairment`
    /// switch on and the real SFU as the media plane (see `crate::impairment`).
    impairer: Option<SfuHandle>,
    /// The cached cluster directory, with `[cluster]` in the config (see `crate::cluster`).
    cluster: Option<ClusterCache>,
    /// The media plane of a node with relay links (`[cluster.relay]`), which also routes joins
    /// to their room's origin.
    relay: Option<Arc<ClusterMedia>>,
    /// This node's load, for `GET /api/admin/nodes` without a cluster.
    load_probe: Mutex<LoadProbe>,
    /// Never sent on: [`Server::shutdown`] waits for the channel to close, i.e. for the last
    /// `AppState` (the last session) to be dropped.
    _alive: mpsc::Sender<()>,
}

impl AppState {
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registry methods do not panic on any input; if one ever did, its state is still
        // consistent enough to serve the other rooms, which beats taking the server down.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn keys(&self) -> &ApiKeys {
        &self.keys
    }

    pub(crate) fn is_dev_mode(&self) -> bool {
        self.keys.is_dev()
    }

    pub(crate) fn media(&self) -> &dyn MediaPlane {
        self.media.as_ref()
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Joins unless the room refuses (locked), checked under the same lock as the join.
    pub(crate) fn join(&self, room: &str, member: Member) -> Result<JoinOutcome, Refused> {
        let mut registry = self.registry();
        registry.may_join(room, &member)?;
        Ok(registry.join(room, member))
    }

    pub(crate) fn permissions(&self, sid: &str) -> Option<Permissions> {
        self.registry().permissions(sid)
    }

    /// Carries out what a moderation action asks of the media plane. Failures are logged, not
    /// reported to the moderator: the registry already changed, and a track that is gone from
    /// the SFU (its publisher just left) is the usual cause.
    pub(crate) async fn apply_effects(&self, effects: Vec<MediaEffect>) {
        for effect in effects {
            let result = match &effect {
                MediaEffect::Unpublish { track_sid } => self.media.unpublish_track(track_sid).await,
                MediaEffect::Pause { track_sid, paused } => {
                    self.media.set_track_paused(track_sid, *paused).await
                }
                MediaEffect::Subscribe {
                    participant,
                    track_sid,
                } => self.media.subscribe(participant, track_sid).await,
                MediaEffect::Unsubscribe {
                    participant,
                    track_sid,
                } => self.media.unsubscribe(participant, track_sid).await,
            };
            if let Err(e) = result {
                tracing::debug!(?effect, "media effect failed: {e}");
            }
        }
    }

    /// Removes a participant whose session ended; a `lost` one's stage and hand are kept for its
    /// rejoin (see [`crate::rejoin`]).
    pub(crate) fn leave(&self, sid: &str, lost: bool) {
        let left = if lost {
            self.registry().leave_lost(sid)
        } else {
            self.registry().leave(sid)
        };
        let emptied = left.and_then(|(_, emptied)| emptied);
        self.reap_later(emptied);
        self.flush_room_events();
        self.recorder.left(sid);
    }

    /// Sends `room_ended` for rooms removed since the last call. Every removal of a member ends
    /// with its session's [`AppState::leave`], so calling this there catches kicks too.
    pub(crate) fn flush_room_events(&self) {
        let ended = self.registry().take_ended_rooms();
        for room in ended {
            self.webhooks.emit("room_ended", json!({ "room": room }));
        }
    }

    pub(crate) fn parked(&self) -> MutexGuard<'_, HashMap<String, Parked>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the session serving the participant with this resume token (none if empty).
    pub(crate) fn register_live(&self, token: &str, handover: &Arc<Notify>) {
        if !token.is_empty() {
            self.live().insert(token.to_owned(), Arc::clone(handover));
        }
    }

    /// Forgets the session serving `token`, if it is still `handover`'s (a resumed session may
    /// have registered itself since).
    pub(crate) fn unregister_live(&self, token: &str, handover: &Arc<Notify>) {
        let mut live = self.live();
        if live.get(token).is_some_and(|h| Arc::ptr_eq(h, handover)) {
            live.remove(token);
        }
    }

    pub(crate) fn live_session(&self, token: &str) -> Option<Arc<Notify>> {
        self.live().get(token).cloned()
    }

    pub(crate) fn reconnect_timeout(&self) -> Duration {
        self.reconnect_timeout
    }

    /// A place for one more WebSocket that has not joined, if any is free (a refusal is counted).
    pub(crate) fn unjoined_place(&self) -> Option<OwnedSemaphorePermit> {
        let place = Arc::clone(&self.unjoined).try_acquire_owned().ok();
        if place.is_none() {
            self.metrics
                .connections_refused
                .with_label_values(&["max_unjoined_websockets"])
                .inc();
        }
        place
    }

    pub(crate) fn impairer(&self) -> Option<&SfuHandle> {
        self.impairer.as_ref()
    }

    pub(crate) fn cluster(&self) -> Option<&ClusterCache> {
        self.cluster.as_ref()
    }

    pub(crate) fn relay(&self) -> Option<&ClusterMedia> {
        self.relay.as_deref()
    }

    /// This node's load since the last call (the cluster's refresher measures its own).
    pub(crate) fn local_load(&self) -> crate::cluster::Load {
        let participants = self.counts().1 as u64;
        let mut probe = self
            .load_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        probe.sample(participants)
    }

    pub(crate) fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    pub(crate) fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub(crate) fn mute(&self, sid: &str, track_sid: &str, muted: bool) -> bool {
        self.registry().mute(sid, track_sid, muted)
    }

    fn kick(&self, sid: &str, reason: &str) {
        if let Some(emptied) = self.registry().kick(sid, reason) {
            self.reap_later(emptied);
        }
    }

    /// Ends a session that failed (not its own choice, nor a moderator's): its room keeps its
    /// stage and hand for the rejoin the SDK then makes (see [`crate::rejoin`]).
    fn kick_lost(&self, sid: &str, reason: &str) {
        if let Some(emptied) = self.registry().kick_lost(sid, reason) {
            self.reap_later(emptied);
        }
    }

    /// Removes an emptied room after the configured timeout unless it was reused.
    pub(crate) fn reap_later(&self, emptied: Option<EmptiedRoom>) {
        let Some(emptied) = emptied else { return };
        let registry = Arc::clone(&self.registry);
        let webhooks = self.webhooks.clone();
        let delay = self.empty_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
            if registry.remove_room_if_empty(&emptied) {
                tracing::debug!(room = emptied.room, "removed empty room");
            }
            for room in registry.take_ended_rooms() {
                webhooks.emit("room_ended", json!({ "room": room }));
            }
        });
    }

    pub(crate) fn desk(&self) -> MutexGuard<'_, Desk> {
        self.desk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what the desk did and closes the rooms of ended sessions.
    pub(crate) fn desk_effects(&self, effects: DeskEffects) {
        for started in &effects.started {
            self.metrics
                .support_wait
                .observe(started.waited.as_secs_f64());
            tracing::info!(
                session = started.session_id,
                agent = started.agent,
                learner = started.learner,
                waited_ms = started.waited.as_millis() as u64,
                "support session started"
            );
        }
        for ended in &effects.ended {
            self.metrics
                .support_session
                .observe(ended.duration.as_secs_f64());
            tracing::info!(
                session = ended.session_id,
                secs = ended.duration.as_secs(),
                "support session ended"
            );
            let sids = self.registry().sids_in(&ended.room);
            for sid in sids {
                self.kick(&sid, REASON_SUPPORT_ENDED);
            }
        }
    }

    pub(crate) fn metrics(&self) -> &SignalingMetrics {
        &self.metrics
    }

    /// Everything in the registry, in the Prometheus text format.
    pub(crate) fn gather_metrics(&self) -> Vec<prometheus::proto::MetricFamily> {
        let (rooms, participants) = self.counts();
        self.metrics
            .rooms
            .set(i64::try_from(rooms).unwrap_or(i64::MAX));
        self.metrics
            .participants
            .set(i64::try_from(participants).unwrap_or(i64::MAX));
        self.metrics_registry.gather()
    }

    fn counts(&self) -> (usize, usize) {
        let registry = self.registry();
        (registry.room_count(), registry.participant_count())
    }
}

/// A running Aula server. Dropping it without [`Server::shutdown`] also stops the sessions, but
/// does not wait for them.
pub struct Server {
    http_addr: SocketAddr,
    udp_addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    http_task: JoinHandle<()>,
    events_task: JoinHandle<()>,
    /// Keeps this node in the cluster directory; deregisters it on shutdown.
    cluster_task: Option<JoinHandle<()>>,
    alive: mpsc::Receiver<()>,
}

impl Server {
    /// Where HTTP and WebSocket are served (the real port when configured with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the SFU receives media (the real port when configured with port 0).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// Rooms currently held (including empty ones waiting for their timeout).
    pub fn room_count(&self) -> usize {
        self.state.counts().0
    }

    /// Participants currently joined, over all rooms.
    pub fn participant_count(&self) -> usize {
        self.state.counts().1
    }

    /// Stops accepting, tells every participant `Left { reason: "server shutting down" }`, waits
    /// (bounded) for sessions to close and the SFU handle to be released.
    pub async fn shutdown(self) {
        let Server {
            state,
            shutdown,
            http_task,
            events_task,
            cluster_task,
            mut alive,
            ..
        } = self;
        // Receivers see the change even if they are not waiting yet.
        let _ = shutdown.send(true);
        drop(state);
        match tokio::time::timeout(SHUTDOWN_STAGE_TIMEOUT, http_task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("HTTP task failed: {e}"),
            Err(_) => tracing::warn!("HTTP server did not stop in time"),
        }
        if tokio::time::timeout(SHUTDOWN_STAGE_TIMEOUT, events_task)
            .await
            .is_err()
        {
            tracing::warn!("SFU event dispatcher did not stop in time");
        }
        if let Some(task) = cluster_task
            && tokio::time::timeout(SHUTDOWN_STAGE_TIMEOUT, task)
                .await
                .is_err()
        {
            tracing::warn!("cluster directory refresher did not stop in time");
        }
        // `recv` returns `None` once every `AppState` (every session) is gone.
        if tokio::time::timeout(SHUTDOWN_STAGE_TIMEOUT, alive.recv())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close in time");
        }
        drop(shutdown);
    }
}

/// Starts the SFU (UDP) and the HTTP server as configured.
pub async fn start(mut config: Config) -> anyhow::Result<Server> {
    let metrics = prometheus::Registry::new();
    let sfu_config = aula_sfu::SfuConfig {
        registry: metrics.clone(),
        ..config.sfu_config()
    };
    let (sfu, events) = aula_sfu::start(sfu_config)
        .with_context(|| format!("cannot start the SFU on UDP {}", config.rtc.udp_bind))?;
    let udp_addr = sfu.local_addr();
    let impairer = config.dev.test_impairment.then(|| sfu.clone());
    let shutdown = watch::channel(false);
    let cluster = cluster_cache(&config);
    let relay = config
        .cluster
        .as_mut()
        .and_then(|c| c.relay.is_some().then_some(c));
    let (relay, events) = match (relay, &cluster) {
        (Some(cluster_config), Some(cache)) => {
            let endpoint = crate::cluster::relay::endpoint(cluster_config, &metrics)?;
            let directory = crate::cluster::Directory::open(
                &cluster_config.redis_url,
                Duration::from_secs(cluster_config.lease_ttl_secs),
            )?;
            let (relay, events) = crate::cluster::relay::ClusterMedia::start(
                sfu.clone(),
                events,
                cache.clone(),
                directory,
                cluster_config,
                endpoint,
                shutdown.1.clone(),
            );
            (Some(relay), events)
        }
        _ => (None, events),
    };
    let media: Arc<dyn MediaPlane> = match &relay {
        Some(relay) => relay.clone(),
        None => Arc::new(sfu),
    };
    let plane = Plane {
        media,
        relay,
        impairer,
        events,
        udp_addr,
    };
    launch(config, plane, metrics, cluster, shutdown).await
}

/// The cached cluster directory, with `[cluster]` in the config.
fn cluster_cache(config: &Config) -> Option<ClusterCache> {
    config
        .cluster
        .as_ref()
        .map(|c| ClusterCache::new(c.node_id.clone()))
}

/// Starts the HTTP server against any media plane: the seam for tests that script the SFU's
/// events, and for embedding another media plane. `udp_addr` is only reported; `metrics` is the
/// registry the media plane registered its metrics in (the control plane adds its own).
/// `/test/impairment` is never served here: it needs the real SFU.
pub async fn start_with_media(
    config: Config,
    media: Arc<dyn MediaPlane>,
    events: mpsc::UnboundedReceiver<SfuEvent>,
    udp_addr: SocketAddr,
    metrics: prometheus::Registry,
) -> anyhow::Result<Server> {
    let cluster = cluster_cache(&config);
    let shutdown = watch::channel(false);
    let plane = Plane {
        media,
        relay: None,
        impairer: None,
        events,
        udp_addr,
    };
    launch(config, plane, metrics, cluster, shutdown).await
}

/// The media plane a server runs on: its commands, its events, where it takes media.
struct Plane {
    media: Arc<dyn MediaPlane>,
    /// The same media plane as `media` on a node with relay links, for what only it does
    /// (routing joins to their room's origin).
    relay: Option<Arc<ClusterMedia>>,
    /// The SFU behind `/test/impairment`, when that is served.
    impairer: Option<SfuHandle>,
    events: mpsc::UnboundedReceiver<SfuEvent>,
    udp_addr: SocketAddr,
}

/// Both starts; `impairer` is the SFU behind `/test/impairment`, when that is served.
async fn launch(
    config: Config,
    Plane {
        media,
        relay,
        impairer,
        events,
        udp_addr,
    }: Plane,
    metrics: prometheus::Registry,
    cluster: Option<ClusterCache>,
    (shutdown_tx, shutdown_rx): (watch::Sender<bool>, watch::Receiver<bool>),
) -> anyhow::Result<Server> {
    let signaling_metrics = SignalingMetrics::register(&metrics)
        .context("cannot register the signaling metrics (registry already used by a server?)")?;
    let load_probe = Mutex::new(LoadProbe::new(metrics.clone()));
    let listener = TcpListener::bind(config.http.bind)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.bind))?;
    let http_addr = listener
        .local_addr()
        .context("cannot read the HTTP listener's address")?;

    let (alive_tx, alive_rx) = mpsc::channel(1);
    let empty_timeout = Duration::from_secs(config.room.empty_timeout_secs);
    let registry = Arc::new(Mutex::new(Registry::new(!empty_timeout.is_zero())));
    if let Some(relay) = &relay {
        // Saved in Redis for the rooms' next origin, restored here when this node takes one over.
        relay
            .keep_room_states(Arc::clone(&registry) as _, &metrics)
            .context("cannot register the room state metrics")?;
    }
    let webhooks = Webhooks::start(&config.webhooks, config.api_keys().secret);
    let recorder = Recorder::new(
        config.recording.clone(),
        Arc::clone(&media),
        Arc::clone(&registry),
        webhooks.clone(),
        signaling_metrics.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    recorder.spawn_janitor(shutdown_rx.clone());
    recorder.export_left_by_crash().await;
    let state = Arc::new(AppState {
        registry,
        media,
        keys: config.api_keys(),
        empty_timeout,
        idle_timeout: Duration::from_secs(config.http.ws_idle_timeout_secs),
        shutdown: shutdown_rx.clone(),
        metrics_registry: metrics,
        metrics: signaling_metrics,
        desk: Mutex::new(Desk::new(config.api_keys())),
        webhooks,
        recorder,
        parked: Mutex::new(HashMap::new()),
        live: Mutex::new(HashMap::new()),
        reconnect_timeout: Duration::from_secs(config.room.reconnect_timeout_secs),
        unjoined: Arc::new(Semaphore::new(config.http.max_unjoined_websockets)),
        impairer,
        relay,
        cluster,
        load_probe,
        _alive: alive_tx,
    });
    let cluster_task = match (&config.cluster, &state.cluster) {
        (Some(cluster_config), Some(cache)) => {
            let registry = Arc::clone(&state.registry);
            let participants = move || {
                let registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
                registry.participant_count() as u64
            };
            let task = crate::cluster::join(
                cluster_config,
                http_addr.port(),
                cache,
                &state.metrics_registry,
                participants,
                shutdown_rx.clone(),
            )
            .context("cannot join the cluster")?;
            tracing::info!(
                node = cache.node_id(),
                region = cluster_config.region,
                "joining the cluster directory"
            );
            Some(task)
        }
        _ => None,
    };

    let app = crate::http::router(Arc::clone(&state));
    let limits = ConnLimits::new(
        config.http.max_connections,
        config.http.max_connections_per_ip,
        state.metrics.http_connections.clone(),
        state.metrics.connections_refused.clone(),
    );
    let http_task = tokio::spawn(crate::listener::serve(
        listener,
        app,
        limits,
        Duration::from_secs(config.http.header_read_timeout_secs),
        state.metrics.header_timeouts.clone(),
        shutdown_rx.clone(),
    ));
    let events_task = tokio::spawn(dispatch_events(Arc::clone(&state), events, shutdown_rx));
    tracing::info!(%http_addr, %udp_addr, dev_mode = state.is_dev_mode(), "Aula server started");

    Ok(Server {
        http_addr,
        udp_addr,
        state,
        shutdown: shutdown_tx,
        http_task,
        events_task,
        cluster_task,
        alive: alive_rx,
    })
}

/// Resolves once shutdown is signalled (or the [`Server`] is dropped, which also means stop).
/// A plain `()` future: `wait_for`'s guard is not `Send` and must not live across a select.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Applies the SFU's events to the rooms, one at a time, in the order the SFU produced them.
async fn dispatch_events(
    state: Arc<AppState>,
    mut events: mpsc::UnboundedReceiver<SfuEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stopped(&mut shutdown) => break,
        };
        let Some(event) = event else {
            tracing::error!("the SFU stopped; media no longer flows");
            break;
        };
        handle_event(&state, event).await;
    }
}

pub(crate) async fn handle_event(state: &AppState, event: SfuEvent) {
    match event {
        SfuEvent::TrackPublished { participant, track } => {
            // The offer was checked against the announced sources, but a client may send a
            // track it did not announce (the SFU then guesses camera or microphone), or lose the
            // right while its media was starting: check again on what actually arrived.
            let allowed = state
                .registry()
                .permissions(&participant)
                .is_some_and(|p| p.allows(track.source));
            if !allowed {
                tracing::info!(participant, track_sid = track.sid, source = ?track.source, "refusing a track its publisher may not send");
                if let Err(e) = state.media.unpublish_track(&track.sid).await {
                    tracing::debug!(track_sid = track.sid, "unpublishing a refused track: {e}");
                }
                return;
            }
            let subscribers = state.registry().track_published(&participant, &track);
            let Some(subscribers) = subscribers else {
                // The publisher left while its media was starting; the SFU cleans up its tracks.
                tracing::debug!(
                    participant,
                    track_sid = track.sid,
                    "track of a departed participant"
                );
                return;
            };
            tracing::info!(participant, track_sid = track.sid, kind = ?track.kind, source = ?track.source, "track published");
            let qos = state.recorder().qos();
            qos.track_published(&participant, &track.sid, track.source);
            for subscriber in subscribers {
                if let Err(e) = state.media.subscribe(&subscriber, &track.sid).await {
                    tracing::warn!(subscriber, track_sid = track.sid, "subscribe failed: {e}");
                }
            }
        }
        SfuEvent::TrackUnpublished {
            participant,
            track_sid,
        } => {
            // Unknown when the participant already left: the leave announced its tracks.
            if state.registry().track_unpublished(&participant, &track_sid) {
                tracing::info!(participant, track_sid, "track unpublished");
            }
            let qos = state.recorder().qos();
            qos.track_unpublished(&participant, &track_sid);
        }
        SfuEvent::SubscribeOffer { participant, sdp } => {
            if !state
                .registry()
                .send_to(&participant, ServerMessage::SubscribeOffer { sdp })
            {
                tracing::debug!(participant, "subscribe offer for a departed participant");
            }
        }
        SfuEvent::PeerState {
            participant,
            target,
            state: peer_state,
        } => match peer_state {
            PeerState::Connected => tracing::debug!(participant, ?target, "peer connected"),
            PeerState::Failed => {
                // No ICE restart yet: the client must rejoin, so end the session cleanly. The
                // session's own cleanup tells the SFU to drop the participant.
                tracing::info!(
                    participant,
                    ?target,
                    "peer connection failed; ending session"
                );
                state.kick_lost(&participant, room::REASON_PEER_FAILED);
            }
        },
        SfuEvent::ConnectionQuality {
            participant,
            quality,
            loss,
            rtt,
        } => {
            // The participant sees its own level; staff see everyone's, so a teacher can tell
            // which student cannot hear and why, and so does a support agent of its learner.
            let msg = ServerMessage::ConnectionQuality {
                participant_sid: participant.clone(),
                quality,
                // A fraction in 0..=1, so the cast cannot truncate.
                loss_permille: Some((loss.clamp(0.0, 1.0) * 1000.0).round() as u16),
                rtt_ms: rtt.map(|r| u32::try_from(r.as_millis()).unwrap_or(u32::MAX)),
            };
            let registry = state.registry();
            if let Some(room) = registry.room_of(&participant) {
                for member in room.visible().filter(|m| {
                    m.info.sid == participant
                        || m.permissions.can_moderate
                        || m.info.role == Role::Agent
                }) {
                    member.send(msg.clone());
                }
            }
        }
        SfuEvent::StreamState {
            participant,
            track_sid,
            paused,
        } => {
            let state_now = if paused {
                StreamState::Paused
            } else {
                StreamState::Active
            };
            let registry = state.registry();
            if let Some(member) = registry
                .room_of(&participant)
                .and_then(|room| room.member(&participant))
            {
                member.send_event(ServerEvent::StreamState {
                    track_sid,
                    state: state_now,
                });
            }
        }
        SfuEvent::QosSample {
            participant,
            at,
            sample,
        } => state.recorder().qos().sample(&participant, at, &sample),
        SfuEvent::RecordingFailed {
            recording,
            track_sid,
            error,
        } => {
            // Ending the recording waits for the SFU; other events must not wait behind it.
            let recorder = state.recorder().clone();
            tokio::spawn(async move { recorder.log_failed(&recording, &track_sid, &error).await });
        }
        // Handled by the cluster's media plane before events get here (no track is imported
        // from another node without one).
        SfuEvent::RelayKeyframeRequest { .. }
        | SfuEvent::RelayLayerDemand { .. }
        | SfuEvent::RelayListenerLoss { .. }
        | SfuEvent::RelayNack { .. }
        | SfuEvent::RelaySenderReport { .. } => {}
    }
}
