//! `manifest.json`: what an export produced, for the playback page and for people. Every time
//! is in milliseconds; a file's own times (its gaps) count from its start, which is
//! `offset_ms` after the recording's `start_unix_ms` on the shared timeline.

use aula_protocol::TrackSource;
use serde::{Deserialize, Serialize};

/// The file name, in the recording directory.
pub const FILE_NAME: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format of this manifest.
    pub version: u32,
    /// Time 0 of the shared timeline: when the recording started (server clock, Unix ms).
    pub start_unix_ms: i64,
    /// From time 0 to the end of the last file.
    pub duration_ms: i64,
    /// Everyone with a file, sorted.
    pub participants: Vec<String>,
    pub files: Vec<FileEntry>,
    /// Logs that were not exported, and why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the recording directory.
    pub path: String,
    pub format: Format,
    pub participant: String,
    /// Its sources: video first, then audio.
    pub sources: Vec<TrackSource>,
    /// Where the file starts on the shared timeline.
    pub offset_ms: i64,
    pub duration_ms: i64,
    pub tracks: Vec<TrackEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Webm,
    Ogg,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEntry {
    pub source: TrackSource,
    /// E.g. `video/VP8`.
    pub codec: String,
    /// The capture logs it comes from.
    pub logs: Vec<String>,
    /// Frames written (for audio, counting the empty frames that fill holes).
    pub frames: usize,
    /// How it was put on the timeline.
    pub sync: Sync,
    /// Stretches of corrupt records skipped in its logs, and unreadable segments.
    pub damaged: u32,
    /// Where media was lost: video skipped to the next keyframe, audio concealed.
    pub gaps: Vec<Gap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sync {
    /// From the publisher's RTCP sender reports: in sync with its other tracks.
    SenderReports,
    /// From arrival times (no sender reports): off by the difference in network delay.
    Arrival,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// From the file's start.
    pub at_ms: i64,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub log: String,
    pub reason: String,
}
