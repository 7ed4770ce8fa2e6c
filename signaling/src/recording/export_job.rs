//! Exporting a recording when it ends, when asked (admin API, `aula recording export`), or when
//! the server starts and finds one a previous process left unfinished.
//!
//! The export ([`aula_recording::export`]) reads and writes files for seconds to minutes, so
//! the server runs it on a blocking thread, never on the async runtime. `recording.json` says
//! where it stands (`exporting`, then `ready` or `failed` with the error) so that the list, the
//! playback page and retention see it; the backend gets `recording_ready` with the files (after
//! their upload, when `[recording] upload` is set).

use std::io;
use std::path::Path;
use std::time::Instant;

use aula_recording::manifest::Manifest as Export;
use serde_json::json;

use super::manifest::{self, Status};
use super::{Busy, Recorder, store, unix_ms};

/// Exports the recording in `dir`, keeping its `recording.json` (if it has one: a bare
/// directory of logs exports too) up to date. Blocks; shared with the command line.
pub fn run(dir: &Path) -> Result<Export, String> {
    let mut recording = match manifest::read(dir) {
        Ok(recording) => Some(recording),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(format!(
                "{}: {e}",
                dir.join(manifest::MANIFEST_FILE).display()
            ));
        }
    };
    let save = |recording: &manifest::Manifest| {
        manifest::write(dir, recording).map_err(|e| format!("cannot write recording.json: {e}"))
    };
    if let Some(recording) = &mut recording {
        recording.state = Status::Exporting;
        recording.error = None;
        save(recording)?;
    }
    let result = aula_recording::export(dir).map_err(|e| e.to_string());
    if let Some(recording) = &mut recording {
        match &result {
            Ok(export) => {
                recording.exported_at_unix_ms = Some(unix_ms());
                // One its server never ended (it died) ends where what it captured ends.
                let captured = u64::try_from(export.duration_ms).unwrap_or(0);
                let end = recording.started_at_unix_ms.saturating_add(captured);
                recording.ended_at_unix_ms.get_or_insert(end);
                // What was captured is exported, but a log that failed while recording (a
                // disk error) means the recording is not whole: it stays marked failed.
                match recording.tracks.iter().find_map(|t| t.error.as_deref()) {
                    Some(error) => {
                        recording.state = Status::Failed;
                        recording.error = Some(format!("a track's log failed: {error}"));
                    }
                    None => recording.state = Status::Ready,
                }
            }
            Err(e) => {
                recording.state = Status::Failed;
                recording.error = Some(e.clone());
            }
        }
        save(recording)?;
    }
    result
}

impl Recorder {
    /// Exports, one after the other in the background, the recordings a previous process left
    /// in state `recording`: it was killed (or its machine went down) before it could end
    /// them, and nothing else would; their logs lose at most their last second. Call it before
    /// the server serves: this process has recorded nothing yet, so every `recording` on disk
    /// is another's (the directory is this server's alone, as retention assumes too).
    ///
    /// One left `exporting` (its export was cut short) is not retried: if that export is what
    /// brought the server down, it would at every start. The admin API or `aula recording
    /// export` retries it.
    pub async fn export_left_by_crash(&self) {
        let root = self.inner.config.dir.clone();
        let listed = tokio::task::spawn_blocking(move || store::list(&root)).await;
        let left: Vec<String> = match listed.map_err(io::Error::other).and_then(|r| r) {
            Ok(recordings) => recordings
                .into_iter()
                .filter(|r| r.state == Status::Recording)
                .map(|r| r.id)
                .collect(),
            Err(e) => {
                tracing::warn!("cannot look for recordings left by a previous process: {e}");
                return;
            }
        };
        if left.is_empty() {
            return;
        }
        tracing::warn!(
            recordings = ?left,
            "recordings left unfinished by a previous process; exporting what they captured"
        );
        let recorder = self.clone();
        tokio::spawn(async move {
            for id in left {
                match recorder.claim(&id).await {
                    // It logs how the export went.
                    Ok(busy) => {
                        let _ = recorder.export_claimed(busy).await;
                    }
                    Err(e) => tracing::warn!(recording = id, "not exported: {e}"),
                }
            }
        });
    }

    /// Exports a recording claimed by `busy`, uploads its files if configured, and tells the
    /// backend; the claim ends with it.
    pub(super) async fn export_claimed(&self, busy: Busy) -> Result<Export, String> {
        let id = busy.id.clone();
        let dir = self.dir_of(&id);
        let started = Instant::now();
        let result = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || run(&dir))
                .await
                .unwrap_or_else(|e| Err(format!("the export task failed: {e}")))
        };
        let metrics = &self.inner.metrics;
        metrics
            .recording_export_seconds
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(export) => {
                tracing::info!(recording = id, files = export.files.len(), elapsed = ?started.elapsed(), "recording exported");
                let uploaded_to = self.upload(&dir, &id, export).await;
                let room = manifest::read(&dir).map(|m| m.room).unwrap_or_default();
                self.inner.webhooks.emit(
                    "recording_ready",
                    json!({
                        "room": room, "recording_id": id, "dir": dir.display().to_string(),
                        "duration_ms": export.duration_ms, "files": export.files,
                        "uploaded_to": uploaded_to,
                    }),
                );
            }
            Err(e) => {
                tracing::warn!(recording = id, "export failed: {e}");
                metrics.recording_export_failures.inc();
            }
        }
        drop(busy);
        self.refresh_disk_bytes().await;
        result
    }

    /// Uploads an export's files if `[recording] upload` says where, and notes where in
    /// `recording.json`. A failed upload is logged and counted; the files stay on disk, and
    /// retention keeps a recording that was not uploaded.
    async fn upload(&self, dir: &Path, id: &str, export: &Export) -> Option<String> {
        let uploader = self.inner.uploader.as_ref()?;
        let mut files: Vec<String> = export.files.iter().map(|f| f.path.clone()).collect();
        files.push(aula_recording::manifest::FILE_NAME.to_owned());
        match uploader.upload(dir, id, &files).await {
            Ok(url) => {
                self.inner.metrics.recording_uploads.inc();
                tracing::info!(recording = id, to = url, "recording uploaded");
                let dir = dir.to_owned();
                let noted = url.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    let mut recording = manifest::read(&dir)?;
                    recording.uploaded_to = Some(noted);
                    manifest::write(&dir, &recording)
                })
                .await;
                if !matches!(saved, Ok(Ok(()))) {
                    tracing::warn!(
                        recording = id,
                        "uploaded, but recording.json does not say so"
                    );
                }
                Some(url)
            }
            Err(e) => {
                self.inner.metrics.recording_upload_failures.inc();
                tracing::warn!(recording = id, "upload failed: {e}");
                None
            }
        }
    }
}
