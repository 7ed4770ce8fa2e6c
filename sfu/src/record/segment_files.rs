//! Where a log's segments live: `<dir>/<name>.<index>.seg`, the index zero-padded to six
//! digits so that a directory listing sorts them (and counted as a number past 999999).

use std::io;
use std::path::{Path, PathBuf};

/// The path of segment `index` of the log `name` in `dir`.
pub fn segment_path(dir: &Path, name: &str, index: u32) -> PathBuf {
    dir.join(format!("{name}.{index:06}.seg"))
}

/// The segments of the log `name` in `dir`, in order, with their indexes.
pub fn segments(dir: &Path, name: &str) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let index = path
            .file_name()
            .and_then(|file| file.to_str())
            .and_then(|file| file.strip_prefix(name)?.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".seg"))
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok());
        if let Some(index) = index {
            found.push((index, path));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_a_logs_segments_in_order_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("aula-segment-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for index in [10, 2, 1_000_000, 0] {
            std::fs::write(segment_path(&dir, "cam", index), b"").unwrap();
        }
        for other in [
            "cam.x.seg",
            "cam.000001.tmp",
            "camera.000001.seg",
            "mic.000000.seg",
        ] {
            std::fs::write(dir.join(other), b"").unwrap();
        }
        let found = segments(&dir, "cam").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            [0, 2, 10, 1_000_000].map(|i| (i, segment_path(&dir, "cam", i)))
        );
    }
}
