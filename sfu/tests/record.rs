//! The capture log survives `kill -9`: a child process records a track in real time and is
//! killed mid-segment; what it had flushed (all but about the last second) reads back intact.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aula_protocol::TrackSource;
use aula_sfu::record::format::{Entry, Record, TrackInfo};
use aula_sfu::record::policy::Limits;
use aula_sfu::record::reader::SegmentReader;
use aula_sfu::record::segment_files::{segment_path, segments};
use aula_sfu::record::writer::{self, DEFAULT_QUEUE_CAPACITY, LogConfig};

/// Set in the child: the directory to record into.
const CHILD_DIR: &str = "AULA_RECORD_KILL_CHILD_DIR";
const NAME: &str = "teacher-microphone";

fn config(dir: &Path) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        name: NAME.into(),
        track: TrackInfo {
            codec_mime: "audio/opus".into(),
            clock_rate: 48_000,
            fmtp: "minptime=10;useinbandfec=1".into(),
            extmaps: vec![(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level".into())],
            ssrc: 42,
            participant: "teacher".into(),
            source: TrackSource::Microphone,
            wall_clock_start_us: 0,
        },
        queue_capacity: DEFAULT_QUEUE_CAPACITY,
        limits: Limits::default(),
    }
}

/// An audio packet every 5 ms, numbered, stamped with the time since the start, until killed.
fn record_until_killed(dir: &Path) -> ! {
    let (mut sender, _recording) = writer::start(config(dir)).unwrap();
    let start = Instant::now();
    let mut seq = 0u32;
    loop {
        let mut packet = vec![0x80, 111];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.resize(160, 0x33);
        let time_us = start.elapsed().as_micros() as u64;
        assert!(sender.try_push(Record {
            time_us,
            entry: Entry::Rtp(packet),
        }));
        seq += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn recording_killed_with_sigkill_mid_segment_loses_at_most_the_last_second() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        record_until_killed(Path::new(&dir));
    }
    let dir = std::env::temp_dir().join(format!("aula-record-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "recording_killed_with_sigkill_mid_segment_loses_at_most_the_last_second",
            "--exact",
        ])
        .env(CHILD_DIR, &dir)
        .spawn()
        .unwrap();
    let first = segment_path(&dir, NAME, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !first.exists() {
        assert!(
            Instant::now() < deadline,
            "the child never started recording"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let recording_since = Instant::now();
    std::thread::sleep(Duration::from_millis(3000));
    child.kill().unwrap(); // SIGKILL
    let killed_after = recording_since.elapsed();
    child.wait().unwrap();

    let records = read_all(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let seqs: Vec<u32> = records
        .iter()
        .map(|record| match &record.entry {
            Entry::Rtp(packet) => u32::from_be_bytes(packet[2..6].try_into().unwrap()),
            other => panic!("unexpected record {other:?}"),
        })
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u32).collect::<Vec<_>>(), "no holes");
    // The child's clock started before the file appeared, so its record times are at least
    // ours; allow 1 s besides the 1 s flush interval for the scheduling of a loaded machine.
    let last = Duration::from_micros(records.last().unwrap().time_us);
    let lost = killed_after.saturating_sub(last);
    assert!(
        lost < Duration::from_millis(2000),
        "lost {lost:?} of {killed_after:?}"
    );
}

/// Every record of the log in `dir`, checking that none is corrupt.
fn read_all(dir: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    for (_, path) in segments(dir, NAME).unwrap() {
        let data = std::fs::read(&path).unwrap();
        let reader = SegmentReader::new(&data).unwrap();
        records.extend(reader.map(|item| item.unwrap()));
    }
    records
}
