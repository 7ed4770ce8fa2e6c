//! The media path: each RTP packet from a publisher forwarded to every live consumer (layer
//! choice, renumbering, RED and FEC per subscriber), RTCP from the peers, and keyframe
//! requests (PLIs) up to the publishers.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aula_protocol::PeerTarget;
use bytes::{Bytes, BytesMut};
use rtc::peer_connection::message::RTCMessage;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::RTCRtpSenderId;
use tracing::debug;

use super::{ConsumerStage, PACKET_OVERHEAD, PeerKey, Router, Upstream, relay, sender_reports};
use crate::api::{ParticipantId, SfuEvent, TrackSid};
use crate::codec::{VideoCodec, Vp8Numbers, Vp8Temporal};
use crate::fec;
use crate::forward::simulcast::Layer;
use crate::forward::{Decision, PacketMeta};
use crate::red;
use crate::tap::is_keyframe_request;

/// At most one PLI per layer per this interval, so a crowd of joining subscribers (or a
/// subscriber whose decoder keeps complaining) cannot make the publisher send only keyframes.
const PLI_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// The same for requests from another shard or node, which that side has already limited (and
/// let through at once when it had to, e.g. for a student whose path came back): only the
/// requests of several importers at one moment are merged here. With the local limit, an
/// importer's urgent request could wait half a second behind an earlier one (a student's video
/// back 1.1 s after its path returned, against 0.2 s on one shard).
pub(super) const RELAYED_PLI_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// One path's return can be signalled twice, by its RTCP after a silence and by ICE calling
/// it connected again, about 300 ms apart: returns this close together are one, and ask the
/// publisher for one keyframe, not two.
const ONE_RETURN: Duration = Duration::from_secs(1);

impl Router {
    pub(super) fn handle_peer_message(&mut self, now: Instant, key: PeerKey, message: RTCMessage) {
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
                // From a publisher: its sender reports, which subscribers' reports follow (see
                // `sender_clock`) and recordings keep.
                if let Some(sid) = self
                    .peers
                    .get(&key)
                    .filter(|p| p.target == PeerTarget::Publish)
                    .and_then(|p| p.producers.get(&track_id))
                    .cloned()
                {
                    let reports: Vec<SenderReport> = packets
                        .iter()
                        .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
                        .cloned()
                        .collect();
                    self.note_sender_reports(now, &sid, &reports);
                    if !self.captures.is_empty() {
                        self.captures.rtcp(now, &sid, &packets);
                    }
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

    pub(super) fn forward(&mut self, now: Instant, sid: &str, mut packet: rtc::rtp::Packet) {
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
                    sender_reports::pass_clock(&self.peers, &producer.clocks, consumer);
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
                if frame_end && !protect {
                    // Protection went off mid-frame: what was counted was never protected.
                    consumer.fec_frame = 0;
                }
                writes.push((consumer.peer, consumer.sender_id, out));
                if protect && frame_end {
                    // The frame's FEC packets follow its last packet (see `fec`).
                    let groups = fec::plan(std::mem::take(&mut consumer.fec_frame), consumer.fec);
                    for group in 0..groups.len().min(fec::MAX_GROUPS) {
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
            Ok(()) => {
                self.forwarded += 1;
                self.metrics.packets_forwarded.inc();
            }
            Err(e) => debug!(participant = %peer.participant, error = %e, "forward failed"),
        }
        self.mark(key);
    }

    /// Asks publishers for the keyframes that waiting consumers and recordings need.
    pub(super) fn request_keyframes(&mut self, now: Instant) {
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
    pub(super) fn keyframes_after_outages(&mut self, now: Instant) {
        let mut returned: Vec<ParticipantId> = Vec::new();
        for peer in self.peers.values_mut() {
            if peer.target != PeerTarget::Subscribe
                || !peer.feedback.path_returned.swap(false, Ordering::Relaxed)
            {
                continue;
            }
            let again = peer
                .returned_at
                .is_some_and(|at| now.saturating_duration_since(at) < ONE_RETURN);
            if !again {
                peer.returned_at = Some(now);
                returned.push(peer.participant.clone());
            }
        }
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
    pub(super) fn send_pli(&mut self, now: Instant, sid: &str, layer: Layer) {
        self.send_pli_within(now, sid, layer, PLI_MIN_INTERVAL);
    }

    /// Sends a PLI for one layer of a producer unless one went less than `min_interval` ago.
    pub(super) fn send_pli_within(
        &mut self,
        now: Instant,
        sid: &str,
        layer: Layer,
        min_interval: Duration,
    ) {
        let Some(producer) = self.producers.get_mut(sid) else {
            return;
        };
        if producer.video.is_none()
            || producer
                .last_pli
                .get(&layer)
                .is_some_and(|at| now.saturating_duration_since(*at) < min_interval)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use aula_protocol::{PeerTarget, TrackKind};

    use crate::sim::{Sim, vp8_payload};

    /// Runs the class for `frames` frames of the teacher's video, 33 ms apart.
    fn frames(sim: &mut Sim, teacher: usize, frames: usize) {
        for _ in 0..frames {
            sim.send(teacher, &vp8_payload(false, b"frame"));
            sim.step(Duration::from_millis(33));
        }
    }

    /// What the student's tap does when RTCP comes after a silence, and the router when ICE
    /// calls the path connected again after an outage.
    fn path_returns(sim: &mut Sim) {
        for peer in sim.router.peers.values() {
            if peer.participant == "student" && peer.target == PeerTarget::Subscribe {
                peer.feedback.path_returned.store(true, Ordering::Relaxed);
            }
        }
    }

    /// A browser's RTCP and its ICE checks both say its path is back, about 300 ms apart: the
    /// teacher is asked for one keyframe, not two. A return over a second later is another.
    #[test]
    fn a_return_signalled_twice_asks_for_one_keyframe() {
        let mut sim = Sim::new();
        let teacher = sim.add_publisher("teacher", TrackKind::Video);
        for _ in 0..500 {
            if !sim.published.is_empty() {
                break;
            }
            sim.send(teacher, &vp8_payload(true, b"warm-up"));
            sim.step(Duration::from_millis(5));
        }
        let (_, track) = sim.published.first().cloned().expect("published");
        sim.subscribe("student", &track);
        let step = Duration::from_millis(5);
        assert!(sim.run_until(1_000, step, |s| s.subscribe_offers > 0));
        for i in 0..150 {
            sim.send(teacher, &vp8_payload(i % 100 == 0, b"frame"));
            sim.step(Duration::from_millis(33));
        }
        assert!(!sim.client("student").received.is_empty(), "video flowed");

        let plis = sim.router.metrics().plis_sent.get();
        path_returns(&mut sim);
        frames(&mut sim, teacher, 9);
        path_returns(&mut sim);
        frames(&mut sim, teacher, 9);
        assert_eq!(sim.router.metrics().plis_sent.get() - plis, 1);
        frames(&mut sim, teacher, 30);
        path_returns(&mut sim);
        frames(&mut sim, teacher, 3);
        assert_eq!(sim.router.metrics().plis_sent.get() - plis, 2);
    }
}
