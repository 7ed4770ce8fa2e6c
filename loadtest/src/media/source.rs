//! A publisher's media clock: which payloads are due now, stamped and numbered.
//!
//! Pre-encoded media in a loop costs almost nothing, so one task can publish for many clients.
//! Frames are sent as a burst at their frame time, as a browser's encoder produces them.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{audio, vp8};
use crate::clock::Epoch;

/// A simulcast (or single) video layer as the publisher encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// RTP stream id announced in SDP (`q`, `h`, `f` as Aula's SDKs send).
    pub rid: &'static str,
    pub bitrate_bps: u32,
    pub width: u16,
    pub height: u16,
}

/// Chrome's usual three layers for a 720p camera, at realistic bitrates.
pub const SIMULCAST_LAYERS: [LayerSpec; 3] = [
    LayerSpec {
        rid: "q",
        bitrate_bps: 150_000,
        width: 320,
        height: 180,
    },
    LayerSpec {
        rid: "h",
        bitrate_bps: 500_000,
        width: 640,
        height: 360,
    },
    LayerSpec {
        rid: "f",
        bitrate_bps: 1_500_000,
        width: 1280,
        height: 720,
    },
];

/// One 360p layer, as meetings with many tiles send.
pub const SINGLE_LAYER: LayerSpec = LayerSpec {
    rid: "",
    bitrate_bps: 500_000,
    width: 640,
    height: 360,
};

/// What a publisher sends.
#[derive(Debug, Clone)]
pub struct MediaPlan {
    pub audio: bool,
    /// Video layers, lowest first; empty for no video. More than one means simulcast.
    pub video_layers: Vec<LayerSpec>,
    pub fps: u32,
    /// A keyframe every this many frames (also whenever a PLI arrives).
    pub keyframe_interval: u32,
}

impl MediaPlan {
    pub fn simulcast(&self) -> bool {
        self.video_layers.len() > 1
    }
}

/// Which outgoing RTP stream a payload belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRef {
    Audio,
    /// Index into [`MediaPlan::video_layers`].
    Video(usize),
}

/// One payload ready to become an RTP packet.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub stream: StreamRef,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// Keyframes are this many times an average frame, about what VP8 produces at these rates.
const KEYFRAME_SIZE_FACTOR: usize = 4;
/// Video RTP clock.
const VIDEO_CLOCK: u64 = 90_000;
/// Largest RTP payload (browsers keep packets under ~1200 bytes).
const MAX_PAYLOAD: usize = 1_100;
/// If the loop falls further behind than this many frames, skip ahead instead of bursting.
const MAX_CATCH_UP: u32 = 5;

/// Sequence number and timestamp of one outgoing stream.
#[derive(Debug, Clone)]
struct Numbering {
    seq: u16,
    timestamp: u32,
}

impl Numbering {
    fn random() -> Self {
        Self {
            seq: rand::random(),
            timestamp: rand::random(),
        }
    }

    fn next_seq(&mut self) -> u16 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }
}

struct VideoLayer {
    spec: LayerSpec,
    packetizer: vp8::Vp8Packetizer,
    numbering: Numbering,
    force_keyframe: bool,
}

/// See the module docs.
pub struct MediaSource {
    plan: MediaPlan,
    epoch: Epoch,
    audio: Option<(Numbering, Instant)>,
    layers: Vec<VideoLayer>,
    next_frame: Instant,
    frame_no: u32,
}

impl MediaSource {
    /// Starts the clocks at `now`; the first frame of every layer is a keyframe.
    pub fn new(plan: MediaPlan, epoch: Epoch, now: Instant) -> Self {
        let layers = plan
            .video_layers
            .iter()
            .map(|spec| VideoLayer {
                spec: *spec,
                packetizer: vp8::Vp8Packetizer::new(rand::random(), MAX_PAYLOAD),
                numbering: Numbering::random(),
                force_keyframe: true,
            })
            .collect();
        Self {
            audio: plan.audio.then(|| (Numbering::random(), now)),
            plan,
            epoch,
            layers,
            next_frame: now,
            frame_no: 0,
        }
    }

    /// A PLI arrived for this layer: its next frame is a keyframe.
    pub fn request_keyframe(&mut self, layer: usize) {
        if let Some(layer) = self.layers.get_mut(layer) {
            layer.force_keyframe = true;
        }
    }

    /// When [`MediaSource::poll`] next has something to send.
    pub fn next_due(&self) -> Option<Instant> {
        let video = (!self.layers.is_empty()).then_some(self.next_frame);
        let audio = self.audio.as_ref().map(|(_, due)| *due);
        match (audio, video) {
            (Some(a), Some(v)) => Some(a.min(v)),
            (a, v) => a.or(v),
        }
    }

    /// Appends every payload due at `now` to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let sent_at = self.epoch.micros(now);
        if let Some((numbering, due)) = self.audio.as_mut() {
            let period = Duration::from_millis(audio::FRAME_MILLIS);
            let mut sent = 0;
            while *due <= now && sent < MAX_CATCH_UP {
                out.push(Outgoing {
                    stream: StreamRef::Audio,
                    seq: numbering.next_seq(),
                    timestamp: numbering.timestamp,
                    marker: false,
                    payload: audio::payload(sent_at),
                });
                numbering.timestamp = numbering.timestamp.wrapping_add(audio::RTP_TICKS_PER_FRAME);
                *due += period;
                sent += 1;
            }
            if *due <= now {
                *due = now + period;
            }
        }
        if self.layers.is_empty() {
            return;
        }
        let period = Duration::from_secs(1) / self.plan.fps.max(1);
        let ticks = u32::try_from(VIDEO_CLOCK / u64::from(self.plan.fps.max(1))).unwrap_or(3000);
        let mut frames = 0;
        while self.next_frame <= now && frames < MAX_CATCH_UP {
            let periodic = self
                .frame_no
                .is_multiple_of(self.plan.keyframe_interval.max(1));
            for (index, layer) in self.layers.iter_mut().enumerate() {
                // Taken even on a periodic keyframe: that one satisfies the request too.
                let forced = std::mem::take(&mut layer.force_keyframe);
                let keyframe = periodic || forced;
                let average = layer.spec.bitrate_bps as usize / 8 / self.plan.fps.max(1) as usize;
                let size = if keyframe {
                    average * KEYFRAME_SIZE_FACTOR
                } else {
                    average
                };
                let payloads = layer.packetizer.packetize(vp8::Frame {
                    keyframe,
                    size,
                    width: layer.spec.width,
                    height: layer.spec.height,
                    sent_at,
                });
                let last = payloads.len().saturating_sub(1);
                for (i, payload) in payloads.into_iter().enumerate() {
                    out.push(Outgoing {
                        stream: StreamRef::Video(index),
                        seq: layer.numbering.next_seq(),
                        timestamp: layer.numbering.timestamp,
                        marker: i == last,
                        payload,
                    });
                }
                layer.numbering.timestamp = layer.numbering.timestamp.wrapping_add(ticks);
            }
            self.frame_no = self.frame_no.wrapping_add(1);
            self.next_frame += period;
            frames += 1;
        }
        if self.next_frame <= now {
            self.next_frame = now + period;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> MediaPlan {
        MediaPlan {
            audio: true,
            video_layers: SIMULCAST_LAYERS.to_vec(),
            fps: 30,
            keyframe_interval: 60,
        }
    }

    #[test]
    fn one_second_has_the_planned_rates() {
        let t0 = Instant::now();
        let mut source = MediaSource::new(plan(), Epoch::now(), t0);
        let mut out = Vec::new();
        // Poll every 5 ms for one second, as a driver loop would.
        for ms in (0..1000).step_by(5) {
            source.poll(t0 + Duration::from_millis(ms), &mut out);
        }
        let audio = out.iter().filter(|o| o.stream == StreamRef::Audio).count();
        assert_eq!(audio, 50);
        for (layer, spec) in SIMULCAST_LAYERS.iter().enumerate() {
            let packets: Vec<&Outgoing> = out
                .iter()
                .filter(|o| o.stream == StreamRef::Video(layer))
                .collect();
            let frames = packets.iter().filter(|o| o.marker).count();
            assert_eq!(frames, 30, "layer {layer}");
            let bits: usize = packets.iter().map(|o| o.payload.len() * 8).sum();
            // One keyframe (4x) in the second: within 15% above nominal.
            let nominal = spec.bitrate_bps as usize;
            assert!(
                bits >= nominal && bits < nominal * 115 / 100,
                "layer {layer}: {bits}"
            );
            // Sequence numbers are consecutive.
            for pair in packets.windows(2) {
                assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(1));
            }
        }
    }

    #[test]
    fn keyframes_on_schedule_and_on_request() {
        let t0 = Instant::now();
        let mut source = MediaSource::new(plan(), Epoch::now(), t0);
        let mut out = Vec::new();
        source.poll(t0, &mut out);
        let is_key = |o: &Outgoing| vp8::parse(&o.payload).is_some_and(|p| p.keyframe);
        assert_eq!(out.iter().filter(|o| is_key(o)).count(), 3, "first frame");
        out.clear();
        source.poll(t0 + Duration::from_millis(34), &mut out);
        assert_eq!(out.iter().filter(|o| is_key(o)).count(), 0);
        out.clear();
        source.request_keyframe(2);
        source.poll(t0 + Duration::from_millis(67), &mut out);
        let keys: Vec<StreamRef> = out.iter().filter(|o| is_key(o)).map(|o| o.stream).collect();
        assert_eq!(keys, vec![StreamRef::Video(2)]);
    }

    #[test]
    fn falls_behind_without_bursting_forever() {
        let t0 = Instant::now();
        let mut source = MediaSource::new(plan(), Epoch::now(), t0);
        let mut out = Vec::new();
        source.poll(t0 + Duration::from_secs(10), &mut out);
        let frames = out.iter().filter(|o| o.marker).count();
        assert_eq!(frames, MAX_CATCH_UP as usize * 3);
        assert!(source.next_due().unwrap() > t0 + Duration::from_secs(10));
    }
}
