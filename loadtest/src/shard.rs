//! A shard: one task, one multiplexed UDP socket, many peers.
//!
//! The loop is the sans-I/O one of the `rtc` examples, widened to many peers: run due timers
//! and media, drain every peer that had input (events, received RTP, datagrams to send), send,
//! then wait for whichever comes first of a command, a datagram or the earliest peer deadline.
//! Datagrams go to the peer owning the (local address, remote address) pair, or for a first
//! contact to the peer named by the STUN request's ufrag. Reads are bounded per wake-up so a
//! flood cannot starve timers and publishers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aula_protocol::{IceCandidate, TrackAnnouncement, TrackKind};
use rtc::sansio::Protocol;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::clock::Epoch;
use crate::media::source::MediaPlan;
use crate::net::socket::{Addressing, MuxSocket};
use crate::peer::{LightPeer, PeerOutput, Role};
use crate::progress::Progress;

/// Index of a peer within its shard.
pub type PeerId = usize;

/// Batches read per wake-up before timers and media get their turn.
const READ_BATCHES_PER_WAKE: usize = 8;
/// Sleep when no peer has a deadline; a command or a datagram wakes the loop earlier.
const IDLE_WAKEUP: Duration = Duration::from_millis(250);

pub enum ShardCommand {
    AddPublisher {
        plan: MediaPlan,
        name: String,
        out: mpsc::UnboundedSender<PeerOutput>,
        reply: oneshot::Sender<Result<PublisherOffer, String>>,
    },
    AddSubscriber {
        join_started: Instant,
        out: mpsc::UnboundedSender<PeerOutput>,
        reply: oneshot::Sender<Result<PeerId, String>>,
    },
    RemoteDescription {
        peer: PeerId,
        sdp: String,
    },
    RemoteCandidate {
        peer: PeerId,
        candidate: IceCandidate,
    },
    /// Starts the measurement window: counters restart, latencies are recorded from now on.
    StartWindow,
    /// Ends the window and reports it.
    Finish {
        reply: oneshot::Sender<ShardReport>,
    },
}

/// A new publish connection and the offer to send for it.
pub struct PublisherOffer {
    pub peer: PeerId,
    pub sdp: String,
    pub tracks: Vec<TrackAnnouncement>,
}

/// What a shard measured in the window.
#[derive(Debug, Default)]
pub struct ShardReport {
    pub subscribers: Vec<SubscriberResult>,
    pub publishers: Vec<PublisherResult>,
    /// End-to-end latency of every stamped packet received in the window, microseconds.
    pub latencies_us: Vec<u32>,
    /// Datagrams from addresses other than the server's, dropped.
    pub dropped_foreign: u64,
    /// Datagrams the socket could not send.
    pub send_errors: u64,
}

#[derive(Debug, Clone)]
pub struct SubscriberResult {
    /// Token request to first media packet; `None` if no media ever came.
    pub join_time: Option<Duration>,
    /// ICE and DTLS came up.
    pub connected: bool,
    pub expected: u64,
    pub received: u64,
    pub duplicates: u64,
    pub bytes: u64,
    pub unstamped: u64,
    pub audio_jitter_ms: Vec<f64>,
    pub video_jitter_ms: Vec<f64>,
    /// Window loss by kind: (expected, received).
    pub audio_packets: (u64, u64),
    pub video_packets: (u64, u64),
    /// Token request to the first video frame complete and decodable; `None` if none was.
    pub first_frame: Option<Duration>,
    /// Of the video streams received: frames rendered, time frozen, freezes, keyframe
    /// requests sent, in the window (see `stats::frames`).
    pub video_streams: usize,
    pub frames_rendered: u64,
    pub frozen: Duration,
    pub freezes: u64,
    pub keyframe_requests_sent: u64,
}

#[derive(Debug, Clone)]
pub struct PublisherResult {
    pub packets_sent: u64,
    pub send_errors: u64,
    pub keyframe_requests: u64,
}

/// Talks to a running shard. Cheap to clone.
#[derive(Clone)]
pub struct ShardHandle {
    commands: mpsc::UnboundedSender<ShardCommand>,
}

impl ShardHandle {
    pub fn send(&self, command: ShardCommand) -> anyhow::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| anyhow::anyhow!("shard stopped"))
    }

    pub async fn add_publisher(
        &self,
        plan: MediaPlan,
        name: String,
        out: mpsc::UnboundedSender<PeerOutput>,
    ) -> anyhow::Result<PublisherOffer> {
        let (reply, rx) = oneshot::channel();
        self.send(ShardCommand::AddPublisher {
            plan,
            name,
            out,
            reply,
        })?;
        rx.await?.map_err(anyhow::Error::msg)
    }

    pub async fn add_subscriber(
        &self,
        join_started: Instant,
        out: mpsc::UnboundedSender<PeerOutput>,
    ) -> anyhow::Result<PeerId> {
        let (reply, rx) = oneshot::channel();
        self.send(ShardCommand::AddSubscriber {
            join_started,
            out,
            reply,
        })?;
        rx.await?.map_err(anyhow::Error::msg)
    }

    pub async fn finish(&self) -> anyhow::Result<ShardReport> {
        let (reply, rx) = oneshot::channel();
        self.send(ShardCommand::Finish { reply })?;
        Ok(rx.await?)
    }
}

struct Slot {
    peer: LightPeer,
    wake: Option<Instant>,
    counted_media: bool,
}

pub struct Shard {
    socket: MuxSocket,
    epoch: Epoch,
    progress: Arc<Progress>,
    commands: mpsc::UnboundedReceiver<ShardCommand>,
    peers: Vec<Slot>,
    routes: HashMap<(IpAddr, SocketAddr), PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    dirty: Vec<PeerId>,
    is_dirty: Vec<bool>,
    transmits: Vec<(IpAddr, SocketAddr, bytes::BytesMut)>,
    measuring: bool,
    latencies_us: Vec<u32>,
    send_errors: u64,
    /// The publishers' frame interval, for the subscribers' freeze detection.
    frame_interval: Duration,
}

impl Shard {
    /// Binds the shard's socket and starts its task.
    pub fn spawn(
        epoch: Epoch,
        progress: Arc<Progress>,
        addressing: Addressing,
        frame_interval: Duration,
    ) -> std::io::Result<ShardHandle> {
        let socket = MuxSocket::bind(addressing)?;
        let (commands, rx) = mpsc::unbounded_channel();
        let shard = Self {
            socket,
            epoch,
            progress,
            commands: rx,
            peers: Vec::new(),
            routes: HashMap::new(),
            by_ufrag: HashMap::new(),
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            transmits: Vec::new(),
            measuring: false,
            latencies_us: Vec::new(),
            send_errors: 0,
            frame_interval,
        };
        tokio::spawn(shard.run());
        Ok(ShardHandle { commands })
    }

    async fn run(mut self) {
        loop {
            let now = Instant::now();
            for id in 0..self.peers.len() {
                let slot = &mut self.peers[id];
                if slot.wake.is_some_and(|at| at <= now) {
                    slot.peer.handle_timeout(now);
                    slot.peer.pump(now);
                    self.mark(id);
                }
            }
            self.flush().await;

            let deadline = self
                .peers
                .iter()
                .filter_map(|s| s.wake)
                .min()
                .unwrap_or_else(|| Instant::now() + IDLE_WAKEUP);
            // Unbiased: tokio picks a ready branch at random, so neither datagrams nor
            // commands can starve the other or the timers.
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                readable = self.socket.readable() => match readable {
                    Ok(()) => self.read_datagrams(),
                    Err(e) => warn!("UDP socket: {e}"),
                },
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        for slot in &mut self.peers {
            if let Err(e) = slot.peer.pc.close() {
                debug!("closing peer: {e}");
            }
        }
        self.flush().await;
    }

    fn mark(&mut self, id: PeerId) {
        if !self.is_dirty[id] {
            self.is_dirty[id] = true;
            self.dirty.push(id);
        }
    }

    fn read_datagrams(&mut self) {
        for _ in 0..READ_BATCHES_PER_WAKE {
            let Self {
                socket,
                peers,
                routes,
                by_ufrag,
                dirty,
                is_dirty,
                ..
            } = self;
            let result = socket.recv_batch(|datagram| {
                let id = routes
                    .get(&(datagram.to, datagram.from))
                    .copied()
                    .or_else(|| {
                        let id = aula_sfu::demux::binding_request_ufrag(datagram.data)
                            .and_then(|ufrag| by_ufrag.get(ufrag).copied())?;
                        routes.insert((datagram.to, datagram.from), id);
                        Some(id)
                    });
                let Some(slot) = id.and_then(|id| peers.get_mut(id)) else {
                    return;
                };
                slot.peer
                    .handle_datagram(datagram.from, datagram.at, datagram.data);
                if let Some(id) = id
                    && !is_dirty[id]
                {
                    is_dirty[id] = true;
                    dirty.push(id);
                }
            });
            match result {
                Ok(0) => break,
                Ok(n) => {
                    self.progress
                        .datagrams_received
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    debug!("UDP receive: {e}");
                    break;
                }
            }
        }
    }

    /// Drains every dirty peer and sends what they queued.
    async fn flush(&mut self) {
        while let Some(id) = self.dirty.pop() {
            self.is_dirty[id] = false;
            let slot = &mut self.peers[id];
            let drained = slot
                .peer
                .drain(self.epoch, self.measuring, &mut self.latencies_us);
            if drained.failed {
                self.progress.failed_peers.fetch_add(1, Ordering::Relaxed);
            }
            if let Role::Subscriber(subscriber) = &slot.peer.role
                && subscriber.first_media.is_some()
                && !slot.counted_media
            {
                slot.counted_media = true;
                self.progress
                    .subscribers_with_media
                    .fetch_add(1, Ordering::Relaxed);
            }
            let local_ip = slot.peer.local.ip();
            while let Some(out) = slot.peer.pc.poll_write() {
                let to = out.transport.peer_addr;
                self.routes.entry((local_ip, to)).or_insert(id);
                self.transmits.push((local_ip, to, out.message));
            }
            slot.wake = slot.peer.next_wakeup();
        }
        for (from, to, data) in self.transmits.drain(..) {
            if let Err(e) = self.socket.send(from, to, &data).await {
                self.send_errors += 1;
                debug!(%from, %to, "UDP send: {e}");
            }
        }
    }

    fn add_slot(&mut self, peer: LightPeer) -> PeerId {
        let id = self.peers.len();
        self.by_ufrag.insert(peer.ufrag.clone(), id);
        self.peers.push(Slot {
            peer,
            wake: None,
            counted_media: false,
        });
        self.is_dirty.push(false);
        self.mark(id);
        id
    }

    fn handle_command(&mut self, command: ShardCommand) {
        let now = Instant::now();
        match command {
            ShardCommand::AddPublisher {
                plan,
                name,
                out,
                reply,
            } => {
                let local = self.socket.peer_addr(self.peers.len() as u32);
                let result = LightPeer::publisher(local, out, plan, self.epoch, &name, now)
                    .map(|(peer, sdp, tracks)| PublisherOffer {
                        peer: self.add_slot(peer),
                        sdp,
                        tracks,
                    })
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            ShardCommand::AddSubscriber {
                join_started,
                out,
                reply,
            } => {
                let local = self.socket.peer_addr(self.peers.len() as u32);
                let result =
                    LightPeer::subscriber(local, out, join_started, self.frame_interval, now)
                        .map(|peer| self.add_slot(peer))
                        .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            ShardCommand::RemoteDescription { peer, sdp } => {
                if let Some(slot) = self.peers.get_mut(peer) {
                    if let Err(e) = slot.peer.remote_description(sdp, now) {
                        warn!(local = %slot.peer.local, "remote description: {e}");
                    }
                    self.mark(peer);
                }
            }
            ShardCommand::RemoteCandidate { peer, candidate } => {
                if let Some(slot) = self.peers.get_mut(peer) {
                    if let Err(e) = slot.peer.remote_candidate(candidate) {
                        warn!(local = %slot.peer.local, "remote candidate: {e}");
                    }
                    self.mark(peer);
                }
            }
            ShardCommand::StartWindow => {
                self.measuring = true;
                self.latencies_us.clear();
                for slot in &mut self.peers {
                    if let Role::Subscriber(subscriber) = &mut slot.peer.role {
                        subscriber.reset_window(now);
                    }
                }
            }
            ShardCommand::Finish { reply } => {
                self.measuring = false;
                let _ = reply.send(self.report(now));
            }
        }
    }

    fn report(&mut self, now: Instant) -> ShardReport {
        let mut report = ShardReport {
            latencies_us: std::mem::take(&mut self.latencies_us),
            dropped_foreign: self.socket.dropped_foreign(),
            send_errors: self.send_errors,
            ..Default::default()
        };
        for slot in &self.peers {
            match &slot.peer.role {
                Role::Subscriber(s) => {
                    let jitter = |kind: TrackKind| {
                        s.streams
                            .values()
                            .filter(|st| st.kind == kind)
                            .map(|st| st.jitter.millis())
                            .collect()
                    };
                    let packets = |kind: TrackKind| {
                        s.streams
                            .values()
                            .filter(|st| st.kind == kind)
                            .fold((0, 0), |(e, r), st| {
                                (e + st.seq.expected(), r + st.seq.received())
                            })
                    };
                    let frames: Vec<_> = s
                        .streams
                        .values()
                        .filter_map(|st| Some(st.frames.as_ref()?.stats(now)))
                        .collect();
                    report.subscribers.push(SubscriberResult {
                        audio_packets: packets(TrackKind::Audio),
                        video_packets: packets(TrackKind::Video),
                        first_frame: s
                            .first_frame()
                            .map(|at| at.saturating_duration_since(s.join_started)),
                        video_streams: frames.len(),
                        frames_rendered: frames.iter().map(|f| f.rendered).sum(),
                        frozen: frames.iter().map(|f| f.frozen).sum(),
                        freezes: frames.iter().map(|f| f.freezes).sum(),
                        keyframe_requests_sent: frames.iter().map(|f| f.keyframe_requests).sum(),
                        join_time: s
                            .first_media
                            .map(|at| at.saturating_duration_since(s.join_started)),
                        connected: slot.peer.connected,
                        expected: s.streams.values().map(|st| st.seq.expected()).sum(),
                        received: s.streams.values().map(|st| st.seq.received()).sum(),
                        duplicates: s.streams.values().map(|st| st.seq.duplicates()).sum(),
                        bytes: s.streams.values().map(|st| st.bytes).sum(),
                        unstamped: s.unstamped,
                        audio_jitter_ms: jitter(TrackKind::Audio),
                        video_jitter_ms: jitter(TrackKind::Video),
                    });
                }
                Role::Publisher(p) => report.publishers.push(PublisherResult {
                    packets_sent: p.packets_sent,
                    send_errors: p.send_errors,
                    keyframe_requests: p.keyframe_requests,
                }),
            }
        }
        report
    }
}
