//! `recording.json`: what a recording is and where it stands, beside its logs.
//!
//! It is written when the recording starts, replaced when it ends, and again as its export
//! goes (`state`: `recording` → `exporting` → `ready` or `failed`) and when it is uploaded. The
//! admin API lists recordings from these files, and retention decides from them, so they are
//! always replaced whole: a crash leaves the old file or the new one, never half of one.

use std::io;
use std::path::Path;

use aula_protocol::{ParticipantInfo, Role, TrackSource};
use serde::{Deserialize, Serialize};

/// The file beside the logs that says what the recording is.
pub const MANIFEST_FILE: &str = "recording.json";

/// Where a recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being recorded; also what a recording whose server died says until it is exported (by
    /// the server's next start: `Recorder::export_left_by_crash`).
    Recording,
    /// Its logs are being turned into files.
    Exporting,
    /// Exported: `manifest.json` lists the files.
    Ready,
    /// The export failed (`error` says why); the logs are kept.
    Failed,
}

/// What `recording.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub room: String,
    /// A participant's identity, `admin` or `auto`.
    pub started_by: String,
    pub started_at_unix_ms: u64,
    /// `None` while recording. One whose server died before the end (its logs are still good)
    /// gets the end of what it captured when exported.
    pub ended_at_unix_ms: Option<u64>,
    pub state: Status,
    /// Why the export failed.
    pub error: Option<String>,
    pub exported_at_unix_ms: Option<u64>,
    /// Where the exported files were uploaded (`[recording] upload`), once they are.
    pub uploaded_to: Option<String>,
    /// Everyone who was in the room while it was recorded.
    pub participants: Vec<ManifestParticipant>,
    /// One per track log, known at the end.
    pub tracks: Vec<ManifestTrack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestParticipant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTrack {
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

/// Reads `dir`'s `recording.json`.
pub fn read(dir: &Path) -> io::Result<Manifest> {
    let json = std::fs::read(dir.join(MANIFEST_FILE))?;
    serde_json::from_slice(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `recording.json` in `dir` (created if missing), replacing it whole: written beside,
/// then renamed over. Blocks.
pub fn write(dir: &Path, manifest: &Manifest) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    let partial = dir.join(format!("{MANIFEST_FILE}.partial"));
    std::fs::write(&partial, json)?;
    std::fs::rename(partial, dir.join(MANIFEST_FILE))
}

#[cfg(test)]
pub(crate) fn sample(id: &str) -> Manifest {
    Manifest {
        id: id.into(),
        room: "math".into(),
        started_by: "admin".into(),
        started_at_unix_ms: 1,
        ended_at_unix_ms: None,
        state: Status::Recording,
        error: None,
        exported_at_unix_ms: None,
        uploaded_to: None,
        participants: Vec::new(),
        tracks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("aula-manifest-{}", std::process::id()));
        let mut manifest = sample("RC_1");
        write(&dir, &manifest).unwrap();
        manifest.ended_at_unix_ms = Some(2);
        manifest.state = Status::Ready;
        write(&dir, &manifest).unwrap();
        let read_back = read(&dir).unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
        let files = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_back, manifest);
        assert_eq!(raw["state"], "ready");
        assert_eq!(files, 1, "no partial file left");
    }
}
