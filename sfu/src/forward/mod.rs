//! Per-packet forwarding decisions for one subscriber of one published track (a consumer).
//!
//! [`Forwarder::decide`] is pure: given a packet's layer, numbers, keyframe flag and the time,
//! it says drop or forward-with-these-numbers. The worker applies the decision. Keeping the
//! decision free of I/O lets the layer-switching rules be tested on virtual time.

pub mod allocate;
pub mod condition;
pub mod rates;
pub mod rewrite;
pub mod selector;
pub mod simulcast;

use std::time::Instant;

use rewrite::{Rewriter, Rewritten};
use simulcast::Layer;

use crate::codec::Vp8Numbers;

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
}

impl Forwarder {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            rewriter: Rewriter::new(clock_rate),
            current: None,
            target: None,
        }
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
    /// keyframe (still wanted, so still requested).
    pub fn decide(&mut self, packet: PacketMeta, now: Instant) -> Decision {
        let starts = self.current.is_none() && self.target.is_some_and(|t| packet.layer <= t);
        let rewritten = if packet.keyframe
            && (starts || self.target == Some(packet.layer))
            && self.current != self.target
        {
            self.current = Some(packet.layer);
            self.rewriter
                .start_segment(packet.seq, packet.timestamp, now)
        } else if self.current == Some(packet.layer)
            && let Some(rewritten) = self.rewriter.rewrite(packet.seq, packet.timestamp, now)
        {
            rewritten
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
}
