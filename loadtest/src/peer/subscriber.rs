//! The receiving side of a subscribe connection: counts and timestamps packets, never decodes.

use std::collections::HashMap;
use std::time::Instant;

use aula_protocol::TrackKind;
use rtc::rtp::Packet;

use crate::clock::Epoch;
use crate::media::{audio, vp8};
use crate::stats::{Jitter, SeqTracker};

/// One received RTP stream (one forwarded track; the SFU keeps its SSRC across layer switches).
pub struct RecvStream {
    pub kind: TrackKind,
    pub seq: SeqTracker,
    pub jitter: Jitter,
    pub bytes: u64,
}

pub struct Subscriber {
    /// When this participant asked for its token: join time runs from here.
    pub join_started: Instant,
    pub first_media: Option<Instant>,
    /// `rtc` track id -> kind, learnt when the track opens.
    tracks: HashMap<String, TrackKind>,
    pub streams: HashMap<u32, RecvStream>,
    /// Packets whose payload carried no readable send time.
    pub unstamped: u64,
}

impl Subscriber {
    pub fn new(join_started: Instant) -> Self {
        Self {
            join_started,
            first_media: None,
            tracks: HashMap::new(),
            streams: HashMap::new(),
            unstamped: 0,
        }
    }

    pub fn track_opened(&mut self, track_id: String, kind: TrackKind) {
        self.tracks.insert(track_id, kind);
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
        let Some(&kind) = self.tracks.get(track_id) else {
            return;
        };
        self.first_media.get_or_insert(at);
        let stream = self
            .streams
            .entry(packet.header.ssrc)
            .or_insert_with(|| RecvStream {
                kind,
                seq: SeqTracker::default(),
                jitter: Jitter::new(match kind {
                    TrackKind::Audio => 48_000,
                    TrackKind::Video => 90_000,
                }),
                bytes: 0,
            });
        let before = stream.seq.received();
        stream.seq.record(packet.header.sequence_number);
        if stream.seq.received() == before {
            return; // a duplicate or a straggler from before the window
        }
        stream.bytes += packet.payload.len() as u64;
        stream.jitter.record(at, packet.header.timestamp);
        let sent_at = match kind {
            TrackKind::Audio => audio::sent_at(&packet.payload),
            TrackKind::Video => vp8::parse(&packet.payload).map(|p| p.sent_at),
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

    /// Starts the measurement window: counters restart after the packets seen so far.
    pub fn reset_window(&mut self) {
        for stream in self.streams.values_mut() {
            stream.seq.reset_window();
            stream.bytes = 0;
        }
        self.unstamped = 0;
    }
}
