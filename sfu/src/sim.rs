//! An in-memory network between a [`Router`] and `rtc` client peers, on virtual time.
//!
//! Because the router and `rtc` are both sans-I/O, a whole call — ICE, DTLS, SRTP, forwarding —
//! runs without sockets or a clock: [`Sim::step`] moves every queued datagram to its
//! destination and advances time. Tests use it to check forwarding deterministically;
//! benchmarks use it to measure the router's per-packet cost without the network in the way.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_protocol::{PeerTarget, TrackAnnouncement, TrackKind, TrackSource};
use bytes::{Bytes, BytesMut};
use rtc::interceptor::{Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::api::{PeerState, SfuEvent, TrackSid};
use crate::impair::Link;
use crate::metrics::SfuMetrics;
use crate::peer;
use crate::qos::{FeedbackCounts, PeerSample};
use crate::quality::ConnectionQuality;
use crate::red;
use crate::router::{Router, Transmit};

/// Where the simulated SFU "listens".
pub const SFU_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    7882,
);

/// One RTP packet as a simulated client received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload: Bytes,
}

/// A browser stand-in: one `rtc` peer connection at a fake address.
pub struct Client {
    pub participant: String,
    pub pc: RTCPeerConnection,
    pub addr: SocketAddr,
    pub received: Vec<Received>,
    /// Sender reports received, with when.
    pub sender_reports: Vec<(Instant, SenderReport)>,
    /// What the client's tap noted, such as the SFU's reception reports on what it sends.
    pub feedback: Arc<FeedbackCounts>,
    sender: Option<Sender>,
}

/// What a publishing client sends with.
#[derive(Clone)]
struct Sender {
    id: RTCRtpSenderId,
    /// One stream per simulcast layer, lowest first (one for a track without simulcast): its
    /// SSRC and last sequence number.
    streams: Vec<(u32, u16)>,
    /// Simulcast: each stream's RID, which its packets carry (with the MID) in header
    /// extensions, as browsers send them; the SFU tells the layers apart by them.
    rids: Vec<String>,
    payload_type: u8,
    /// RTP clock ticks per packet: one 20 ms Opus frame, or one frame of 30 fps video.
    ticks: u32,
}

/// The router, its clients, the datagrams in flight, and the clock.
pub struct Sim {
    pub now: Instant,
    pub router: Router,
    pub clients: Vec<Client>,
    pub published: Vec<(String, TrackSid)>,
    /// Datagrams the SFU sent to addresses no client has.
    pub undeliverable: usize,
    /// Subscribe offers the SFU made, all participants together.
    pub subscribe_offers: usize,
    /// Loss on the way from the SFU to clients: every n-th datagram is dropped.
    pub drop_every_nth_to_clients: Option<usize>,
    /// Loss on one participant's way to the SFU: every n-th of its datagrams is dropped.
    pub lossy_uplink: Option<(String, usize)>,
    from_lossy: usize,
    /// Participants whose network is gone: nothing reaches them or comes from them.
    pub cut_off: Vec<String>,
    /// Impaired paths from the SFU to participants (rate caps, loss, delay); datagrams on one
    /// wait in flight until their delivery instant.
    pub downlinks: HashMap<String, Link>,
    /// Participants whose peers negotiate no TWCC (see [`Sim::send_remb`]); set before they
    /// join.
    pub remb_only: Vec<String>,
    /// Participants whose answers to the SFU leave out audio RED, as a browser without it
    /// would answer; set before they subscribe.
    pub no_red: Vec<String>,
    in_flight: Vec<(Instant, SocketAddr, BytesMut)>,
    /// Peer connection state changes the SFU reported.
    pub peer_states: Vec<(String, PeerTarget, PeerState)>,
    /// Connection quality reports the SFU sent, in order, with the loss they gave.
    pub qualities: Vec<(String, ConnectionQuality, f64)>,
    /// The QoS samples of recorded participants the SFU sent, in order.
    pub qos_samples: Vec<(String, PeerSample)>,
    /// Videos paused (`true`) or resumed for a subscriber's link, in order: (subscriber,
    /// track sid, paused).
    pub stream_states: Vec<(String, String, bool)>,
    /// Events about tracks between nodes or shards, and tracks' ends, for a test to pass on
    /// (see [`crate::shard::pipes`]).
    pub relay_events: Vec<SfuEvent>,
    to_clients: usize,
    next_port: u16,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        let now = Instant::now();
        let metrics = SfuMetrics::register(&prometheus::Registry::new())
            .expect("a fresh registry has no metrics to clash with");
        Self {
            now,
            router: Router::new(&[SFU_ADDR], metrics, now),
            clients: Vec::new(),
            published: Vec::new(),
            undeliverable: 0,
            subscribe_offers: 0,
            drop_every_nth_to_clients: None,
            lossy_uplink: None,
            from_lossy: 0,
            cut_off: Vec::new(),
            downlinks: HashMap::new(),
            remb_only: Vec::new(),
            no_red: Vec::new(),
            in_flight: Vec::new(),
            peer_states: Vec::new(),
            qualities: Vec::new(),
            qos_samples: Vec::new(),
            stream_states: Vec::new(),
            relay_events: Vec::new(),
            to_clients: 0,
            next_port: 40_000,
        }
    }

    fn new_client(&mut self, participant: &str) -> usize {
        let addr = SocketAddr::from(([10, 0, 1, 1], self.next_port));
        self.next_port += 1;
        let (ufrag, pwd) = peer::ice_credentials();
        let metrics = SfuMetrics::register(&prometheus::Registry::new())
            .expect("a fresh registry has no metrics to clash with");
        let feedback = if self.remb_only.iter().any(|p| p == participant) {
            peer::Feedback::RembOnly
        } else {
            peer::Feedback::Twcc
        };
        let counts = Arc::new(FeedbackCounts::default());
        let (media_engine, registry) =
            peer::configure(&metrics, peer::Role::Client, counts.clone(), feedback)
                .expect("default chain");
        let registry = registry.with(Slot::Custom(CHROME_RTX_SLOT), ChromeRtx::default());
        let mut pc = peer::connect(ufrag, pwd, media_engine, registry, self.now)
            .expect("default peer builds");
        pc.add_local_candidate(peer::host_candidate(addr).expect("valid address"))
            .expect("host candidate");
        self.clients.push(Client {
            participant: participant.to_owned(),
            pc,
            addr,
            received: Vec::new(),
            sender_reports: Vec::new(),
            feedback: counts,
            sender: None,
        });
        self.clients.len() - 1
    }

    /// A participant publishing one track (Opus audio or VP8 video); returns the client index
    /// once the SFU has answered (media flows after a few [`Sim::step`]s).
    pub fn add_publisher(&mut self, participant: &str, kind: TrackKind) -> usize {
        let index = self.new_client(participant);
        let ssrc = 0x1000 + index as u32;
        let (codec, rtp_kind, payload_type, ticks, source) = match kind {
            TrackKind::Audio => (
                peer::opus(),
                RtpCodecKind::Audio,
                111,
                960,
                TrackSource::Microphone,
            ),
            TrackKind::Video => (
                peer::vp8(),
                RtpCodecKind::Video,
                96,
                3000,
                TrackSource::Camera,
            ),
        };
        let track_id = format!("{kind:?}-{participant}");
        let track = MediaStreamTrack::new(
            format!("stream-{participant}"),
            track_id.clone(),
            track_id.clone(),
            rtp_kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec,
                ..Default::default()
            }],
        );
        let client = &mut self.clients[index];
        let id = client.pc.add_track(track).expect("track added");
        client.sender = Some(Sender {
            id,
            streams: vec![(ssrc, 0)],
            rids: Vec::new(),
            payload_type,
            ticks,
        });
        self.offer_publish(index, track_id, source);
        index
    }

    /// A participant publishing a VP8 camera in simulcast, one stream per rid of `rids`
    /// (lowest layer first, e.g. `["q", "h", "f"]`); see [`Sim::add_publisher`]. As Chrome
    /// publishes it: no SSRCs in the offer, each layer's packets name their RID, and each layer
    /// answers the SFU's NACKs on an RTX stream of its own, whose packets name the layer's RID
    /// as `repaired-rtp-stream-id` (see [`ChromeRtx`]).
    pub fn add_simulcast_publisher(&mut self, participant: &str, rids: &[&str]) -> usize {
        let index = self.new_client(participant);
        let track_id = format!("simulcast-{participant}");
        let streams: Vec<(u32, u16)> = (0..rids.len())
            .map(|layer| (0x2000 + 16 * index as u32 + layer as u32, 0))
            .collect();
        let encodings = rids
            .iter()
            .zip(&streams)
            .map(|(rid, (ssrc, _))| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: (*rid).to_owned(),
                    ssrc: Some(*ssrc),
                    rtx: Some(RTCRtpRtxParameters {
                        ssrc: *ssrc + 0x1000,
                    }),
                    ..Default::default()
                },
                active: true,
                codec: peer::vp8(),
                ..Default::default()
            })
            .collect();
        let track = MediaStreamTrack::new(
            format!("stream-{participant}"),
            track_id.clone(),
            track_id.clone(),
            RtpCodecKind::Video,
            encodings,
        );
        let client = &mut self.clients[index];
        let id = client.pc.add_track(track).expect("track added");
        client.sender = Some(Sender {
            id,
            streams,
            rids: rids.iter().map(|rid| (*rid).to_owned()).collect(),
            payload_type: 96,
            ticks: 3000,
        });
        self.offer_publish(index, track_id, TrackSource::Camera);
        index
    }

    /// The publisher's offer, applied by the SFU, and its answer, by the publisher.
    fn offer_publish(&mut self, index: usize, track_id: String, source: TrackSource) {
        let participant = self.clients[index].participant.clone();
        let client = &mut self.clients[index];
        let offer = client.pc.create_offer(None).expect("offer");
        let sdp = offer.sdp.clone();
        client
            .pc
            .set_local_description(self.now, offer)
            .expect("local offer");
        let answer = self
            .router
            .publish_offer(
                self.now,
                &participant,
                sdp,
                vec![TrackAnnouncement { track_id, source }],
            )
            .expect("SFU answers");
        let answer = RTCSessionDescription::answer(answer).expect("SFU answer parses");
        self.clients[index]
            .pc
            .set_remote_description(self.now, answer)
            .expect("SFU answer applies");
    }

    /// Sends one RTP packet from a publisher. For video, `payload` must start with a VP8
    /// payload descriptor (see [`vp8_payload`]).
    pub fn send(&mut self, index: usize, payload: &[u8]) {
        self.send_layer(index, 0, payload);
    }

    /// Sends one RTP packet of a simulcast layer (0 is the lowest) from a publisher.
    pub fn send_layer(&mut self, index: usize, layer: usize, payload: &[u8]) {
        let now = self.now;
        let client = &mut self.clients[index];
        let sender = client.sender.as_mut().expect("client publishes");
        let (ssrc, seq) = &mut sender.streams[layer];
        *seq = seq.wrapping_add(1);
        let mut packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: sender.payload_type,
                sequence_number: *seq,
                timestamp: u32::from(*seq).wrapping_mul(sender.ticks),
                ssrc: *ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        };
        let rid = sender.rids.get(layer).cloned();
        let id = sender.id;
        let Some(mut sender) = client.pc.rtp_sender(id) else {
            return;
        };
        if let Some(rid) = rid {
            let negotiated = sender
                .get_parameters()
                .rtp_parameters
                .header_extensions
                .clone();
            let extension = |uri: &str| {
                let found = negotiated.iter().find(|e| e.uri == uri);
                found.map(|e| e.id as u8)
            };
            let ids = extension(rtc::sdp::extmap::SDES_MID_URI)
                .zip(extension(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI));
            let (mid_id, rid_id) = ids.expect("simulcast extensions negotiated");
            let header = &mut packet.header;
            header.extension = true;
            header.extension_profile = 0xBEDE;
            let mid = Bytes::from_static(b"0");
            header.set_extension(mid_id, mid).expect("mid fits");
            header
                .set_extension(rid_id, Bytes::from(rid.into_bytes()))
                .expect("rid fits");
        }
        sender.write_rtp(now, packet).expect("publisher sends");
    }

    /// The RTP timestamp of the last packet a publisher sent on its first stream.
    pub fn last_timestamp(&self, index: usize) -> u32 {
        let sender = self.clients[index]
            .sender
            .as_ref()
            .expect("client publishes");
        u32::from(sender.streams[0].1).wrapping_mul(sender.ticks)
    }

    /// Sends a sender report from a publisher (on its first stream) saying that RTP timestamp
    /// `rtp_time` is now, as a publisher whose media takes a while to reach it would.
    pub fn send_sender_report(&mut self, index: usize, rtp_time: u32) {
        let now = self.now;
        let client = &mut self.clients[index];
        let sender = client.sender.as_ref().expect("client publishes");
        let (ssrc, id) = (sender.streams[0].0, sender.id);
        let report = SenderReport {
            ssrc,
            ntp_time: 1 << 32,
            rtp_time,
            ..Default::default()
        };
        let mut sender = client.pc.rtp_sender(id).expect("its sender");
        sender
            .write_rtcp(now, vec![Box::new(report)])
            .expect("report written");
    }

    /// Takes the datagrams a client has queued (e.g. encrypted media after [`Sim::send`])
    /// instead of delivering them, so a benchmark can feed them to the router itself.
    pub fn take_datagrams(&mut self, index: usize) -> Vec<(SocketAddr, BytesMut)> {
        let client = &mut self.clients[index];
        let mut out = Vec::new();
        while let Some(msg) = client.pc.poll_write() {
            out.push((client.addr, msg.message));
        }
        out
    }

    /// Subscribes a (new or existing) subscriber client to a track.
    /// Subscribes `participant` to every track published so far, over a path from the SFU
    /// that a test can impair later (in [`Sim::downlinks`]; clean for now, its losses drawn
    /// from `seed`).
    pub fn subscribe_to_all_over_a_link(&mut self, participant: &str, seed: u64) {
        let sids: Vec<TrackSid> = self.published.iter().map(|(_, sid)| sid.clone()).collect();
        for sid in &sids {
            self.subscribe(participant, sid);
        }
        self.downlinks.insert(
            participant.to_owned(),
            Link::new(crate::impair::Impairment::default(), seed),
        );
    }

    pub fn subscribe(&mut self, participant: &str, track_sid: &str) {
        if !self.clients.iter().any(|c| c.participant == participant) {
            self.new_client(participant);
        }
        self.router
            .subscribe(self.now, participant, track_sid)
            .expect("subscribe");
    }

    /// Sends the SFU a REMB of `bps` from a subscriber (on its first receiver), as a receiver
    /// without TWCC would to say what it can take.
    pub fn send_remb(&mut self, participant: &str, bps: f32) {
        let now = self.now;
        let client = self
            .clients
            .iter_mut()
            .find(|c| c.participant == participant)
            .expect("known participant");
        let receiver = client.pc.get_receivers().next().expect("a subscriber");
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: bps,
            ssrcs: Vec::new(),
        };
        client
            .pc
            .rtp_receiver(receiver)
            .expect("its receiver")
            .write_rtcp(now, vec![Box::new(remb)])
            .expect("REMB written");
    }

    pub fn client(&self, participant: &str) -> &Client {
        self.clients
            .iter()
            .find(|c| c.participant == participant)
            .expect("known participant")
    }

    /// Delivers everything in flight, lets every party react, and advances the clock by `dt`.
    pub fn step(&mut self, dt: Duration) {
        // Bounded: each round drains every queue; a handful of rounds settles any exchange.
        for _ in 0..16 {
            let mut moved = false;
            let by_addr: HashMap<SocketAddr, usize> = self
                .clients
                .iter()
                .enumerate()
                .map(|(i, c)| (c.addr, i))
                .collect();
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|(at, _, _)| *at <= now);
            self.in_flight = later;
            let mut to_clients: VecDeque<_> = due.into_iter().map(|(_, to, d)| (to, d)).collect();
            while let Some(Transmit { to, data, .. }) = self.router.poll_transmit() {
                let link = by_addr
                    .get(&to)
                    .and_then(|&i| self.downlinks.get_mut(&self.clients[i].participant));
                match link.map(|link| link.offer(now, data.len())) {
                    Some(None) => {}
                    Some(Some(at)) if at > now => self.in_flight.push((at, to, data)),
                    _ => to_clients.push_back((to, data)),
                }
            }
            for (to, data) in to_clients {
                moved = true;
                self.to_clients += 1;
                if self
                    .drop_every_nth_to_clients
                    .is_some_and(|n| self.to_clients.is_multiple_of(n))
                {
                    continue;
                }
                match by_addr.get(&to) {
                    Some(&i) if self.cut_off.contains(&self.clients[i].participant) => {}
                    Some(&i) => {
                        let msg = tagged(self.now, SFU_ADDR, to, data);
                        let _ = self.clients[i].pc.handle_read(msg);
                    }
                    None => self.undeliverable += 1,
                }
            }
            while let Some(event) = self.router.poll_event() {
                moved = true;
                self.handle_event(event);
            }
            for i in 0..self.clients.len() {
                let client = &mut self.clients[i];
                let mut out = Vec::new();
                while let Some(msg) = client.pc.poll_write() {
                    out.push(msg);
                }
                while client.pc.poll_event().is_some() {}
                while let Some(msg) = client.pc.poll_read() {
                    match msg.message {
                        RTCMessage::RtpPacket(_, packet) => client.received.push(Received {
                            ssrc: packet.header.ssrc,
                            seq: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            payload: packet.payload,
                        }),
                        RTCMessage::RtcpPacket(_, packets) => {
                            let reports = packets
                                .iter()
                                .filter_map(|p| p.as_any().downcast_ref::<SenderReport>());
                            let now = self.now;
                            client
                                .sender_reports
                                .extend(reports.map(|r| (now, r.clone())));
                        }
                        _ => {}
                    }
                }
                let from = client.addr;
                if self.cut_off.contains(&client.participant) {
                    continue;
                }
                for msg in out {
                    moved = true;
                    if let Some((participant, n)) = &self.lossy_uplink
                        && *participant == client.participant
                    {
                        self.from_lossy += 1;
                        if self.from_lossy.is_multiple_of(*n) {
                            continue;
                        }
                    }
                    self.router
                        .handle_datagram(self.now, from, SFU_ADDR, &msg.message);
                }
            }
            if !moved {
                break;
            }
        }
        self.now += dt;
        for client in &mut self.clients {
            if client.pc.poll_timeout().is_some_and(|t| t <= self.now) {
                let _ = client.pc.handle_timeout(self.now);
            }
        }
        if self.router.poll_timeout() <= self.now {
            self.router.handle_timeout(self.now);
        }
    }

    /// Steps until `done` holds, at most `max_steps` times; returns whether it held.
    pub fn run_until(
        &mut self,
        max_steps: usize,
        dt: Duration,
        done: impl Fn(&Sim) -> bool,
    ) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            self.step(dt);
        }
        done(self)
    }

    fn handle_event(&mut self, event: SfuEvent) {
        match event {
            SfuEvent::TrackPublished { participant, track } => {
                self.published.push((participant, track.sid));
            }
            SfuEvent::SubscribeOffer { participant, sdp } => {
                self.subscribe_offers += 1;
                let now = self.now;
                let Some(client) = self
                    .clients
                    .iter_mut()
                    .find(|c| c.participant == participant)
                else {
                    return;
                };
                let offer = RTCSessionDescription::offer(sdp).expect("SFU offer parses");
                client
                    .pc
                    .set_remote_description(now, offer)
                    .expect("SFU offer applies");
                let answer = client.pc.create_answer(None).expect("answer");
                let sdp = if self.no_red.contains(&participant) {
                    without_red(&answer.sdp)
                } else {
                    answer.sdp.clone()
                };
                client
                    .pc
                    .set_local_description(now, answer)
                    .expect("local answer");
                self.router
                    .subscribe_answer(now, &participant, sdp)
                    .expect("SFU takes the answer");
            }
            SfuEvent::PeerState {
                participant,
                target,
                state,
            } => self.peer_states.push((participant, target, state)),
            SfuEvent::ConnectionQuality {
                participant,
                quality,
                loss,
                ..
            } => self.qualities.push((participant, quality, loss)),
            SfuEvent::QosSample {
                participant,
                sample,
                ..
            } => self.qos_samples.push((participant, *sample)),
            SfuEvent::StreamState {
                participant,
                track_sid,
                paused,
            } => self.stream_states.push((participant, track_sid, paused)),
            SfuEvent::TrackUnpublished { .. }
            | SfuEvent::RelayKeyframeRequest { .. }
            | SfuEvent::RelayLayerDemand { .. }
            | SfuEvent::RelayListenerLoss { .. }
            | SfuEvent::RelayNack { .. }
            | SfuEvent::RelaySenderReport { .. } => self.relay_events.push(event),
            SfuEvent::RecordingFailed { .. } => {}
        }
    }
}

/// An answer without audio RED (payload type [`red::PAYLOAD_TYPE`]), as a browser that has no
/// RED would write it.
fn without_red(sdp: &str) -> String {
    let pt = red::PAYLOAD_TYPE.to_string();
    let own = [format!("a=rtpmap:{pt} "), format!("a=fmtp:{pt} ")];
    sdp.split("\r\n")
        .filter(|line| !own.iter().any(|prefix| line.starts_with(prefix.as_str())))
        .map(|line| match line.strip_prefix("m=audio ") {
            Some(rest) => {
                let kept: Vec<&str> = rest.split(' ').filter(|t| *t != pt).collect();
                format!("m=audio {}", kept.join(" "))
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Where a client's [`ChromeRtx`] sits: below `rtc`'s NACK responder (4_000), which makes the
/// retransmissions it marks, and above the TWCC sender (2_000), which numbers them.
const CHROME_RTX_SLOT: usize = 3_500;

/// What Chrome does and `rtc`'s own sender does not: the retransmissions of a simulcast layer,
/// on the layer's RTX stream, carry the MID and the layer's RID as `repaired-rtp-stream-id`
/// (RFC 8852). Chrome signals no SSRCs for simulcast, so that extension is all that tells a
/// receiver which layer an RTX stream repairs (Chrome sends it until the receiver reports on
/// the RTX stream, which the SFU never does). A client interceptor on the write leg: it learns
/// each layer's MID and RID from the layer's own packets, which carry them.
#[derive(Default)]
struct ChromeRtx {
    layers: Vec<ChromeLayer>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

struct ChromeLayer {
    ssrc: u32,
    rtx_ssrc: u32,
    /// Extension ids: MID, RID, repaired RID.
    ids: [Option<u8>; 3],
    mid: Option<Bytes>,
    rid: Option<Bytes>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ChromeRtx {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(rtp) = &mut msg.message.packet {
            let header = &mut rtp.header;
            if let Some(layer) = self.layers.iter_mut().find(|l| l.ssrc == header.ssrc) {
                let [mid, rid, _] = layer
                    .ids
                    .map(|id| id.and_then(|id| header.get_extension(id)));
                layer.mid = mid.or(layer.mid.take());
                layer.rid = rid.or(layer.rid.take());
            } else if let Some(layer) = self.layers.iter().find(|l| l.rtx_ssrc == header.ssrc)
                && let ([Some(mid_id), _, Some(rrid_id)], Some(mid), Some(rid)) =
                    (layer.ids, &layer.mid, &layer.rid)
            {
                header.extension = true;
                header.extension_profile = 0xBEDE;
                header.set_extension(mid_id, mid.clone())?;
                header.set_extension(rrid_id, rid.clone())?;
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for ChromeRtx {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let Some(rtx_ssrc) = info.ssrc_rtx else {
            return;
        };
        let id = |uri: &str| {
            let extensions = info.rtp_header_extensions.iter();
            let found = extensions.into_iter().find(|e| e.uri == uri);
            found.and_then(|e| u8::try_from(e.id).ok())
        };
        self.layers.retain(|l| l.ssrc != info.ssrc);
        self.layers.push(ChromeLayer {
            ssrc: info.ssrc,
            rtx_ssrc,
            ids: [
                id(rtc::sdp::extmap::SDES_MID_URI),
                id(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI),
                id(rtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI),
            ],
            mid: None,
            rid: None,
        });
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.layers.retain(|l| l.ssrc != info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// A one-packet VP8 frame: payload descriptor (S=1, PID=0), then a payload header whose
/// inverse-keyframe bit says what it is, then `body`.
pub fn vp8_payload(keyframe: bool, body: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x10, if keyframe { 0x00 } else { 0x01 }];
    payload.extend_from_slice(body);
    payload
}

fn tagged(now: Instant, from: SocketAddr, to: SocketAddr, data: BytesMut) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: to,
            peer_addr: from,
            transport_protocol: TransportProtocol::UDP,
            ecn: None,
        },
        message: data,
    }
}

/// A STUN binding request as a browser sends it (USERNAME `ours:theirs`, MESSAGE-INTEGRITY
/// with `password`, FINGERPRINT), for tests of what the SFU accepts.
pub fn signed_binding_request(username: &str, password: &str) -> Vec<u8> {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{BINDING_REQUEST, Message, TransactionId};
    use rtc::stun::textattrs::Username;
    let provider = rtc::crypto::default_provider().expect("rtc has a crypto provider");
    let mut message = Message::new();
    message
        .build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                password.to_owned(),
                provider.crypto(),
            )),
            Box::new(FINGERPRINT),
        ])
        .expect("a well-formed request");
    message.raw
}
