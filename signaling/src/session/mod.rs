//! One participant's WebSocket: the protocol state machine (before join / joined / ending).
//!
//! Each socket is one task running one loop that reads client frames, writes queued server
//! messages, pings, and watches for shutdown. Client messages are handled one at a time, in
//! order, awaiting the media plane inline: a client's `Candidate` can never overtake the
//! `PublishOffer` it belongs to. Everything sent to the client goes through the session's outbox,
//! replies included, so replies and room broadcasts leave in the order they were produced.
//!
//! Nothing a client sends can panic or end the session except `Leave`, a bad `Join`, silence
//! past the idle timeout, or a frame larger than the WebSocket limit.

use std::sync::Arc;
use std::time::Duration;

use aula_protocol::{
    ClientMessage, ClientStats, ErrorCode, MAX_RENDERED_DIMENSION, PROTOCOL_VERSION,
    ParticipantConnection, ServerEvent, ServerMessage, TrackKind,
};
use aula_sfu::{RenderedSize, SfuError};
use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use crate::cluster::alternates::{self, Feed};
use crate::cluster::relay::Route;
use crate::moderation::MediaEffect;
use crate::ratelimit::TokenBucket;
use crate::room::{self, Member, Outbox, Outgoing, Refused, Registry};
use crate::server::AppState;
use crate::support::desk::Caller;
use crate::token::{self, AccessClaims};

mod in_room;
mod labels;

use labels::{error_code_label, message_kind};

/// Pings per idle timeout: a client must miss several before it is declared dead, so one late
/// pong on a congested link does not end a class.
const PINGS_PER_IDLE_TIMEOUT: u32 = 3;

/// The reason sent when the server stops.
const REASON_SHUTDOWN: &str = "server shutting down";

/// How long a `Resume` waits for the old socket's session to let go of the participant.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest chat line, in bytes: a paragraph, not a file.
pub(crate) const MAX_CHAT_BYTES: usize = 2000;
/// Longest data payload, in bytes: "small data messages" (quiz answers, reactions, cursor
/// positions); files go over HTTP.
pub(crate) const MAX_DATA_BYTES: usize = 4096;
/// Longest data topic, in bytes.
const MAX_TOPIC_BYTES: usize = 64;
/// Chat: a burst of 5 lines, then one per second sustained.
const CHAT_BURST: u32 = 5;
const CHAT_PER_SEC: f64 = 1.0;
/// Data: a burst of 20, then 10 per second (reactions and quiz clicks come in flurries).
const DATA_BURST: u32 = 20;
const DATA_PER_SEC: f64 = 10.0;
/// `client_stats`: one every 4 s, with room for one early (the SDK sends one every 5 s).
const STATS_BURST: u32 = 2;
const STATS_PER_SEC: f64 = 0.25;

/// Whether the loop keeps reading after a message.
#[derive(Debug)]
enum Flow {
    Continue,
    /// An [`Outgoing::End`] is queued: stop reading, flush, close.
    Ending,
    /// This socket took over a parked participant: serve its queue from now on.
    Resumed {
        inbox: mpsc::UnboundedReceiver<Outgoing>,
        sid: String,
    },
    /// The room's origin is another node: carry this socket's signaling there, starting with
    /// `first` (see `crate::cluster::proxy`).
    Proxy {
        origin: Box<OriginSocket>,
        ws_url: String,
        first: String,
        /// The client's alternates, sent by this node (not by the origin, which does not know
        /// which node the client reached).
        alternates: Option<Feed>,
    },
}

type OriginSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A joined participant.
#[derive(Debug)]
struct Joined {
    sid: String,
    claims: AccessClaims,
    chat_bucket: TokenBucket,
    data_bucket: TokenBucket,
    stats_bucket: TokenBucket,
    /// Secret to take this participant over from a new socket; empty when reconnects are off.
    resume_token: String,
}

/// A participant whose socket dropped, waiting (up to the reconnect timeout) for `Resume`. It
/// stays in its room meanwhile; what the room sends it queues in `inbox`.
#[derive(Debug)]
pub(crate) struct Parked {
    joined: Joined,
    outbox: Outbox,
    inbox: mpsc::UnboundedReceiver<Outgoing>,
}

struct Session {
    state: Arc<AppState>,
    outbox: Outbox,
    joined: Option<Joined>,
    /// Notified when a new socket resumes this participant while this socket still looks
    /// alive (after a network change the server may not notice the old one is dead for a
    /// whole idle timeout): this loop then lets go, and the new one takes over.
    handover: Arc<Notify>,
    /// The client's region from `/ws?region=`, when its token names none.
    region: Option<String>,
    /// In a cluster with relay links: the other nodes the client may reconnect to, sent after
    /// `joined` / `resumed` and whenever they change (see `crate::cluster::alternates`).
    alternates: Option<Feed>,
}

/// Runs one WebSocket to the end, then removes the participant from its room and the SFU.
/// `unjoined` is the socket's place among those not joined yet (`[http]
/// max_unjoined_websockets`), given back as soon as it joins or resumes.
///
/// `region` is where the client says it is (`/ws?region=`), for placing its media in a cluster
/// when its token does not say.
pub(crate) async fn run(
    socket: WebSocket,
    state: Arc<AppState>,
    unjoined: OwnedSemaphorePermit,
    region: Option<String>,
) {
    let mut unjoined = Some(unjoined);
    let (sink, mut stream) = socket.split();
    let (outbox, mut inbox) = mpsc::unbounded_channel();
    let mut shutdown = state.shutdown_signal();
    let handover = Arc::new(Notify::new());
    let mut session = Session {
        state,
        outbox,
        joined: None,
        handover: Arc::clone(&handover),
        region,
        alternates: None,
    };
    let mut proxy = None;
    let connected_at = Instant::now();
    let mut last_heard = Instant::now();
    // A client not heard from (any frame, pongs included) for `idle_timeout` is dead: TCP alone
    // can take many minutes to notice a vanished peer, and its seat in the room would stay taken.
    // Browsers answer WebSocket pings by themselves. A socket that has not joined within the
    // same time is closed too, so idle sockets cannot pile up.
    let idle_timeout = session.state.idle_timeout();
    let ping_every = idle_timeout / PINGS_PER_IDLE_TIMEOUT;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut ending = false;
    // Whether the connection was lost rather than ended on purpose (leave, kick, shutdown):
    // only then is the participant kept for a resume.
    let mut lost = false;
    // Why the participant leaves, for a recording's timeline, if it is not kept for a resume.
    let mut leave_reason = String::from("connection lost");

    // Writes are bounded by the idle timeout too: a client that stops reading fills its TCP
    // window, and an unbounded write would then block this loop, its pings and its timeout.
    let mut writer = Writer {
        sink,
        timeout: idle_timeout,
    };

    loop {
        tokio::select! {
            // Outgoing first: whatever was queued before a client message was read leaves first,
            // and an `End` stops the loop before any further input is handled.
            biased;
            out = inbox.recv() => {
                // The session holds a sender itself, so `None` cannot happen; treat it as an end.
                let Some(out) = out else { break };
                match out {
                    Outgoing::Message(msg) => {
                        if writer.send_json(&msg).await.is_err() {
                            lost = true;
                            break;
                        }
                    }
                    Outgoing::Event(event) => {
                        if writer.send_json(&event).await.is_err() {
                            lost = true;
                            break;
                        }
                    }
                    Outgoing::End { left } => {
                        leave_reason = left.clone().unwrap_or_else(|| "ended".into());
                        if let Some(reason) = left {
                            let _ = writer.send_json(&ServerMessage::Left { reason }).await;
                        }
                        writer.close(close_code::NORMAL, "").await;
                        break;
                    }
                }
            }
            () = alternates::changed(&mut session.alternates) => session.send_alternates(),
            _ = handover.notified() => {
                tracing::info!(sid = session.sid(), "resumed on another connection");
                lost = true;
                break;
            }
            _ = crate::server::stopped(&mut shutdown) => {
                leave_reason = REASON_SHUTDOWN.into();
                let _ = writer.send_json(&ServerMessage::Left { reason: REASON_SHUTDOWN.into() }).await;
                writer.close(close_code::AWAY, REASON_SHUTDOWN).await;
                break;
            }
            frame = stream.next(), if !ending => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) if is_too_large(&e) => {
                        // Said with its close code: a dropped connection looks like a network
                        // failure, and the client would reconnect and send the same again.
                        writer.close(close_code::SIZE, "message too large").await;
                        break;
                    }
                    // Closed by the peer, or another protocol error.
                    _ => {
                        lost = true;
                        break;
                    }
                };
                last_heard = Instant::now();
                let flow = match frame {
                    Message::Text(text) => session.handle_text(text.as_str()).await,
                    Message::Binary(_) => {
                        session.error(ErrorCode::BadMessage, "binary frames are not part of the protocol; send JSON text");
                        Flow::Continue
                    }
                    // axum answers pings itself; pongs only prove liveness (recorded above).
                    Message::Ping(_) | Message::Pong(_) => Flow::Continue,
                    Message::Close(_) => {
                        // A closing tab and a network switch look alike; `Leave` is the way
                        // to go for good.
                        lost = true;
                        break;
                    }
                };
                if session.joined.is_some() {
                    unjoined.take();
                }
                match flow {
                    Flow::Continue => {}
                    Flow::Ending => ending = true,
                    Flow::Proxy { origin, ws_url, first, alternates } => {
                        proxy = Some((origin, ws_url, first, alternates));
                        break;
                    }
                    Flow::Resumed { inbox: parked, sid } => {
                        // Before anything queued while away, so the client knows where it is.
                        let resumed = ServerEvent::Resumed { participant_sid: sid };
                        if writer.send_json(&resumed).await.is_err() {
                            lost = true;
                            inbox = parked;
                            break;
                        }
                        inbox = parked;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    tracing::info!(sid = session.sid(), "closing idle WebSocket");
                    leave_reason = "idle timeout".into();
                    lost = true;
                    break;
                }
                if session.joined.is_none() && connected_at.elapsed() > idle_timeout {
                    session.error(ErrorCode::NotJoined, "no join received in time");
                    session.end(None);
                    ending = true;
                    continue;
                }
                if writer.send(Message::Ping(Default::default())).await.is_err() {
                    lost = true;
                    break;
                }
            }
        }
    }
    if let Some((origin, ws_url, first, alternates)) = proxy {
        // Not joined here: nothing to clean up; the origin keeps the participant.
        drop(unjoined);
        let Ok(socket) = writer.sink.reunite(stream) else {
            return;
        };
        let state = session.state;
        crate::cluster::proxy::run(
            socket,
            *origin,
            first,
            |text| {
                if let Some(relay) = state.relay() {
                    relay.remember_resume(&ws_url, text);
                }
            },
            alternates,
        )
        .await;
        return;
    }
    if let Some(joined) = &session.joined {
        session
            .state
            .unregister_live(&joined.resume_token, &session.handover);
    }
    let timeout = session.state.reconnect_timeout();
    match session.joined.take() {
        Some(joined) if lost && !timeout.is_zero() && !joined.resume_token.is_empty() => {
            park(session.state, joined, session.outbox, inbox, timeout);
        }
        joined => {
            session.joined = joined;
            session.cleanup(&leave_reason, lost).await;
        }
    }
}

/// Keeps a participant whose socket dropped for `timeout`, then removes it unless a new socket
/// resumed it. Stops waiting at shutdown, so parked participants do not hold the server up.
fn park(
    state: Arc<AppState>,
    joined: Joined,
    outbox: Outbox,
    inbox: mpsc::UnboundedReceiver<Outgoing>,
    timeout: Duration,
) {
    let token = joined.resume_token.clone();
    tracing::info!(sid = joined.sid, "connection lost; waiting for a resume");
    let qos = state.recorder().qos();
    qos.event(&joined.sid, "reconnecting", serde_json::json!({}));
    state
        .registry()
        .connection_changed(&joined.sid, ParticipantConnection::Reconnecting);
    state.parked().insert(
        token.clone(),
        Parked {
            joined,
            outbox,
            inbox,
        },
    );
    tokio::spawn(async move {
        let mut shutdown = state.shutdown_signal();
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {}
            _ = crate::server::stopped(&mut shutdown) => {}
        }
        let parked = state.parked().remove(&token);
        if let Some(parked) = parked {
            tracing::info!(sid = parked.joined.sid, "not resumed in time; removing");
            let session = Session {
                state: Arc::clone(&state),
                outbox: parked.outbox,
                joined: Some(parked.joined),
                handover: Arc::new(Notify::new()),
                region: None,
                alternates: None,
            };
            session.cleanup("not resumed in time", true).await;
        }
    });
}

/// A fresh resume token: 32 random alphanumerics (~190 bits); whoever holds it *is* the
/// participant, like a session cookie.
fn new_resume_token() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Whether a read failed on a frame or message over the WebSocket limits (`crate::http`).
/// `tungstenite` must be the version axum's `ws` uses, or this never matches (a test covers it).
fn is_too_large(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// The sending half of the socket, every write bounded in time.
struct Writer {
    sink: SplitSink<WebSocket, Message>,
    timeout: Duration,
}

/// The client is gone or not reading; the session ends.
struct WriteFailed;

impl Writer {
    async fn send(&mut self, msg: Message) -> Result<(), WriteFailed> {
        match tokio::time::timeout(self.timeout, self.sink.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(WriteFailed),
        }
    }

    async fn send_json<T: Serialize + std::fmt::Debug>(
        &mut self,
        msg: &T,
    ) -> Result<(), WriteFailed> {
        match serde_json::to_string(msg) {
            Ok(text) => self.send(Message::text(text)).await,
            // Serializing these plain types cannot fail; if it ever did, dropping one message
            // is better than ending the session.
            Err(e) => {
                tracing::error!("cannot serialize {msg:?}: {e}");
                Ok(())
            }
        }
    }

    /// Best effort: the socket is dropped right after anyway.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.send(Message::Close(Some(frame))).await;
    }
}

impl Session {
    fn sid(&self) -> &str {
        self.joined.as_ref().map_or("-", |j| j.sid.as_str())
    }

    fn send(&self, msg: ServerMessage) {
        // The receiver lives as long as the session loop; a failed send means it already ended.
        let _ = self.outbox.send(Outgoing::Message(msg));
    }

    fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.state
            .metrics()
            .errors
            .with_label_values(&[error_code_label(code)])
            .inc();
        self.send(ServerMessage::Error {
            code,
            message: message.into(),
        });
    }

    fn end(&self, left: Option<&str>) {
        let _ = self.outbox.send(Outgoing::End {
            left: left.map(str::to_owned),
        });
    }

    /// The alternates of a client of `region` (this node's when `None`) known by `key`, on a
    /// node with relay links; `None` elsewhere (a single node, a directory-only cluster).
    fn alternates_feed(&self, region: Option<&str>, key: &str) -> Option<Feed> {
        let relay = self.state.relay()?;
        let cache = self.state.cluster()?;
        Some(Feed::new(
            cache,
            region.unwrap_or_else(|| relay.region()),
            key,
        ))
    }

    /// Sends the client its alternates if they changed since it was last sent them.
    fn send_alternates(&mut self) {
        if let Some(event) = self.alternates.as_mut().and_then(Feed::update) {
            let _ = self.outbox.send(Outgoing::Event(event));
        }
    }

    async fn handle_text(&mut self, text: &str) -> Flow {
        let msg = match ClientMessage::parse(text) {
            Ok(msg) => msg,
            Err((code, message)) => {
                tracing::debug!(sid = self.sid(), ?code, "refused message: {message}");
                self.error(code, message);
                return Flow::Continue;
            }
        };
        // Per-message timing at debug level: the media plane is awaited inline, so this is where
        // signaling latency (e.g. slow candidate handling delaying ICE) shows up.
        let kind = message_kind(&msg);
        self.state
            .metrics()
            .messages
            .with_label_values(&[kind])
            .inc();
        let started = Instant::now();
        let flow = self.dispatch(msg).await;
        tracing::debug!(
            sid = self.sid(),
            kind,
            elapsed_us = started.elapsed().as_micros() as u64,
            "handled"
        );
        flow
    }

    async fn dispatch(&mut self, msg: ClientMessage) -> Flow {
        match (&self.joined, msg) {
            (None, ClientMessage::Join { version, token }) => self.join(version, &token).await,
            (
                None,
                ClientMessage::Resume {
                    version,
                    resume_token,
                },
            ) => self.resume(version, &resume_token).await,
            (None, _) => {
                self.error(ErrorCode::NotJoined, "the first message must be join");
                Flow::Continue
            }
            (Some(joined), msg) => {
                let sid = joined.sid.clone();
                self.handle_joined(&sid, msg).await
            }
        }
    }

    /// Takes over a parked participant (see [`park`]).
    async fn resume(&mut self, version: u32, resume_token: &str) -> Flow {
        if version != PROTOCOL_VERSION {
            self.error(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"),
            );
            self.end(None);
            return Flow::Ending;
        }
        let parked = if resume_token.is_empty() {
            None
        } else {
            self.take_parked(resume_token).await
        };
        let Some(parked) = parked else {
            // A participant whose signaling this node carried to its room's origin.
            if let Some(ws_url) = self
                .state
                .relay()
                .and_then(|r| r.resume_route(resume_token))
            {
                let first = ClientMessage::Resume {
                    version,
                    resume_token: resume_token.to_owned(),
                };
                let feed = self.alternates_feed(self.region.as_deref(), resume_token);
                return self.proxy(ws_url, &first, feed).await;
            }
            self.error(
                ErrorCode::Unauthorized,
                "unknown or expired resume token; join again",
            );
            self.end(None);
            return Flow::Ending;
        };
        let sid = parked.joined.sid.clone();
        tracing::info!(sid, "resumed");
        let qos = self.state.recorder().qos();
        qos.event(&sid, "reconnected", serde_json::json!({}));
        self.state
            .registry()
            .connection_changed(&sid, ParticipantConnection::Connected);
        self.state
            .register_live(&parked.joined.resume_token, &self.handover);
        self.outbox = parked.outbox;
        let claims = &parked.joined.claims;
        let region = claims.region.as_deref().or(self.region.as_deref());
        self.alternates = self.alternates_feed(region, &claims.sub);
        self.joined = Some(parked.joined);
        // Queued behind `resumed`, which the loop writes first.
        self.send_alternates();
        // The client's addresses may have changed: new ICE credentials for the subscribe
        // connection (its offer follows as an event); the client restarts its publish side.
        if let Err(e) = self.state.media().restart_ice(&sid).await {
            tracing::debug!(sid, "ICE restart after resume: {e}");
        }
        Flow::Resumed {
            inbox: parked.inbox,
            sid,
        }
    }

    /// The parked participant for `token`; if its old socket is still being served, asks that
    /// session to let go and waits (bounded) for it to park.
    async fn take_parked(&self, token: &str) -> Option<Parked> {
        if let Some(parked) = self.state.parked().remove(token) {
            return Some(parked);
        }
        let old = self.state.live_session(token)?;
        old.notify_one();
        let deadline = Instant::now() + HANDOVER_TIMEOUT;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Some(parked) = self.state.parked().remove(token) {
                return Some(parked);
            }
        }
        None
    }

    /// Opens the WebSocket to the room's origin at `ws_url` for this client, which then only
    /// passes messages through (see `crate::cluster::proxy`).
    async fn proxy(
        &mut self,
        ws_url: String,
        first: &ClientMessage,
        alternates: Option<Feed>,
    ) -> Flow {
        let first = match serde_json::to_string(first) {
            Ok(first) => first,
            Err(e) => {
                self.error(ErrorCode::Internal, e.to_string());
                self.end(None);
                return Flow::Ending;
            }
        };
        match crate::cluster::proxy::connect(&ws_url).await {
            Ok(origin) => Flow::Proxy {
                origin: Box::new(origin),
                ws_url,
                first,
                alternates,
            },
            Err(e) => {
                tracing::warn!(%ws_url, "cannot carry signaling to the room's origin: {e}");
                self.error(ErrorCode::Unavailable, e.to_string());
                self.end(None);
                Flow::Ending
            }
        }
    }

    async fn join(&mut self, version: u32, token: &str) -> Flow {
        if version != PROTOCOL_VERSION {
            // An SDK speaking another version would misread everything that follows.
            self.error(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"),
            );
            self.end(None);
            return Flow::Ending;
        }
        let claims = match token::verify(self.state.keys(), token) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::info!("refused join: {e}");
                self.error(ErrorCode::Unauthorized, e.to_string());
                self.end(None);
                return Flow::Ending;
            }
        };
        let sid = room::new_participant_sid();
        let resume_token = if self.state.reconnect_timeout().is_zero() {
            String::new()
        } else {
            new_resume_token()
        };
        let member = Member {
            resume_token: Some(resume_token.clone()).filter(|t| !t.is_empty()),
            info: room::participant_info(sid.clone(), &claims.sub, &claims.name, claims.role),
            permissions: claims.permissions(),
            token_permissions: claims.permissions(),
            outbox: self.outbox.clone(),
        };
        if let Some(relay) = self.state.relay() {
            match relay.route(&claims.room, &sid).await {
                Ok(Route::Here) => {}
                Ok(Route::Origin { node, ws_url }) => {
                    tracing::info!(
                        room = claims.room,
                        origin = node,
                        "carrying the participant's signaling to the room's origin"
                    );
                    // The media goes to this node's region unless the token says otherwise.
                    let ws_url = format!("{ws_url}?region={}", relay.region());
                    let first = ClientMessage::Join {
                        version,
                        token: token.to_owned(),
                    };
                    let region = claims.region.as_deref().or(self.region.as_deref());
                    let feed = self.alternates_feed(region, &claims.sub);
                    return self.proxy(ws_url, &first, feed).await;
                }
                Err(message) => {
                    self.error(ErrorCode::Unavailable, message);
                    self.end(None);
                    return Flow::Ending;
                }
            }
        }
        // Placed before it is in the room: from then on, others' tracks are subscribed for it
        // and must go to where its media is.
        let region = claims.region.as_deref().or(self.region.as_deref());
        if let Err(e) = self.state.media().place(&sid, &claims.room, region).await {
            tracing::warn!(sid, error = %e, "cannot place the participant's media; serving it here");
        }
        let outcome = match self.state.join(&claims.room, member) {
            Ok(outcome) => outcome,
            Err((code, message)) => {
                let _ = self.state.media().remove_participant(&sid).await;
                tracing::info!(
                    room = claims.room,
                    identity = claims.sub,
                    "refused join: {message}"
                );
                self.error(code, message);
                self.end(None);
                return Flow::Ending;
            }
        };
        tracing::info!(sid, room = claims.room, identity = claims.sub, role = ?claims.role, hidden = claims.hidden, "joined");
        // Right behind `joined`, which the room queued.
        let region = claims.region.as_deref().or(self.region.as_deref());
        self.alternates = self.alternates_feed(region, &claims.sub);
        self.send_alternates();
        if claims.role.is_staff()
            && let Err(e) = self.state.media().set_staff(&sid).await
        {
            tracing::warn!(sid, error = %e, "media plane did not take the staff mark");
        }
        let webhooks = self.state.webhooks();
        if outcome.room_created {
            webhooks.emit("room_started", serde_json::json!({ "room": claims.room }));
        }
        webhooks.emit(
            "participant_joined",
            serde_json::json!({
                "room": claims.room,
                "participant": {
                    "sid": sid, "identity": claims.sub, "name": claims.name,
                    "role": claims.role, "hidden": claims.hidden,
                },
            }),
        );
        let now = std::time::Instant::now();
        self.joined = Some(Joined {
            sid: sid.clone(),
            claims,
            chat_bucket: TokenBucket::new(CHAT_BURST, CHAT_PER_SEC, now),
            data_bucket: TokenBucket::new(DATA_BURST, DATA_PER_SEC, now),
            stats_bucket: TokenBucket::new(STATS_BURST, STATS_PER_SEC, now),
            resume_token: resume_token.clone(),
        });
        self.state.register_live(&resume_token, &self.handover);
        if let Some(old) = outcome.replaced {
            // The replaced session tears down its own media when it ends, but do it now too so
            // that its tracks stop before the new session publishes the same camera again.
            if let Err(e) = self.state.media().remove_participant(&old).await {
                tracing::debug!(sid = old, "removing replaced participant: {e}");
            }
        }
        for track_sid in outcome.subscribe_to {
            if let Err(e) = self.state.media().subscribe(&sid, &track_sid).await {
                tracing::warn!(sid, track_sid, "subscribe on join failed: {e}");
            }
        }
        if let Some(joined) = &self.joined {
            let room = &joined.claims.room;
            let recorder = self.state.recorder();
            recorder.joined(room, &sid, outcome.room_created).await;
        }
        Flow::Continue
    }

    /// Removes the participant; `reason` says why, for a recording's timeline. A `lost` one (its
    /// connection dropped, not a leave or a kick) is remembered for its rejoin (`crate::rejoin`).
    async fn cleanup(self, reason: &str, lost: bool) {
        let Some(joined) = self.joined else {
            return;
        };
        let fields = serde_json::json!({ "reason": reason });
        self.state
            .recorder()
            .qos()
            .event(&joined.sid, "leave", fields);
        // Before `leave`, which may report the room's end: the backend sees the last
        // participant leave, then the room end.
        self.state.webhooks().emit(
            "participant_left",
            serde_json::json!({
                "room": joined.claims.room,
                "participant": { "sid": joined.sid, "identity": joined.claims.sub },
            }),
        );
        self.state.leave(&joined.sid, lost);
        let effects = self
            .state
            .desk()
            .disconnect(&joined.sid, std::time::Instant::now());
        self.state.desk_effects(effects);
        if let Err(e) = self.state.media().remove_participant(&joined.sid).await {
            tracing::debug!(sid = joined.sid, "removing participant from the SFU: {e}");
        }
        tracing::info!(sid = joined.sid, room = joined.claims.room, "left");
    }
}
