//! The recordings directory (`[recording] dir`): one directory per recording, named by its id.
//!
//! Ids come from outside (the admin API, the command line) and become paths, so only the ids
//! this server generates are accepted: `RC_` and twelve ASCII letters or digits. Nothing else
//! (no `/`, no `..`) ever reaches the file system.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{self, Manifest, ManifestParticipant, Status};

const ID_PREFIX: &str = "RC_";
const ID_SUFFIX_LEN: usize = 12;

/// A new recording id.
pub fn new_id() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(ID_SUFFIX_LEN)
        .map(char::from)
        .collect();
    format!("{ID_PREFIX}{suffix}")
}

/// Whether `id` is one this server could have generated.
pub fn is_valid_id(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX).is_some_and(|suffix| {
        suffix.len() == ID_SUFFIX_LEN && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// `root/<id>`, for a valid id.
pub fn dir_of(root: &Path, id: &str) -> Option<PathBuf> {
    is_valid_id(id).then(|| root.join(id))
}

/// One line of the recordings list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub id: String,
    pub room: String,
    pub participants: Vec<ManifestParticipant>,
    pub started_at_unix_ms: u64,
    /// `None` until it ended.
    pub duration_ms: Option<u64>,
    /// Everything in its directory: logs, exported files, manifests.
    pub size_bytes: u64,
    pub state: Status,
    pub uploaded_to: Option<String>,
}

impl Summary {
    fn new(manifest: Manifest, size_bytes: u64) -> Self {
        Self {
            duration_ms: manifest
                .ended_at_unix_ms
                .map(|end| end.saturating_sub(manifest.started_at_unix_ms)),
            id: manifest.id,
            room: manifest.room,
            participants: manifest.participants,
            started_at_unix_ms: manifest.started_at_unix_ms,
            size_bytes,
            state: manifest.state,
            uploaded_to: manifest.uploaded_to,
        }
    }
}

/// Every recording under `root` with a readable `recording.json`, newest first. A missing
/// `root` is an empty list (nothing was recorded yet). Blocks.
pub fn list(root: &Path) -> io::Result<Vec<Summary>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut recordings = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name.to_str().filter(|id| is_valid_id(id)) else {
            continue;
        };
        match manifest::read(&entry.path()) {
            Ok(manifest) => recordings.push(Summary::new(manifest, size_of(&entry.path())?)),
            Err(e) => tracing::debug!(recording = id, "not listed: {e}"),
        }
    }
    recordings.sort_by_key(|r| std::cmp::Reverse(r.started_at_unix_ms));
    Ok(recordings)
}

/// The bytes of the files in a recording directory (it has no subdirectories). Blocks.
pub fn size_of(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let metadata = entry?.metadata()?;
        if metadata.is_file() {
            total += metadata.len();
        }
    }
    Ok(total)
}

/// The bytes of every recording under `root`. Blocks.
pub fn total_size(root: &Path) -> io::Result<u64> {
    Ok(list(root)?.iter().map(|r| r.size_bytes).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_ids_are_valid() {
        let id = new_id();
        assert!(is_valid_id(&id), "{id}");
        for bad in [
            "",
            "RC_",
            "RC_abc",
            "RC_abcdefghijkl/x",
            "RC_../../etc/pa",
            "RC_abcdefghijk.",
            "rc_abcdefghijkl",
            "RC_abcdefghijklm",
            "RC_abcdéfghijk",
            "..",
        ] {
            assert!(!is_valid_id(bad), "{bad:?}");
            assert_eq!(dir_of(Path::new("/r"), bad), None);
        }
        assert_eq!(
            dir_of(Path::new("/r"), "RC_abcdefghijk1"),
            Some(PathBuf::from("/r/RC_abcdefghijk1"))
        );
    }

    #[test]
    fn the_list_reads_each_recording_json_newest_first() {
        let root = std::env::temp_dir().join(format!("aula-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(list(&root).unwrap(), Vec::new(), "no directory yet");
        let mut old = manifest::sample("RC_aaaaaaaaaaaa");
        old.started_at_unix_ms = 1_000;
        old.ended_at_unix_ms = Some(61_000);
        let mut new = manifest::sample("RC_bbbbbbbbbbbb");
        new.started_at_unix_ms = 2_000;
        for m in [&old, &new] {
            manifest::write(&root.join(&m.id), m).unwrap();
        }
        std::fs::write(root.join(&old.id).join("a.webm"), [0u8; 100]).unwrap();
        std::fs::create_dir_all(root.join("not-a-recording")).unwrap();
        std::fs::create_dir_all(root.join("RC_cccccccccccc")).unwrap(); // no recording.json
        let listed = list(&root).unwrap();
        let total = total_size(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, [new.id.as_str(), old.id.as_str()]);
        assert_eq!(listed[1].duration_ms, Some(60_000));
        assert_eq!(listed[0].duration_ms, None);
        assert!(listed[1].size_bytes > 100);
        assert_eq!(total, listed[0].size_bytes + listed[1].size_bytes);
    }
}
