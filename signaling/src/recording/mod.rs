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

pub(crate) mod api;
mod export_job;
pub mod manifest;
pub mod qos;
mod retention;
pub mod store;
mod upload;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use aula_protocol::{ErrorCode, RecordingState, ServerEvent};
use aula_recording::manifest::Manifest as Export;
use aula_sfu::record::capture::{RecordingSpec, TrackLog};
use serde_json::json;

pub use export_job::run as export_dir;
use manifest::{Manifest, ManifestParticipant, ManifestTrack, Status};
use upload::Uploader;

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

/// Why a request about a recording by id (export, delete, get) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordingError {
    #[error("not a recording id")]
    InvalidId,
    #[error("no such recording")]
    NotFound,
    #[error("the recording is still running")]
    Running,
    #[error("the recording is being exported or deleted")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

impl RecordingError {
    /// The error code the admin API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            RecordingError::InvalidId => "invalid_id",
            RecordingError::NotFound => "not_found",
            RecordingError::Running => "recording_running",
            RecordingError::Busy => "recording_busy",
            RecordingError::Failed(_) => "internal",
        }
    }
}

/// A claim on a stopped recording's directory while it is exported or deleted, so that two
/// never overlap (nor retention with either); released when dropped.
pub(super) struct Busy {
    inner: Arc<Inner>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut busy = self
            .inner
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        busy.remove(&self.id);
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
    /// Ids of stopped recordings whose directory is in use (logs being finished, exported,
    /// deleted): see [`Busy`].
    busy: Mutex<HashSet<String>>,
    uploader: Option<Uploader>,
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
    ) -> Result<Self, String> {
        let uploader = config
            .upload
            .as_deref()
            .map(Uploader::new)
            .transpose()
            .map_err(|e| format!("[recording] upload: {e}"))?;
        let inner = Inner {
            config,
            media,
            registry,
            webhooks,
            metrics,
            active: tokio::sync::Mutex::default(),
            busy: Mutex::default(),
            uploader,
            qos: qos::QosLogs::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
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
            id: store::new_id(),
            room: room.to_owned(),
            started_by: started_by.to_owned(),
            started_at_unix_ms: started,
            ended_at_unix_ms: None,
            state: Status::Recording,
            error: None,
            exported_at_unix_ms: None,
            uploaded_to: None,
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

    /// Stops recording `room`, once every log is on disk; returns the final manifest, and
    /// exports the recording in the background.
    pub async fn stop(&self, room: &str) -> Result<Manifest, Refusal> {
        let mut active = self.inner.active.lock().await;
        let mut manifest = active.remove(room).ok_or(Refusal::NotRecording)?;
        let busy = self.claim_stopped(&manifest.id);
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
        manifest.state = Status::Exporting;
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
        let recorder = self.clone();
        tokio::spawn(async move { recorder.export_claimed(busy).await });
        Ok(manifest)
    }

    /// A capture log of recording `id` failed (a disk error): the recording is stopped (its
    /// other logs closed and exported as far as they go), marked failed in `recording.json`
    /// (see `export_job`), and the room is told with a `failed` `recording` event; a
    /// `recording_failed` webhook and a QoS event say why. The class goes on.
    pub async fn log_failed(&self, id: &str, track_sid: &str, error: &str) {
        let found = {
            let active = self.inner.active.lock().await;
            active
                .iter()
                .find(|(_, manifest)| manifest.id == id)
                .map(|(room, manifest)| (room.clone(), manifest.clone()))
        };
        let Some((room, manifest)) = found else {
            return;
        };
        tracing::error!(
            room,
            recording = id,
            track = track_sid,
            "recording failed: {error}"
        );
        self.inner.qos.room_event(
            &room,
            None,
            "recording_failed",
            json!({ "track": track_sid, "error": error }),
        );
        self.inner.webhooks.emit(
            "recording_failed",
            json!({ "room": room, "recording_id": id, "track": track_sid, "error": error }),
        );
        self.tell_room(&room, RecordingState::Failed, &manifest);
        if let Err(e) = self.stop(&room).await {
            tracing::warn!(room, recording = id, "stopping a failed recording: {e:?}");
        }
    }

    /// Exports recording `id` now (again, if it was); answers when done.
    pub async fn export(&self, id: &str) -> Result<Export, RecordingError> {
        let busy = self.claim(id).await?;
        self.export_claimed(busy)
            .await
            .map_err(RecordingError::Failed)
    }

    /// Deletes recording `id` and its files; `by` (`api`, `retention`) labels the metric.
    pub async fn delete(&self, id: &str, by: &str) -> Result<(), RecordingError> {
        let busy = self.claim(id).await?;
        let dir = self.dir_of(id);
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir))
            .await
            .map_err(|e| RecordingError::Failed(e.to_string()))?
            .map_err(|e| RecordingError::Failed(e.to_string()))?;
        drop(busy);
        tracing::info!(recording = id, by, "recording deleted");
        let metrics = &self.inner.metrics;
        metrics.recording_deletions.with_label_values(&[by]).inc();
        self.refresh_disk_bytes().await;
        Ok(())
    }

    /// Every recording on disk, newest first.
    pub async fn list(&self) -> Result<Vec<store::Summary>, RecordingError> {
        let root = self.inner.config.dir.clone();
        tokio::task::spawn_blocking(move || store::list(&root))
            .await
            .map_err(|e| RecordingError::Failed(e.to_string()))?
            .map_err(|e| RecordingError::Failed(e.to_string()))
    }

    /// Recording `id`'s `recording.json`, its export's `manifest.json` (once exported) and its
    /// size on disk.
    pub async fn get(&self, id: &str) -> Result<serde_json::Value, RecordingError> {
        let dir = store::dir_of(&self.inner.config.dir, id).ok_or(RecordingError::InvalidId)?;
        let read = tokio::task::spawn_blocking(move || {
            let recording = manifest::read(&dir)?;
            let export: Option<Export> =
                std::fs::read(dir.join(aula_recording::manifest::FILE_NAME))
                    .ok()
                    .and_then(|json| serde_json::from_slice(&json).ok());
            Ok::<_, std::io::Error>((recording, export, store::size_of(&dir)?))
        })
        .await
        .map_err(|e| RecordingError::Failed(e.to_string()))?;
        match read {
            Ok((recording, export, size)) => {
                Ok(json!({ "recording": recording, "export": export, "size_bytes": size }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RecordingError::NotFound),
            Err(e) => Err(RecordingError::Failed(e.to_string())),
        }
    }

    /// Claims recording `id`'s directory for an export or a deletion: refused while it
    /// records or another claim holds it, or if there is no such recording.
    async fn claim(&self, id: &str) -> Result<Busy, RecordingError> {
        let dir = store::dir_of(&self.inner.config.dir, id).ok_or(RecordingError::InvalidId)?;
        // Under the lock `stop` holds while it moves a recording from active to busy.
        let active = self.inner.active.lock().await;
        if active.values().any(|m| m.id == id) {
            return Err(RecordingError::Running);
        }
        if !dir.join(manifest::MANIFEST_FILE).exists() {
            return Err(RecordingError::NotFound);
        }
        if !self.busy().insert(id.to_owned()) {
            return Err(RecordingError::Busy);
        }
        Ok(Busy {
            inner: Arc::clone(&self.inner),
            id: id.to_owned(),
        })
    }

    /// Claims a recording `stop` just took out of the active ones.
    fn claim_stopped(&self, id: &str) -> Busy {
        self.busy().insert(id.to_owned());
        Busy {
            inner: Arc::clone(&self.inner),
            id: id.to_owned(),
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the gauge of bytes under `[recording] dir`.
    async fn refresh_disk_bytes(&self) {
        let root = self.inner.config.dir.clone();
        if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || store::total_size(&root)).await {
            self.inner
                .metrics
                .recording_disk_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
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

    /// Where recordings go: one directory per recording.
    pub fn dir(&self) -> &Path {
        &self.inner.config.dir
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

/// Writes `recording.json` off the async runtime.
async fn write_manifest(dir: &Path, manifest: &Manifest) -> std::io::Result<()> {
    let (dir, manifest) = (dir.to_owned(), manifest.clone());
    tokio::task::spawn_blocking(move || manifest::write(&dir, &manifest))
        .await
        .map_err(std::io::Error::other)?
}

pub(crate) fn unix_ms() -> u64 {
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
}
