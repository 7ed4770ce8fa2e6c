//! Exporting a recording directory: read every track log, turn each participant's tracks into
//! files, write them and `manifest.json` beside the logs.
//!
//! Files are paired by source: camera and microphone make one WebM, screen share and its audio
//! another; audio with no video of its pair becomes Ogg Opus, video with no audio a WebM of its
//! own. Logs of the same participant and source (a camera turned off and on again is a new
//! track, so a new log) are joined on the timeline. The manifest is written last, through a
//! temporary file, so a directory with a `manifest.json` holds a finished export.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use aula_protocol::TrackSource;

use crate::depacketize::opus;
use crate::log::{self, TrackLog};
use crate::manifest::{self, FileEntry, Format, Gap, Manifest, Skipped, Sync, TrackEntry};
use crate::timeline::{self, Codec, TimedFrame};
use crate::{ogg, sync, webm};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {source}")]
    Mux {
        path: String,
        source: webm::MuxError,
    },
    #[error("no track logs in {0}")]
    Empty(String),
}

/// One source of one participant, its logs joined.
#[derive(Debug, Clone)]
struct Track {
    participant: String,
    source: TrackSource,
    codec_mime: String,
    audio_channels: u8,
    logs: Vec<String>,
    frames: Vec<TimedFrame>,
    sync: Sync,
    damaged: u32,
}

/// The pairs of sources that share a file: (video, audio).
const PAIRS: [(TrackSource, TrackSource); 2] = [
    (TrackSource::Camera, TrackSource::Microphone),
    (TrackSource::ScreenShare, TrackSource::ScreenShareAudio),
];

/// Exports the recording in `dir`: writes its files and `manifest.json` there, and returns the
/// manifest.
pub fn export(dir: &Path) -> Result<Manifest, ExportError> {
    let io_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| ExportError::Io { path, source }
    };
    let mut logs = Vec::new();
    for name in log::log_names(dir).map_err(io_error(dir))? {
        if let Some(log) = log::read_log(dir, &name).map_err(io_error(dir))? {
            logs.push(log);
        }
    }
    let Some(start_us) = logs
        .iter()
        .map(|l| l.track.wall_clock_start_us as i64)
        .min()
    else {
        return Err(ExportError::Empty(dir.display().to_string()));
    };
    let (tracks, skipped) = tracks(&logs);

    let mut files = Vec::new();
    let participants: Vec<String> = {
        let mut names: Vec<String> = tracks.iter().map(|t| t.participant.clone()).collect();
        names.dedup();
        names
    };
    for participant in &participants {
        for (video_source, audio_source) in PAIRS {
            let find = |source| {
                tracks
                    .iter()
                    .find(|t| &t.participant == participant && t.source == source)
            };
            let (video, audio) = (find(video_source), find(audio_source));
            if video.is_none() && audio.is_none() {
                continue;
            }
            let file = write_file(dir, video, audio)?;
            files.push(file.entry(start_us));
        }
    }
    let duration_ms = files
        .iter()
        .map(|f| f.offset_ms + f.duration_ms)
        .max()
        .unwrap_or(0);
    let manifest = Manifest {
        version: 1,
        start_unix_ms: start_us.div_euclid(1_000),
        duration_ms,
        participants,
        files,
        skipped,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let path = dir.join(manifest::FILE_NAME);
    let temporary = dir.join(format!("{}.tmp", manifest::FILE_NAME));
    std::fs::write(&temporary, json).map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io_error(&path))?;
    Ok(manifest)
}

/// Each participant's sources with their frames on the server's clock, sorted by participant
/// and source; and the logs left out.
fn tracks(logs: &[TrackLog]) -> (Vec<Track>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut parsed = Vec::new();
    for log in logs {
        match Codec::of(&log.track) {
            Some(codec) => parsed.push((log, codec, timeline::parse(&log.track, &log.records))),
            None => skipped.push(Skipped {
                log: log.name.clone(),
                reason: format!("codec {} is not exported", log.track.codec_mime),
            }),
        }
    }
    let mut reports: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for (log, _, media) in &parsed {
        reports
            .entry(log.track.participant.as_str())
            .or_default()
            .extend_from_slice(&media.reports);
    }

    let mut tracks: BTreeMap<(String, u8), Track> = BTreeMap::new();
    for (log, codec, media) in &parsed {
        let info = &log.track;
        let offset = sync::sender_offset(&reports[info.participant.as_str()]);
        let frames = timeline::frames(*codec, info.clock_rate, media, offset);
        let sync = if media.reports.is_empty() || offset.is_none() {
            Sync::Arrival
        } else {
            Sync::SenderReports
        };
        let key = (info.participant.clone(), source_order(info.source));
        let track = tracks.entry(key).or_insert_with(|| Track {
            participant: info.participant.clone(),
            source: info.source,
            codec_mime: info.codec_mime.clone(),
            audio_channels: if info.fmtp.contains("stereo=1") { 2 } else { 1 },
            logs: Vec::new(),
            frames: Vec::new(),
            sync,
            damaged: 0,
        });
        track.logs.push(log.name.clone());
        track.damaged += log.damaged;
        if sync == Sync::Arrival {
            track.sync = Sync::Arrival;
        }
        track.frames.extend(frames);
        // Logs of one source follow each other; a stable sort keeps each one's order.
        track.frames.sort_by_key(|f| f.at_us);
    }
    (tracks.into_values().collect(), skipped)
}

/// An order of sources, for sorting.
fn source_order(source: TrackSource) -> u8 {
    match source {
        TrackSource::Camera => 0,
        TrackSource::Microphone => 1,
        TrackSource::ScreenShare => 2,
        TrackSource::ScreenShareAudio => 3,
    }
}

/// A file written, and what the manifest says of it.
struct Written<'a> {
    path: String,
    format: Format,
    tracks: Vec<&'a Track>,
    start_us: i64,
    end_us: i64,
}

/// Writes the file of a pair of tracks (at least one of them present).
fn write_file<'a>(
    dir: &Path,
    video: Option<&'a Track>,
    audio: Option<&'a Track>,
) -> Result<Written<'a>, ExportError> {
    let tracks: Vec<&Track> = video.into_iter().chain(audio).collect();
    let first = tracks[0];
    let start_us = tracks
        .iter()
        .filter_map(|t| t.frames.first())
        .map(|f| f.at_us)
        .min()
        .unwrap_or(0);
    let end_us = tracks.iter().map(|t| end_us(t)).max().unwrap_or(start_us);
    let format = if video.is_some() {
        Format::Webm
    } else {
        Format::Ogg
    };
    let name = format!(
        "{}.{}.{}",
        file_safe(&first.participant),
        file_safe(&format!("{:?}", first.source).to_lowercase()),
        match format {
            Format::Webm => "webm",
            Format::Ogg => "ogg",
        }
    );
    let path = dir.join(&name);
    let io_error = |source| ExportError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = BufWriter::new(File::create(&path).map_err(io_error)?);
    let written = match format {
        Format::Webm => {
            let media = webm::Media {
                video: video.map_or(&[], |t| &t.frames),
                audio: audio.map_or(&[], |t| &t.frames),
                audio_channels: audio.map_or(1, |t| t.audio_channels),
            };
            webm::write(file, media, start_us, end_us - start_us).map_err(|source| {
                ExportError::Mux {
                    path: path.display().to_string(),
                    source,
                }
            })?
        }
        Format::Ogg => ogg::write(file, &first.frames, first.audio_channels).map_err(io_error)?,
    };
    let file = written.into_inner().map_err(|e| io_error(e.into_error()))?;
    file.sync_all().map_err(io_error)?;
    Ok(Written {
        path: name,
        format,
        tracks,
        start_us,
        end_us,
    })
}

/// When a track's last frame ends: audio by its samples, video a frame interval later.
fn end_us(track: &Track) -> i64 {
    let frames = &track.frames;
    let Some(last) = frames.last() else {
        return i64::MIN;
    };
    let length = match track.source.kind() {
        aula_protocol::TrackKind::Audio => {
            i64::from(opus::samples(&last.data)) * 1_000_000 / i64::from(opus::CLOCK_RATE)
        }
        aula_protocol::TrackKind::Video => match frames.len() {
            0 | 1 => 0,
            n => last.at_us - frames[n - 2].at_us,
        },
    };
    last.at_us + length
}

impl Written<'_> {
    /// The manifest's entry, offsets from the recording's start `start_us`.
    fn entry(&self, recording_start_us: i64) -> FileEntry {
        let ms = |us: i64| us.div_euclid(1_000);
        let tracks = self
            .tracks
            .iter()
            .map(|track| TrackEntry {
                source: track.source,
                codec: track.codec_mime.clone(),
                logs: track.logs.clone(),
                frames: track.frames.len(),
                sync: track.sync,
                damaged: track.damaged,
                gaps: track
                    .frames
                    .iter()
                    .filter_map(|f| {
                        let since = f.lost_since_us?;
                        Some(Gap {
                            at_ms: ms(since - self.start_us),
                            duration_ms: ms(f.at_us - since),
                        })
                    })
                    .collect(),
            })
            .collect();
        FileEntry {
            path: self.path.clone(),
            format: self.format,
            participant: self.tracks[0].participant.clone(),
            sources: self.tracks.iter().map(|t| t.source).collect(),
            offset_ms: ms(self.start_us - recording_start_us),
            duration_ms: ms(self.end_us - self.start_us),
            tracks,
        }
    }
}

/// `name` with anything but ASCII letters, digits, `-` and `_` replaced by `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
