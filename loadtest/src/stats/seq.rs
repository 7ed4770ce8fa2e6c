//! Loss from RTP sequence numbers, across the 16-bit wrap.
//!
//! The SFU rewrites each subscriber's sequence numbers to be contiguous (a layer switch leaves
//! no gap), so on the subscriber side expected = highest - first + 1 and every missing number
//! is a packet the subscriber never got — after NACK recovery, because a retransmission fills
//! its number in. Duplicates (a retransmission that raced the original) are counted apart.

/// Sequence numbers remembered for duplicate detection; far more than any reordering depth.
const WINDOW: u64 = 1024;

#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// Highest extended sequence number seen; `None` before the first packet.
    highest: Option<u64>,
    /// First extended sequence number of the measurement window.
    base: u64,
    received: u64,
    duplicates: u64,
    /// Ring of "seen" bits for the `WINDOW` numbers up to `highest`.
    seen: [u64; (WINDOW / 64) as usize],
}

impl Default for SeqTracker {
    fn default() -> Self {
        Self {
            highest: None,
            base: 0,
            received: 0,
            duplicates: 0,
            seen: [0; (WINDOW / 64) as usize],
        }
    }
}

impl SeqTracker {
    /// Records one packet. Packets from before the window's start are ignored.
    pub fn record(&mut self, seq: u16) {
        let Some(highest) = self.highest else {
            // Start far from zero so that packets reordered before the first one still extend.
            let ext = (1 << 32) | u64::from(seq);
            self.highest = Some(ext);
            self.base = ext;
            self.received = 1;
            self.set_seen(ext);
            return;
        };
        let ext = extend(highest, seq);
        if ext > highest {
            // Forget the bits of the numbers we skip over or reuse.
            for n in (highest + 1)..=ext.min(highest + WINDOW) {
                self.clear_seen(n);
            }
            self.highest = Some(ext);
        } else if highest - ext >= WINDOW {
            return; // Too old to tell a duplicate from a late packet.
        }
        if ext < self.base {
            return;
        }
        if self.is_seen(ext) {
            self.duplicates += 1;
        } else {
            self.set_seen(ext);
            self.received += 1;
        }
    }

    /// Starts a new measurement window after the last packet seen.
    pub fn reset_window(&mut self) {
        if let Some(highest) = self.highest {
            self.base = highest + 1;
        }
        self.received = 0;
        self.duplicates = 0;
    }

    /// Packets the window should have had, by sequence number.
    pub fn expected(&self) -> u64 {
        match self.highest {
            Some(highest) if highest >= self.base => highest - self.base + 1,
            _ => 0,
        }
    }

    /// Distinct packets received in the window.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    fn set_seen(&mut self, ext: u64) {
        let bit = ext % WINDOW;
        self.seen[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    fn clear_seen(&mut self, ext: u64) {
        let bit = ext % WINDOW;
        self.seen[(bit / 64) as usize] &= !(1 << (bit % 64));
    }

    fn is_seen(&self, ext: u64) -> bool {
        let bit = ext % WINDOW;
        self.seen[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }
}

/// The extended sequence number closest to `highest` whose low 16 bits are `seq`.
pub(crate) fn extend(highest: u64, seq: u16) -> u64 {
    let candidate = (highest & !0xffff) | u64::from(seq);
    if candidate + 0x8000 < highest {
        candidate + 0x1_0000
    } else if candidate > highest + 0x8000 && candidate >= 0x1_0000 {
        candidate - 0x1_0000
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_across_the_wrap() {
        let mut t = SeqTracker::default();
        for seq in 65_530u16..=65_535 {
            t.record(seq);
        }
        // 0 and 1 lost, then 2..10.
        for seq in 2u16..10 {
            t.record(seq);
        }
        assert_eq!(t.expected(), 16);
        assert_eq!(t.received(), 14);
        assert_eq!(t.expected() - t.received(), 2);
    }

    #[test]
    fn late_and_duplicate_packets() {
        let mut t = SeqTracker::default();
        for seq in [10u16, 11, 13, 14, 12, 12, 13] {
            t.record(seq);
        }
        assert_eq!(t.expected(), 5);
        assert_eq!(t.received(), 5);
        assert_eq!(t.expected() - t.received(), 0);
        assert_eq!(t.duplicates(), 2);
    }

    #[test]
    fn reordered_across_the_wrap() {
        let mut t = SeqTracker::default();
        for seq in [65_534u16, 0, 65_535, 1] {
            t.record(seq);
        }
        assert_eq!((t.expected(), t.received()), (4, 4));
    }

    #[test]
    fn window_reset_counts_only_new_packets() {
        let mut t = SeqTracker::default();
        for seq in 0u16..100 {
            t.record(seq);
        }
        t.reset_window();
        assert_eq!(t.expected(), 0);
        // A straggler from before the window is not counted.
        t.record(50);
        for seq in (100u16..200).filter(|s| s % 10 != 0) {
            t.record(seq);
        }
        assert_eq!(t.expected(), 100);
        assert_eq!(t.expected() - t.received(), 10);
    }

    #[test]
    fn long_run_wraps_many_times() {
        let mut t = SeqTracker::default();
        let mut seq = 40_000u16;
        for i in 0..300_000u32 {
            if i % 1000 != 999 {
                t.record(seq);
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(t.expected(), 299_999, "the last packet was the lost one");
        assert_eq!(t.expected() - t.received(), 299);
    }
}
