//! Which simulcast layers of a published track are alive, and which one a subscriber should get.
//!
//! A publisher may stop sending a layer at any time (its encoder is CPU- or bandwidth-limited),
//! so a layer counts as available only while its packets keep arriving — *relative to the other
//! layers*: when the whole encoder stalls (a busy CPU, a backgrounded tab) every layer goes quiet
//! together, and switching layers then would only cost a keyframe for nothing.

use std::time::{Duration, Instant};

/// Index of a simulcast layer: 0 is the lowest quality. Tracks without simulcast have layer 0.
pub type Layer = usize;

/// A layer whose last packet is this much older than the newest packet of any layer is treated
/// as stopped. Simulcast layers share one frame clock, so at 15+ fps half a second of silence
/// while other layers flow means the encoder dropped it (Chrome does under CPU load), not
/// jitter; waiting longer only keeps subscribers on a frozen layer.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(500);

/// Orders a RID among simulcast layers. Aula's SDKs send `q`, `h`, `f` (quarter, half, full);
/// other senders commonly use `0`, `1`, `2` or `l`, `m`, `h`. Unknown RIDs sort by name after
/// the known ones, which keeps the order stable.
pub fn rid_rank(rid: &str) -> (u8, String) {
    let rank = match rid {
        "q" | "l" | "0" | "low" => 0,
        "h" | "m" | "1" | "mid" => 1,
        "f" | "2" | "high" => 2,
        _ => 3,
    };
    (rank, rid.to_owned())
}

/// The highest layer worth sending to a subscriber that shows the video at `rendered` (width,
/// height): the smallest layer at least that large in either dimension. Layers whose size is
/// unknown are not considered; `None` means no limit (nothing known is large enough, or
/// nothing is known).
pub fn layer_for_size(sizes: &[Option<(u32, u32)>], rendered: (u32, u32)) -> Option<Layer> {
    sizes.iter().enumerate().find_map(|(layer, size)| {
        size.filter(|(w, h)| *w >= rendered.0 || *h >= rendered.1)
            .map(|_| layer)
    })
}

/// When each layer of one track last carried a packet.
#[derive(Debug, Clone, Default)]
pub struct LayerActivity {
    last_packet: Vec<Option<Instant>>,
}

impl LayerActivity {
    pub fn record(&mut self, layer: Layer, now: Instant) {
        if self.last_packet.len() <= layer {
            self.last_packet.resize(layer + 1, None);
        }
        self.last_packet[layer] = Some(now);
    }

    pub fn is_alive(&self, layer: Layer) -> bool {
        let newest = self.last_packet.iter().flatten().max();
        match (self.last_packet.get(layer).copied().flatten(), newest) {
            (Some(at), Some(newest)) => newest.saturating_duration_since(at) < LAYER_TIMEOUT,
            _ => false,
        }
    }

    /// The best layer that is alive and not above `max_layer`; if none of those is alive, the
    /// lowest alive layer (something beats a frozen picture). `None` before any packet.
    pub fn best(&self, max_layer: Layer) -> Option<Layer> {
        let alive = |layer: &Layer| self.is_alive(*layer);
        (0..self.last_packet.len().min(max_layer.saturating_add(1)))
            .rev()
            .find(alive)
            .or_else(|| (0..self.last_packet.len()).find(alive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_layer_covering_the_rendered_size() {
        let sizes = [Some((160, 90)), Some((320, 180)), Some((640, 360))];
        assert_eq!(layer_for_size(&sizes, (150, 80)), Some(0));
        assert_eq!(
            layer_for_size(&sizes, (300, 200)),
            Some(1),
            "height decides"
        );
        assert_eq!(
            layer_for_size(&sizes, (1280, 720)),
            None,
            "no layer is big enough"
        );
        assert_eq!(
            layer_for_size(&[None, Some((320, 180))], (100, 50)),
            Some(1)
        );
        assert_eq!(layer_for_size(&[], (100, 50)), None);
    }

    #[test]
    fn picks_top_alive_layer_within_cap() {
        let t0 = Instant::now();
        let mut a = LayerActivity::default();
        assert_eq!(a.best(2), None);
        a.record(0, t0);
        a.record(2, t0);
        assert_eq!(a.best(2), Some(2));
        assert_eq!(a.best(Layer::MAX), Some(2), "uncapped");
        assert_eq!(a.best(1), Some(0), "capped, and layer 1 never arrived");
        // Layer 2 stops; layer 0 keeps going.
        let t1 = t0 + LAYER_TIMEOUT;
        a.record(0, t1);
        assert_eq!(a.best(2), Some(0));
    }

    #[test]
    fn a_stall_of_every_layer_is_not_a_layer_change() {
        let t0 = Instant::now();
        let mut a = LayerActivity::default();
        a.record(0, t0);
        a.record(1, t0);
        // However long the encoder then stays silent, liveness is judged between layers, so
        // layer 1 stays the best one and nothing switches.
        assert_eq!(a.best(1), Some(1));
        assert!(a.is_alive(0));
    }

    #[test]
    fn falls_back_to_lowest_alive_above_cap() {
        let t0 = Instant::now();
        let mut a = LayerActivity::default();
        a.record(2, t0);
        assert_eq!(a.best(0), Some(2));
    }

    #[test]
    fn rid_order() {
        let mut rids = vec!["f", "q", "h"];
        rids.sort_by_key(|r| rid_rank(r));
        assert_eq!(rids, ["q", "h", "f"]);
    }
}
