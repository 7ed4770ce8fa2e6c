//! When a subscriber's video would have been on screen: frames put together from the packets
//! received, rendered in order as a decoder would, and the time the picture stood still.
//!
//! No decoding: a frame is the run of sequence numbers from a packet that starts a VP8 frame
//! to the packet with the RTP marker bit, and it is *complete* when every number in the run
//! arrived (retransmissions fill holes). A complete frame renders when the frame before it
//! rendered (a delta frame needs its reference) or when it is a keyframe; a complete keyframe
//! newer than a frame that is still missing packets is jumped to, as a decoder would. A hole
//! that nothing fills for [`GIVE_UP`] breaks the chain: the subscriber asks for a keyframe
//! (the caller sends a PLI) and again every [`REQUEST_EVERY`] until one renders.
//!
//! Frozen time is WebRTC's `totalFreezesDuration`: a render that comes more than
//! max(3 × the frame interval, the interval + 150 ms) after the previous one was a freeze for
//! that whole interval (WebRTC takes the mean interval measured; here it is the publisher's
//! nominal one, since frames released together after a hole would otherwise shrink it). A
//! freeze still going on when the window ends counts up to the end, and video that has not
//! shown a frame yet when the window starts is frozen from the start. All times are passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::seq::extend;

/// A hole unfilled this long is given up on: about how long a receive-only Chromium keeps
/// NACKing a packet (10 tries at its default 100 ms round trip), and the age past which the
/// SFU no longer resends (1 s).
pub const GIVE_UP: Duration = Duration::from_millis(1000);
/// While the chain is broken, a keyframe is asked for again this often.
pub const REQUEST_EVERY: Duration = Duration::from_millis(1000);
/// Packets kept waiting for a frame to complete, at most (a broken chain with no keyframe
/// coming must not grow without bound).
const MAX_PENDING: usize = 4096;

/// One video packet as the tracker needs it.
#[derive(Debug, Clone, Copy)]
pub struct VideoPacket {
    pub seq: u16,
    /// The first packet of a frame (VP8 descriptor: S bit, partition 0).
    pub start: bool,
    /// The first packet of a keyframe.
    pub keyframe: bool,
    /// The RTP marker bit: the frame's last packet.
    pub end: bool,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    start: bool,
    keyframe: bool,
    end: bool,
    at: Instant,
}

#[derive(Debug)]
pub struct FrameTracker {
    highest: Option<u64>,
    /// Packets received and not rendered yet, by extended sequence number.
    pending: BTreeMap<u64, Pending>,
    /// Where the next frame to render starts; `None` until a keyframe renders (or after the
    /// chain broke).
    next: Option<u64>,
    first_frame: Option<Instant>,
    last_render: Option<Instant>,
    /// Longer than this between two renders is a freeze.
    freeze_threshold: Duration,
    last_request: Option<Instant>,
    /// Since when the frame at `next` has been missing while later packets wait.
    stuck_since: Option<Instant>,
    window: Window,
}

/// Counts since the window started.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start: Option<Instant>,
    rendered: u64,
    frozen: Duration,
    freezes: u64,
    keyframe_requests: u64,
}

/// What the window saw of one video stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStats {
    pub rendered: u64,
    pub frozen: Duration,
    pub freezes: u64,
    pub keyframe_requests: u64,
}

impl FrameTracker {
    /// A tracker of a stream of `frame_interval` between frames (1 / frame rate).
    pub fn new(frame_interval: Duration) -> Self {
        Self {
            highest: None,
            pending: BTreeMap::new(),
            next: None,
            first_frame: None,
            last_render: None,
            freeze_threshold: (frame_interval * 3).max(frame_interval + Duration::from_millis(150)),
            last_request: None,
            stuck_since: None,
            window: Window::default(),
        }
    }

    /// Takes one packet received at `at`; `true` when a keyframe should be requested now.
    pub fn on_packet(&mut self, at: Instant, packet: VideoPacket) -> bool {
        let ext = match self.highest {
            None => (1 << 32) | u64::from(packet.seq),
            Some(highest) => extend(highest, packet.seq),
        };
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        let stale = self.next.is_some_and(|next| ext < next);
        if !stale {
            self.pending.entry(ext).or_insert(Pending {
                start: packet.start,
                keyframe: packet.keyframe && packet.start,
                end: packet.end,
                at,
            });
            while self.pending.len() > MAX_PENDING {
                self.pending.pop_first();
            }
        }
        self.render_ready(at);
        self.keyframe_needed(at)
    }

    /// When the first frame rendered.
    pub fn first_frame(&self) -> Option<Instant> {
        self.first_frame
    }

    /// Starts the measurement window at `now`.
    pub fn start_window(&mut self, now: Instant) {
        self.window = Window {
            start: Some(now),
            ..Window::default()
        };
    }

    /// The window so far, closed at `now`: a freeze going on counts up to `now`.
    pub fn stats(&self, now: Instant) -> FrameStats {
        let w = self.window;
        let mut frozen = w.frozen;
        let mut freezes = w.freezes;
        if let Some(start) = w.start {
            let since = self.last_render.map_or(start, |last| last.max(start));
            let open = now.saturating_duration_since(since);
            if open > self.freeze_threshold {
                frozen += open;
                freezes += 1;
            }
        }
        FrameStats {
            rendered: w.rendered,
            frozen,
            freezes,
            keyframe_requests: w.keyframe_requests,
        }
    }

    /// Renders every frame that can be, in order.
    fn render_ready(&mut self, at: Instant) {
        loop {
            if let Some(next) = self.next
                && let Some(end) = self.complete_frame(next)
            {
                self.render(at, end);
                continue;
            }
            // Stuck (or no chain yet): a complete keyframe after the hole starts a new chain.
            let after = self.next.unwrap_or(0);
            let keyframe = self
                .pending
                .range(after..)
                .filter(|(_, p)| p.keyframe)
                .find_map(|(&seq, _)| Some((seq, self.complete_frame(seq)?)));
            match keyframe {
                Some((start, end)) => {
                    // What came before the keyframe will never render.
                    self.pending = self.pending.split_off(&start);
                    self.render(at, end);
                }
                None => break,
            }
        }
        // Anything waiting means the frame at `next` is missing packets.
        match (self.next, self.pending.first_key_value()) {
            (Some(_), Some((_, first))) => {
                self.stuck_since.get_or_insert(first.at);
            }
            _ => self.stuck_since = None,
        }
    }

    /// The last sequence number of the frame starting at `start`, if it is all there.
    fn complete_frame(&self, start: u64) -> Option<u64> {
        let first = self.pending.get(&start)?;
        if !first.start {
            return None;
        }
        for (expect, (&seq, packet)) in (start..).zip(self.pending.range(start..)) {
            if seq != expect || (seq != start && packet.start) {
                return None;
            }
            if packet.end {
                return Some(seq);
            }
        }
        None
    }

    fn render(&mut self, at: Instant, end: u64) {
        self.pending = self.pending.split_off(&(end + 1));
        self.next = Some(end + 1);
        self.stuck_since = None;
        self.first_frame.get_or_insert(at);
        // Video not showing yet when the window started is frozen from the window's start.
        if let Some(last) = self.last_render.or(self.window.start) {
            let interval = at.saturating_duration_since(last);
            let in_window = self.window.start.is_some_and(|start| at >= start);
            if interval > self.freeze_threshold && in_window {
                // Only the part inside the window: a freeze that began before it.
                let start = self.window.start.unwrap_or(last);
                self.window.frozen += at.saturating_duration_since(last.max(start));
                self.window.freezes += 1;
            }
        }
        if self.window.start.is_some() {
            self.window.rendered += 1;
        }
        self.last_render = Some(at);
    }

    /// Whether to ask for a keyframe at `at`: the chain broke (a hole unfilled for
    /// [`GIVE_UP`]) and none was asked for in the last [`REQUEST_EVERY`].
    fn keyframe_needed(&mut self, at: Instant) -> bool {
        if let Some(since) = self.stuck_since
            && at.saturating_duration_since(since) >= GIVE_UP
        {
            // Give the hole up: the next frame to render is a keyframe.
            self.next = None;
            self.stuck_since = None;
        }
        if self.next.is_some() || self.highest.is_none() {
            return false;
        }
        // No chain: before the first keyframe, or broken.
        let due = self
            .last_request
            .is_none_or(|last| at.saturating_duration_since(last) >= REQUEST_EVERY);
        // Before the first frame the SFU sends a keyframe on its own; ask only once waiting
        // has gone on as long as a hole would be given up on.
        let waiting_first = self.first_frame.is_none()
            && self
                .pending
                .first_key_value()
                .is_none_or(|(_, p)| at.saturating_duration_since(p.at) < GIVE_UP);
        if !due || waiting_first {
            return false;
        }
        self.last_request = Some(at);
        if self.window.start.is_some() {
            self.window.keyframe_requests += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn tracker() -> FrameTracker {
        FrameTracker::new(Duration::from_micros(33_333))
    }

    /// A sender of frames of `per_frame` packets every 33 ms; `send` decides what arrives.
    struct Stream {
        seq: u16,
        t0: Instant,
    }

    impl Stream {
        fn new() -> Self {
            Self {
                seq: 65_000,
                t0: Instant::now(),
            }
        }

        /// The packets of one frame.
        fn frame(&mut self, per_frame: u16, keyframe: bool) -> Vec<VideoPacket> {
            (0..per_frame)
                .map(|i| {
                    let packet = VideoPacket {
                        seq: self.seq,
                        start: i == 0,
                        keyframe: keyframe && i == 0,
                        end: i == per_frame - 1,
                    };
                    self.seq = self.seq.wrapping_add(1);
                    packet
                })
                .collect()
        }
    }

    fn feed(tracker: &mut FrameTracker, at: Instant, packets: &[VideoPacket]) -> bool {
        let mut asked = false;
        for &p in packets {
            asked |= tracker.on_packet(at, p);
        }
        asked
    }

    #[test]
    fn a_clean_stream_renders_every_frame_and_never_freezes() {
        let mut s = Stream::new();
        let mut t = tracker();
        t.start_window(s.t0);
        for i in 0..300u64 {
            let frame = s.frame(4, i % 90 == 0);
            assert!(!feed(&mut t, s.t0 + ms(33 * i), &frame));
        }
        assert_eq!(t.first_frame(), Some(s.t0));
        let stats = t.stats(s.t0 + ms(33 * 300));
        assert_eq!(stats.rendered, 300);
        assert_eq!(stats.frozen, Duration::ZERO);
        assert_eq!(stats.keyframe_requests, 0);
    }

    #[test]
    fn nothing_renders_before_a_keyframe() {
        let mut s = Stream::new();
        let mut t = tracker();
        let delta = s.frame(3, false);
        feed(&mut t, s.t0, &delta);
        assert_eq!(t.first_frame(), None);
        let key = s.frame(3, true);
        feed(&mut t, s.t0 + ms(33), &key);
        assert_eq!(t.first_frame(), Some(s.t0 + ms(33)));
    }

    #[test]
    fn a_late_retransmission_renders_the_frame_and_those_behind_it() {
        let mut s = Stream::new();
        let mut t = tracker();
        t.start_window(s.t0);
        feed(&mut t, s.t0, &s.frame(3, true));
        let mut second = s.frame(3, false);
        let lost = second.remove(1);
        feed(&mut t, s.t0 + ms(33), &second);
        feed(&mut t, s.t0 + ms(66), &s.frame(3, false));
        assert_eq!(t.stats(s.t0 + ms(66)).rendered, 1, "waiting for the hole");
        // The resend 250 ms after the loss: both frames render, a freeze of 250 ms.
        feed(&mut t, s.t0 + ms(283), &[lost]);
        let stats = t.stats(s.t0 + ms(283));
        assert_eq!(stats.rendered, 3);
        assert_eq!(stats.freezes, 1);
        assert_eq!(stats.frozen, ms(283));
    }

    #[test]
    fn a_short_wait_is_no_freeze() {
        let mut s = Stream::new();
        let mut t = tracker();
        t.start_window(s.t0);
        feed(&mut t, s.t0, &s.frame(3, true));
        let mut second = s.frame(3, false);
        let lost = second.remove(0);
        feed(&mut t, s.t0 + ms(33), &second);
        // Resent within 150 ms of the previous frame: late, not frozen.
        feed(&mut t, s.t0 + ms(120), &[lost]);
        let stats = t.stats(s.t0 + ms(120));
        assert_eq!((stats.rendered, stats.freezes), (2, 0));
    }

    #[test]
    fn an_unfilled_hole_asks_for_a_keyframe_and_the_keyframe_ends_the_freeze() {
        let mut s = Stream::new();
        let mut t = tracker();
        t.start_window(s.t0);
        feed(&mut t, s.t0, &s.frame(3, true));
        let mut broken = s.frame(3, false);
        broken.remove(2);
        assert!(!feed(&mut t, s.t0 + ms(33), &broken));
        let mut asked_at = None;
        for i in 2..=40u64 {
            let at = s.t0 + ms(33 * i);
            if feed(&mut t, at, &s.frame(3, false)) {
                asked_at.get_or_insert(at);
            }
        }
        let asked_at = asked_at.expect("a keyframe request");
        let waited = asked_at - (s.t0 + ms(33));
        assert!(waited >= GIVE_UP && waited < GIVE_UP + ms(40), "{waited:?}");
        assert_eq!(t.stats(asked_at).rendered, 1, "nothing after the hole");
        let key_at = s.t0 + ms(33 * 41);
        feed(&mut t, key_at, &s.frame(3, true));
        feed(&mut t, key_at + ms(33), &s.frame(3, false));
        let stats = t.stats(key_at + ms(33));
        assert_eq!(stats.rendered, 3);
        assert_eq!(stats.freezes, 1);
        assert_eq!(stats.frozen, key_at - s.t0);
        assert_eq!(stats.keyframe_requests, 1);
    }

    #[test]
    fn a_complete_keyframe_is_jumped_to_over_a_hole() {
        let mut s = Stream::new();
        let mut t = tracker();
        feed(&mut t, s.t0, &s.frame(2, true));
        let mut broken = s.frame(2, false);
        broken.remove(0);
        feed(&mut t, s.t0 + ms(33), &broken);
        t.start_window(s.t0 + ms(40));
        feed(&mut t, s.t0 + ms(66), &s.frame(2, true));
        assert_eq!(t.stats(s.t0 + ms(66)).rendered, 1);
        // The straggler of the skipped frame changes nothing.
        let before = t.stats(s.t0 + ms(70));
        feed(
            &mut t,
            s.t0 + ms(70),
            &[VideoPacket {
                seq: 65_002,
                start: true,
                keyframe: false,
                end: false,
            }],
        );
        assert_eq!(t.stats(s.t0 + ms(70)), before);
    }

    #[test]
    fn a_stream_that_stops_is_frozen_to_the_end_of_the_window() {
        let mut s = Stream::new();
        let mut t = tracker();
        feed(&mut t, s.t0, &s.frame(2, true));
        t.start_window(s.t0 + ms(1000));
        let stats = t.stats(s.t0 + ms(3000));
        assert_eq!((stats.rendered, stats.freezes), (0, 1));
        assert_eq!(stats.frozen, ms(2000), "from the window's start");
    }

    #[test]
    fn video_not_showing_yet_at_the_window_start_is_frozen_until_its_first_frame() {
        let mut s = Stream::new();
        let mut t = tracker();
        t.start_window(s.t0);
        feed(&mut t, s.t0 + ms(500), &s.frame(2, true));
        feed(&mut t, s.t0 + ms(533), &s.frame(2, false));
        let stats = t.stats(s.t0 + ms(533));
        assert_eq!((stats.rendered, stats.freezes), (2, 1));
        assert_eq!(stats.frozen, ms(500));
        // A first frame soon after the start is no freeze.
        let mut t = tracker();
        t.start_window(s.t0);
        feed(&mut t, s.t0 + ms(100), &s.frame(2, true));
        assert_eq!(t.stats(s.t0 + ms(100)).freezes, 0);
    }

    #[test]
    fn the_first_keyframe_is_asked_for_only_after_a_long_wait() {
        let mut s = Stream::new();
        let mut t = tracker();
        // Delta frames only (the keyframe was lost): no request at once, one after GIVE_UP.
        let mut asked = Vec::new();
        for i in 0..40u64 {
            if feed(&mut t, s.t0 + ms(33 * i), &s.frame(2, false)) {
                asked.push(i);
            }
        }
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!(asked[0] * 33 >= 1000, "{asked:?}");
    }
}
