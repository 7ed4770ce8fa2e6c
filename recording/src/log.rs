//! Reading a recording directory's track logs (the files `record::writer` writes).
//!
//! Segments whose header cannot be read are passed over (one cut short at creation holds no
//! records anyway); the reader already cuts torn tails and resyncs past corrupt records, which
//! are counted here so that the manifest can say what was damaged.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use aula_sfu::record::format::{HeaderError, Record, TrackInfo};
use aula_sfu::record::reader::SegmentReader;
use aula_sfu::record::segment_files::segments;

/// One track's log, read whole.
#[derive(Debug, Clone)]
pub struct TrackLog {
    /// The log's name: its segments are `<name>.<index>.seg`.
    pub name: String,
    pub track: TrackInfo,
    /// Every intact record, in log order.
    pub records: Vec<Record>,
    /// Stretches of corrupt records skipped, and segments whose header is corrupt.
    pub damaged: u32,
}

/// The names of the logs in `dir`, sorted.
pub fn log_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let file = entry?.file_name();
        let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".seg")) else {
            continue;
        };
        if let Some((name, index)) = stem.rsplit_once('.')
            && !index.is_empty()
            && index.bytes().all(|b| b.is_ascii_digit())
        {
            names.insert(name.to_owned());
        }
    }
    Ok(names.into_iter().collect())
}

/// The log `name` in `dir`; `None` if no segment of it has a readable header.
pub fn read_log(dir: &Path, name: &str) -> io::Result<Option<TrackLog>> {
    let mut log: Option<TrackLog> = None;
    let mut unreadable = 0;
    for (_, path) in segments(dir, name)? {
        let data = std::fs::read(&path)?;
        let mut reader = match SegmentReader::new(&data) {
            Ok(reader) => reader,
            Err(HeaderError::Truncated) => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        let log = log.get_or_insert_with(|| TrackLog {
            name: name.to_owned(),
            track: reader.header().track.clone(),
            records: Vec::new(),
            damaged: 0,
        });
        for item in reader.by_ref() {
            match item {
                Ok(record) => log.records.push(record),
                Err(_) => log.damaged += 1,
            }
        }
    }
    Ok(log.map(|mut log| {
        log.damaged += unreadable;
        log
    }))
}
