//! The receiving side of a subscribe connection: counts and timestamps packets, puts video
//! frames together to see when the picture would freeze ([`FrameTracker`]), never decodes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aula_protocol::TrackKind;
use rtc::rtp::Packet;
use rtc::rtp_transceiver::RTCRtpReceiverId;

use crate::clock::Epoch;
use crate::media::{audio, vp8};
use crate::stats::frames::VideoPacket;
use crate::stats::{FrameTracker, Jitter, SeqTracker};

/// One received RTP stream (one forwarded track; the SFU keeps its SSRC across layer switches).
pub struct RecvStream {
    pub kind: TrackKind,
    pub seq: SeqTracker,
    pub jitter: Jitter,
    pub bytes: u64,
    /// Video only.
    pub frames: Option<FrameTracker>,
}

pub struct Subscriber {
    /// When this participant asked for its token: join time runs from here.
    pub join_started: Instant,
    pub first_media: Option<Instant>,
    /// `rtc` track id -> kind and receiver, learnt when the track opens.
    tracks: HashMap<String, (TrackKind, RTCRtpReceiverId)>,
    /// The publisher's frame interval, for telling a freeze from a frame.
    frame_interval: Duration,
    /// Keyframe requests to send (receiver, media SSRC): the peer sends them as PLIs.
    pub keyframe_requests: Vec<(RTCRtpReceiverId, u32)>,
    /// When the measurement window started: a stream that first appears after it (video
    /// often comes after the first audio packet) is measured from then too.
    window_started: Option<Instant>,
    pub streams: HashMap<u32, RecvStream>,
    /// Packets whose payload carried no readable send time.
    pub unstamped: u64,
}

impl Subscriber {
    pub fn new(join_started: Instant, frame_interval: Duration) -> Self {
        Self {
            join_started,
            first_media: None,
            tracks: HashMap::new(),
            frame_interval,
            keyframe_requests: Vec::new(),
            window_started: None,
            streams: HashMap::new(),
            unstamped: 0,
        }
    }

    pub fn track_opened(&mut self, track_id: String, kind: TrackKind, receiver: RTCRtpReceiverId) {
        self.tracks.insert(track_id, (kind, receiver));
    }

    /// When the first video frame rendered, if one did.
    pub fn first_frame(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|s| s.frames.as_ref()?.first_frame())
            .min()
    }

    /// Counts one packet; pushes its latency in microseconds to `latencies` when `measuring`.
    pub fn on_rtp(
        &mut self,
        track_id: &str,
        packet: &Packet,
        at: Instant,
        epoch: Epoch,
        measuring: bool,
        latencies: &mut Vec<u32>,
    ) {
        let Some(&(kind, receiver)) = self.tracks.get(track_id) else {
            return;
        };
        self.first_media.get_or_insert(at);
        let (frame_interval, window_started) = (self.frame_interval, self.window_started);
        let stream = self
            .streams
            .entry(packet.header.ssrc)
            .or_insert_with(|| RecvStream {
                frames: (kind == TrackKind::Video).then(|| {
                    let mut frames = FrameTracker::new(frame_interval);
                    if let Some(start) = window_started {
                        frames.start_window(start);
                    }
                    frames
                }),
                kind,
                seq: SeqTracker::default(),
                jitter: Jitter::new(match kind {
                    TrackKind::Audio => 48_000,
                    TrackKind::Video => 90_000,
                }),
                bytes: 0,
            });
        let parsed = match kind {
            TrackKind::Audio => None,
            TrackKind::Video => vp8::parse(&packet.payload),
        };
        if let Some(frames) = &mut stream.frames {
            // Before the duplicate check: frames do their own, and a packet from before the
            // window may still complete a frame in it.
            let video = VideoPacket {
                seq: packet.header.sequence_number,
                start: parsed.is_some_and(|p| p.start),
                keyframe: parsed.is_some_and(|p| p.keyframe),
                end: packet.header.marker,
            };
            if frames.on_packet(at, video) {
                self.keyframe_requests.push((receiver, packet.header.ssrc));
            }
        }
        let before = stream.seq.received();
        stream.seq.record(packet.header.sequence_number);
        if stream.seq.received() == before {
            return; // a duplicate or a straggler from before the window
        }
        stream.bytes += packet.payload.len() as u64;
        stream.jitter.record(at, packet.header.timestamp);
        let sent_at = match kind {
            TrackKind::Audio => audio::sent_at(&packet.payload),
            TrackKind::Video => parsed.map(|p| p.sent_at),
        };
        match sent_at {
            Some(sent_at) if measuring => {
                let micros = epoch.micros(at).saturating_sub(sent_at);
                latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Some(_) => {}
            None => self.unstamped += 1,
        }
    }

    /// Starts the measurement window at `now`: counters restart after the packets seen so far.
    pub fn reset_window(&mut self, now: Instant) {
        self.window_started = Some(now);
        for stream in self.streams.values_mut() {
            stream.seq.reset_window();
            stream.bytes = 0;
            if let Some(frames) = &mut stream.frames {
                frames.start_window(now);
            }
        }
        self.unstamped = 0;
    }
}
