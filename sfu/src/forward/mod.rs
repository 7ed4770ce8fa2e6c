//! Per-packet forwarding decisions for one subscriber of one published track (a consumer).
//!
//! [`Forwarder::decide`] is pure: given a packet's layer, numbers, keyframe flag and the time,
//! it says drop or forward-with-these-numbers. The worker applies the decision. Keeping the
//! decision free of I/O lets the layer-switching rules be tested on virtual time.

pub mod allocate;
pub mod condition;
pub mod quality;
pub mod rates;
pub mod rewrite;
pub mod selector;
pub mod simulcast;
pub mod temporal;

use std::time::Instant;

use rewrite::{Rewriter, Rewritten};
use simulcast::Layer;
use temporal::TemporalFilter;

use crate::codec::{Vp8Numbers, Vp8Temporal};

/// What one incoming packet looks like to the forwarder.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    pub layer: Layer,
    pub seq: u16,
    pub timestamp: u32,
    /// Whether the packet starts a keyframe (always `true` for audio: any packet is a valid
    /// starting point).
    pub keyframe: bool,
    /// VP8 picture numbers, rewritten along with the sequence numbers.
    pub vp8: Option<Vp8Numbers>,
    /// The frame's VP8 temporal layer, if the publisher encodes with temporal layers.
    pub temporal: Option<Vp8Temporal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop,
    Forward(Rewritten),
}

/// Forwarding state of one consumer.
#[derive(Debug, Clone)]
pub struct Forwarder {
    rewriter: Rewriter,
    /// The layer being forwarded now; `None` until the first keyframe.
    current: Option<Layer>,
    /// The layer we want; switching happens on that layer's next keyframe.
    target: Option<Layer>,
    /// Which frames of the current layer are forwarded.
    temporal: TemporalFilter,
}

impl Forwarder {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            rewriter: Rewriter::new(clock_rate),
            current: None,
            target: None,
            temporal: TemporalFilter::default(),
        }
    }

    /// The highest temporal layer to forward (of publishers that send them): lower, the frame
    /// rate drops at once; higher, it rises at the next frame the decoder can switch at.
    pub fn set_temporal_target(&mut self, temporal: u8) {
        self.temporal.set_target(temporal);
    }

    /// The highest temporal layer forwarded now.
    pub fn current_temporal(&self) -> u8 {
        self.temporal.current()
    }

    /// The layer to forward; `None` pauses the consumer: nothing is forwarded, and forwarding
    /// resumes on a keyframe (the decoder cannot continue from where it stopped).
    pub fn set_target(&mut self, layer: Option<Layer>) {
        self.target = layer;
        if layer.is_none() {
            self.current = None;
        }
    }

    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// The layer that needs a keyframe before forwarding can (re)start or switch, if any.
    pub fn wants_keyframe(&self) -> Option<Layer> {
        match (self.current, self.target) {
            (current, Some(target)) if current != Some(target) => Some(target),
            _ => None,
        }
    }

    /// The output timestamp of an input timestamp of the layer being forwarded (see
    /// [`Rewriter::output_timestamp`]); `None` while nothing is forwarded.
    pub fn output_timestamp(&self, timestamp: u32) -> Option<u32> {
        self.current?;
        Some(self.rewriter.output_timestamp(timestamp))
    }

    /// The next output sequence number, for a packet the SFU adds after those forwarded (see
    /// [`Rewriter::reserve`]); `None` while nothing is forwarded.
    pub fn reserve_seq(&mut self) -> Option<u16> {
        self.current?;
        self.rewriter.reserve()
    }

    /// Forgets the current layer so that forwarding restarts on the next keyframe, e.g. when
    /// the subscriber asked for one (its decoder is broken until then anyway).
    pub fn restart(&mut self) {
        if self.target.is_none() {
            self.target = self.current;
        }
        self.current = None;
    }

    /// Starting (nothing forwarded yet), any keyframe at or below the target layer will do: a
    /// picture now beats a better one later, and the switch up follows at the target's next
    /// keyframe (still wanted, so still requested). Frames of the current layer above the
    /// temporal target are dropped, and the rewriter closes up the numbers behind them.
    pub fn decide(&mut self, packet: PacketMeta, now: Instant) -> Decision {
        let starts = self.current.is_none() && self.target.is_some_and(|t| packet.layer <= t);
        let rewritten = if packet.keyframe
            && (starts || self.target == Some(packet.layer))
            && self.current != self.target
        {
            self.current = Some(packet.layer);
            self.temporal.restart();
            self.rewriter
                .start_segment(packet.seq, packet.timestamp, now)
        } else if self.current == Some(packet.layer) {
            if packet.keyframe {
                self.temporal.restart();
            }
            if !self.temporal.forwards(packet.timestamp, packet.temporal) {
                let picture_id = packet.vp8.and_then(|numbers| numbers.picture_id);
                self.rewriter.skip(packet.seq, picture_id);
                return Decision::Drop;
            }
            match self.rewriter.rewrite(packet.seq, packet.timestamp, now) {
                Some(rewritten) => rewritten,
                None => return Decision::Drop,
            }
        } else {
            return Decision::Drop;
        };
        Decision::Forward(Rewritten {
            vp8: packet
                .vp8
                .map(|numbers| self.rewriter.renumber_vp8(numbers)),
            ..rewritten
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meta(layer: Layer, seq: u16, timestamp: u32, keyframe: bool) -> PacketMeta {
        PacketMeta {
            layer,
            seq,
            timestamp,
            keyframe,
            vp8: None,
            temporal: None,
        }
    }

    fn seq_of(d: Decision) -> u16 {
        match d {
            Decision::Forward(r) => r.seq,
            Decision::Drop => panic!("dropped"),
        }
    }

    #[test]
    fn waits_for_keyframe_then_forwards() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(0));
        assert_eq!(f.wants_keyframe(), Some(0));
        assert_eq!(f.decide(meta(0, 10, 0, false), t), Decision::Drop);
        let first = seq_of(f.decide(meta(0, 11, 3000, true), t));
        assert_eq!(f.wants_keyframe(), None);
        assert_eq!(seq_of(f.decide(meta(0, 12, 3000, false), t)), first + 1);
    }

    #[test]
    fn switches_layer_only_on_its_keyframe_without_gaps() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(0));
        let mut last = seq_of(f.decide(meta(0, 100, 0, true), t));
        f.set_target(Some(2));
        assert_eq!(f.wants_keyframe(), Some(2));
        // Layer 2 interframes are dropped, layer 0 keeps flowing until the switch.
        assert_eq!(f.decide(meta(2, 5000, 77, false), t), Decision::Drop);
        last = {
            let s = seq_of(f.decide(meta(0, 101, 3000, false), t));
            assert_eq!(s, last + 1);
            s
        };
        let t1 = t + Duration::from_millis(10);
        let s = seq_of(f.decide(meta(2, 5001, 90, true), t1));
        assert_eq!(s, last + 1, "continuous across the switch");
        assert_eq!(f.current(), Some(2));
        assert_eq!(f.decide(meta(0, 102, 6000, false), t1), Decision::Drop);
        assert_eq!(seq_of(f.decide(meta(2, 5002, 3090, false), t1)), s + 1);
    }

    #[test]
    fn starts_on_the_first_keyframe_at_or_below_target_then_climbs() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(1));
        assert_eq!(
            f.decide(meta(2, 1, 0, true), t),
            Decision::Drop,
            "above target"
        );
        let a = seq_of(f.decide(meta(0, 50, 0, true), t));
        assert_eq!(f.current(), Some(0));
        assert_eq!(f.wants_keyframe(), Some(1), "still climbing");
        assert_eq!(f.decide(meta(1, 70, 0, false), t), Decision::Drop);
        assert_eq!(seq_of(f.decide(meta(0, 51, 90, false), t)), a + 1);
        assert_eq!(seq_of(f.decide(meta(1, 71, 180, true), t)), a + 2);
        assert_eq!(f.current(), Some(1));
        assert_eq!(f.wants_keyframe(), None);
    }

    #[test]
    fn vp8_picture_numbers_follow_on_across_a_switch() {
        let t = Instant::now();
        let vp8 = |picture_id, tl0_pic_idx| {
            Some(Vp8Numbers {
                picture_id: Some(picture_id),
                tl0_pic_idx: Some(tl0_pic_idx),
            })
        };
        let forwarded = |d: Decision| match d {
            Decision::Forward(r) => r.vp8,
            Decision::Drop => panic!("dropped"),
        };
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(0));
        let with = |layer, seq, keyframe, numbers| PacketMeta {
            vp8: numbers,
            ..meta(layer, seq, 0, keyframe)
        };
        assert_eq!(
            forwarded(f.decide(with(0, 1, true, vp8(500, 9)), t)),
            vp8(500, 9)
        );
        assert_eq!(
            forwarded(f.decide(with(0, 2, false, vp8(501, 10)), t)),
            vp8(501, 10)
        );
        f.set_target(Some(1));
        assert_eq!(
            f.decide(with(1, 70, false, vp8(9000, 60)), t),
            Decision::Drop
        );
        assert_eq!(
            forwarded(f.decide(with(1, 71, true, vp8(9001, 61)), t)),
            vp8(502, 11)
        );
        assert_eq!(
            forwarded(f.decide(with(1, 72, false, vp8(9002, 61)), t)),
            vp8(503, 11)
        );
        assert_eq!(forwarded(f.decide(with(1, 73, false, None), t)), None);
    }

    #[test]
    fn a_paused_consumer_forwards_nothing_and_resumes_on_a_keyframe_without_gaps() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(0));
        let a = seq_of(f.decide(meta(0, 1, 0, true), t));
        f.set_target(None);
        assert_eq!(f.wants_keyframe(), None, "a paused consumer wants nothing");
        assert_eq!(f.decide(meta(0, 2, 3000, false), t), Decision::Drop);
        assert_eq!(f.decide(meta(0, 3, 6000, true), t), Decision::Drop);
        f.set_target(Some(0));
        assert_eq!(f.wants_keyframe(), Some(0));
        assert_eq!(f.decide(meta(0, 4, 9000, false), t), Decision::Drop);
        assert_eq!(seq_of(f.decide(meta(0, 5, 12000, true), t)), a + 1);
    }

    #[test]
    fn restart_waits_for_a_fresh_keyframe() {
        let t = Instant::now();
        let mut f = Forwarder::new(48_000);
        f.set_target(Some(0));
        let a = seq_of(f.decide(meta(0, 1, 0, true), t));
        f.restart();
        assert_eq!(f.wants_keyframe(), Some(0));
        assert_eq!(f.decide(meta(0, 2, 960, false), t), Decision::Drop);
        assert_eq!(seq_of(f.decide(meta(0, 3, 1920, true), t)), a + 1);
    }

    /// One frame of an L1T3 simulcast layer as Chromium sends it: TIDs 0, 2, 1, 2 repeating,
    /// the first frames of layers 1 and 2 after every other TL0 frame marked as sync points,
    /// each layer numbering its packets, pictures and TL0 frames on its own.
    struct SentFrame {
        packets: Vec<PacketMeta>,
        tid: u8,
    }

    fn l1t3_frame(layer: Layer, k: u32, keyframe: bool) -> SentFrame {
        let tid = [0, 2, 1, 2][(k % 4) as usize];
        let base = layer as u32;
        let packets = (0..3)
            .map(|p| PacketMeta {
                layer,
                seq: (base * 10_000 + k * 3 + p) as u16,
                timestamp: base * 7_777 + k * 3_000,
                keyframe: keyframe && p == 0,
                vp8: Some(Vp8Numbers {
                    picture_id: Some((base * 1_000 + k) as u16),
                    tl0_pic_idx: Some((base * 50 + k / 4) as u8),
                }),
                temporal: Some(Vp8Temporal {
                    id: tid,
                    sync: keyframe || matches!(k % 8, 1 | 2),
                }),
            })
            .collect();
        SentFrame { packets, tid }
    }

    /// What a receiver would make of the output: every sequence number follows the last
    /// (no loss to conceal or ask for), every picture ID the last picture's, TL0PICIDX goes
    /// up by one exactly at base-layer frames, and every frame can be decoded from the frames
    /// sent before it (a frame of layer n that is not a sync point needs the previous frames
    /// of layer n, which must not have been dropped).
    #[derive(Default)]
    struct Receiver {
        seq: Option<u16>,
        picture: Option<(u32, u16, u8)>,
        /// Highest temporal layer whose chain of frames the receiver has unbroken.
        synced: u8,
        frames: Vec<u8>,
    }

    impl Receiver {
        fn frame(&mut self, f: &mut Forwarder, sent: &SentFrame, now: Instant) {
            let mut forwarded = 0;
            let first = sent.packets[0];
            for packet in &sent.packets {
                let Decision::Forward(out) = f.decide(*packet, now) else {
                    continue;
                };
                forwarded += 1;
                if let Some(last) = self.seq {
                    assert_eq!(out.seq, last.wrapping_add(1), "sequence gap");
                }
                self.seq = Some(out.seq);
                let numbers = out.vp8.unwrap();
                let (id, tl0) = (numbers.picture_id.unwrap(), numbers.tl0_pic_idx.unwrap());
                match self.picture {
                    Some((ts, last_id, last_tl0)) if ts == out.timestamp => {
                        assert_eq!((id, tl0), (last_id, last_tl0), "within a frame");
                        continue;
                    }
                    Some((_, last_id, last_tl0)) => {
                        assert_eq!(id, (last_id + 1) & 0x7fff, "picture ID gap");
                        let step = u8::from(sent.tid == 0);
                        assert_eq!(tl0, last_tl0.wrapping_add(step), "TL0PICIDX");
                    }
                    None => {}
                }
                self.picture = Some((out.timestamp, id, tl0));
                let temporal = packet.temporal.unwrap();
                if first.keyframe {
                    self.synced = MAX_TEMPORAL_LAYERS - 1;
                } else if temporal.sync && temporal.id <= self.synced + 1 {
                    self.synced = self.synced.max(temporal.id);
                }
                assert!(temporal.id <= self.synced, "frame of a broken layer");
                self.frames.push(temporal.id);
            }
            assert!(
                forwarded == 0 || forwarded == sent.packets.len(),
                "frames go whole"
            );
            // A frame of the layer being received was dropped: its temporal layer is broken.
            if forwarded == 0 && f.current() == Some(first.layer) && sent.tid > 0 {
                self.synced = self.synced.min(sent.tid - 1);
            }
        }
    }

    use temporal::MAX_TEMPORAL_LAYERS;

    #[test]
    fn temporal_and_spatial_switches_keep_vp8_descriptors_continuous() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        let mut rx = Receiver::default();
        f.set_target(Some(0));
        let mut fps_in = Vec::new();
        for k in 0..200u32 {
            let now = t + Duration::from_millis(u64::from(k) * 33);
            match k {
                20 => f.set_temporal_target(0),
                // (After the keyframe at 40, which would let every layer up at once.)
                43 => f.set_temporal_target(2),
                60 => f.set_temporal_target(1),
                // Up a spatial layer (at layer 1's keyframe, frame 80), keeping 15 fps.
                70 => f.set_target(Some(1)),
                100 => f.set_temporal_target(0),
                // Down to layer 0 at its keyframe (frame 120), at 30 fps.
                110 => {
                    f.set_target(Some(0));
                    f.set_temporal_target(2);
                }
                _ => {}
            }
            let keyframe = k % 40 == 0;
            let before = rx.frames.len();
            for layer in [0, 1] {
                rx.frame(&mut f, &l1t3_frame(layer, k, keyframe), now);
            }
            fps_in.push(rx.frames.len() - before);
        }
        // Frames forwarded per 20-frame stretch: the frame rate each target gives.
        let per_stretch: Vec<usize> = fps_in.chunks(20).map(|c| c.iter().sum()).collect();
        assert_eq!(per_stretch[0], 20, "all layers");
        assert_eq!(per_stretch[1], 5, "TID 0: a quarter of the frames");
        // Back up: layer 1 at its next sync frame (50), then layer 2 at its next (57).
        assert_eq!(per_stretch[2], 5 + 3 + 2);
        assert_eq!(per_stretch[3], 10, "TID 0 and 1: half");
        // Layer 0's frame 80 goes out before layer 1's keyframe 80 switches: one more.
        assert_eq!(
            per_stretch[4],
            1 + 10,
            "the spatial switch keeps the temporal target"
        );
        // TID 0, and from 110 climbing on layer 1 until layer 0's keyframe: TID 1 at 114, 118.
        assert_eq!(per_stretch[5], 5 + 2);
        assert_eq!(
            per_stretch[6], 20,
            "back on layer 0 at its keyframe, at 30 fps"
        );
        assert_eq!(f.current(), Some(0));
        assert_eq!(f.current_temporal(), 2);
    }

    #[test]
    fn a_dropped_frame_whose_packets_come_late_leaves_the_forwarded_ones_consistent() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(0));
        f.set_temporal_target(0);
        let forward = |f: &mut Forwarder, p: PacketMeta| match f.decide(p, t) {
            Decision::Forward(r) => (r.seq, r.vp8.unwrap().picture_id.unwrap()),
            Decision::Drop => panic!("dropped {p:?}"),
        };
        let key = l1t3_frame(0, 0, true).packets;
        let tid2 = l1t3_frame(0, 1, false).packets;
        let tid1 = l1t3_frame(0, 2, false).packets;
        let tid2_again = l1t3_frame(0, 3, false).packets;
        let tl0 = l1t3_frame(0, 4, false).packets;
        let (a, id) = forward(&mut f, key[0]);
        forward(&mut f, key[1]);
        // Key packet 2 comes after the dropped frames that follow it.
        for p in tid2.iter().chain(&tid1).chain(&tid2_again) {
            assert_eq!(f.decide(*p, t), Decision::Drop);
        }
        assert_eq!(
            forward(&mut f, key[2]),
            (a.wrapping_add(2), id),
            "its own numbers"
        );
        assert_eq!(forward(&mut f, tl0[0]), (a.wrapping_add(3), id + 1));
        assert_eq!(forward(&mut f, tl0[1]), (a.wrapping_add(4), id + 1));
    }
}
