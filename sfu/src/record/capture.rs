//! Capturing published tracks into capture logs as the router receives them (issue 13,
//! item 2): which tracks a recording takes, which simulcast layer of each, and when to ask the
//! publisher for a keyframe.
//!
//! The router calls in from where it already handles each publisher's packets (after SRTP
//! decryption): RTP from `forward`, RTCP sender reports from the publish connection, and the
//! track's life (published, paused, unpublished). Nothing here touches the disk: records go to
//! each log's writer thread through [`RecordSender::try_push`], which never blocks, so a slow
//! disk costs the recording records (and leaves a gap marker), never the class its forwarding.
//!
//! A recording is a set of participants (the control plane knows rooms, the SFU does not); every
//! track they publish, now or later, gets a log named after the track's sid, in the recording's
//! directory. Record times are microseconds since the recording started, the same origin for
//! every track of the recording, so their logs line up without further ado.
//!
//! Of a simulcast track only the best layer the SFU receives is recorded ([`LayerFollower`]),
//! switching at a keyframe of the new layer with a [`Marker::LayerSwitch`]; until a log has its
//! first keyframe the publisher is asked for one, at most once per
//! [`KEYFRAME_REQUEST_INTERVAL`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aula_protocol::TrackSource;
use rtc::rtcp::sender_report::SenderReport;
use rtc::shared::marshal::Marshal;
use tracing::{info, warn};

use super::format::{Entry, Marker, Record, TrackInfo};
use super::policy::Limits;
use super::writer::{self, DEFAULT_QUEUE_CAPACITY, LogConfig, RecordSender, Recording};
use crate::api::{ParticipantId, SfuError, TrackSid};
use crate::forward::simulcast::Layer;

/// How often a log waiting for a keyframe asks the publisher again. Once a second is what the
/// issue allows: a publisher asked more often sends little else but keyframes.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// What the control plane asks the SFU to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSpec {
    /// The recording's id, chosen by the control plane.
    pub id: String,
    /// Where its logs go (created if missing).
    pub dir: PathBuf,
    /// Whose tracks to record; more can be added while it runs.
    pub participants: Vec<ParticipantId>,
    /// The wall-clock time, in unix microseconds, of the recording's record time 0.
    pub wall_clock_start_us: u64,
}

/// A published track as the router describes it to a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackMeta {
    pub sid: TrackSid,
    pub participant: ParticipantId,
    pub source: TrackSource,
    pub codec_mime: String,
    pub clock_rate: u32,
    pub fmtp: String,
    pub extmaps: Vec<(u8, String)>,
    /// The SSRC of its first stream (its lowest layer's, or its only one).
    pub ssrc: u32,
    /// Video: layer switches and keyframe requests apply.
    pub video: bool,
}

/// One track's log, handed to the control plane when the recording stops.
pub struct TrackLog {
    pub track_sid: TrackSid,
    /// The log's name: its segments are `<name>.<index>.seg` in the recording's directory.
    pub name: String,
    pub track: TrackInfo,
    /// Whether the log failed, how many records it dropped, and [`Recording::finish`] to wait
    /// until its last segment is fsynced.
    pub log: Recording,
}

/// Every recording the SFU is capturing. Empty (one branch per packet) when nothing is recorded.
#[derive(Default)]
pub struct Captures {
    recordings: HashMap<String, Capture>,
}

/// One recording.
struct Capture {
    dir: PathBuf,
    /// Record time 0.
    start: Instant,
    wall_clock_start_us: u64,
    participants: HashSet<ParticipantId>,
    open: HashMap<TrackSid, TrackCapture>,
    /// Logs of tracks that ended (unpublished, or their publisher left), already closing.
    closed: Vec<TrackLog>,
    /// Tracks whose log failed and was reported ([`Captures::take_failures`]).
    failed: HashSet<TrackSid>,
}

/// One track being captured.
struct TrackCapture {
    sender: RecordSender,
    log: TrackLog,
    layers: LayerFollower,
    video: bool,
}

impl Captures {
    pub fn is_empty(&self) -> bool {
        self.recordings.is_empty()
    }

    /// Starts a recording of `spec.participants`' tracks, opening a log for each of `tracks`
    /// they publish.
    pub fn start(
        &mut self,
        now: Instant,
        spec: RecordingSpec,
        tracks: &[TrackMeta],
    ) -> Result<(), SfuError> {
        if self.recordings.contains_key(&spec.id) {
            return Err(SfuError::Internal(format!("recording {} exists", spec.id)));
        }
        let mut capture = Capture {
            dir: spec.dir,
            start: now,
            wall_clock_start_us: spec.wall_clock_start_us,
            participants: spec.participants.into_iter().collect(),
            open: HashMap::new(),
            closed: Vec::new(),
            failed: HashSet::new(),
        };
        for track in tracks {
            capture.open_track(track);
        }
        info!(recording = %spec.id, tracks = capture.open.len(), "recording started");
        self.recordings.insert(spec.id, capture);
        Ok(())
    }

    /// Adds a participant (one who joined the room later) to a recording, with `tracks`, those
    /// it publishes already.
    pub fn add_participant(
        &mut self,
        id: &str,
        participant: &str,
        tracks: &[TrackMeta],
    ) -> Result<(), SfuError> {
        let capture = self.recordings.get_mut(id).ok_or_else(|| unknown(id))?;
        capture.participants.insert(participant.to_owned());
        for track in tracks {
            capture.open_track(track);
        }
        Ok(())
    }

    /// Stops a recording: every log is closed (its writer finishes on its own thread) and
    /// handed back, so that the caller can wait for them off the router's thread.
    pub fn stop(&mut self, id: &str) -> Result<Vec<TrackLog>, SfuError> {
        let capture = self.recordings.remove(id).ok_or_else(|| unknown(id))?;
        let mut logs = capture.closed;
        // Dropping a sender closes its log.
        logs.extend(capture.open.into_values().map(|track| track.log));
        info!(recording = %id, tracks = logs.len(), "recording stopped");
        Ok(logs)
    }

    /// A track started: recorded by every recording of its publisher.
    pub fn track_published(&mut self, track: &TrackMeta) {
        for capture in self.recordings.values_mut() {
            if capture.participants.contains(&track.participant) {
                capture.open_track(track);
            }
        }
    }

    /// A track ended: its logs are closed.
    pub fn track_unpublished(&mut self, sid: &str) {
        for capture in self.recordings.values_mut() {
            if let Some(track) = capture.open.remove(sid) {
                capture.closed.push(track.log);
            }
        }
    }

    /// Logs that stopped being written (a disk error) since the last call, each reported
    /// once: `(recording id, track sid, why)`. The control plane ends such a recording and
    /// tells the room; forwarding is not affected.
    pub fn take_failures(&mut self) -> Vec<(String, TrackSid, String)> {
        let mut failures = Vec::new();
        for (id, capture) in &mut self.recordings {
            for (sid, track) in &capture.open {
                if let Some(error) = track.log.log.failure()
                    && capture.failed.insert(sid.clone())
                {
                    failures.push((id.clone(), sid.clone(), error.to_string()));
                }
            }
        }
        failures
    }

    /// Whether a recording takes `participant`'s tracks (its QoS is sampled then: `crate::qos`).
    pub fn records(&self, participant: &str) -> bool {
        self.recordings
            .values()
            .any(|c| c.participants.contains(participant))
    }

    /// Records of `participant`'s tracks dropped so far because the disk did not keep up.
    pub fn dropped_of(&self, participant: &str) -> u64 {
        self.recordings
            .values()
            .flat_map(|c| c.open.values().map(|t| &t.log).chain(&c.closed))
            .filter(|log| log.track.participant == participant)
            .map(|log| log.log.dropped())
            .sum()
    }

    /// A participant left the SFU (its tracks were unpublished first): it is no longer recorded.
    pub fn participant_left(&mut self, participant: &str) {
        for capture in self.recordings.values_mut() {
            capture.participants.remove(participant);
        }
    }

    /// An RTP packet of layer `layer` of track `sid`, starting a keyframe or not, while `best`
    /// is the best layer the SFU receives of it.
    pub fn rtp(
        &mut self,
        now: Instant,
        sid: &str,
        layer: Layer,
        keyframe: bool,
        best: Option<Layer>,
        packet: &rtc::rtp::Packet,
    ) {
        for capture in self.recordings.values_mut() {
            let time_us = capture.time_us(now);
            let Some(track) = capture.open.get_mut(sid) else {
                continue;
            };
            match track.layers.packet(layer, keyframe, best) {
                Take::Skip => continue,
                Take::Record => {}
                Take::SwitchTo(layer) => {
                    if track.video {
                        let layer = u8::try_from(layer).unwrap_or(u8::MAX);
                        track.push(time_us, Entry::Marker(Marker::LayerSwitch { layer }));
                    }
                }
            }
            match packet.marshal() {
                Ok(bytes) => track.push(time_us, Entry::Rtp(bytes.to_vec())),
                Err(e) => {
                    warn!(track = %sid, error = %e, "cannot serialize an RTP packet to record")
                }
            }
        }
    }

    /// RTCP from a track's publisher: its sender reports are recorded (lip sync needs them).
    pub fn rtcp(&mut self, now: Instant, sid: &str, packets: &[Box<dyn rtc::rtcp::Packet>]) {
        let reports: Vec<Vec<u8>> = packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
            .filter_map(|report| report.marshal().ok())
            .map(|bytes| bytes.to_vec())
            .collect();
        if reports.is_empty() {
            return;
        }
        for capture in self.recordings.values_mut() {
            let time_us = capture.time_us(now);
            if let Some(track) = capture.open.get_mut(sid) {
                for report in &reports {
                    track.push(time_us, Entry::SenderReport(report.clone()));
                }
            }
        }
    }

    /// Something happened to track `sid` that playback needs to know (e.g. a moderator paused
    /// it).
    pub fn marker(&mut self, now: Instant, sid: &str, marker: Marker) {
        for capture in self.recordings.values_mut() {
            let time_us = capture.time_us(now);
            if let Some(track) = capture.open.get_mut(sid) {
                track.push(time_us, Entry::Marker(marker));
            }
        }
    }

    /// The keyframes to ask publishers for now: (track, layer) for each video log waiting to
    /// start or to switch layers, at most once per [`KEYFRAME_REQUEST_INTERVAL`] each. Each
    /// request is noted in its log.
    pub fn keyframes_wanted(&mut self, now: Instant) -> Vec<(TrackSid, Layer)> {
        let mut wanted = Vec::new();
        for capture in self.recordings.values_mut() {
            let time_us = capture.time_us(now);
            for (sid, track) in &mut capture.open {
                if !track.video {
                    continue;
                }
                if let Some(layer) = track.layers.keyframe_request(now) {
                    track.push(time_us, Entry::Marker(Marker::KeyframeRequest));
                    wanted.push((sid.clone(), layer));
                }
            }
        }
        wanted
    }
}

/// The control plane keeps its own list of recordings, so an unknown one is its mistake.
fn unknown(id: &str) -> SfuError {
    SfuError::Internal(format!("no recording {id}"))
}

impl Capture {
    fn time_us(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// Opens the log of `track` unless it has one. A log that cannot be started (no thread) is
    /// left out with a warning: the class goes on.
    fn open_track(&mut self, track: &TrackMeta) {
        if self.open.contains_key(&track.sid) {
            return;
        }
        let info = TrackInfo {
            codec_mime: track.codec_mime.clone(),
            clock_rate: track.clock_rate,
            fmtp: track.fmtp.clone(),
            extmaps: track.extmaps.clone(),
            ssrc: track.ssrc,
            participant: track.participant.clone(),
            source: track.source,
            wall_clock_start_us: self.wall_clock_start_us,
        };
        let config = LogConfig {
            dir: self.dir.clone(),
            name: track.sid.clone(),
            track: info.clone(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            limits: Limits::default(),
        };
        match writer::start(config) {
            Ok((sender, log)) => {
                let log = TrackLog {
                    track_sid: track.sid.clone(),
                    name: track.sid.clone(),
                    track: info,
                    log,
                };
                self.open.insert(
                    track.sid.clone(),
                    TrackCapture {
                        sender,
                        log,
                        layers: LayerFollower::default(),
                        video: track.video,
                    },
                );
            }
            Err(e) => warn!(track = %track.sid, error = %e, "cannot start recording a track"),
        }
    }
}

impl TrackCapture {
    /// Queues a record; a full queue drops it (the writer logs the gap).
    fn push(&mut self, time_us: u64, entry: Entry) {
        self.sender.try_push(Record { time_us, entry });
    }
}

/// What to do with one packet of a recorded track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Not the layer being recorded (or the log waits for its first keyframe).
    Skip,
    Record,
    /// Record it, and the log holds this layer from here on.
    SwitchTo(Layer),
}

/// Which simulcast layer a track's log holds. It follows the best layer the SFU receives, but
/// moves only at a keyframe of that layer (a log that switched mid-frame could not be decoded
/// until the next one), recording the old layer meanwhile. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct LayerFollower {
    current: Option<Layer>,
    target: Option<Layer>,
    last_request: Option<Instant>,
}

impl LayerFollower {
    /// A packet of `layer`, the start of a keyframe or not, while `best` is the best layer
    /// being received.
    pub fn packet(&mut self, layer: Layer, keyframe: bool, best: Option<Layer>) -> Take {
        self.target = best;
        if best == Some(layer) && self.current != Some(layer) && keyframe {
            self.current = Some(layer);
            self.last_request = None;
            return Take::SwitchTo(layer);
        }
        if self.current == Some(layer) {
            Take::Record
        } else {
            Take::Skip
        }
    }

    /// The layer to ask a keyframe of at `now`: the one the log waits to start on or switch
    /// to, unless it asked less than [`KEYFRAME_REQUEST_INTERVAL`] ago.
    pub fn keyframe_request(&mut self, now: Instant) -> Option<Layer> {
        let target = self.target?;
        let asked_lately = self
            .last_request
            .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL);
        if self.current == Some(target) || asked_lately {
            return None;
        }
        self.last_request = Some(now);
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_starts_at_the_first_keyframe_of_the_best_layer() {
        let mut layers = LayerFollower::default();
        assert_eq!(layers.packet(0, true, Some(2)), Take::Skip, "not the best");
        assert_eq!(layers.packet(2, false, Some(2)), Take::Skip, "mid-frame");
        assert_eq!(layers.packet(2, true, Some(2)), Take::SwitchTo(2));
        assert_eq!(layers.packet(2, false, Some(2)), Take::Record);
        assert_eq!(layers.packet(1, true, Some(2)), Take::Skip);
    }

    #[test]
    fn it_keeps_the_old_layer_until_a_keyframe_of_the_new_best_one() {
        let mut layers = LayerFollower::default();
        assert_eq!(layers.packet(1, true, Some(1)), Take::SwitchTo(1));
        // Layer 2 starts arriving: the log stays on 1 until 2 has a keyframe.
        assert_eq!(layers.packet(2, false, Some(2)), Take::Skip);
        assert_eq!(layers.packet(1, false, Some(2)), Take::Record);
        assert_eq!(layers.packet(2, true, Some(2)), Take::SwitchTo(2));
        assert_eq!(layers.packet(1, false, Some(2)), Take::Skip);
        // Layer 2 stops: down to 0 at its next keyframe.
        assert_eq!(layers.packet(0, false, Some(0)), Take::Skip);
        assert_eq!(layers.packet(0, true, Some(0)), Take::SwitchTo(0));
    }

    #[test]
    fn keyframes_are_asked_for_at_most_once_a_second_until_one_comes() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut layers = LayerFollower::default();
        assert_eq!(layers.keyframe_request(at(0)), None, "nothing received yet");
        layers.packet(0, false, Some(0));
        assert_eq!(layers.keyframe_request(at(0)), Some(0));
        assert_eq!(layers.keyframe_request(at(999)), None);
        assert_eq!(layers.keyframe_request(at(1000)), Some(0));
        layers.packet(0, true, Some(0));
        assert_eq!(layers.keyframe_request(at(5000)), None, "it came");
        // A better layer appears: one more request, for it.
        layers.packet(1, false, Some(1));
        assert_eq!(layers.keyframe_request(at(5000)), Some(1));
        assert_eq!(layers.keyframe_request(at(5500)), None);
    }
}
