//! The SFU's state machine: every peer connection, published track (producer) and subscription
//! (consumer), with no I/O. The worker feeds it datagrams, commands and the time, and sends
//! what it queues ([`Router::poll_transmit`], [`Router::poll_event`]).
//!
//! Object model (mediasoup's names): a participant has up to two peers (publish, subscribe);
//! a [`Producer`] is one published track with its simulcast layers; a [`Consumer`] is one
//! subscriber's copy of a producer, with its own [`Forwarder`] and outgoing SSRC.
//!
//! This file holds the types, the I/O entry points and the loop that drives the peers; the
//! rest of `impl Router` is split by role: `peers` (connections, ICE, their events),
//! `negotiation` (offers and answers), `tracks` (producers and consumers), `forwarding` (the
//! media path and keyframe requests), `allocation` (bandwidth per subscriber), `stats`
//! (gauges, connection quality, QoS samples), `recording` and `relay` (tracks between nodes).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_protocol::{PeerTarget, TrackKind, TrackSource};
use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tracing::{debug, warn};

use crate::api::{ParticipantId, RenderedSize, SfuEvent, SfuStats, TrackSid};
use crate::bwe::SharedEstimate;
use crate::codec::VideoCodec;
use crate::demux;
use crate::drop_log::DropLog;
use crate::fec::Protection;
use crate::forward::Forwarder;
use crate::forward::condition::PathJudge;
use crate::forward::quality::Step;
use crate::forward::rates::LayerRates;
use crate::forward::selector::Selector;
use crate::forward::simulcast::{Layer, LayerActivity};
use crate::forward::temporal::ALL_TEMPORAL_LAYERS;
use crate::host::HostAddrs;
use crate::metrics::SfuMetrics;
use crate::peer;
use crate::qos::{self, FeedbackCounts};
use crate::quality::{self, ConnectionQuality};
use crate::record::capture::{Captures, TrackMeta};
use crate::red;
use crate::sender_clock::SenderClock;
use crate::shard::directory::Directory;

mod allocation;
mod forwarding;
mod negotiation;
mod peers;
mod recording;
mod relay;
mod sender_reports;
mod stats;
mod tracks;

pub use relay::RelayTransmit;

/// How often keyframe requests for waiting consumers are (re)considered.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(100);
/// How long a subscribe connection's changes are collected before one offer carries them all.
/// A participant joining a class is subscribed to every track in a burst of commands; without
/// this, each would cost its own offer/answer round trip before media could start.
const OFFER_DEBOUNCE: Duration = Duration::from_millis(15);
/// How often subscribers' receiver reports are sampled into the metrics.
const PEER_STATS_INTERVAL: Duration = Duration::from_secs(5);
/// Nothing from a peer for this long when ICE calls its path disconnected is an outage: a
/// receiver's feedback comes every 50-100 ms, so even at 50 % loss some of it comes in a
/// second (10 lost in a row: 1 time in 1,000), while a cut path has been silent for the
/// seconds ICE takes to call it.
const OUTAGE_SILENCE: Duration = Duration::from_secs(1);

/// Bytes a forwarded packet costs beyond its payload: the RTP header with our extensions and
/// the SRTP tag. Layer rates include it, so they compare with the estimate (and `red::cost`
/// takes it out again, to repeat the payload only).
pub(crate) const PACKET_OVERHEAD: usize = 40;

type PeerKey = u64;

struct Peer {
    pc: RTCPeerConnection,
    participant: ParticipantId,
    target: PeerTarget,
    ufrag: String,
    /// The local ICE password: the key of the integrity check that binds a new address.
    pwd: String,
    addrs: Vec<SocketAddr>,
    connected: bool,
    /// Cached `pc.poll_timeout()`, refreshed whenever the peer was driven.
    deadline: Option<Instant>,
    /// In `Router::dirty`, waiting to be driven.
    queued: bool,
    /// Publish side: cumulative (received, lost) of inbound streams at the last sample, to
    /// turn `rtc`'s running totals into the loss of the last interval.
    inbound_totals: HashMap<u32, (u64, i64)>,
    /// Publish side: what the client said each msid track is, and which are simulcast.
    announced: HashMap<String, TrackSource>,
    simulcast_ids: HashSet<String>,
    /// Publish side: msid track id -> producer.
    producers: HashMap<String, TrackSid>,
    /// Subscribe side: an offer is out and unanswered.
    awaiting_answer: bool,
    /// Subscribe side: when to send the next offer (see [`OFFER_DEBOUNCE`]).
    offer_due: Option<Instant>,
    /// Subscribe side: the bandwidth estimate of the path to the subscriber.
    estimate: Option<SharedEstimate>,
    /// Subscribe side: how much the path loses at random, and so which video it gets.
    path: PathJudge,
    connected_at: Option<Instant>,
    /// ICE called the connection disconnected while nothing had come from the peer for
    /// [`OUTAGE_SILENCE`]: an outage, whose end (connected again) asks for keyframes.
    outage: bool,
    /// Subscribe side: when keyframes were last asked for because the path came back.
    returned_at: Option<Instant>,
    /// The NACKs and keyframe requests the connection's tap counted, for the QoS samples.
    feedback: Arc<FeedbackCounts>,
}

#[derive(Default)]
struct Participant {
    publish: Option<PeerKey>,
    subscribe: Option<PeerKey>,
    subscriptions: HashSet<TrackSid>,
    /// Last level told to the control plane.
    quality: Option<ConnectionQuality>,
    /// The last connection quality report sent out (see [`quality::worth_telling`]).
    told: Option<quality::LinkReport>,
    /// A teacher or assistant: their camera comes before other cameras in allocation.
    staff: bool,
}

/// Where a producer's packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// A publisher's peer connection here.
    Peer {
        key: PeerKey,
        receiver_id: RTCRtpReceiverId,
    },
    /// Another node, over a relay link (see [`relay`]).
    Relay,
}

struct Producer {
    sid: TrackSid,
    participant: ParticipantId,
    upstream: Upstream,
    kind: TrackKind,
    source: TrackSource,
    codec: RTCRtpCodec,
    payload_type: u8,
    /// The payload type the publisher negotiated for RED, if any.
    red_payload_type: Option<u8>,
    video: Option<VideoCodec>,
    /// SSRC -> layer, learnt from the RID of each stream as it starts.
    layers: HashMap<u32, Layer>,
    activity: LayerActivity,
    rates: LayerRates,
    /// Picture size of each layer, from its last keyframe (VP8 only).
    sizes: Vec<Option<(u32, u32)>>,
    last_pli: HashMap<Layer, Instant>,
    consumers: HashMap<ParticipantId, Consumer>,
    /// Muted by a moderator: nothing is forwarded until resumed.
    paused: bool,
    /// The negotiated RTP header extensions (id, URI), for a recording's log header.
    extmaps: Vec<(u8, String)>,
    /// Nodes this track is sent to, each once whatever its subscribers there (see [`relay`]).
    exports: Vec<relay::Export>,
    /// Exported: the last packets, for resending what a link lost.
    relay_history: crate::relay::repair::History,
    /// Imported: the gaps in what the link delivered, to ask for again.
    relay_gaps: crate::relay::repair::Gaps,
    /// Imported: the layers last asked of the exporting node (see
    /// [`relay::demanded_layers`]).
    relay_demand: Option<Vec<Layer>>,
    /// Imported audio: the worst loss among listeners without RED here and beyond, as last
    /// told to the exporting node (in 256ths; see `Router::report_listeners_loss`).
    relay_listener_loss: u8,
    /// Per layer, the publisher's clock from its latest sender report, in its own timestamps
    /// (see `sender_clock`).
    clocks: Vec<Option<SenderClock>>,
}

impl Producer {
    /// What a recording writes in the track's log header.
    fn capture_meta(&self) -> TrackMeta {
        let ssrc = self
            .layers
            .iter()
            .min_by_key(|(_, layer)| **layer)
            .map_or(0, |(ssrc, _)| *ssrc);
        TrackMeta {
            sid: self.sid.clone(),
            participant: self.participant.clone(),
            source: self.source,
            codec_mime: self.codec.mime_type.clone(),
            clock_rate: self.codec.clock_rate,
            fmtp: self.codec.sdp_fmtp_line.clone(),
            extmaps: self.extmaps.clone(),
            ssrc,
            video: self.kind == TrackKind::Video,
        }
    }
}

struct Consumer {
    peer: PeerKey,
    sender_id: RTCRtpSenderId,
    ssrc: u32,
    stage: ConsumerStage,
    forwarder: Forwarder,
    /// How large the subscriber shows this track, if it said.
    rendered: Option<RenderedSize>,
    /// The highest step (layer and frame rate) the subscriber's bandwidth allows (`None`:
    /// paused).
    selector: Selector,
    /// Audio sent as RED: the frames to repeat.
    red_encoder: red::Encoder,
    /// Video FEC: how much, by the subscriber's loss, and how many packets of the current
    /// frame went out wrapped for it (see `fec`).
    fec: Protection,
    fec_frame: usize,
    /// The subscriber was told this video is paused for its link ([`SfuEvent::StreamState`]).
    told_paused: bool,
}

impl Consumer {
    /// The highest step to forward now; `None` pauses: the subscriber does not show the video
    /// (a zero rendered size), or its bandwidth does not allow even the lowest step.
    fn wanted(&self) -> Option<Step> {
        if self.hidden() {
            return None;
        }
        self.selector.allowed()
    }

    /// Points the forwarder at the layer to forward now: the best layer the publisher is
    /// sending at or below [`Self::wanted`]'s, at its frame rate; a lower layer (the wanted
    /// one stopped) costs less, and gets every frame.
    fn retarget(&mut self, activity: &LayerActivity) {
        let wanted = self
            .wanted()
            .map(|step| self.selector.ladder().quality(step));
        let target = wanted.and_then(|quality| activity.best(quality.spatial));
        let temporal = match (wanted, target) {
            (Some(quality), Some(layer)) if layer < quality.spatial => ALL_TEMPORAL_LAYERS,
            (Some(quality), _) => quality.temporal,
            (None, _) => ALL_TEMPORAL_LAYERS,
        };
        self.forwarder.set_target(target);
        self.forwarder.set_temporal_target(temporal);
    }

    /// The subscriber said it does not show this video (a zero rendered size).
    fn hidden(&self) -> bool {
        self.rendered.is_some_and(|r| r.width == 0 || r.height == 0)
    }
}

/// A consumer forwards only once the subscriber has accepted its sender in an answer and its
/// connection is up; before that, packets (and the keyframe they may start with) would be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsumerStage {
    /// Added to the subscribe connection; not yet in an offer.
    Added,
    /// In the offer waiting for an answer.
    Offered,
    /// Answered; waiting for the connection.
    Negotiated,
    /// Forwarding with the payload type the subscriber negotiated, as RED with the RED
    /// payload type if it negotiated RED for this (Opus) track; `fec`: it negotiated video
    /// RED and ULPFEC with Aula's payload types, so its video can be protected (see `fec`).
    Live {
        payload_type: u8,
        red: Option<u8>,
        fec: bool,
    },
}

/// See the module docs.
pub struct Router {
    hosts: HostAddrs,
    host_candidates: Vec<RTCIceCandidateInit>,
    /// Boxed: a peer (its `rtc` connection inline) is 8.9 KB, and the map's spare capacity
    /// (up to as many empty slots as peers) would hold that much per empty slot (issue 15).
    peers: HashMap<PeerKey, Box<Peer>>,
    next_key: PeerKey,
    by_ufrag: HashMap<String, PeerKey>,
    by_addr: HashMap<SocketAddr, PeerKey>,
    participants: HashMap<ParticipantId, Participant>,
    producers: HashMap<TrackSid, Producer>,
    /// Peers with output or events to collect.
    dirty: VecDeque<PeerKey>,
    transmits: VecDeque<Transmit>,
    /// Packets for other nodes (see [`relay`]).
    relay_transmits: VecDeque<relay::RelayTransmit>,
    events: VecDeque<SfuEvent>,
    next_housekeeping: Instant,
    next_peer_stats: Instant,
    unroutable_log: DropLog,
    metrics: SfuMetrics,
    /// Copies handed to subscriber connections by this router: the worker's signal that a
    /// datagram was forwarded (the metric counts every shard's).
    forwarded: u64,
    /// Recordings in progress (see [`crate::record::capture`]).
    captures: Captures,
    /// QoS samples of recorded participants (see [`crate::qos`]).
    qos: qos::Sampler,
    next_qos_sample: Instant,
    /// The shard this router is, when the SFU runs several (see [`crate::shard`]).
    seat: Option<Seat>,
}

/// A router's place in a set of shards: its number, and the directory it keeps its routes
/// in for the receive thread.
pub struct Seat {
    pub index: usize,
    pub directory: Arc<Directory>,
}

/// A datagram for the worker to send: from which of our addresses, to whom.
#[derive(Debug)]
pub struct Transmit {
    pub from: IpAddr,
    pub to: SocketAddr,
    pub data: BytesMut,
}

impl Transmit {
    fn of(hosts: &HostAddrs, out: TaggedBytesMut) -> Self {
        Self {
            from: hosts.source_for(out.transport.local_addr),
            to: out.transport.peer_addr,
            data: out.message,
        }
    }
}

impl Router {
    /// `advertised` are the addresses (with the socket's port) put into host candidates.
    pub fn new(advertised: &[SocketAddr], metrics: SfuMetrics, now: Instant) -> Self {
        let host_candidates = advertised
            .iter()
            .filter_map(|addr| match peer::host_candidate(*addr) {
                Ok(candidate) => Some(candidate),
                Err(e) => {
                    warn!(%addr, error = %e, "cannot advertise address");
                    None
                }
            })
            .collect();
        Self {
            hosts: HostAddrs::new(advertised.to_vec()),
            host_candidates,
            peers: HashMap::new(),
            next_key: 1,
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            participants: HashMap::new(),
            producers: HashMap::new(),
            dirty: VecDeque::new(),
            transmits: VecDeque::new(),
            relay_transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_housekeeping: now,
            next_peer_stats: now + PEER_STATS_INTERVAL,
            unroutable_log: DropLog::default(),
            metrics,
            forwarded: 0,
            captures: Captures::default(),
            qos: qos::Sampler::default(),
            next_qos_sample: now,
            seat: None,
        }
    }

    /// This router as shard `seat.index` of several: its STUN routes are mirrored in the
    /// seat's directory.
    pub fn seated(mut self, seat: Seat) -> Self {
        self.seat = Some(seat);
        self
    }

    fn unroute_addr(&mut self, addr: SocketAddr, key: PeerKey) {
        if self.by_addr.get(&addr) == Some(&key) {
            self.by_addr.remove(&addr);
            if let Some(seat) = &self.seat {
                seat.directory.unbind_addr(addr, seat.index);
            }
        }
    }

    /// Routes binding requests naming `ufrag` to peer `key`.
    fn route_ufrag(&mut self, ufrag: &str, key: PeerKey) {
        self.by_ufrag.insert(ufrag.to_owned(), key);
        if let Some(seat) = &self.seat {
            seat.directory.bind_ufrag(ufrag, seat.index);
        }
    }

    fn unroute_ufrag(&mut self, ufrag: &str) {
        if self.by_ufrag.remove(ufrag).is_some()
            && let Some(seat) = &self.seat
        {
            seat.directory.unbind_ufrag(ufrag, seat.index);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// When [`Router::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        self.peers
            .values()
            .flat_map(|p| [p.deadline, p.offer_due.filter(|_| !p.awaiting_answer)])
            .flatten()
            .fold(self.next_housekeeping, Instant::min)
    }

    /// Copies this router has handed to subscriber connections so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }

    pub fn metrics(&self) -> &SfuMetrics {
        &self.metrics
    }

    pub fn stats(&self) -> SfuStats {
        SfuStats {
            peers: self.peers.len(),
            producers: self.producers.len(),
            consumers: self.producers.values().map(|p| p.consumers.len()).sum(),
            rtp_packets_in: self.metrics.rtp_packets_received.get(),
            rtp_packets_out: self.metrics.packets_forwarded.get(),
            unroutable_datagrams: self.metrics.udp_unroutable.get(),
            send_errors: self.metrics.udp_send_errors.get(),
        }
    }

    /// One datagram from the shared socket, sent by `from` to our address `local`. Datagrams
    /// that belong to no peer are counted and dropped (and summarized in the log now and
    /// then); a peer that fails to parse one logs it and carries on. A source address is bound
    /// to a peer only by a binding request that passes the peer's integrity check (see
    /// [`demux`]).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        let Some(candidate) = self.hosts.candidate_for(local) else {
            self.unroutable(now, from, "sent to an address the SFU does not advertise");
            return;
        };
        let by_ufrag =
            demux::binding_request_ufrag(data).and_then(|u| self.by_ufrag.get(u).copied());
        let bound = self.by_addr.get(&from).copied();
        let Some(key) = by_ufrag.or(bound) else {
            self.unroutable(now, from, "from an unknown address");
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            self.unroutable(now, from, "for a closed connection");
            return;
        };
        if bound != Some(key) {
            // Only a binding request gets here (by its ufrag) from an address not yet the peer's.
            if !demux::binding_request_authentic(data, &peer.pwd) {
                self.metrics.stun_rejected.inc();
                self.unroutable(now, from, "binding request failed its integrity check");
                return;
            }
            peer.addrs.push(from);
            // Mirrored for the receive thread, as `unroute_addr` undoes.
            self.by_addr.insert(from, key);
            if let Some(seat) = &self.seat {
                seat.directory.bind_addr(from, seat.index);
            }
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: candidate,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = peer.pc.handle_read(msg) {
            debug!(participant = %peer.participant, %from, error = %e, "datagram rejected");
        }
        self.mark(key);
        self.drive(now);
    }

    /// Counts a dropped datagram; logs a summary at most every [`crate::drop_log::INTERVAL`], so
    /// that a flood of garbage costs a log line, not one per datagram.
    fn unroutable(&mut self, now: Instant, from: SocketAddr, why: &'static str) {
        self.metrics.udp_unroutable.inc();
        self.unroutable_log.count(now, from, why);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        let offers_due: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.awaiting_answer && p.offer_due.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in offers_due {
            self.send_offer(now, key);
        }
        for key in due {
            if let Some(peer) = self.peers.get_mut(&key) {
                if let Err(e) = peer.pc.handle_timeout(now) {
                    debug!(participant = %peer.participant, error = %e, "timeout handling failed");
                }
                self.mark(key);
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            self.allocate_bandwidth(now);
            self.update_relay_demands();
            self.keyframes_after_outages(now);
            self.request_keyframes(now);
            self.update_gauges();
            for (recording, track_sid, error) in self.captures.take_failures() {
                self.events.push_back(SfuEvent::RecordingFailed {
                    recording,
                    track_sid,
                    error,
                });
            }
        }
        if now >= self.next_peer_stats {
            self.next_peer_stats = now + PEER_STATS_INTERVAL;
            self.sample_peer_stats(now);
        }
        if now >= self.next_qos_sample {
            self.next_qos_sample = now + qos::SAMPLE_INTERVAL;
            self.sample_qos(now);
        }
        self.drive(now);
    }

    /// Queues a peer for [`Router::drive`] once. A flag on the peer, not a scan of the queue:
    /// forwarding one packet marks every subscriber, so a scan made fan-out quadratic.
    fn mark(&mut self, key: PeerKey) {
        if let Some(peer) = self.peers.get_mut(&key)
            && !peer.queued
        {
            peer.queued = true;
            self.dirty.push_back(key);
        }
    }

    /// Collects output, events and media from every peer that had input, until quiet.
    /// Forwarding media marks subscriber peers, whose keyframe requests mark publisher peers;
    /// each round drains queues, so this ends.
    fn drive(&mut self, now: Instant) {
        while let Some(key) = self.dirty.pop_front() {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            peer.queued = false;
            while let Some(out) = peer.pc.poll_write() {
                self.transmits.push_back(Transmit::of(&self.hosts, out));
            }
            let mut events = Vec::new();
            while let Some(event) = peer.pc.poll_event() {
                events.push(event);
            }
            let mut messages = Vec::new();
            while let Some(msg) = peer.pc.poll_read() {
                messages.push(msg.message);
            }
            peer.deadline = peer.pc.poll_timeout();
            for event in events {
                self.handle_peer_event(now, key, event);
            }
            for message in messages {
                self.handle_peer_message(now, key, message);
            }
            // Events and media may have queued more output on this very peer.
            if let Some(peer) = self.peers.get_mut(&key) {
                while let Some(out) = peer.pc.poll_write() {
                    self.transmits.push_back(Transmit::of(&self.hosts, out));
                }
                peer.deadline = peer.pc.poll_timeout();
            }
        }
    }
}
