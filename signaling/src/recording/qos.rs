//! The QoS timeline of a recording (issue 13, item 3): `qos.jsonl` beside the capture logs.
//!
//! While a room is recorded, every participant gets one `sample` line a second (what the SFU
//! measures of its links), a `client_stats` line whenever its browser reports (every 5 s), and
//! `event` lines for what happened (joins, leaves, mutes, screen shares, chat, reconnects,
//! moderation, transfers, layer changes, gaps). The playback page draws its charts and markers
//! from it.
//!
//! # Line format
//!
//! One JSON object per line, in time order. Every line has:
//!
//! - `t_us`: microseconds since the recording's time 0, the origin of the capture logs' record
//!   times (the SFU hands it over when the recording starts), so lines and media line up.
//! - `kind`: `"sample"`, `"client_stats"` or `"event"`.
//! - `participant`: the participant's sid (as in `recording.json`); absent on room events.
//!
//! The other fields are flat numbers (or strings for names); a figure not known is left out
//! rather than written as 0 or `null`:
//!
//! - `sample`: `send_bps`, `receive_bps` (the participant's own directions), `estimate_bps`
//!   (the SFU's estimate of the path to it), `loss_before_recovery`, `loss_after_recovery`
//!   (fractions 0..1 of what it receives, before and after retransmission repaired it),
//!   `send_loss` (fraction of what it sends lost on the way to the SFU), `nacks_received`,
//!   `keyframe_requests_received` (its requests about what it receives; NACKs as the sequence
//!   numbers they ask for), `nacks_sent`, `keyframe_requests_sent` (the SFU's, about what it
//!   publishes), `rtt_ms`, `jitter_ms`, `quality` (0 poor, 1 good, 2 excellent), `layer` (the
//!   highest simulcast layer forwarded to it, -1 when all its videos are paused; absent
//!   without subscribed video), `videos` (subscribed videos), `paused_videos`.
//! - `client_stats`: the browser's own figures, as in `aula_protocol::ClientStats`: `fps`,
//!   `freezes`, `freeze_ms`, `frame_width`, `frame_height`, `audio_concealed_ratio`,
//!   `packet_loss`, `rtt_ms`, `jitter_ms`; those the browser left out are left out here.
//! - `event`: `event` names it; more fields by event:
//!   `recording_started` (`started_by`), `present` (in the room when the recording started;
//!   `identity`, `name`, `role`), `join` (same fields), `leave` (`reason`), `reconnecting`,
//!   `reconnected`, `mute` (`track`, `muted`: 1 or 0, `by`: the moderator's sid if not self),
//!   `track_published` / `track_unpublished` and `screen_share_started` /
//!   `screen_share_stopped` (`track`, `source`), `chat` (`text`), `moderation` (`action`,
//!   `target`), `transfer` (`skill`), `layer_change` (`track`, `from`, `to`: layers, -1 for
//!   paused; `reason`: `bandwidth`, `lossy_link`, `audio_only`, `best_available`, `unavailable`),
//!   `recording_gap` (`dropped`: capture records of the participant's tracks a slow disk
//!   dropped since the last such line), `qos_gap` (`dropped`: lines of this file dropped, at
//!   the time of the first), `recording_stopped`.
//!
//! # Crash safety
//!
//! As the capture logs (`aula_sfu::record`): lines are handed to a writer thread through a
//! bounded queue that never blocks the caller (a full queue drops the line and a `qos_gap` line
//! follows once there is room), the file is append-only and flushed to the OS at least every
//! second, and fsynced when closed. A `kill -9` loses at most the last second and can tear only
//! the last line, which [`read`] leaves out.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use aula_protocol::{ClientStats, ConnectionQuality, TrackSource};
use aula_sfu::qos::PeerSample;
use serde_json::{Map, Value, json};

/// The file's name in the recording's directory.
pub const QOS_FILE: &str = "qos.jsonl";
/// Lines the queue holds: a class of 100 writes about 100 a second.
const QUEUE_CAPACITY: usize = 1024;
/// The writer hands what it wrote to the OS at least this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

// ---- the lines (pure) ----------------------------------------------------------------------

/// A line without its time: what is queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub kind: &'static str,
    pub participant: Option<String>,
    /// The flat fields after `t_us`, `kind` and `participant`.
    pub fields: Map<String, Value>,
}

impl Line {
    /// An event; `fields` must be a JSON object (anything else adds no fields).
    pub fn event(participant: Option<&str>, event: &str, fields: Value) -> Self {
        let mut map = Map::new();
        map.insert("event".into(), event.into());
        if let Value::Object(fields) = fields {
            map.extend(fields);
        }
        Line {
            kind: "event",
            participant: participant.map(str::to_owned),
            fields: map,
        }
    }

    /// The SFU's sample of a participant (its layer changes are separate lines:
    /// [`layer_changes`]).
    pub fn sample(participant: &str, sample: &PeerSample) -> Self {
        let link = &sample.link;
        let mut map = Map::new();
        let mut put = |name: &str, value: Option<f64>| {
            if let Some(value) = value.filter(|v| v.is_finite()) {
                map.insert(name.into(), round(value).into());
            }
        };
        put("send_bps", Some(sample.send_bps));
        put("receive_bps", Some(sample.receive_bps));
        put("estimate_bps", link.estimate_bps);
        put("loss_before_recovery", link.loss_before_recovery);
        put("loss_after_recovery", link.loss_after_recovery);
        put("send_loss", sample.send_loss);
        put("nacks_received", Some(sample.nacks_received as f64));
        put(
            "keyframe_requests_received",
            Some(sample.keyframe_requests_received as f64),
        );
        put("nacks_sent", Some(sample.nacks_sent as f64));
        put(
            "keyframe_requests_sent",
            Some(sample.keyframe_requests_sent as f64),
        );
        put("rtt_ms", link.rtt.map(|d| d.as_secs_f64() * 1000.0));
        put("jitter_ms", link.jitter.map(|d| d.as_secs_f64() * 1000.0));
        put("quality", link.quality.map(|q| f64::from(quality_level(q))));
        if !link.layers.is_empty() {
            let layer = link.layers.iter().filter_map(|(_, l)| *l).max();
            put("layer", Some(layer.map_or(-1.0, |l| l as f64)));
            put("videos", Some(link.layers.len() as f64));
            let paused = link.layers.iter().filter(|(_, l)| l.is_none()).count();
            put("paused_videos", Some(paused as f64));
        }
        Line {
            kind: "sample",
            participant: Some(participant.to_owned()),
            fields: map,
        }
    }

    /// A browser's own figures.
    pub fn client_stats(participant: &str, stats: &ClientStats) -> Self {
        let fields = match serde_json::to_value(stats) {
            Ok(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| (k, v.as_f64().map_or(v, |f| round(f).into())))
                .collect(),
            _ => Map::new(),
        };
        Line {
            kind: "client_stats",
            participant: Some(participant.to_owned()),
            fields,
        }
    }

    /// The JSON line, with its newline, at `t_us`: `t_us`, `kind` and `participant` first (a
    /// field of the same name is left out), then the fields.
    pub fn encode(&self, t_us: u64) -> String {
        let mut line = format!("{{\"t_us\":{t_us},\"kind\":{}", Value::from(self.kind));
        if let Some(participant) = &self.participant {
            line += &format!(",\"participant\":{}", Value::from(participant.as_str()));
        }
        for (name, value) in &self.fields {
            if !matches!(name.as_str(), "t_us" | "kind" | "participant") {
                line += &format!(",{}:{value}", Value::from(name.as_str()));
            }
        }
        line += "}\n";
        line
    }
}

/// The `layer_change` events of a sample, each at its own time.
pub fn layer_changes(participant: &str, sample: &PeerSample) -> Vec<(Instant, Line)> {
    let layer = |l: Option<usize>| l.map_or(-1, |l| l as i64);
    sample
        .layer_changes
        .iter()
        .map(|change| {
            let fields = json!({
                "track": change.track_sid, "from": layer(change.from), "to": layer(change.to),
                "reason": change.reason.label(),
            });
            let line = Line::event(Some(participant), "layer_change", fields);
            (change.at, line)
        })
        .collect()
}

/// Charts need numbers: 0 poor, 1 good, 2 excellent.
fn quality_level(quality: ConnectionQuality) -> u8 {
    match quality {
        ConnectionQuality::Poor => 0,
        ConnectionQuality::Good => 1,
        ConnectionQuality::Excellent => 2,
    }
}

/// Three decimals are plenty for a chart, and keep the lines short.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Microseconds from `zero` to `at` (0 for a time before it).
pub fn t_us(zero: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(zero).as_micros()).unwrap_or(u64::MAX)
}

/// Reads a `qos.jsonl`: every line, parsed, leaving out a torn last line (one without its
/// newline that does not parse: the crash came while it was written). A bad line anywhere else
/// is damage the writer cannot cause, and an error.
pub fn read(text: &str) -> Result<Vec<Value>, String> {
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut values = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(value) => values.push(value),
            Err(_) if i + 1 == lines.len() && !complete => {}
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok(values)
}

// ---- the writer ----------------------------------------------------------------------------

/// One recording's `qos.jsonl`: the sending end, which never blocks, and the writer thread.
pub struct QosLog {
    queue: SyncSender<(u64, Line)>,
    /// Lines dropped since the last `qos_gap` line went in: (time of the first, how many).
    gap: Option<(u64, u64)>,
    thread: JoinHandle<io::Result<()>>,
}

impl QosLog {
    /// Creates `<dir>/qos.jsonl` (appending if it exists) and starts its writer thread.
    pub fn create(dir: &Path) -> io::Result<Self> {
        let path = dir.join(QOS_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (queue, lines) = mpsc::sync_channel(QUEUE_CAPACITY);
        let thread = thread::Builder::new()
            .name("aula-qos".into())
            .spawn(move || write_lines(file, &path, lines))?;
        Ok(QosLog {
            queue,
            gap: None,
            thread,
        })
    }

    /// Queues a line at `t_us`, after the `qos_gap` line owed for earlier drops, if any; drops
    /// it if the queue is full (or the writer failed).
    pub fn push(&mut self, t_us: u64, line: Line) {
        if let Some((first, dropped)) = self.gap {
            let gap = Line::event(None, "qos_gap", json!({ "dropped": dropped }));
            if self.queue.try_send((first, gap)).is_err() {
                self.gap = Some((first, dropped + 1));
                return;
            }
            self.gap = None;
        }
        if self.queue.try_send((t_us, line)).is_err() {
            self.gap = Some((t_us, 1));
        }
    }

    /// Closes the file once every queued line is written and fsynced. Blocks.
    pub fn finish(self) -> io::Result<()> {
        drop(self.queue);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the QoS writer panicked")))
    }
}

/// The writer thread: appends lines as they come, flushes at least every [`FLUSH_INTERVAL`],
/// fsyncs at the end. A line written before an earlier one is written at that one's time, so
/// times never decrease in the file.
fn write_lines(file: File, path: &Path, lines: Receiver<(u64, Line)>) -> io::Result<()> {
    let mut out = BufWriter::new(file);
    let mut last_flush = Instant::now();
    let mut last_t_us = 0;
    loop {
        match lines.recv_timeout(FLUSH_INTERVAL) {
            Ok((t_us, line)) => {
                last_t_us = last_t_us.max(t_us);
                out.write_all(line.encode(last_t_us).as_bytes())?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_flush.elapsed() >= FLUSH_INTERVAL {
            out.flush()?;
            last_flush = Instant::now();
        }
    }
    out.flush()?;
    out.get_ref().sync_all().map_err(|e| {
        tracing::warn!(path = %path.display(), "cannot fsync the QoS timeline: {e}");
        e
    })
}

// ---- the recordings' timelines -------------------------------------------------------------

/// The QoS timelines of the recordings in progress, by room; shared, never blocking for long
/// (a push only queues).
#[derive(Default)]
pub struct QosLogs {
    rooms: Mutex<HashMap<String, RoomTimeline>>,
}

struct RoomTimeline {
    log: QosLog,
    /// The recording's time 0.
    zero: Instant,
    participants: HashSet<String>,
    /// Capture records dropped per participant, as of the last `recording_gap` line.
    capture_dropped: HashMap<String, u64>,
    /// The source of each track published, for its `_stopped` event.
    sources: HashMap<String, TrackSource>,
}

impl QosLogs {
    /// Starts the timeline of a room's recording in `dir`, whose time 0 is `zero`.
    pub fn open(&self, room: &str, dir: &Path, zero: Instant, started_by: &str) -> io::Result<()> {
        let mut timeline = RoomTimeline {
            log: QosLog::create(dir)?,
            zero,
            participants: HashSet::new(),
            capture_dropped: HashMap::new(),
            sources: HashMap::new(),
        };
        let fields = json!({ "started_by": started_by });
        let started = Line::event(None, "recording_started", fields);
        timeline.log.push(t_us(zero, Instant::now()), started);
        self.rooms().insert(room.to_owned(), timeline);
        Ok(())
    }

    /// A participant is recorded from now on: `event` (`present` or `join`) with what
    /// `info` says of it (`recording.json`'s participant: its `sid`, identity, name, role).
    pub fn participant(&self, room: &str, event: &str, info: &impl serde::Serialize) {
        let Ok(Value::Object(mut fields)) = serde_json::to_value(info) else {
            return;
        };
        let Some(Value::String(sid)) = fields.remove("sid") else {
            return;
        };
        if let Some(timeline) = self.rooms().get_mut(room) {
            timeline.participants.insert(sid.clone());
            let line = Line::event(Some(&sid), event, Value::Object(fields));
            timeline.log.push(t_us(timeline.zero, Instant::now()), line);
        }
    }

    /// Ends a room's timeline; [`QosLog::finish`] it off the async threads.
    pub fn close(&self, room: &str) -> Option<QosLog> {
        self.rooms().remove(room).map(|timeline| timeline.log)
    }

    /// An event in a recorded room, now; nothing if the room is not recorded.
    pub fn room_event(&self, room: &str, participant: Option<&str>, event: &str, fields: Value) {
        if let Some(timeline) = self.rooms().get_mut(room) {
            let t_us = t_us(timeline.zero, Instant::now());
            timeline
                .log
                .push(t_us, Line::event(participant, event, fields));
        }
    }

    /// An event of a participant, now, in whichever recorded room it is.
    pub fn event(&self, sid: &str, event: &str, fields: Value) {
        self.of(sid, Instant::now(), |_| {
            vec![Line::event(Some(sid), event, fields)]
        });
    }

    /// A participant's track started (`screen_share_started` for a screen, else
    /// `track_published`).
    pub fn track_published(&self, sid: &str, track_sid: &str, source: TrackSource) {
        let mut rooms = self.rooms();
        if let Some(timeline) = rooms.values_mut().find(|t| t.participants.contains(sid)) {
            timeline.sources.insert(track_sid.to_owned(), source);
            let event = match source {
                TrackSource::ScreenShare => "screen_share_started",
                _ => "track_published",
            };
            let fields = json!({ "track": track_sid, "source": source });
            let line = Line::event(Some(sid), event, fields);
            timeline.log.push(t_us(timeline.zero, Instant::now()), line);
        }
    }

    /// A participant's track ended.
    pub fn track_unpublished(&self, sid: &str, track_sid: &str) {
        let mut rooms = self.rooms();
        if let Some(timeline) = rooms.values_mut().find(|t| t.participants.contains(sid)) {
            let source = timeline.sources.remove(track_sid);
            let event = match source {
                Some(TrackSource::ScreenShare) => "screen_share_stopped",
                _ => "track_unpublished",
            };
            let fields = json!({ "track": track_sid, "source": source });
            let line = Line::event(Some(sid), event, fields);
            timeline.log.push(t_us(timeline.zero, Instant::now()), line);
        }
    }

    /// A participant's browser figures, now.
    pub fn client_stats(&self, sid: &str, stats: &ClientStats) {
        self.of(sid, Instant::now(), |_| {
            vec![Line::client_stats(sid, stats)]
        });
    }

    /// The SFU's sample of a participant taken at `at`: its layer changes, a `recording_gap`
    /// if its capture logs dropped records since the last one, then the sample.
    pub fn sample(&self, sid: &str, at: Instant, sample: &PeerSample) {
        let mut rooms = self.rooms();
        let Some(timeline) = rooms.values_mut().find(|t| t.participants.contains(sid)) else {
            return;
        };
        for (changed, line) in layer_changes(sid, sample) {
            let t_us = t_us(timeline.zero, changed);
            timeline.log.push(t_us, line);
        }
        let t_us = t_us(timeline.zero, at);
        let dropped = sample.link.recording_dropped;
        let was = timeline
            .capture_dropped
            .insert(sid.to_owned(), dropped)
            .unwrap_or(0);
        if dropped > was {
            let fields = json!({ "dropped": dropped - was });
            let gap = Line::event(Some(sid), "recording_gap", fields);
            timeline.log.push(t_us, gap);
        }
        timeline.log.push(t_us, Line::sample(sid, sample));
    }

    /// Pushes the lines `make` returns into the timeline of the room `sid` is recorded in.
    fn of(&self, sid: &str, at: Instant, make: impl FnOnce(&str) -> Vec<Line>) {
        let mut rooms = self.rooms();
        if let Some(timeline) = rooms.values_mut().find(|t| t.participants.contains(sid)) {
            let t_us = t_us(timeline.zero, at);
            for line in make(sid) {
                timeline.log.push(t_us, line);
            }
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomTimeline>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use aula_sfu::qos::{LayerChange, LayerReason, LinkState};

    use super::*;

    fn sample() -> PeerSample {
        PeerSample {
            send_bps: 32_000.444_4,
            receive_bps: 0.0,
            send_loss: None,
            nacks_received: 2,
            keyframe_requests_received: 1,
            nacks_sent: 0,
            keyframe_requests_sent: 0,
            link: LinkState {
                estimate_bps: Some(1_500_000.0),
                loss_before_recovery: Some(0.2),
                loss_after_recovery: Some(0.01),
                rtt: Some(Duration::from_millis(48)),
                jitter: None,
                quality: Some(ConnectionQuality::Good),
                layers: vec![("TR_a".into(), Some(1)), ("TR_b".into(), None)],
                recording_dropped: 0,
            },
            layer_changes: Vec::new(),
        }
    }

    #[test]
    fn a_sample_is_one_flat_line() {
        let line = Line::sample("PA_1", &sample()).encode(1_000_000);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert!(line.starts_with(r#"{"t_us":1000000,"kind":"sample","participant":"PA_1","#));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["send_bps"], 32_000.444);
        assert_eq!(value["estimate_bps"], 1_500_000.0);
        assert_eq!(value["loss_before_recovery"], 0.2);
        assert_eq!(value["rtt_ms"], 48.0);
        assert_eq!(value["quality"], 1.0);
        assert_eq!(value["layer"], 1.0);
        assert_eq!(value["videos"], 2.0);
        assert_eq!(value["paused_videos"], 1.0);
        assert!(
            value.get("jitter_ms").is_none(),
            "unknown figures are left out"
        );
        assert!(value.get("send_loss").is_none());
        let flat = value.as_object().unwrap().values().all(|v| !v.is_object());
        assert!(flat, "{line}");
    }

    #[test]
    fn events_and_client_stats_keep_their_names() {
        let chat = Line::event(Some("PA_1"), "chat", json!({ "text": "hi \"all\"\n" }));
        let value: Value = serde_json::from_str(&chat.encode(5)).unwrap();
        assert_eq!(value["kind"], "event");
        assert_eq!(value["event"], "chat");
        assert_eq!(value["text"], "hi \"all\"\n", "escaped: still one line");
        let fields = json!({ "kind": "forged", "t_us": 0 });
        let forged = Line::event(None, "x", fields).encode(7);
        let value: Value = serde_json::from_str(&forged).unwrap();
        assert_eq!(
            (value["kind"].as_str(), value["t_us"].as_u64()),
            (Some("event"), Some(7))
        );
        assert!(value.get("participant").is_none());
        let stats = ClientStats {
            fps: Some(24.5),
            freezes: Some(0),
            ..ClientStats::default()
        };
        let line = Line::client_stats("PA_2", &stats).encode(9);
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["kind"], "client_stats");
        assert_eq!(value["fps"], 24.5);
        assert_eq!(value["freezes"], 0.0, "measured: no freezes");
        assert!(value.get("frame_width").is_none(), "not measured: {line}");
        let fields = value.as_object().unwrap().len();
        assert_eq!(fields, 5, "t_us, kind, participant, fps, freezes: {line}");
    }

    #[test]
    fn layer_changes_are_events_at_their_own_time() {
        let now = Instant::now();
        let mut sample = sample();
        sample.layer_changes.push(LayerChange {
            at: now,
            track_sid: "TR_a".into(),
            from: Some(2),
            to: None,
            reason: LayerReason::Bandwidth,
        });
        let changes = layer_changes("PA_1", &sample);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, now);
        let value: Value = serde_json::from_str(&changes[0].1.encode(0)).unwrap();
        assert_eq!(value["event"], "layer_change");
        assert_eq!(
            (value["from"].as_i64(), value["to"].as_i64()),
            (Some(2), Some(-1))
        );
        assert_eq!(value["reason"], "bandwidth");
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_damage_elsewhere_is_not() {
        let a = Line::event(None, "a", json!({})).encode(1);
        let b = Line::event(None, "b", json!({})).encode(2);
        let whole = format!("{a}{b}");
        assert_eq!(read(&whole).unwrap().len(), 2);
        let torn = &whole[..whole.len() - 5];
        let read_back = read(torn).unwrap();
        assert_eq!(read_back.len(), 1);
        assert_eq!(read_back[0]["event"], "a");
        assert!(read(&format!("{{oops\n{b}")).is_err());
    }

    #[test]
    fn the_writer_appends_in_time_order_and_closes_the_file() {
        let dir = std::env::temp_dir().join(format!("aula-qos-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = QosLog::create(&dir).unwrap();
        log.push(10, Line::event(None, "first", json!({})));
        log.push(5, Line::event(None, "late", json!({})));
        log.finish().unwrap();
        let text = std::fs::read_to_string(dir.join(QOS_FILE)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let lines = read(&text).unwrap();
        let times: Vec<_> = lines.iter().map(|l| l["t_us"].as_u64().unwrap()).collect();
        assert_eq!(times, [10, 10], "never back in time");
    }

    #[test]
    fn a_full_queue_drops_lines_and_owes_a_gap_line() {
        let (queue, lines) = mpsc::sync_channel(2);
        let mut log = QosLog {
            queue,
            gap: None,
            thread: thread::spawn(|| Ok(())),
        };
        for (t_us, event) in [
            (1, "kept"),
            (2, "kept too"),
            (3, "dropped"),
            (4, "dropped too"),
        ] {
            log.push(t_us, Line::event(None, event, json!({})));
        }
        let event = |(t_us, line): (u64, Line)| (t_us, line.fields["event"].clone());
        assert_eq!(event(lines.recv().unwrap()), (1, json!("kept")));
        assert_eq!(event(lines.recv().unwrap()), (2, json!("kept too")));
        log.push(5, Line::event(None, "after", json!({})));
        let (t_us, gap) = lines.recv().unwrap();
        assert_eq!((t_us, &gap.fields["event"]), (3, &json!("qos_gap")));
        assert_eq!(gap.fields["dropped"], 2);
        assert_eq!(event(lines.recv().unwrap()), (5, json!("after")));
    }
}
