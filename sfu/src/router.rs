//! The SFU's state machine: every peer connection, published track (producer) and subscription
//! (consumer), with no I/O. The worker feeds it datagrams, commands and the time, and sends
//! what it queues ([`Router::poll_transmit`], [`Router::poll_event`]).
//!
//! Object model (mediasoup's names): a participant has up to two peers (publish, subscribe);
//! a [`Producer`] is one published track with its simulcast layers; a [`Consumer`] is one
//! subscriber's copy of a producer, with its own [`Forwarder`] and outgoing SSRC.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aula_protocol::{IceCandidate, PeerTarget, TrackAnnouncement, TrackKind, TrackSource};
use bytes::{Bytes, BytesMut};
use rand::Rng;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_ULP_FEC};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use rtc::statistics::stats::rtp_stream::RTCRtpStreamStats;
use tracing::{debug, info, warn};

use crate::api::{
    ParticipantId, PeerState, PublishedTrack, RenderedSize, SfuError, SfuEvent, SfuStats, TrackSid,
};
use crate::bwe::{self, SharedEstimate};
use crate::codec::{VideoCodec, Vp8Numbers, Vp8Temporal};
use crate::demux;
use crate::drop_log::DropLog;
use crate::fec::{self, Protection};
use crate::forward::allocate::{Demand, Priority, allocate};
use crate::forward::condition::{PathCondition, PathJudge};
use crate::forward::quality::{Ladder, Step};
use crate::forward::rates::LayerRates;
use crate::forward::selector::{self, Selector};
use crate::forward::simulcast::{Layer, LayerActivity, layer_for_size, rid_rank};
use crate::forward::temporal::ALL_TEMPORAL_LAYERS;
use crate::forward::{Decision, Forwarder, PacketMeta};
use crate::host::HostAddrs;
use crate::metrics::SfuMetrics;
use crate::peer;
use crate::qos::{self, FeedbackCounts, LayerChange, LayerReason, LinkState, Totals};
use crate::quality::{self, ConnectionQuality, LinkSample};
use crate::record::capture::{Captures, RecordingSpec, TrackLog, TrackMeta};
use crate::record::format::Marker;
use crate::red;

mod relay;
use crate::sdp::{
    ice_credentials, keep_simulcast_receivers, sending_track_ids, simulcast_track_ids, track_kinds,
    unreceivable_media,
};
use crate::tap::is_keyframe_request;
pub use relay::RelayTransmit;

/// How often keyframe requests for waiting consumers are (re)considered.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(100);
/// How long a subscribe connection's changes are collected before one offer carries them all.
/// A participant joining a class is subscribed to every track in a burst of commands; without
/// this, each would cost its own offer/answer round trip before media could start.
const OFFER_DEBOUNCE: Duration = Duration::from_millis(15);
/// How often subscribers' receiver reports are sampled into the metrics.
const PEER_STATS_INTERVAL: Duration = Duration::from_secs(5);
/// At most one PLI per layer per this interval, so a crowd of joining subscribers (or a
/// subscriber whose decoder keeps complaining) cannot make the publisher send only keyframes.
const PLI_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Bytes a forwarded packet costs beyond its payload: the RTP header with our extensions and
/// the SRTP tag. Layer rates include it, so they compare with the estimate (and `red::cost`
/// takes it out again, to repeat the payload only).
pub(crate) const PACKET_OVERHEAD: usize = 40;
/// A subscriber whose connection has been up this long without any congestion feedback (no
/// TWCC, no REMB) is not estimating: it gets the best layers, as it would from an SFU
/// without congestion control.
const FEEDBACK_GRACE: Duration = Duration::from_secs(3);
/// Bitrates assumed for a layer before a whole window of it has been measured.
const ASSUMED_AUDIO_RATE: f64 = 40_000.0;
const ASSUMED_VIDEO_RATES: [f64; 3] = [150_000.0, 500_000.0, 1_500_000.0];

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
    /// Recordings in progress (see [`crate::record::capture`]).
    captures: Captures,
    /// QoS samples of recorded participants (see [`crate::qos`]).
    qos: qos::Sampler,
    next_qos_sample: Instant,
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
            captures: Captures::default(),
            qos: qos::Sampler::default(),
            next_qos_sample: now,
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
            self.by_addr.insert(from, key);
            peer.addrs.push(from);
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

    // ---- commands -------------------------------------------------------------------------

    pub fn publish_offer(
        &mut self,
        now: Instant,
        participant: &str,
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    ) -> Result<String, SfuError> {
        let offer = RTCSessionDescription::offer(sdp.clone())
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let (key, created) = match self.participants.get(participant).and_then(|p| p.publish) {
            Some(key) => (key, false),
            None => (
                self.create_peer(now, participant, PeerTarget::Publish)?,
                true,
            ),
        };
        let result = self.apply_publish_offer(now, key, offer, &sdp, tracks);
        if let Err(e) = &result {
            if let SfuError::UnsupportedCodec(what) = e {
                info!(%participant, "publish offer refused: no codec we can receive: {what}");
            }
            if created {
                self.close_peer(key);
            } else if let Some(peer) = self.peers.get_mut(&key) {
                // Back to the last agreed state, so the publisher's next offer is accepted (in
                // `have-remote-offer` it would be refused). Fails harmlessly if the offer was
                // never applied.
                if let Ok(rollback) = RTCSessionDescription::rollback(None) {
                    let _ = peer.pc.set_remote_description(now, rollback);
                }
            }
        }
        self.drive(now);
        result
    }

    fn apply_publish_offer(
        &mut self,
        now: Instant,
        key: PeerKey,
        offer: RTCSessionDescription,
        sdp: &str,
        tracks: Vec<TrackAnnouncement>,
    ) -> Result<String, SfuError> {
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        check_announced_kinds(sdp, &tracks, &peer.announced)?;
        // A renegotiation must not make `rtc` forget the layers of a simulcast track it
        // already receives (see `keep_simulcast_receivers`).
        let offer = match keep_simulcast_receivers(sdp, |id| peer.producers.contains_key(id)) {
            Some(kept) => {
                RTCSessionDescription::offer(kept).map_err(|e| SfuError::BadSdp(e.to_string()))?
            }
            None => offer,
        };
        peer.pc
            .set_remote_description(now, offer)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let answer = peer
            .pc
            .create_answer(None)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let unreceivable = unreceivable_media(sdp, &answer.sdp);
        if !unreceivable.is_empty() {
            return Err(SfuError::UnsupportedCodec(unreceivable.join("; ")));
        }
        peer.announced
            .extend(tracks.into_iter().map(|t| (t.track_id, t.source)));
        peer.simulcast_ids = simulcast_track_ids(sdp);
        let sending = sending_track_ids(sdp);
        let stopped: Vec<TrackSid> = peer
            .producers
            .iter()
            .filter(|(track_id, _)| !sending.contains(*track_id))
            .map(|(_, sid)| sid.clone())
            .collect();
        peer.pc
            .set_local_description(now, answer)
            .map_err(|e| match e {
                // `rtc` tells a section's track by its `a=ssrc` lines (or `a=rid` layers), or
                // by being the offer's only audio or video section.
                rtc::shared::error::Error::ErrRTPReceiverForSSRCTrackStreamNotFound => {
                    SfuError::BadSdp(
                        "a sending m-section has no a=ssrc lines (nor a=rid layers); they are \
                         needed when the offer has more than one audio or video section"
                            .into(),
                    )
                }
                e => SfuError::Internal(e.to_string()),
            })?;
        self.refresh_ufrag(key);
        self.mark(key);
        // The publisher stopped these tracks (removed, or the transceiver stopped).
        for sid in stopped {
            info!(track = %sid, "publisher stopped sending the track");
            self.unpublish(now, &sid);
        }
        let peer = &self.peers[&key];
        peer.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| SfuError::Internal("no local description after answering".into()))
    }

    pub fn subscribe_answer(
        &mut self,
        now: Instant,
        participant: &str,
        sdp: String,
    ) -> Result<(), SfuError> {
        let key = self.peer_of(participant, PeerTarget::Subscribe)?;
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        if !peer.awaiting_answer {
            return Err(SfuError::BadSdp(
                "no subscribe offer is waiting for an answer".into(),
            ));
        }
        peer.pc
            .set_remote_description(now, answer)
            .map_err(|e| SfuError::BadSdp(e.to_string()))?;
        // Changes made meanwhile (`offer_due`) go out from the next `handle_timeout`.
        peer.awaiting_answer = false;
        self.mark(key);
        self.advance_consumers(
            participant,
            ConsumerStage::Offered,
            ConsumerStage::Negotiated,
        );
        self.start_consumers(now, participant);
        self.drive(now);
        Ok(())
    }

    pub fn add_candidate(
        &mut self,
        now: Instant,
        participant: &str,
        target: PeerTarget,
        candidate: IceCandidate,
    ) -> Result<(), SfuError> {
        let key = self.peer_of(participant, target)?;
        // mDNS names (`*.local`) cannot be resolved here; the browser's connectivity checks
        // reach us anyway and ICE learns its address as a peer-reflexive candidate.
        if candidate.candidate.contains(".local ") || candidate.candidate.is_empty() {
            return Ok(());
        }
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        peer.pc
            .add_remote_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_m_line_index,
                username_fragment: candidate.username_fragment,
                ..Default::default()
            })
            .map_err(|e| SfuError::BadCandidate(e.to_string()))?;
        self.mark(key);
        self.drive(now);
        Ok(())
    }

    pub fn subscribe(
        &mut self,
        now: Instant,
        participant: &str,
        track_sid: &str,
    ) -> Result<(), SfuError> {
        let producer = self
            .producers
            .get(track_sid)
            .ok_or_else(|| SfuError::UnknownTrack(track_sid.to_owned()))?;
        if producer.participant == participant
            || self
                .participants
                .get(participant)
                .is_some_and(|p| p.subscriptions.contains(track_sid))
        {
            return Ok(());
        }
        let (codec, kind) = (producer.codec.clone(), producer.kind);
        let key = match self.participants.get(participant).and_then(|p| p.subscribe) {
            Some(key) => key,
            None => self.create_peer(now, participant, PeerTarget::Subscribe)?,
        };
        let ssrc = rand::rng().random::<u32>();
        let track = MediaStreamTrack::new(
            track_sid.to_owned(),
            track_sid.to_owned(),
            track_sid.to_owned(),
            match kind {
                TrackKind::Audio => RtpCodecKind::Audio,
                TrackKind::Video => RtpCodecKind::Video,
            },
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec: codec.clone(),
                ..Default::default()
            }],
        );
        let peer = self
            .peers
            .get_mut(&key)
            .ok_or(SfuError::UnknownParticipant)?;
        let sender_id = peer
            .pc
            .add_track(track)
            .map_err(|e| SfuError::Internal(e.to_string()))?;
        if let Some(producer) = self.producers.get_mut(track_sid) {
            producer.consumers.insert(
                participant.to_owned(),
                Consumer {
                    peer: key,
                    sender_id,
                    ssrc,
                    stage: ConsumerStage::Added,
                    forwarder: Forwarder::new(codec.clock_rate),
                    rendered: None,
                    selector: Selector::new(match kind {
                        TrackKind::Audio => Ladder::SINGLE,
                        TrackKind::Video => Ladder::VIDEO,
                    }),
                    red_encoder: red::Encoder::default(),
                    fec: Protection::OFF,
                    fec_frame: 0,
                    told_paused: false,
                },
            );
        }
        self.participants
            .entry(participant.to_owned())
            .or_default()
            .subscriptions
            .insert(track_sid.to_owned());
        self.schedule_offer(now, key);
        self.drive(now);
        Ok(())
    }

    pub fn unsubscribe(
        &mut self,
        now: Instant,
        participant: &str,
        track_sid: &str,
    ) -> Result<(), SfuError> {
        if let Some(key) = self.detach_consumer(participant, track_sid) {
            self.schedule_offer(now, key);
        }
        self.drive(now);
        Ok(())
    }

    /// Stops a published track at once (e.g. publish permission revoked): its consumers are
    /// removed and further packets of it are ignored.
    pub fn unpublish_track(&mut self, now: Instant, track_sid: &str) -> Result<(), SfuError> {
        if !self.producers.contains_key(track_sid) {
            return Err(SfuError::UnknownTrack(track_sid.to_owned()));
        }
        self.unpublish(now, track_sid);
        self.drive(now);
        Ok(())
    }

    /// Pauses or resumes forwarding of a track (a moderator's mute). Resumed video restarts
    /// every consumer on a fresh keyframe, which is requested at once.
    pub fn set_track_paused(
        &mut self,
        now: Instant,
        track_sid: &str,
        paused: bool,
    ) -> Result<(), SfuError> {
        let producer = self
            .producers
            .get_mut(track_sid)
            .ok_or_else(|| SfuError::UnknownTrack(track_sid.to_owned()))?;
        if producer.paused && !paused {
            for consumer in producer.consumers.values_mut() {
                consumer.forwarder.restart();
            }
            self.next_housekeeping = now;
        }
        if producer.paused != paused {
            self.captures.marker(now, track_sid, Marker::Muted(paused));
        }
        producer.paused = paused;
        Ok(())
    }

    /// The publisher muted or unmuted its own track: recordings note it in the track's log.
    pub fn note_self_muted(&mut self, now: Instant, track_sid: &str, muted: bool) {
        self.captures
            .marker(now, track_sid, Marker::SelfMuted(muted));
    }

    /// Staff (teachers, assistants) cameras come before other cameras in every subscriber's
    /// allocation.
    pub fn set_staff(&mut self, participant: &str, staff: bool) {
        self.participants
            .entry(participant.to_owned())
            .or_default()
            .staff = staff;
    }

    /// Records how large the subscriber shows a video track; the allocator forwards no larger a
    /// layer than that size needs, and pauses the video while it is not shown (zero size).
    pub fn set_rendered_size(
        &mut self,
        participant: &str,
        track_sid: &str,
        size: Option<RenderedSize>,
    ) -> Result<(), SfuError> {
        let consumer = self
            .producers
            .get_mut(track_sid)
            .and_then(|p| p.consumers.get_mut(participant))
            .ok_or_else(|| SfuError::UnknownTrack(track_sid.to_owned()))?;
        consumer.rendered = size;
        Ok(())
    }

    /// The remote addresses of the participant's connections (both directions), e.g. for a
    /// test's impairment of one participant's link.
    pub fn participant_addrs(&self, participant: &str) -> Vec<SocketAddr> {
        let Some(state) = self.participants.get(participant) else {
            return Vec::new();
        };
        [state.publish, state.subscribe]
            .into_iter()
            .flatten()
            .filter_map(|key| self.peers.get(&key))
            .flat_map(|peer| peer.addrs.iter().copied())
            .collect()
    }

    /// Restarts ICE on the participant's subscribe connection (after it reconnected from a new
    /// network): a new offer with fresh credentials follows.
    pub fn restart_ice(&mut self, now: Instant, participant: &str) -> Result<(), SfuError> {
        let key = self.peer_of(participant, PeerTarget::Subscribe)?;
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.pc.restart_ice();
        }
        self.schedule_offer(now, key);
        Ok(())
    }

    pub fn remove_participant(&mut self, now: Instant, participant: &str) {
        let Some(state) = self.participants.remove(participant) else {
            return;
        };
        let published: Vec<TrackSid> = self
            .producers
            .values()
            .filter(|p| p.participant == participant)
            .map(|p| p.sid.clone())
            .collect();
        for sid in published {
            self.unpublish(now, &sid);
        }
        self.captures.participant_left(participant);
        for sid in &state.subscriptions {
            if let Some(producer) = self.producers.get_mut(sid) {
                producer.consumers.remove(participant);
            }
        }
        for key in [state.publish, state.subscribe].into_iter().flatten() {
            self.close_peer(key);
        }
        info!(%participant, "participant removed from the media plane");
        self.drive(now);
    }

    /// Starts recording the tracks of `spec.participants`, those published now and later.
    pub fn start_recording(&mut self, now: Instant, spec: RecordingSpec) -> Result<(), SfuError> {
        let tracks = self.capture_metas(&spec.participants);
        self.captures.start(now, spec, &tracks)?;
        // The logs' first keyframe requests go out on this tick.
        self.next_housekeeping = now;
        Ok(())
    }

    /// Adds a participant (a later joiner) to a recording.
    pub fn record_participant(
        &mut self,
        now: Instant,
        id: &str,
        participant: &str,
    ) -> Result<(), SfuError> {
        let tracks = self.capture_metas(&[participant.to_owned()]);
        self.captures.add_participant(id, participant, &tracks)?;
        self.next_housekeeping = now;
        Ok(())
    }

    /// Stops a recording; its logs close on their writer threads (see [`TrackLog`]).
    pub fn stop_recording(&mut self, id: &str) -> Result<Vec<TrackLog>, SfuError> {
        self.captures.stop(id)
    }

    fn capture_metas(&self, participants: &[ParticipantId]) -> Vec<TrackMeta> {
        self.producers
            .values()
            .filter(|p| participants.contains(&p.participant))
            .map(Producer::capture_meta)
            .collect()
    }

    // ---- internals ------------------------------------------------------------------------

    fn peer_of(&self, participant: &str, target: PeerTarget) -> Result<PeerKey, SfuError> {
        let state = self
            .participants
            .get(participant)
            .ok_or(SfuError::NoConnection(target))?;
        match target {
            PeerTarget::Publish => state.publish,
            PeerTarget::Subscribe => state.subscribe,
        }
        .ok_or(SfuError::NoConnection(target))
    }

    fn create_peer(
        &mut self,
        now: Instant,
        participant: &str,
        target: PeerTarget,
    ) -> Result<PeerKey, SfuError> {
        // No credentials of ours: `rtc` draws them, and new ones at each ICE restart (pinned ones
        // would be reused by a restart, which the browser then cannot tell from none). The
        // peer is routed by ufrag once its local description has them (`refresh_ufrag`), which
        // is before the remote side can send any check.
        let (ufrag, pwd) = (String::new(), String::new());
        let estimate = (target == PeerTarget::Subscribe).then(SharedEstimate::new);
        let feedback = Arc::new(FeedbackCounts::default());
        let mut pc = peer::build(
            ufrag.clone(),
            pwd.clone(),
            &self.metrics,
            estimate.as_ref(),
            feedback.clone(),
            now,
        )
        .map_err(|e| SfuError::Internal(e.to_string()))?;
        for candidate in &self.host_candidates {
            pc.add_local_candidate(candidate.clone())
                .map_err(|e| SfuError::Internal(e.to_string()))?;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.peers.insert(
            key,
            Box::new(Peer {
                pc,
                participant: participant.to_owned(),
                target,
                ufrag,
                pwd,
                addrs: Vec::new(),
                connected: false,
                deadline: None,
                queued: false,
                inbound_totals: HashMap::new(),
                announced: HashMap::new(),
                simulcast_ids: HashSet::new(),
                producers: HashMap::new(),
                awaiting_answer: false,
                offer_due: None,
                estimate,
                path: PathJudge::default(),
                connected_at: None,
                feedback,
            }),
        );
        let state = self.participants.entry(participant.to_owned()).or_default();
        match target {
            PeerTarget::Publish => state.publish = Some(key),
            PeerTarget::Subscribe => state.subscribe = Some(key),
        }
        Ok(key)
    }

    fn close_peer(&mut self, key: PeerKey) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        if let Err(e) = peer.pc.close() {
            debug!(participant = %peer.participant, error = %e, "close failed");
        }
        // Send what closing produced (DTLS close_notify), so the browser learns at once.
        while let Some(out) = peer.pc.poll_write() {
            self.transmits.push_back(Transmit::of(&self.hosts, out));
        }
        self.by_ufrag.remove(&peer.ufrag);
        for addr in &peer.addrs {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
            }
        }
        if let Some(state) = self.participants.get_mut(&peer.participant) {
            match peer.target {
                PeerTarget::Publish if state.publish == Some(key) => state.publish = None,
                PeerTarget::Subscribe if state.subscribe == Some(key) => state.subscribe = None,
                _ => {}
            }
        }
    }

    /// Keeps STUN routing right after an ICE restart, which may give the connection new local
    /// credentials: the browser's checks from its new address name the new ufrag and are
    /// signed with the new password.
    fn refresh_ufrag(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Some((ufrag, pwd)) = peer.pc.local_description().and_then(|d| {
            let (ufrag, pwd) = ice_credentials(&d.sdp)?;
            Some((ufrag.to_owned(), pwd.to_owned()))
        }) else {
            return;
        };
        peer.pwd = pwd;
        if ufrag != peer.ufrag {
            if !peer.ufrag.is_empty() {
                self.by_ufrag.remove(&peer.ufrag);
            }
            self.by_ufrag.insert(ufrag.clone(), key);
            peer.ufrag = ufrag;
        }
    }

    /// Removes one consumer and its sender; returns the subscriber's peer to renegotiate.
    fn detach_consumer(&mut self, participant: &str, track_sid: &str) -> Option<PeerKey> {
        if let Some(state) = self.participants.get_mut(participant) {
            state.subscriptions.remove(track_sid);
        }
        let consumer = self
            .producers
            .get_mut(track_sid)?
            .consumers
            .remove(participant)?;
        let peer = self.peers.get_mut(&consumer.peer)?;
        if let Err(e) = peer.pc.remove_track(consumer.sender_id) {
            debug!(%participant, %track_sid, error = %e, "remove_track failed");
        }
        Some(consumer.peer)
    }

    fn unpublish(&mut self, now: Instant, sid: &str) {
        let Some(producer) = self.producers.get(sid) else {
            return;
        };
        let subscribers: Vec<ParticipantId> = producer.consumers.keys().cloned().collect();
        let (publisher, upstream) = (producer.participant.clone(), producer.upstream);
        for participant in subscribers {
            if let Some(key) = self.detach_consumer(&participant, sid) {
                self.schedule_offer(now, key);
            }
        }
        self.producers.remove(sid);
        self.captures.track_unpublished(sid);
        if let Upstream::Peer { key, .. } = upstream
            && let Some(peer) = self.peers.get_mut(&key)
        {
            peer.producers.retain(|_, s| s != sid);
        }
        self.events.push_back(SfuEvent::TrackUnpublished {
            participant: publisher,
            track_sid: sid.to_owned(),
        });
    }

    /// Notes that a subscribe peer needs a (re)offer; it goes out after [`OFFER_DEBOUNCE`], and
    /// never while the previous offer is unanswered, which keeps both sides' states in step.
    fn schedule_offer(&mut self, now: Instant, key: PeerKey) {
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.offer_due.get_or_insert(now + OFFER_DEBOUNCE);
        }
    }

    fn send_offer(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.offer_due = None;
        let offer = match peer.pc.create_offer(None) {
            Ok(offer) => offer,
            Err(e) => {
                warn!(participant = %peer.participant, error = %e, "cannot create subscribe offer");
                return;
            }
        };
        let sdp = offer.sdp.clone();
        tracing::trace!(participant = %peer.participant, %sdp, "subscribe offer");
        if let Err(e) = peer.pc.set_local_description(now, offer) {
            warn!(participant = %peer.participant, error = %e, "cannot apply subscribe offer");
            return;
        }
        peer.awaiting_answer = true;
        let participant = peer.participant.clone();
        self.refresh_ufrag(key);
        self.advance_consumers(&participant, ConsumerStage::Added, ConsumerStage::Offered);
        self.events
            .push_back(SfuEvent::SubscribeOffer { participant, sdp });
        self.mark(key);
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

    fn handle_peer_event(&mut self, now: Instant, key: PeerKey, event: RTCPeerConnectionEvent) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                debug!(participant = %peer.participant, target = ?peer.target, %state, "peer state");
                let (participant, target) = (peer.participant.clone(), peer.target);
                match state {
                    RTCPeerConnectionState::Connected => {
                        peer.connected = true;
                        peer.connected_at.get_or_insert(now);
                        if target == PeerTarget::Subscribe {
                            self.start_consumers(now, &participant);
                        }
                        self.events.push_back(SfuEvent::PeerState {
                            participant,
                            target,
                            state: PeerState::Connected,
                        });
                    }
                    RTCPeerConnectionState::Failed => {
                        peer.connected = false;
                        self.events.push_back(SfuEvent::PeerState {
                            participant,
                            target,
                            state: PeerState::Failed,
                        });
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init))
                if peer.target == PeerTarget::Publish =>
            {
                self.open_producer_layer(
                    now,
                    key,
                    init.track_id,
                    init.receiver_id,
                    init.ssrc,
                    init.rid,
                );
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                if let Some(sid) = peer.producers.get(&track_id).cloned() {
                    self.unpublish(now, &sid);
                }
            }
            _ => {}
        }
    }

    /// A publisher's stream started: the first one of a track creates its producer, later ones
    /// are further simulcast layers of it.
    fn open_producer_layer(
        &mut self,
        now: Instant,
        key: PeerKey,
        track_id: String,
        receiver_id: RTCRtpReceiverId,
        ssrc: u32,
        rid: Option<String>,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let layer = rid
            .as_deref()
            .map_or(0, |r| usize::from(rid_rank(r).0.min(2)));
        if let Some(sid) = peer.producers.get(&track_id)
            && let Some(producer) = self.producers.get_mut(sid)
        {
            // A track's simulcast layers share its receiver; another m-section reusing the
            // track id is another track, maybe of the other kind, and is not forwarded as this.
            if producer.upstream == (Upstream::Peer { key, receiver_id }) {
                producer.layers.insert(ssrc, layer);
            } else {
                warn!(participant = %peer.participant, %track_id, "a second m-section reuses a published track's id; ignored");
            }
            return;
        }
        let Some(mut receiver) = peer.pc.rtp_receiver(receiver_id) else {
            return;
        };
        let Some(codec) = receiver.track().codec(ssrc).cloned() else {
            warn!(participant = %peer.participant, %track_id, "track opened without a codec");
            return;
        };
        let parameters = &receiver.get_parameters().rtp_parameters;
        let extmaps = parameters
            .header_extensions
            .iter()
            .filter_map(|e| Some((u8::try_from(e.id).ok()?, e.uri.clone())))
            .collect();
        let codecs = &parameters.codecs;
        let payload_type = payload_type_of(codecs, &codec.mime_type);
        let red_payload_type = payload_type_of(codecs, red::MIME_TYPE_RED);
        let Some(payload_type) = payload_type else {
            warn!(participant = %peer.participant, %track_id, "no payload type for the track's codec");
            return;
        };
        let kind = match receiver.track().kind() {
            RtpCodecKind::Audio => TrackKind::Audio,
            _ => TrackKind::Video,
        };
        let source = peer
            .announced
            .get(&track_id)
            .copied()
            .unwrap_or(match kind {
                TrackKind::Audio => TrackSource::Microphone,
                TrackKind::Video => TrackSource::Camera,
            });
        // The offer's announcements were checked against its SDP; this checks what actually
        // arrived, so that nothing is forwarded under a source of the other kind.
        if source.kind() != kind || codec_kind(&codec.mime_type) != Some(kind) {
            warn!(participant = %peer.participant, %track_id, ?source, ?kind, mime = %codec.mime_type, "track is not what it was announced as; not forwarded");
            return;
        }
        let simulcast = rid.is_some() || peer.simulcast_ids.contains(&track_id);
        let sid = format!("TR_{}", random_id());
        peer.producers.insert(track_id, sid.clone());
        let participant = peer.participant.clone();
        info!(%participant, track = %sid, mime = %codec.mime_type, simulcast, "track published");
        let mut producer = Producer {
            sid: sid.clone(),
            participant: participant.clone(),
            upstream: Upstream::Peer { key, receiver_id },
            kind,
            source,
            video: VideoCodec::from_mime(&codec.mime_type),
            codec: codec.clone(),
            payload_type,
            red_payload_type,
            layers: HashMap::new(),
            activity: LayerActivity::default(),
            rates: LayerRates::default(),
            sizes: Vec::new(),
            last_pli: HashMap::new(),
            consumers: HashMap::new(),
            paused: false,
            extmaps,
            exports: Vec::new(),
            relay_history: Default::default(),
            relay_gaps: Default::default(),
            relay_demand: None,
        };
        producer.layers.insert(ssrc, layer);
        producer.activity.record(layer, now);
        self.captures.track_published(&producer.capture_meta());
        self.producers.insert(sid.clone(), producer);
        self.events.push_back(SfuEvent::TrackPublished {
            participant,
            track: PublishedTrack {
                sid,
                kind,
                source,
                simulcast,
                mime_type: codec.mime_type,
            },
        });
    }

    fn advance_consumers(&mut self, participant: &str, from: ConsumerStage, to: ConsumerStage) {
        for producer in self.producers.values_mut() {
            if let Some(consumer) = producer.consumers.get_mut(participant)
                && consumer.stage == from
            {
                consumer.stage = to;
            }
        }
    }

    /// Makes negotiated consumers live once the subscriber's connection is up. Each starts on
    /// the next keyframe, which the housekeeping tick asks the publisher for.
    fn start_consumers(&mut self, now: Instant, participant: &str) {
        let Some(key) = self.participants.get(participant).and_then(|p| p.subscribe) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !peer.connected {
            return;
        }
        for producer in self.producers.values_mut() {
            let Some(consumer) = producer.consumers.get_mut(participant) else {
                continue;
            };
            if consumer.stage != ConsumerStage::Negotiated {
                continue;
            }
            let Some(mut sender) = peer.pc.rtp_sender(consumer.sender_id) else {
                continue;
            };
            let mime = &producer.codec.mime_type;
            let codecs = &sender.get_parameters().rtp_parameters.codecs;
            let payload_type = payload_type_of(codecs, mime);
            // RED only over Opus, the codec Aula's RED is registered for.
            let red = mime
                .eq_ignore_ascii_case(MIME_TYPE_OPUS)
                .then(|| payload_type_of(codecs, red::MIME_TYPE_RED))
                .flatten();
            let fec = producer.kind == TrackKind::Video
                && payload_type_of(codecs, fec::MIME_TYPE_VIDEO_RED) == Some(fec::RED_PAYLOAD_TYPE)
                && payload_type_of(codecs, MIME_TYPE_ULP_FEC) == Some(fec::ULPFEC_PAYLOAD_TYPE);
            match payload_type {
                Some(payload_type) => {
                    consumer.stage = ConsumerStage::Live {
                        payload_type,
                        red,
                        fec,
                    }
                }
                None => {
                    warn!(%participant, track = %producer.sid, %mime, "subscriber did not accept the codec")
                }
            }
        }
        // The new consumers get their layers (and keyframe requests) on this very tick.
        self.next_housekeeping = now;
    }

    fn handle_peer_message(&mut self, now: Instant, key: PeerKey, message: RTCMessage) {
        match message {
            RTCMessage::RtpPacket(track_id, packet) => {
                let Some(sid) = self
                    .peers
                    .get(&key)
                    .and_then(|p| p.producers.get(&track_id))
                    .cloned()
                else {
                    return;
                };
                self.forward(now, &sid, packet);
            }
            RTCMessage::RtcpPacket(track_id, packets) => {
                // From a publisher: its sender reports, which recordings keep.
                if !self.captures.is_empty()
                    && let Some(sid) = self
                        .peers
                        .get(&key)
                        .filter(|p| p.target == PeerTarget::Publish)
                        .and_then(|p| p.producers.get(&track_id))
                {
                    self.captures.rtcp(now, sid, &packets);
                    return;
                }
                // On a subscribe peer the local track id is the producer's sid.
                if packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                    && let Some(participant) = self.peers.get(&key).map(|p| p.participant.clone())
                    && let Some(producer) = self.producers.get_mut(&track_id)
                    && let Some(layer) = producer
                        .consumers
                        .get(&participant)
                        .and_then(|c| c.forwarder.current())
                {
                    producer.last_pli.remove(&layer);
                    self.send_pli(now, &track_id, layer);
                }
            }
            _ => {}
        }
    }

    fn forward(&mut self, now: Instant, sid: &str, mut packet: rtc::rtp::Packet) {
        let Some(producer) = self.producers.get_mut(sid) else {
            return;
        };
        if producer.paused {
            return;
        }
        if packet.header.payload_type != producer.payload_type {
            // A publisher's RED is taken apart: its primary block is the frame, and each
            // subscriber gets its own redundancy (see `red::Encoder`). Other payload types
            // (RTX and other repair streams) are not forwarded.
            let primary = (Some(packet.header.payload_type) == producer.red_payload_type)
                .then(|| red::primary(&packet.payload))
                .flatten()
                .filter(|primary| !primary.is_empty())
                .map(|primary| packet.payload.slice_ref(primary));
            let Some(primary) = primary else {
                return;
            };
            packet.payload = primary;
            packet.header.payload_type = producer.payload_type;
        }
        let Some(&layer) = producer.layers.get(&packet.header.ssrc) else {
            return;
        };
        producer.activity.record(layer, now);
        let temporal = (producer.video == Some(VideoCodec::Vp8))
            .then(|| Vp8Temporal::read(&packet.payload))
            .flatten();
        let tid = temporal.map(|t| t.id);
        producer
            .rates
            .record(layer, tid, packet.payload.len() + PACKET_OVERHEAD, now);
        let keyframe = producer
            .video
            .is_none_or(|codec| codec.is_keyframe(&packet.payload));
        if keyframe && let Some(codec) = producer.video {
            if producer.sizes.len() <= layer {
                producer.sizes.resize(layer + 1, None);
            }
            producer.sizes[layer] = codec
                .keyframe_size(&packet.payload)
                .or(producer.sizes[layer]);
        }
        if !self.captures.is_empty() {
            let best = producer.activity.best(Layer::MAX);
            self.captures.rtp(now, sid, layer, keyframe, best, &packet);
        }
        let meta = PacketMeta {
            layer,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            keyframe,
            vp8: (producer.video == Some(VideoCodec::Vp8))
                .then(|| Vp8Numbers::read(&packet.payload))
                .flatten(),
            temporal,
        };
        // Header extensions are per connection (ids negotiated per peer); the sender adds its own.
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.extension_profile = 0;
        packet.header.extensions_padding = 0;
        if !producer.exports.is_empty() {
            relay::export(producer, layer, &packet, &mut self.relay_transmits);
        }
        let mut writes = Vec::new();
        // Payloads with rewritten VP8 picture numbers, one per set of numbers: subscribers whose
        // numbers agree (all that switched layers at the same picture) share one copy, and each
        // stays in every one of their send histories for NACKs (issue 15: a copy per student
        // in each history was most of a student's memory).
        let mut renumbered: Vec<(Vp8Numbers, Bytes)> = Vec::new();
        for consumer in producer.consumers.values_mut() {
            let ConsumerStage::Live {
                payload_type,
                red,
                fec,
            } = consumer.stage
            else {
                continue;
            };
            consumer.retarget(&producer.activity);
            let was = consumer.forwarder.current();
            if let Decision::Forward(rewritten) = consumer.forwarder.decide(meta, now) {
                if was != consumer.forwarder.current() {
                    debug!(track = %sid, layer, seq = rewritten.seq, "consumer switched layer");
                }
                let mut out = packet.clone();
                out.header.ssrc = consumer.ssrc;
                out.header.sequence_number = rewritten.seq;
                out.header.timestamp = rewritten.timestamp;
                out.header.payload_type = payload_type;
                if let Some(numbers) = rewritten.vp8.filter(|&n| Some(n) != meta.vp8) {
                    out.payload = match renumbered.iter().find(|(n, _)| *n == numbers) {
                        Some((_, payload)) => payload.clone(),
                        None => {
                            let mut payload = BytesMut::from(&packet.payload[..]);
                            numbers.write(&mut payload);
                            let payload = payload.freeze();
                            renumbered.push((numbers, payload.clone()));
                            payload
                        }
                    };
                }
                if let Some(red_payload_type) = red {
                    out.payload = consumer.red_encoder.encode(
                        rewritten.timestamp,
                        &packet.payload,
                        payload_type,
                    );
                    out.header.payload_type = red_payload_type;
                }
                let protect = fec && consumer.fec.is_on();
                if protect {
                    out.payload = fec::wrap(payload_type, &out.payload);
                    out.header.payload_type = fec::RED_PAYLOAD_TYPE;
                    consumer.fec_frame += 1;
                }
                let frame_end = out.header.marker;
                writes.push((consumer.peer, consumer.sender_id, out));
                if protect && frame_end {
                    // The frame's FEC packets follow its last packet (see `fec`).
                    let groups = fec::plan(std::mem::take(&mut consumer.fec_frame), consumer.fec);
                    for group in 0..groups.len() {
                        let Some(seq) = consumer.forwarder.reserve_seq() else {
                            break;
                        };
                        let header = rtc::rtp::header::Header {
                            version: 2,
                            payload_type: fec::RED_PAYLOAD_TYPE,
                            sequence_number: seq,
                            timestamp: rewritten.timestamp,
                            ssrc: consumer.ssrc,
                            ..Default::default()
                        };
                        let payload = fec::placeholder(group, consumer.fec);
                        writes.push((
                            consumer.peer,
                            consumer.sender_id,
                            rtc::rtp::Packet { header, payload },
                        ));
                    }
                }
            }
        }
        for (key, sender_id, out) in writes {
            self.write_rtp(now, key, sender_id, out);
        }
    }

    /// Sends `packet` on a subscriber's sender, if both are still there.
    fn write_rtp(
        &mut self,
        now: Instant,
        key: PeerKey,
        sender_id: RTCRtpSenderId,
        packet: rtc::rtp::Packet,
    ) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(mut sender) = peer.pc.rtp_sender(sender_id) else {
            return;
        };
        match sender.write_rtp(now, packet) {
            Ok(()) => self.metrics.packets_forwarded.inc(),
            Err(e) => debug!(participant = %peer.participant, error = %e, "forward failed"),
        }
        self.mark(key);
    }

    fn update_gauges(&self) {
        let stats = self.stats();
        self.metrics.peers.set(stats.peers as i64);
        self.metrics.published_tracks.set(stats.producers as i64);
        self.metrics.subscriptions.set(stats.consumers as i64);
        let paused = self
            .producers
            .values()
            .filter(|p| p.kind == TrackKind::Video && !p.paused)
            .flat_map(|p| p.consumers.values())
            .filter(|c| {
                matches!(c.stage, ConsumerStage::Live { .. })
                    && c.selector.allowed().is_none()
                    && !c.hidden()
            })
            .count();
        self.metrics.paused_video.set(paused as i64);
    }

    /// Feeds what each link reports (subscribers: their receiver reports about our streams;
    /// publishers: what we measure of theirs) into the metrics, and tells the control plane
    /// when a participant's connection quality changes.
    fn sample_peer_stats(&mut self, now: Instant) {
        let mut links: HashMap<ParticipantId, Vec<LinkSample>> = HashMap::new();
        for peer in self.peers.values_mut().filter(|p| p.connected) {
            if let Some(estimate) = peer.estimate.as_ref().and_then(SharedEstimate::current) {
                self.metrics.subscriber_estimate.observe(estimate);
            }
            let report = peer.pc.get_stats(now, StatsSelector::None);
            let samples = links.entry(peer.participant.clone()).or_default();
            for entry in report.iter() {
                match entry {
                    RTCStatsReportEntry::RemoteInboundRtp(stats) => {
                        let received = &stats.received_rtp_stream_stats;
                        let jitter =
                            jitter_secs(&report, &received.rtp_stream_stats, received.jitter);
                        let rtt = (stats.round_trip_time_measurements > 0)
                            .then_some(stats.round_trip_time);
                        self.metrics.peer_fraction_lost.observe(stats.fraction_lost);
                        self.metrics.peer_jitter.observe(jitter);
                        if let Some(rtt) = rtt {
                            self.metrics.peer_rtt.observe(rtt);
                        }
                        samples.push(LinkSample {
                            loss: stats.fraction_lost,
                            jitter: Duration::from_secs_f64(jitter.max(0.0)),
                            rtt: rtt.map(|r| Duration::from_secs_f64(r.max(0.0))),
                        });
                    }
                    RTCStatsReportEntry::InboundRtp(stats) => {
                        let received = &stats.received_rtp_stream_stats;
                        let ssrc = received.rtp_stream_stats.ssrc;
                        let (was_received, was_lost) = peer
                            .inbound_totals
                            .insert(ssrc, (received.packets_received, received.packets_lost))
                            .unwrap_or((0, 0));
                        let got = received.packets_received.saturating_sub(was_received);
                        let lost = (received.packets_lost - was_lost).max(0) as u64;
                        if got + lost > 0 {
                            let jitter =
                                jitter_secs(&report, &received.rtp_stream_stats, received.jitter);
                            samples.push(LinkSample {
                                loss: lost as f64 / (got + lost) as f64,
                                jitter: Duration::from_secs_f64(jitter),
                                rtt: None,
                            });
                        }
                    }
                    _ => {}
                }
            }
            // What the subscriber's transport-wide feedback says the path lost. Its receiver
            // reports cannot be relied on for this: Chromium counts a packet that NACK
            // repaired as received, and at 20 % loss they said 0 (a student on a bad link
            // was shown "excellent" to the teacher).
            if let Some(estimate) = &peer.estimate {
                samples.push(LinkSample {
                    loss: estimate.loss(),
                    jitter: Duration::ZERO,
                    rtt: None,
                });
            }
        }
        let mut counts: HashMap<ConnectionQuality, i64> = HashMap::new();
        for (participant, samples) in links {
            let report = quality::report(samples);
            *counts.entry(report.level).or_default() += 1;
            if let Some(state) = self.participants.get_mut(&participant)
                && quality::worth_telling(state.told.as_ref(), &report)
            {
                state.quality = Some(report.level);
                state.told = Some(report);
                self.events.push_back(SfuEvent::ConnectionQuality {
                    participant,
                    quality: report.level,
                    loss: report.loss,
                    rtt: report.rtt,
                });
            }
        }
        for level in [
            ConnectionQuality::Excellent,
            ConnectionQuality::Good,
            ConnectionQuality::Poor,
        ] {
            self.metrics
                .connection_quality
                .with_label_values(&[quality::label(level)])
                .set(counts.get(&level).copied().unwrap_or(0));
        }
    }

    /// Tells the control plane what each recorded participant's links did over the last
    /// second ([`SfuEvent::QosSample`]).
    fn sample_qos(&mut self, now: Instant) {
        let captures = &self.captures;
        self.qos.retain(|p| captures.records(p));
        let recorded: Vec<ParticipantId> = self
            .participants
            .keys()
            .filter(|p| self.captures.records(p))
            .cloned()
            .collect();
        for participant in recorded {
            let Some(state) = self.participants.get(&participant) else {
                continue;
            };
            let (publish, subscribe, quality) = (state.publish, state.subscribe, state.quality);
            let mut totals = Totals::default();
            let mut link = LinkState {
                quality,
                recording_dropped: self.captures.dropped_of(&participant),
                ..LinkState::default()
            };
            if let Some(peer) = publish.and_then(|key| self.peers.get_mut(&key)) {
                totals.add(&peer.pc.get_stats(now, StatsSelector::None));
                totals.add_feedback(&peer.feedback);
            }
            if let Some(peer) = subscribe.and_then(|key| self.peers.get_mut(&key)) {
                let report = peer.pc.get_stats(now, StatsSelector::None);
                totals.add(&report);
                totals.add_feedback(&peer.feedback);
                link.estimate_bps = peer.estimate.as_ref().and_then(SharedEstimate::current);
                link.loss_before_recovery = peer.estimate.as_ref().map(SharedEstimate::loss);
                for entry in report.iter() {
                    if let RTCStatsReportEntry::RemoteInboundRtp(stats) = entry {
                        let received = &stats.received_rtp_stream_stats;
                        let jitter =
                            jitter_secs(&report, &received.rtp_stream_stats, received.jitter);
                        let worst = |was: Option<Duration>, secs: f64| {
                            was.max(Some(Duration::from_secs_f64(secs.max(0.0))))
                        };
                        link.jitter = worst(link.jitter, jitter);
                        if stats.round_trip_time_measurements > 0 {
                            link.rtt = worst(link.rtt, stats.round_trip_time);
                        }
                        link.loss_after_recovery = Some(
                            link.loss_after_recovery
                                .unwrap_or(0.0)
                                .max(stats.fraction_lost),
                        );
                    }
                }
            }
            link.layers = self
                .producers
                .values()
                .filter(|p| p.kind == TrackKind::Video)
                .filter_map(|p| Some((p.sid.clone(), p.consumers.get(&participant)?)))
                .map(|(sid, consumer)| (sid, consumer.forwarder.current()))
                .collect();
            let sample = self.qos.sample(now, &participant, totals, link);
            self.events.push_back(SfuEvent::QosSample {
                participant,
                at: now,
                sample: Box::new(sample),
            });
        }
    }

    /// Shares each subscriber's bandwidth estimate among its consumers: see
    /// [`crate::forward::allocate`] for the order and [`crate::forward::selector`] for the
    /// timing. A subscriber without any estimate gets the best layers.
    fn allocate_bandwidth(&mut self, now: Instant) {
        type Budget = (
            ParticipantId,
            Option<SharedEstimate>,
            Option<f64>,
            PathCondition,
        );
        let mut losses = Vec::new();
        let budgets: Vec<Budget> = self
            .participants
            .iter()
            .filter_map(|(id, state)| {
                let peer = self.peers.get_mut(&state.subscribe?)?;
                let budget = peer.estimate.as_ref().and_then(SharedEstimate::current);
                let young = peer
                    .connected_at
                    .is_none_or(|at| now.saturating_duration_since(at) < FEEDBACK_GRACE);
                let loss = peer.estimate.as_ref().map_or(0.0, SharedEstimate::loss);
                let condition = peer.path.update(now, loss);
                // RED's depth follows the sustained loss: one noisy second at 50 % loss read
                // over 65 % and took it to 12 frames, whose ~400 kbit/s then left no room for
                // any video (paused for 9 s in the weak-network report).
                losses.push((id.clone(), peer.path.sustained(), peer.estimate.clone()));
                let budget = budget.or(young.then_some(bwe::INITIAL_BITRATE));
                Some((id.clone(), peer.estimate.clone(), budget, condition))
            })
            .collect();
        // Audio redundancy follows each subscriber's loss, before the allocation counts it.
        for (participant, loss, estimate) in losses {
            let mut copies = 1;
            for producer in self.producers.values_mut() {
                if let Some(consumer) = producer.consumers.get_mut(&participant) {
                    let redundancy =
                        red::Redundancy::for_loss(consumer.red_encoder.redundancy(), loss);
                    consumer.red_encoder.set_redundancy(redundancy);
                    copies = copies.max(redundancy.copies());
                    consumer.fec = Protection::for_loss(consumer.fec, loss);
                }
            }
            // The connection's wire end sends the copies (see `spaced_copies`).
            if let Some(estimate) = estimate {
                estimate.set_spaced_copies(copies > 1);
            }
        }
        let staff: HashSet<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, p)| p.staff)
            .map(|(id, _)| id.clone())
            .collect();
        for (participant, estimate, budget, condition) in budgets {
            let probe = self.allocate_for(now, &participant, &staff, budget, condition);
            if let Some(estimate) = estimate {
                estimate.set_probe(probe);
            }
        }
    }

    /// Chooses the layers of one subscriber's tracks. Returns the probe rate its connection
    /// should send (see `bwe::probe`): what the pending upgrades would add, plus the margin
    /// an upgrade needs ([`selector::UP_MARGIN`]) on the total, so that the probe verifies
    /// the headroom the estimate claims and not just the bare cost (a layer's keyframe and
    /// its ups and downs need that room).
    fn allocate_for(
        &mut self,
        now: Instant,
        participant: &str,
        staff: &HashSet<ParticipantId>,
        budget: Option<f64>,
        condition: PathCondition,
    ) -> f64 {
        let mut sids = Vec::new();
        let mut demands = Vec::new();
        for producer in self.producers.values() {
            let Some(consumer) = producer.consumers.get(participant) else {
                continue;
            };
            // A moderator's pause and a hidden video cost nothing and keep their layer.
            if producer.paused
                || consumer.hidden()
                || !matches!(consumer.stage, ConsumerStage::Live { .. })
            {
                continue;
            }
            demands.push(demand(
                producer,
                consumer,
                staff.contains(&producer.participant),
                condition,
            ));
            sids.push(producer.sid.clone());
        }
        let (fits, fits_with_margin) = match budget {
            Some(budget) => (
                allocate(budget, &demands),
                allocate(budget / selector::UP_MARGIN, &demands),
            ),
            None => {
                let best = allocate(f64::INFINITY, &demands);
                (best.clone(), best)
            }
        };
        let (mut forwarded, mut pending) = (0.0, 0.0);
        for (i, sid) in sids.iter().enumerate() {
            let Some(producer) = self.producers.get_mut(sid) else {
                continue;
            };
            let Some(consumer) = producer.consumers.get_mut(participant) else {
                continue;
            };
            let before = consumer.selector.allowed();
            let after = match budget {
                Some(estimate) => {
                    consumer
                        .selector
                        .update(now, fits[i], fits_with_margin[i], estimate)
                }
                None => consumer.selector.unlimited(fits[i]),
            };
            if before != after {
                // At once, not at the layer's next packet: the keyframe request for the new
                // layer goes out in this same housekeeping round (`request_keyframes`).
                consumer.retarget(&producer.activity);
                debug!(%participant, track = %sid, ?before, ?after, ?budget, "allocation changed");
                // Recordings keep to simulcast layers: a frame rate alone changing is not one.
                let ladder = consumer.selector.ladder();
                let layer = |step: Option<Step>| step.map(|step| ladder.quality(step).spatial);
                let (from, to) = (layer(before), layer(after));
                if from != to && self.captures.records(participant) {
                    let cap = layer(demands[i].steps.iter().rposition(Option::is_some));
                    let change = LayerChange {
                        at: now,
                        track_sid: sid.clone(),
                        from,
                        to,
                        reason: LayerReason::of(to, cap, condition),
                    };
                    self.qos.layer_changed(participant, change);
                }
                self.metrics
                    .layer_changes
                    .with_label_values(&[if after > before { "up" } else { "down" }])
                    .inc();
            }
            // The subscriber hears of a video its link cannot take (and of its return), as
            // the page would otherwise show a frozen frame with no reason.
            let paused = after.is_none() && producer.kind == TrackKind::Video;
            if paused != consumer.told_paused {
                consumer.told_paused = paused;
                self.events.push_back(SfuEvent::StreamState {
                    participant: participant.to_owned(),
                    track_sid: sid.clone(),
                    paused,
                });
            }
            forwarded += demands[i].cost(after);
            if let Some(up_to) = consumer.selector.pending_upgrade() {
                pending += (demands[i].cost(Some(up_to)) - demands[i].cost(after)).max(0.0);
            }
        }
        if pending > 0.0 {
            selector::UP_MARGIN * (forwarded + pending) - forwarded
        } else {
            0.0
        }
    }

    /// Asks publishers for the keyframes that waiting consumers and recordings need.
    fn request_keyframes(&mut self, now: Instant) {
        for (sid, layer) in self.captures.keyframes_wanted(now) {
            self.send_pli(now, &sid, layer);
        }
        let wanted: Vec<(TrackSid, Layer)> = self
            .producers
            .values()
            .flat_map(|p| {
                let wanted: HashSet<Layer> = p
                    .consumers
                    .values()
                    .filter_map(|c| c.forwarder.wants_keyframe())
                    .collect();
                wanted.into_iter().map(|layer| (p.sid.clone(), layer))
            })
            .collect();
        for (sid, layer) in wanted {
            self.send_pli(now, &sid, layer);
        }
    }

    /// Asks at once for a keyframe of every video a subscriber whose path just came back from
    /// an outage watches: what it lost cannot be decoded past, and waiting for its browser's own
    /// request costs seconds of frozen picture.
    fn keyframes_after_outages(&mut self, now: Instant) {
        let returned: Vec<ParticipantId> = self
            .peers
            .values()
            .filter(|p| p.target == PeerTarget::Subscribe)
            .filter(|p| p.feedback.path_returned.swap(false, Ordering::Relaxed))
            .map(|p| p.participant.clone())
            .collect();
        for participant in returned {
            let wanted: Vec<(TrackSid, Layer)> = self
                .producers
                .values()
                .filter(|p| p.video.is_some())
                .filter_map(|p| {
                    let layer = p.consumers.get(&participant)?.forwarder.current()?;
                    Some((p.sid.clone(), layer))
                })
                .collect();
            debug!(%participant, tracks = wanted.len(), "path back from an outage; keyframes asked for");
            for (sid, layer) in wanted {
                if let Some(producer) = self.producers.get_mut(&sid) {
                    producer.last_pli.remove(&layer);
                }
                self.send_pli(now, &sid, layer);
            }
        }
    }

    /// Sends a PLI for one layer of a producer, at most once per [`PLI_MIN_INTERVAL`].
    fn send_pli(&mut self, now: Instant, sid: &str, layer: Layer) {
        let Some(producer) = self.producers.get_mut(sid) else {
            return;
        };
        if producer.video.is_none()
            || producer
                .last_pli
                .get(&layer)
                .is_some_and(|at| now.saturating_duration_since(*at) < PLI_MIN_INTERVAL)
        {
            return;
        }
        let Some(media_ssrc) = producer
            .layers
            .iter()
            .find(|(_, l)| **l == layer)
            .map(|(ssrc, _)| *ssrc)
        else {
            return;
        };
        producer.last_pli.insert(layer, now);
        let Upstream::Peer { key, receiver_id } = producer.upstream else {
            // One request up the link, however many subscribers here asked.
            self.events.push_back(SfuEvent::RelayKeyframeRequest {
                track_sid: sid.to_owned(),
                layer,
            });
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if let Some(mut receiver) = peer.pc.rtp_receiver(receiver_id) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            match receiver.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => debug!(track = %sid, layer, media_ssrc, "PLI sent"),
                Err(e) => debug!(track = %sid, error = %e, "PLI failed"),
            }
        }
        self.mark(key);
    }
}

/// What forwarding `producer` to one subscriber costs, step by step (layers at frame rates,
/// see [`Ladder`]): measured rates of the layers being received, none above what the
/// subscriber's rendered size needs or what its path's condition allows (no video at all on
/// an audio-only path). Before a layer has been measured its lower frame rates are assumed
/// to cost the whole layer: a subscriber then starts at full frame rate or not at all, as
/// before frame rates were chosen, rather than on a guess of what they save.
fn demand(
    producer: &Producer,
    consumer: &Consumer,
    staff: bool,
    condition: PathCondition,
) -> Demand {
    let priority = match (producer.kind, producer.source) {
        (TrackKind::Audio, _) => Priority::Audio,
        (_, TrackSource::ScreenShare) => Priority::Screen,
        _ if staff => Priority::Teacher,
        _ => Priority::Camera,
    };
    let count = producer.layers.values().max().map_or(1, |top| top + 1);
    // RED repeats each frame as many more times as the link's loss asks (see `red`), and FEC
    // adds its parity to video (see `fec`).
    let redundancy = match consumer.stage {
        ConsumerStage::Live { red: Some(_), .. } => Some(consumer.red_encoder.redundancy()),
        _ => None,
    };
    let fec_overhead = match consumer.stage {
        ConsumerStage::Live { fec: true, .. } => consumer.fec.overhead(),
        _ => 0.0,
    };
    let rendered = consumer
        .rendered
        .and_then(|r| layer_for_size(&producer.sizes, (r.width, r.height)))
        .unwrap_or(Layer::MAX);
    let max_layer = match producer.kind {
        TrackKind::Audio => Some(Layer::MAX),
        TrackKind::Video => condition.max_video_layer().map(|max| max.min(rendered)),
    };
    let ladder = consumer.selector.ladder();
    let steps = (0..ladder.steps(count))
        .map(|step| {
            let quality = ladder.quality(step);
            let layer = quality.spatial;
            let assumed = match producer.kind {
                TrackKind::Audio => ASSUMED_AUDIO_RATE,
                TrackKind::Video => ASSUMED_VIDEO_RATES[layer.min(2)],
            };
            let rate = producer.rates.rate_up_to(layer, quality.temporal);
            (max_layer.is_some_and(|max| layer <= max) && producer.activity.is_alive(layer))
                .then(|| red::cost(rate.unwrap_or(assumed), redundancy) * (1.0 + fec_overhead))
        })
        .collect();
    Demand { priority, steps }
}

/// The payload type a connection negotiated for a codec (mime types compare case-insensitively:
/// browsers write `VP8`, some stacks `vp8`).
/// RTCP carries jitter in RTP timestamp units, and `rtc` passes it on as it is (though its docs
/// say seconds): seconds are that over the stream's clock rate, its codec's when the report
/// has it. Read as seconds, a video stream's few milliseconds of jitter were hundreds of
/// "seconds", and every publisher's connection quality was `poor`.
fn jitter_secs(report: &RTCStatsReport, stream: &RTCRtpStreamStats, units: f64) -> f64 {
    let clock_rate = match report.get(&stream.codec_id) {
        Some(RTCStatsReportEntry::Codec(codec)) => Some(codec.clock_rate),
        _ => None,
    };
    timestamp_units_to_secs(units, clock_rate, stream.kind)
}

/// `units` of an RTP clock in seconds; without a known rate, the usual 48 kHz for audio (Opus)
/// and 90 kHz for video.
fn timestamp_units_to_secs(units: f64, clock_rate: Option<u32>, kind: RtpCodecKind) -> f64 {
    let default = if kind == RtpCodecKind::Audio {
        48_000
    } else {
        90_000
    };
    let rate = clock_rate.filter(|r| *r > 0).unwrap_or(default);
    units.max(0.0) / f64::from(rate)
}

fn payload_type_of(codecs: &[RTCRtpCodecParameters], mime: &str) -> Option<u8> {
    codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

/// The media kind of a codec by its mime type (`audio/opus`, `video/VP8`).
fn codec_kind(mime: &str) -> Option<TrackKind> {
    let (kind, _) = mime.split_once('/')?;
    if kind.eq_ignore_ascii_case("audio") {
        Some(TrackKind::Audio)
    } else if kind.eq_ignore_ascii_case("video") {
        Some(TrackKind::Video)
    } else {
        None
    }
}

/// Refuses an offer that announces a track as a source of the other media kind than the
/// track's m-section: grants are checked on the announced source, so a label that could lie
/// (video as `microphone`) would let a microphone-only token publish video. A track this offer
/// does not announce again keeps its earlier announcement, and is checked against it.
fn check_announced_kinds(
    sdp: &str,
    tracks: &[TrackAnnouncement],
    earlier: &HashMap<String, TrackSource>,
) -> Result<(), SfuError> {
    for (track_id, kind) in track_kinds(sdp) {
        // The last announcement of a track is the one kept (see `apply_publish_offer`).
        let source = tracks
            .iter()
            .rev()
            .find(|t| t.track_id == track_id)
            .map(|t| t.source)
            .or_else(|| earlier.get(&track_id).copied());
        if let Some(source) = source
            && source.kind() != kind
        {
            return Err(SfuError::TrackMismatch(format!(
                "track {track_id} is {kind:?} in the SDP but announced as {source:?}"
            )));
        }
    }
    Ok(())
}

fn random_id() -> String {
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(12)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_read_in_its_streams_clock() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(
            timestamp_units_to_secs(90.0, None, RtpCodecKind::Video),
            0.001
        ));
        assert!(close(
            timestamp_units_to_secs(480.0, None, RtpCodecKind::Audio),
            0.01
        ));
        assert!(close(
            timestamp_units_to_secs(80.0, Some(8_000), RtpCodecKind::Audio),
            0.01
        ));
        assert_eq!(
            timestamp_units_to_secs(-5.0, Some(0), RtpCodecKind::Video),
            0.0
        );
    }

    #[test]
    fn an_announced_source_must_match_its_tracks_kind() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:s mic\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:s cam\r\n";
        let label = |track_id: &str, source| TrackAnnouncement {
            track_id: track_id.into(),
            source,
        };
        let none = HashMap::new();
        let truthful = [
            label("mic", TrackSource::Microphone),
            label("cam", TrackSource::Camera),
        ];
        assert_eq!(check_announced_kinds(sdp, &truthful, &none), Ok(()));
        for lie in [
            label("cam", TrackSource::Microphone),
            label("cam", TrackSource::ScreenShareAudio),
            label("mic", TrackSource::Camera),
            label("mic", TrackSource::ScreenShare),
        ] {
            assert!(
                matches!(
                    check_announced_kinds(sdp, std::slice::from_ref(&lie), &none),
                    Err(SfuError::TrackMismatch(_))
                ),
                "{lie:?}"
            );
        }
        // A track not announced again keeps its earlier label, which must still fit.
        let earlier = HashMap::from([("cam".to_owned(), TrackSource::Microphone)]);
        assert!(matches!(
            check_announced_kinds(sdp, &[], &earlier),
            Err(SfuError::TrackMismatch(_))
        ));
        // The last announcement of a track is the one kept and checked.
        let relabelled = [
            label("cam", TrackSource::Microphone),
            label("cam", TrackSource::Camera),
        ];
        assert_eq!(check_announced_kinds(sdp, &relabelled, &earlier), Ok(()));
    }
}
