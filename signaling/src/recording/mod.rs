//! Recording rooms (issue 13, item 1): starting and stopping, and telling everyone.
//!
//! A recording is per room. It starts by the admin API, by a participant whose token may record
//! (`can_record`: teachers and agents by default), or by itself when `[recording] auto` names the
//! room's kind; it stops by the admin API, by such a participant, or when the room empties. The
//! SFU captures the media (`aula_sfu::record::capture`); this module decides whose tracks (every
//! participant of the room, later joiners too) and where (`<dir>/<id>/`, one log per track), and
//! tells: a `recording` event to every participant (and to each joiner right after `joined`),
//! `recording_started` and `recording_ended` webhooks, metrics, and a `recording.json` beside the
//! logs, written at the start and rewritten at the end with what each log holds.
//!
//! One async lock covers a recording's start, its joiners and its stop, so a participant joining
//! while a recording starts is recorded exactly once: either it is in the room when the
//! recording reads who is there, or it finds the recording started.

pub mod qos;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use aula_protocol::{ErrorCode, ParticipantInfo, RecordingState, Role, ServerEvent, TrackSource};
use aula_sfu::record::capture::{RecordingSpec, TrackLog};
use serde::Serialize;
use serde_json::json;

use crate::config::{RecordingConfig, RoomKind};
use crate::media::MediaPlane;
use crate::metrics::SignalingMetrics;
use crate::room::Registry;
use crate::webhook::Webhooks;

/// `started_by` of a recording started by the admin API.
pub(crate) const BY_ADMIN: &str = "admin";
/// `started_by` of a recording started by `[recording] auto`.
const BY_AUTO: &str = "auto";
/// The support desk names its private rooms `support-<session id>` (`support::desk`).
const SUPPORT_ROOM_PREFIX: &str = "support-";
/// The file beside the logs that says what the recording is.
pub const MANIFEST_FILE: &str = "recording.json";

/// Why a recording request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    UnknownRoom,
    AlreadyRecording,
    NotRecording,
    /// The media plane or the disk failed.
    Failed(String),
}

impl Refusal {
    /// The error code clients and the admin API see.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownRoom => "not_found",
            Refusal::AlreadyRecording => "already_recording",
            Refusal::NotRecording => "not_recording",
            Refusal::Failed(_) => "internal",
        }
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            Refusal::UnknownRoom => ErrorCode::UnknownParticipant,
            Refusal::AlreadyRecording => ErrorCode::AlreadyRecording,
            Refusal::NotRecording => ErrorCode::NotRecording,
            Refusal::Failed(_) => ErrorCode::Internal,
        }
    }

    pub fn message(&self, room: &str) -> String {
        match self {
            Refusal::UnknownRoom => format!("no room {room:?}"),
            Refusal::AlreadyRecording => format!("room {room:?} is being recorded"),
            Refusal::NotRecording => format!("room {room:?} is not being recorded"),
            Refusal::Failed(why) => format!("recording failed: {why}"),
        }
    }
}

/// What `recording.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Manifest {
    pub id: String,
    pub room: String,
    /// A participant's identity, `admin` or `auto`.
    pub started_by: String,
    pub started_at_unix_ms: u64,
    /// `None` while recording (or if the server died before the end: the logs are still good).
    pub ended_at_unix_ms: Option<u64>,
    /// Everyone who was in the room while it was recorded.
    pub participants: Vec<ManifestParticipant>,
    /// One per track log, known at the end.
    pub tracks: Vec<ManifestTrack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ManifestParticipant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ManifestTrack {
    pub track_sid: String,
    /// The log's name: its segments are `<log>.<index>.seg`.
    pub log: String,
    pub participant: String,
    pub source: TrackSource,
    pub codec: String,
    pub clock_rate: u32,
    pub segments: u32,
    pub records: u64,
    pub bytes: u64,
    /// Records dropped because the disk did not keep up (a gap marker in the log says where).
    pub dropped: u64,
    /// Why the log stopped being written, if it failed.
    pub error: Option<String>,
}

impl From<&ParticipantInfo> for ManifestParticipant {
    fn from(info: &ParticipantInfo) -> Self {
        Self {
            sid: info.sid.clone(),
            identity: info.identity.clone(),
            name: info.name.clone(),
            role: info.role,
        }
    }
}

/// Starts and stops recordings; cheap to clone.
#[derive(Clone)]
pub(crate) struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    config: RecordingConfig,
    media: Arc<dyn MediaPlane>,
    registry: Arc<Mutex<Registry>>,
    webhooks: Webhooks,
    metrics: SignalingMetrics,
    /// Recordings in progress, by room.
    active: tokio::sync::Mutex<HashMap<String, Manifest>>,
    /// The recordings' QoS timelines (`qos.jsonl`).
    qos: qos::QosLogs,
}

impl Recorder {
    pub fn new(
        config: RecordingConfig,
        media: Arc<dyn MediaPlane>,
        registry: Arc<Mutex<Registry>>,
        webhooks: Webhooks,
        metrics: SignalingMetrics,
    ) -> Self {
        let inner = Inner {
            config,
            media,
            registry,
            webhooks,
            metrics,
            active: tokio::sync::Mutex::default(),
            qos: qos::QosLogs::default(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Starts recording `room`; returns the recording's id.
    pub async fn start(&self, room: &str, started_by: &str) -> Result<String, Refusal> {
        let mut active = self.inner.active.lock().await;
        if active.contains_key(room) {
            return Err(Refusal::AlreadyRecording);
        }
        let participants: Vec<ManifestParticipant> = {
            let registry = self.registry();
            let members = &registry.room(room).ok_or(Refusal::UnknownRoom)?.members;
            members.iter().map(|m| (&m.info).into()).collect()
        };
        let started = unix_ms();
        let manifest = Manifest {
            id: new_recording_id(),
            room: room.to_owned(),
            started_by: started_by.to_owned(),
            started_at_unix_ms: started,
            ended_at_unix_ms: None,
            participants,
            tracks: Vec::new(),
        };
        let dir = self.dir_of(&manifest.id);
        let spec = RecordingSpec {
            id: manifest.id.clone(),
            dir: dir.clone(),
            participants: manifest
                .participants
                .iter()
                .map(|p| p.sid.clone())
                .collect(),
            wall_clock_start_us: started.saturating_mul(1000),
        };
        let started = match write_manifest(&dir, &manifest).await {
            Ok(()) => self
                .inner
                .media
                .start_recording(spec)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot write {}: {e}", dir.display())),
        };
        let zero = match started {
            Ok(zero) => zero,
            Err(why) => {
                tracing::warn!(room, "recording did not start: {why}");
                self.inner.metrics.recording_failures.inc();
                return Err(Refusal::Failed(why));
            }
        };
        let qos = &self.inner.qos;
        if let Err(e) = qos.open(room, &dir, zero, started_by) {
            tracing::warn!(room, "the recording will have no QoS timeline: {e}");
        }
        for participant in &manifest.participants {
            qos.participant(room, "present", participant);
        }
        tracing::info!(room, recording = manifest.id, started_by, dir = %dir.display(), "recording started");
        self.inner.metrics.recordings_active.inc();
        self.tell_room(room, RecordingState::Recording, &manifest);
        self.inner.webhooks.emit(
            "recording_started",
            json!({
                "room": room, "recording_id": manifest.id, "started_by": started_by,
                "dir": dir.display().to_string(),
            }),
        );
        let id = manifest.id.clone();
        active.insert(room.to_owned(), manifest);
        Ok(id)
    }

    /// Stops recording `room`, once every log is on disk; returns the final manifest.
    pub async fn stop(&self, room: &str) -> Result<Manifest, Refusal> {
        let mut active = self.inner.active.lock().await;
        let mut manifest = active.remove(room).ok_or(Refusal::NotRecording)?;
        self.inner.metrics.recordings_active.dec();
        self.tell_room(room, RecordingState::Stopped, &manifest);
        self.inner
            .qos
            .room_event(room, None, "recording_stopped", json!({}));
        let timeline = self.inner.qos.close(room);
        let logs = match self.inner.media.stop_recording(&manifest.id).await {
            Ok(logs) => logs,
            Err(e) => {
                tracing::warn!(
                    room,
                    recording = manifest.id,
                    "media plane did not stop the recording: {e}"
                );
                self.inner.metrics.recording_failures.inc();
                Vec::new()
            }
        };
        // Joining the writer threads blocks (each flushes and fsyncs its last segment).
        let tracks = tokio::task::spawn_blocking(move || {
            if let Some(Err(e)) = timeline.map(qos::QosLog::finish) {
                tracing::warn!("the QoS timeline was not written whole: {e}");
            }
            logs.into_iter().map(finish).collect()
        })
        .await
        .unwrap_or_default();
        manifest.tracks = tracks;
        manifest.ended_at_unix_ms = Some(unix_ms());
        let metrics = &self.inner.metrics;
        for track in &manifest.tracks {
            metrics.recording_records.inc_by(track.records);
            metrics.recording_dropped.inc_by(track.dropped);
            if track.error.is_some() {
                metrics.recording_failures.inc();
            }
        }
        let dir = self.dir_of(&manifest.id);
        if let Err(e) = write_manifest(&dir, &manifest).await {
            tracing::warn!(
                room,
                recording = manifest.id,
                "cannot write the manifest: {e}"
            );
        }
        tracing::info!(
            room,
            recording = manifest.id,
            tracks = manifest.tracks.len(),
            "recording ended"
        );
        self.inner.webhooks.emit(
            "recording_ended",
            json!({
                "room": room, "recording_id": manifest.id, "dir": dir.display().to_string(),
                "tracks": manifest.tracks,
            }),
        );
        Ok(manifest)
    }

    /// A participant joined `room` (which this join created, if `room_created`): recorded if
    /// the room is, and told so; or the room's recording starts if `[recording] auto` says so.
    pub async fn joined(&self, room: &str, sid: &str, room_created: bool) {
        let mut active = self.inner.active.lock().await;
        if let Some(manifest) = active.get_mut(room) {
            if let Err(e) = self.inner.media.record_participant(&manifest.id, sid).await {
                tracing::warn!(room, sid, "a joiner's tracks will not be recorded: {e}");
                self.inner.metrics.recording_failures.inc();
            }
            let registry = self.registry();
            if let Some(member) = registry.room(room).and_then(|r| r.member(sid)) {
                let participant = ManifestParticipant::from(&member.info);
                self.inner.qos.participant(room, "join", &participant);
                manifest.participants.push(participant);
                member.send_event(event(RecordingState::Recording, manifest));
            }
            return;
        }
        drop(active);
        if room_created {
            self.room_created(room).await;
        }
    }

    /// A room was created: its recording starts if `[recording] auto` names its kind.
    pub async fn room_created(&self, room: &str) {
        if self.inner.config.auto.contains(&kind_of(room))
            && let Err(refusal) = self.start(room, BY_AUTO).await
        {
            tracing::debug!(room, "no automatic recording: {}", refusal.message(room));
        }
    }

    /// A participant left: a recorded room it leaves empty stops being recorded.
    pub fn left(&self, sid: &str) {
        let recorder = self.clone();
        let sid = sid.to_owned();
        tokio::spawn(async move {
            let room = {
                let active = recorder.inner.active.lock().await;
                let registry = recorder.registry();
                active
                    .iter()
                    .find(|(room, manifest)| {
                        manifest.participants.iter().any(|p| p.sid == sid)
                            && registry.room(room).is_none_or(|r| r.members.is_empty())
                    })
                    .map(|(room, _)| room.clone())
            };
            if let Some(room) = room {
                // Another leave may have stopped it meanwhile: nothing to do then.
                let _ = recorder.stop(&room).await;
            }
        });
    }

    /// The QoS timelines of the recordings in progress, for the events and samples that go
    /// into them.
    pub fn qos(&self) -> &qos::QosLogs {
        &self.inner.qos
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn dir_of(&self, id: &str) -> PathBuf {
        self.inner.config.dir.join(id)
    }

    fn tell_room(&self, room: &str, state: RecordingState, manifest: &Manifest) {
        if let Some(room) = self.registry().room(room) {
            room.broadcast_event(&event(state, manifest));
        }
    }
}

fn event(state: RecordingState, manifest: &Manifest) -> ServerEvent {
    ServerEvent::Recording {
        state,
        recording_id: manifest.id.clone(),
        started_by: manifest.started_by.clone(),
    }
}

/// What the room is for, by its name.
fn kind_of(room: &str) -> RoomKind {
    if room.starts_with(SUPPORT_ROOM_PREFIX) {
        RoomKind::Support
    } else {
        RoomKind::Class
    }
}

/// Waits until a track's log is closed, and says what it holds. Blocks.
fn finish(log: TrackLog) -> ManifestTrack {
    let dropped = log.log.dropped();
    let (stats, error) = match log.log.finish() {
        Ok(stats) => (stats, None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    ManifestTrack {
        track_sid: log.track_sid,
        log: log.name,
        participant: log.track.participant,
        source: log.track.source,
        codec: log.track.codec_mime,
        clock_rate: log.track.clock_rate,
        segments: stats.segments,
        records: stats.records,
        bytes: stats.bytes,
        dropped,
        error,
    }
}

/// Writes `recording.json` in `dir` (created if missing), replacing it whole: written beside,
/// then renamed over, so that a crash leaves the old or the new one, never half of one.
async fn write_manifest(dir: &Path, manifest: &Manifest) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    let partial = dir.join(format!("{MANIFEST_FILE}.partial"));
    tokio::fs::write(&partial, json).await?;
    tokio::fs::rename(partial, dir.join(MANIFEST_FILE)).await
}

fn new_recording_id() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("RC_{suffix}")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_rooms_are_told_from_classes_by_name() {
        assert_eq!(kind_of("support-42"), RoomKind::Support);
        assert_eq!(kind_of("math"), RoomKind::Class);
        assert_eq!(kind_of("my-support-room"), RoomKind::Class);
    }

    #[tokio::test]
    async fn the_manifest_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("aula-manifest-{}", std::process::id()));
        let mut manifest = Manifest {
            id: "RC_1".into(),
            room: "math".into(),
            started_by: BY_ADMIN.into(),
            started_at_unix_ms: 1,
            ended_at_unix_ms: None,
            participants: Vec::new(),
            tracks: Vec::new(),
        };
        write_manifest(&dir, &manifest).await.unwrap();
        manifest.ended_at_unix_ms = Some(2);
        write_manifest(&dir, &manifest).await.unwrap();
        let read: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
        let files = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read["ended_at_unix_ms"], 2);
        assert_eq!(read["room"], "math");
        assert_eq!(files, 1, "no partial file left");
    }
}
