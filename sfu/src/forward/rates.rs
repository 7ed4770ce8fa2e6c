//! What each layer of a published track costs to forward, measured as it arrives.
//!
//! The allocator needs each layer's bitrate, and only the publisher's encoder knows it; it also
//! changes (a static slide costs little, a moving hand much more), so it is measured. A
//! keyframe makes a layer briefly several times dearer, so the rate is smoothed over windows of
//! [`WINDOW`] with a small weight for the newest: a keyframe that the SFU itself asked for
//! (switching a subscriber to the layer) must not make the layer look too dear for the budget
//! that just chose it, or the subscriber is moved down again at once, for another keyframe.
//!
//! Within a layer, the bytes of each temporal layer (TID) are measured apart, so that the
//! allocator knows what each lower frame rate costs: the frames of the base layer (and the
//! keyframes, all TID 0) cost more than the others, so a frame rate's share of the frames is
//! not its share of the bytes.

use std::time::{Duration, Instant};

use super::simulcast::Layer;

/// Temporal layers measured apart: all a VP8 descriptor's two-bit TID can name.
const TIDS: usize = 4;

/// Measurement window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Weight of the newest window in the smoothed rate: a lasting change is followed within a
/// few seconds, a keyframe moves the rate by a fraction of its size.
const NEW_WEIGHT: f64 = 0.3;

#[derive(Debug, Clone, Default)]
struct LayerRate {
    window_start: Option<Instant>,
    /// Bytes of each temporal layer in the current window.
    bytes: [usize; TIDS],
    /// Bits per second of each temporal layer.
    smoothed: Option<[f64; TIDS]>,
}

/// Per-layer bitrates of one track.
#[derive(Debug, Clone, Default)]
pub struct LayerRates {
    layers: Vec<LayerRate>,
}

impl LayerRates {
    /// A packet of `layer` of the temporal layer `tid` (`None`, as from publishers without
    /// temporal layers, counts as the base layer).
    pub fn record(&mut self, layer: Layer, tid: Option<u8>, bytes: usize, now: Instant) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, LayerRate::default());
        }
        let rate = &mut self.layers[layer];
        let start = *rate.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            let measured = rate
                .bytes
                .map(|bytes| bytes as f64 * 8.0 / elapsed.as_secs_f64());
            rate.smoothed = Some(match rate.smoothed {
                Some(old) => {
                    std::array::from_fn(|t| old[t] * (1.0 - NEW_WEIGHT) + measured[t] * NEW_WEIGHT)
                }
                None => measured,
            });
            rate.window_start = Some(now);
            rate.bytes = [0; TIDS];
        }
        rate.bytes[usize::from(tid.unwrap_or(0)).min(TIDS - 1)] += bytes;
    }

    /// Bits per second of `layer`, once a whole window has been measured.
    pub fn rate(&self, layer: Layer) -> Option<f64> {
        self.rate_up_to(layer, u8::MAX)
    }

    /// Bits per second of the frames of `layer` in temporal layers up to `tid`: what
    /// forwarding `layer` at that frame rate costs.
    pub fn rate_up_to(&self, layer: Layer, tid: u8) -> Option<f64> {
        let smoothed = self.layers.get(layer)?.smoothed?;
        Some(smoothed.iter().take(usize::from(tid) + 1).sum())
    }

    /// How many layers have been seen.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_each_layer_after_a_window() {
        let t = Instant::now();
        let mut rates = LayerRates::default();
        // Layer 0: 1000 bytes every 40 ms (200 kbit/s); layer 2: 5000 bytes (1 Mbit/s).
        for i in 0..100u64 {
            let now = t + Duration::from_millis(40 * i);
            rates.record(0, None, 1_000, now);
            rates.record(2, None, 5_000, now);
        }
        let near = |a: f64, b: f64| (a - b).abs() / b < 0.05;
        assert!(
            near(rates.rate(0).unwrap(), 200_000.0),
            "{:?}",
            rates.rate(0)
        );
        assert!(
            near(rates.rate(2).unwrap(), 1_000_000.0),
            "{:?}",
            rates.rate(2)
        );
        assert_eq!(rates.rate(1), None, "never seen");
        assert_eq!(rates.len(), 3);
    }

    #[test]
    fn nothing_before_the_first_window_ends() {
        let t = Instant::now();
        let mut rates = LayerRates::default();
        rates.record(0, None, 1_000, t);
        rates.record(0, None, 1_000, t + Duration::from_millis(100));
        assert_eq!(rates.rate(0), None);
    }

    #[test]
    fn each_frame_rate_costs_the_frames_of_its_temporal_layers() {
        let t = Instant::now();
        let mut rates = LayerRates::default();
        // L1T3 at 30 fps: TIDs 0, 2, 1, 2; base frames 2000 bytes, the others 1000.
        for i in 0..300u64 {
            let tid = [0, 2, 1, 2][(i % 4) as usize];
            let bytes = if tid == 0 { 2_000 } else { 1_000 };
            rates.record(0, Some(tid), bytes, t + Duration::from_micros(33_333 * i));
        }
        let near = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() / b < 0.05;
        // Per second: 7.5 base frames (120 kbit/s), 7.5 of TID 1 (60k), 15 of TID 2 (120k).
        assert!(near(rates.rate_up_to(0, 0), 120_000.0), "7.5 fps");
        assert!(near(rates.rate_up_to(0, 1), 180_000.0), "15 fps");
        assert!(near(rates.rate_up_to(0, 2), 300_000.0), "30 fps");
        assert_eq!(rates.rate(0), rates.rate_up_to(0, 3));
        assert_eq!(rates.rate_up_to(1, 0), None);
    }

    #[test]
    fn a_keyframe_barely_moves_the_rate() {
        let t = Instant::now();
        let mut rates = LayerRates::default();
        // 340 kbit/s in packets every 25 ms for 10 s, then a 25 kB keyframe, then as before.
        for i in 0..800u64 {
            let now = t + Duration::from_millis(25 * i);
            rates.record(1, None, 1_062, now);
            if i == 400 {
                rates.record(1, None, 25_000, now);
            }
            if i > 40 {
                let rate = rates.rate(1).unwrap();
                assert!(rate < 340_000.0 * 1.25, "{rate} at {i}");
            }
        }
    }
}
