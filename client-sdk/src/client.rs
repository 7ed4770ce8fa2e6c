//! The session: one WebSocket to the signaling server plus up to two peer connections.
//!
//! Three kinds of task run per client: a WebSocket writer (all outgoing messages go through
//! one queue, so their order is the order they were produced in), a WebSocket reader (which
//! routes answers, offers and candidates to the peer tasks, turns the rest into
//! [`ClientEvent`]s, resumes the session when the socket drops and joins again when the
//! session is lost: `client/reader.rs`, and [`crate::connection`]), and one task per peer
//! connection (see [`crate::peer`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aula_protocol::{
    ClientMessage, ParticipantInfo, PeerTarget, RoomInfo, TrackAnnouncement, TrackSource,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::connection::{self, Joined, Targets, write_loop};
use crate::error::ClientError;
use crate::peer::{Link, Peer, PeerCommand, PeerContext, PeerHandle};
use crate::publish::{AudioSource, PublishedAudio, Route, RouteTo};
use crate::tone::ToneEncoder;
use crate::{ClientEvent, ReceivedPacket};

mod reader;
use reader::Reader;

/// How long `connect` waits for `Joined`, and `publish_audio` for the answer and for ICE + DTLS.
/// Loopback needs milliseconds; this is generous for a loaded CI machine.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `leave` waits for the server's `Left` before closing anyway.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Received packets queued for the application: 10 s of 20 tracks of 50 packets/s. Beyond
/// that, packets are dropped and counted rather than stalling the media loop.
const PACKET_QUEUE: usize = 10_000;

/// The client's own hold on the event queues is weak, so that they close (and
/// [`Client::next_event`] returns `None`) once the reader and the peer tasks are gone.
struct WeakSinks {
    control: mpsc::WeakUnboundedSender<ClientEvent>,
    packets: mpsc::WeakSender<ReceivedPacket>,
}

/// State the reader task and `publish_audio` share. Locked briefly, never across an await.
#[derive(Default)]
struct Session {
    /// Set as soon as `publish_audio` starts, so a second call fails at once.
    publishing: bool,
    publish: Option<mpsc::Sender<PeerCommand>>,
    /// Keeps the publish connection's task running; dropped to end it (a rejoin).
    publish_stop: Option<watch::Sender<()>>,
    /// `publish_audio` waiting for the server to answer (or refuse) its offer.
    pending_answer: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// Where the published track's payloads go, once `publish_audio` succeeded; pointed at the
    /// new connection when the track is published again after a rejoin.
    audio: Option<watch::Sender<Route>>,
    /// Counts rejoins, so that a publication begun before one does not install itself after.
    generation: u64,
    /// The local address for media once the client joined again on another node (see
    /// [`media_ip_for`]); the first node's until then.
    media_ip: Option<IpAddr>,
}

impl Session {
    fn route_to(&self, to: RouteTo) {
        if let Some(route) = &self.audio {
            route.send_modify(|route| route.to = to);
        }
    }
}

/// Switches the application sets and the reader reads.
#[derive(Debug)]
struct Flags {
    /// [`Client::set_auto_rejoin`].
    auto_rejoin: AtomicBool,
    /// [`Client::leave`] was called: a session that ends now is not resumed or joined again.
    leaving: AtomicBool,
}

/// What publishing needs: the client has it for its first publication, the reader to
/// publish again after a rejoin.
struct Publisher {
    media_ip: IpAddr,
    ctx: PeerContext,
    session: Arc<Mutex<Session>>,
}

/// A participant in one room.
///
/// # Reconnecting
///
/// A WebSocket that drops (a network change) is resumed by itself for up to 15 s (the
/// server's default `reconnect_timeout_secs`), with [`ClientEvent::Reconnecting`] and
/// [`ClientEvent::Reconnected`]: the same participant goes on. The media connections stay up
/// meanwhile, and the server restarts ICE on the subscribe side. Not done yet: an ICE restart
/// of our publish connection, which a new local address would need.
///
/// When the session itself is lost, the client joins the room again by itself, with the same
/// token (so the same identity), unless [`set_auto_rejoin`] turned that off: after the server
/// ended it because its media path failed (`Left` with
/// [`aula_protocol::LEFT_PEER_CONNECTION_FAILED`]: ICE gave up, or in a cluster the node
/// serving its media died), or when the resume was refused or did not succeed within its
/// window. It tries at once, then after 0.5 s, 1 s, 2 s, 4 s and every 5 s, for 60 s;
/// [`ClientEvent::Reconnecting`] says it started (once per outage), and
/// [`ClientEvent::Rejoined`] that it is back, or [`ClientEvent::Disconnected`] that it gave
/// up (or a refusal that cannot change, such as an expired token or a locked room,
/// [`ClientEvent::Error`] then `Disconnected`).
///
/// A rejoined client is a **new participant**: a new sid (others see the old one leave and the
/// new one join), new connections, the room as it is now, subscribed to every track again (the
/// packets of a track keep its sid). [`participant`] and [`room`] change when
/// [`next_event`] hands over the [`ClientEvent::Rejoined`]. An audio track we were publishing
/// is published again by itself, as a new track (its [`PublishedAudio`] handle keeps working;
/// see there). The server gives the new participant back a moderator's grants (the stage) and
/// its raised hand at its place in the queue, if the old one was lost (not left) less than two
/// minutes before and no moderator changed them meanwhile or locked the room.
///
/// In a cluster the server names the other nodes the client may use
/// ([`aula_protocol::ServerEvent::Alternates`], also handed over as a [`ClientEvent::Room`]).
/// When the node the client is connected to cannot be reached at all while resuming or joining
/// again (the WebSocket is refused or times out: the node died), the next attempt goes to the
/// next of them, then to the URL given to [`connect`](Client::connect); a node that answers is
/// kept. Same delays, same windows, same events: a learner whose node was killed is joined
/// again on another node by itself, with its token (see the `connection` module).
///
/// Dropping the client closes the WebSocket and both peer connections at once; [`leave`]
/// says goodbye first.
///
/// [`leave`]: Client::leave
/// [`set_auto_rejoin`]: Client::set_auto_rejoin
/// [`participant`]: Client::participant
/// [`room`]: Client::room
/// [`next_event`]: Client::next_event
pub struct Client {
    participant: ParticipantInfo,
    room: RoomInfo,
    media_ip: IpAddr,
    flags: Arc<Flags>,
    signal: mpsc::UnboundedSender<ClientMessage>,
    weak: WeakSinks,
    dropped_packets: Arc<AtomicU64>,
    session: Arc<Mutex<Session>>,
    control: mpsc::UnboundedReceiver<ClientEvent>,
    packets: mpsc::Receiver<ReceivedPacket>,
    shutdown: Arc<watch::Sender<()>>,
    drop_connection: Arc<Notify>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Client {
    /// Connects to `ws_url` (e.g. `ws://127.0.0.1:7880/ws`), joins with `token`, and returns
    /// once the server has answered `Joined`.
    ///
    /// Media sockets are bound to the local address the kernel would use to reach the
    /// signaling host (IPv4 preferred), which is 127.0.0.1 for a loopback server. This assumes
    /// the SFU is reachable the same way as the signaling server, true for a single-host Aula.
    pub async fn connect(ws_url: &str, token: &str) -> Result<Self, ClientError> {
        let media_ip = media_ip_for(ws_url).await?;
        let Joined {
            sink,
            stream,
            participant,
            room,
            resume_token,
        } = connection::join(ws_url, token, NEGOTIATION_TIMEOUT).await?;

        let (signal, outgoing) = mpsc::unbounded_channel();
        let (control_tx, control) = mpsc::unbounded_channel();
        let (packets_tx, packets) = mpsc::channel(PACKET_QUEUE);
        let shutdown = Arc::new(watch::Sender::new(()));
        let dropped_packets = Arc::new(AtomicU64::new(0));
        let weak = WeakSinks {
            control: control_tx.downgrade(),
            packets: packets_tx.downgrade(),
        };
        let ctx = PeerContext {
            signal: signal.clone(),
            control: control_tx,
            packets: packets_tx,
            dropped_packets: dropped_packets.clone(),
            shutdown: shutdown.subscribe(),
        };
        let session = Arc::new(Mutex::new(Session::default()));
        let (sockets, new_sockets) = mpsc::unbounded_channel();
        let drop_connection = Arc::new(Notify::new());
        let flags = Arc::new(Flags {
            auto_rejoin: AtomicBool::new(true),
            leaving: AtomicBool::new(false),
        });
        let reader = Reader {
            ctx,
            media_ip,
            session: session.clone(),
            subscribe: None,
            targets: Targets::new(ws_url),
            token: token.to_owned(),
            participant_sid: participant.sid.clone(),
            resume_token,
            sockets,
            drop_connection: drop_connection.clone(),
            flags: flags.clone(),
            reconnecting: false,
        };
        let reader = tokio::spawn(reader.run(stream, shutdown.clone()));
        let writer = tokio::spawn(write_loop(sink, new_sockets, outgoing));
        Ok(Self {
            participant,
            room,
            media_ip,
            flags,
            signal,
            weak,
            dropped_packets,
            session,
            control,
            packets,
            shutdown,
            drop_connection,
            reader,
            writer,
        })
    }

    /// Who the server says we are. After a rejoin (see [Reconnecting](Client#reconnecting)),
    /// the new participant, from when [`next_event`](Client::next_event) returned the
    /// [`ClientEvent::Rejoined`] on.
    pub fn participant(&self) -> &ParticipantInfo {
        &self.participant
    }

    /// The room as it was when we joined (or last rejoined, as for
    /// [`participant`](Client::participant)); later changes arrive as [`ClientEvent`]s.
    pub fn room(&self) -> &RoomInfo {
        &self.room
    }

    /// Whether a lost session is joined again by itself (see
    /// [Reconnecting](Client#reconnecting)); on by default. Off, the session ends with
    /// [`ClientEvent::Disconnected`] where it would have been joined again.
    pub fn set_auto_rejoin(&self, enabled: bool) {
        self.flags.auto_rejoin.store(enabled, Ordering::Relaxed);
    }

    /// The next event, or `None` once the session has ended and everything was delivered.
    ///
    /// Cancel-safe, so it can sit in `tokio::select!` or under a timeout. Room events come
    /// before queued packets; the two travel different paths (WebSocket vs. UDP) so there is
    /// no order between them to keep anyway.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        let event = tokio::select! {
            biased;
            Some(event) = self.control.recv() => event,
            Some(packet) = self.packets.recv() => ClientEvent::Packet(packet),
            else => return None,
        };
        if let ClientEvent::Rejoined {
            participant, room, ..
        } = &event
        {
            self.participant = participant.clone();
            self.room = room.clone();
        }
        Some(event)
    }

    /// Received packets dropped because the application did not call [`next_event`] often
    /// enough. Non-zero means the reported stream has gaps the network did not cause.
    ///
    /// [`next_event`]: Client::next_event
    pub fn dropped_packets(&self) -> u64 {
        self.dropped_packets.load(Ordering::Relaxed)
    }

    /// Publishes one Opus audio track (as a microphone) and returns once media is connected,
    /// so that the first payload sent is the first one subscribers can get.
    ///
    /// A server refusal (e.g. `forbidden` for a role without publish rights) comes back as
    /// [`ClientError::Server`]. One audio track per client. A rejoin publishes it again by
    /// itself (see [`PublishedAudio`]); a call under way when the session is lost fails with
    /// [`ClientError::Closed`].
    pub async fn publish_audio(&self, source: AudioSource) -> Result<PublishedAudio, ClientError> {
        {
            let mut session = lock(&self.session);
            if session.publishing {
                return Err(ClientError::AlreadyPublishing);
            }
            session.publishing = true;
        }
        let result = self.start_publishing(source).await;
        if result.is_err() {
            let mut session = lock(&self.session);
            session.publishing = false;
            session.publish = None;
            session.publish_stop = None;
            session.pending_answer = None;
        }
        result
    }

    async fn start_publishing(&self, source: AudioSource) -> Result<PublishedAudio, ClientError> {
        // Built before anything is sent so that a bad config fails without side effects.
        let tone = match source {
            AudioSource::Tone(config) => Some(ToneEncoder::new(config)?),
            AudioSource::Manual => None,
        };
        let (generation, media_ip) = {
            let session = lock(&self.session);
            (
                session.generation,
                session.media_ip.unwrap_or(self.media_ip),
            )
        };
        let publisher = Publisher {
            media_ip,
            ctx: self.peer_context()?,
            session: self.session.clone(),
        };
        let (track_id, commands) = negotiate_publish(&publisher, &self.participant.sid).await?;
        let route = {
            let mut session = lock(&self.session);
            if session.generation != generation {
                // The session was lost and joined again meanwhile; this connection is gone.
                return Err(ClientError::Closed);
            }
            let (route, receiver) = watch::channel(Route {
                to: RouteTo::Live(commands),
                track_id: track_id.into(),
            });
            session.audio = Some(route);
            receiver
        };
        Ok(PublishedAudio::new(route, tone))
    }

    /// What a new peer task needs; `Closed` once the session has ended.
    fn peer_context(&self) -> Result<PeerContext, ClientError> {
        Ok(PeerContext {
            signal: self.signal.clone(),
            control: self.weak.control.upgrade().ok_or(ClientError::Closed)?,
            packets: self.weak.packets.upgrade().ok_or(ClientError::Closed)?,
            dropped_packets: self.dropped_packets.clone(),
            shutdown: self.shutdown.subscribe(),
        })
    }

    /// Tells the server how large we show the video track `track_sid`, in device pixels, so
    /// that it forwards no larger a simulcast layer than needed; a zero `width` or `height`
    /// means not shown, and the server stops forwarding it until a non-zero size comes. Send
    /// it only when the size changes: the server applies every one.
    ///
    /// Returns once queued; a refusal (`unknown_track` for a track we do not receive as video,
    /// `bad_message` above [`aula_protocol::MAX_RENDERED_DIMENSION`]) arrives as
    /// [`ClientEvent::Error`] and the session goes on.
    pub fn set_rendered_size(
        &self,
        track_sid: &str,
        width: u32,
        height: u32,
    ) -> Result<(), ClientError> {
        self.signal
            .send(ClientMessage::TrackSettings {
                track_sid: track_sid.to_owned(),
                width,
                height,
            })
            .map_err(|_| ClientError::Closed)
    }

    /// Drops the WebSocket as a network change would, leaving the media connections up; the
    /// session then resumes by itself ([`ClientEvent::Reconnecting`], then
    /// [`ClientEvent::Reconnected`]). For tests of reconnection.
    #[doc(hidden)]
    pub fn drop_connection_for_test(&self) {
        self.drop_connection.notify_one();
    }

    /// Queues one message for the server; `Closed` once the session is over.
    pub(crate) fn send_message(&self, message: ClientMessage) -> Result<(), ClientError> {
        self.signal.send(message).map_err(|_| ClientError::Closed)
    }

    /// Leaves the room: sends `Leave`, waits (briefly) for the server's `Left`, then closes
    /// everything. Other participants see `ParticipantLeft` and our tracks unpublished.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        self.flags.leaving.store(true, Ordering::Relaxed);
        self.signal
            .send(ClientMessage::Leave)
            .map_err(|_| ClientError::Closed)?;
        // The reader ends on `Left` or when the server closes the socket.
        tokio::time::timeout(LEAVE_TIMEOUT, &mut self.reader)
            .await
            .map_err(|_| ClientError::Timeout("Left"))?
            .map_err(|_| ClientError::Closed)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        lock(&self.session).route_to(RouteTo::Closed);
        self.shutdown.send_replace(());
        self.reader.abort();
        self.writer.abort();
    }
}

/// Offers one audio track on a new publish connection and waits until its media is
/// connected; returns the track's id and the connection's command queue.
async fn negotiate_publish(
    publisher: &Publisher,
    participant_sid: &str,
) -> Result<(String, mpsc::Sender<PeerCommand>), ClientError> {
    let track_id = format!("{participant_sid}-audio-{:08x}", rand::random::<u32>());
    let (peer, offer) =
        Peer::publisher(publisher.media_ip, publisher.ctx.clone(), &track_id).await?;

    let (answered_tx, answered) = oneshot::channel();
    let (commands, mut link) = {
        // Held from sending the offer until the reader can route the answer: on loopback
        // the answer may be back before this function runs another line.
        let mut session = lock(&publisher.session);
        publisher
            .ctx
            .signal
            .send(ClientMessage::PublishOffer {
                sdp: offer,
                tracks: vec![TrackAnnouncement {
                    track_id: track_id.clone(),
                    source: TrackSource::Microphone,
                }],
            })
            .map_err(|_| ClientError::Closed)?;
        // Spawned only after the offer is queued: its first act is to signal our
        // candidate, which the server can only apply once it has seen the offer.
        let PeerHandle {
            commands,
            link,
            stop,
        } = peer.spawn();
        session.publish = Some(commands.clone());
        session.publish_stop = Some(stop);
        session.pending_answer = Some(answered_tx);
        (commands, link)
    };

    tokio::time::timeout(NEGOTIATION_TIMEOUT, answered)
        .await
        .map_err(|_| ClientError::Timeout("PublishAnswer"))?
        .map_err(|_| ClientError::Closed)??;
    let connected = tokio::time::timeout(
        NEGOTIATION_TIMEOUT,
        link.wait_for(|link| *link != Link::Connecting),
    )
    .await
    .map_err(|_| ClientError::Timeout("the publish connection"))?
    .map_err(|_| ClientError::Closed)?;
    match *connected {
        Link::Connected => Ok((track_id, commands)),
        Link::Failed => Err(ClientError::MediaFailed(PeerTarget::Publish)),
        Link::Connecting | Link::Closed => Err(ClientError::Closed),
    }
}

fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    // Nothing panics while holding the lock, but if it did the state is still consistent
    // (every update is a single assignment), so poisoning is ignored.
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The local address the kernel would use to reach the host of `ws_url`.
///
/// `connect` on a UDP socket only consults the routing table; nothing is sent.
async fn media_ip_for(ws_url: &str) -> Result<IpAddr, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: ws_url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = ws_url.parse().map_err(|e| bad(&format!("{e}")))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("wss")) => 443,
        (None, Some("ws")) => 80,
        _ => return Err(bad("scheme must be ws or wss")),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let server = addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| addrs.first())
        .ok_or_else(|| bad("host resolves to no address"))?;
    let unspecified = match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let probe = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}
