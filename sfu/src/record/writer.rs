//! Writing a log off the router thread.
//!
//! [`start`] spawns a writer thread and returns the two ends of it: a [`RecordSender`], which the
//! router keeps and pushes records into without ever blocking, and a [`Recording`], which the
//! control plane keeps to see whether the log is healthy and to wait for it to be closed.
//!
//! Between them is a bounded queue. When it is full (the disk is slower than the track) the
//! record is dropped and counted, and once the queue has room again a [`Marker::Gap`] saying how
//! many were dropped goes in first, at the time of the first one dropped. When the writer fails
//! (disk full, directory removed) it records the error and stops reading; the sender then drops
//! everything, still without blocking, so the class goes on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::format::{Entry, GapReason, Marker, Record, SegmentHeader, TrackInfo};
use super::policy::{Limits, SegmentPolicy};
use super::segment_files::segment_path;

/// Records the queue holds by default: about 2 s of a 3 Mbit/s camera.
pub const DEFAULT_QUEUE_CAPACITY: usize = 512;

/// What to log, and where.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The directory the segments go to; created if missing.
    pub dir: PathBuf,
    /// The log's name, the start of its segments' file names (see `segment_files`). Plain: no
    /// path separators.
    pub name: String,
    pub track: TrackInfo,
    pub queue_capacity: usize,
    pub limits: Limits,
}

/// Why a log stopped being written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("recording failed to {action} {}: {source}", path.display())]
pub struct RecordError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: Arc<io::Error>,
}

/// What a log holds once closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub segments: u32,
    pub records: u64,
    /// The size of all the segment files.
    pub bytes: u64,
}

/// What the sender, the writer thread and the [`Recording`] share.
#[derive(Debug, Default)]
struct Shared {
    dropped: AtomicU64,
    failure: OnceLock<RecordError>,
}

/// Starts the writer thread of a new log. The log is closed (its last segment fsynced) once the
/// [`RecordSender`] is dropped and the queue written; [`Recording::finish`] waits for that.
/// Fails only if the thread cannot be spawned: I/O errors are reported by [`Recording`].
pub fn start(config: LogConfig) -> io::Result<(RecordSender, Recording)> {
    let (sender, queue) = channel(config.queue_capacity);
    let shared = sender.shared.clone();
    let thread = thread::Builder::new().name("aula-record".into()).spawn({
        let shared = shared.clone();
        move || {
            let result = LogWriter::create(config).and_then(|log| log.run(queue, Instant::now));
            if let Err(error) = &result {
                let _ = shared.failure.set(error.clone());
            }
            result
        }
    })?;
    Ok((sender, Recording { shared, thread }))
}

fn channel(capacity: usize) -> (RecordSender, Receiver<Record>) {
    let (queue, receiver) = mpsc::sync_channel(capacity);
    let sender = RecordSender {
        queue,
        shared: Arc::default(),
        gap: None,
    };
    (sender, receiver)
}

/// The router's end of a log: cheap, never blocks, never fails.
pub struct RecordSender {
    queue: SyncSender<Record>,
    shared: Arc<Shared>,
    /// Records dropped since the last gap marker went into the queue.
    gap: Option<PendingGap>,
}

#[derive(Debug, Clone, Copy)]
struct PendingGap {
    first_time_us: u64,
    dropped: u64,
}

impl RecordSender {
    /// Queues `record` for writing, after the gap marker owed for earlier drops, if any.
    /// Returns false if it was dropped instead: the queue is full, or the writer has stopped.
    /// Record times must not decrease (a time earlier than the last one is written as the
    /// last one).
    pub fn try_push(&mut self, record: Record) -> bool {
        let time_us = record.time_us;
        if !self.push_gap() || self.queue.try_send(record).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            let gap = self.gap.get_or_insert(PendingGap {
                first_time_us: time_us,
                dropped: 0,
            });
            gap.dropped += 1;
            return false;
        }
        true
    }

    /// Whether the writer has failed; [`Recording::failure`] says why.
    pub fn failed(&self) -> bool {
        self.shared.failure.get().is_some()
    }

    /// Queues the gap marker owed, if any; false if there is one and the queue has no room.
    fn push_gap(&mut self) -> bool {
        let Some(gap) = self.gap else {
            return true;
        };
        let marker = Record {
            time_us: gap.first_time_us,
            entry: Entry::Marker(Marker::Gap {
                dropped: gap.dropped,
                reason: GapReason::QueueFull,
            }),
        };
        let queued = self.queue.try_send(marker).is_ok();
        if queued {
            self.gap = None;
        }
        queued
    }
}

impl Drop for RecordSender {
    /// The log ends with the gap marker still owed, if the queue has room for it.
    fn drop(&mut self) {
        self.push_gap();
    }
}

/// The control plane's end of a log.
pub struct Recording {
    shared: Arc<Shared>,
    thread: JoinHandle<Result<LogStats, RecordError>>,
}

impl Recording {
    /// Why the log stopped being written, if it did.
    pub fn failure(&self) -> Option<&RecordError> {
        self.shared.failure.get()
    }

    /// How many records were dropped, counting those a gap marker is still owed for.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until the log is closed: the [`RecordSender`] must have been dropped, or this
    /// waits forever.
    pub fn finish(self) -> Result<LogStats, RecordError> {
        self.thread.join().unwrap_or_else(|_| {
            Err(RecordError {
                action: "finish",
                path: PathBuf::new(),
                source: Arc::new(io::Error::other("the writer thread panicked")),
            })
        })
    }
}

/// Writes a log's segments: the writer thread's work, without the thread. Time is passed in.
struct LogWriter {
    config: LogConfig,
    policy: SegmentPolicy,
    segment: Segment,
    last_time_us: u64,
    stats: LogStats,
    encoded: Vec<u8>,
}

/// The open segment.
struct Segment {
    file: BufWriter<File>,
    path: PathBuf,
    index: u32,
}

impl LogWriter {
    /// Creates the directory if missing, and the first segment.
    fn create(config: LogConfig) -> Result<LogWriter, RecordError> {
        fs::create_dir_all(&config.dir).map_err(error("create", &config.dir))?;
        let mut policy = SegmentPolicy::new(config.limits);
        let mut stats = LogStats::default();
        let segment = open_segment(&config, 0, &mut policy, &mut stats)?;
        Ok(LogWriter {
            config,
            policy,
            segment,
            last_time_us: 0,
            stats,
            encoded: Vec::new(),
        })
    }

    /// Writes what comes from `queue` until the sender is gone, then closes the log.
    fn run(
        mut self,
        queue: Receiver<Record>,
        clock: impl Fn() -> Instant,
    ) -> Result<LogStats, RecordError> {
        loop {
            let next = match self.policy.flush_deadline() {
                Some(deadline) => queue.recv_timeout(deadline.saturating_duration_since(clock())),
                None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(record) => self.append(record, clock())?,
                Err(RecvTimeoutError::Timeout) => self.flush_if_due(clock())?,
                Err(RecvTimeoutError::Disconnected) => return self.close(),
            }
        }
    }

    /// Writes `record` at `now`, into a new segment if the current one is full.
    fn append(&mut self, mut record: Record, now: Instant) -> Result<(), RecordError> {
        record.time_us = record.time_us.max(self.last_time_us);
        self.last_time_us = record.time_us;
        if !record.fits() {
            record.entry = Entry::Marker(Marker::Gap {
                dropped: 1,
                reason: GapReason::Oversized,
            });
        }
        self.encoded.clear();
        record.encode(&mut self.encoded);
        let len = self.encoded.len();
        if self.policy.rotate_before(record.time_us, len) {
            let index = self.segment.index + 1;
            let next = open_segment(&self.config, index, &mut self.policy, &mut self.stats)?;
            close_segment(std::mem::replace(&mut self.segment, next), &self.config.dir)?;
        }
        let segment = &mut self.segment;
        segment
            .file
            .write_all(&self.encoded)
            .map_err(error("write", &segment.path))?;
        self.policy.appended(record.time_us, len, now);
        self.stats.records += 1;
        self.stats.bytes += len as u64;
        self.flush_if_due(now)
    }

    fn flush_if_due(&mut self, now: Instant) -> Result<(), RecordError> {
        if self.policy.flush_due(now) {
            let segment = &mut self.segment;
            segment
                .file
                .flush()
                .map_err(error("write", &segment.path))?;
            self.policy.flushed();
        }
        Ok(())
    }

    /// Writes what is buffered, fsyncs and closes the last segment.
    fn close(self) -> Result<LogStats, RecordError> {
        close_segment(self.segment, &self.config.dir)?;
        Ok(self.stats)
    }
}

/// Creates segment `index` and writes its header, flushed: a crash leaves a readable segment.
fn open_segment(
    config: &LogConfig,
    index: u32,
    policy: &mut SegmentPolicy,
    stats: &mut LogStats,
) -> Result<Segment, RecordError> {
    let path = segment_path(&config.dir, &config.name, index);
    let header = SegmentHeader {
        track: config.track.clone(),
        segment_index: index,
    }
    .encode();
    // Never overwrites: a segment that exists belongs to another recording.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(error("create", &path))?;
    let mut file = BufWriter::with_capacity(64 * 1024, file);
    file.write_all(&header)
        .and_then(|()| file.flush())
        .map_err(error("write", &path))?;
    policy.started(header.len());
    stats.segments += 1;
    stats.bytes += header.len() as u64;
    Ok(Segment { file, path, index })
}

/// Flushes and fsyncs the segment, and the directory that lists it: after this, not even a
/// power cut loses it.
fn close_segment(segment: Segment, dir: &Path) -> Result<(), RecordError> {
    let Segment { mut file, path, .. } = segment;
    file.flush().map_err(error("write", &path))?;
    file.get_ref().sync_all().map_err(error("fsync", &path))?;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(error("fsync", dir))
}

fn error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RecordError {
    let path = path.to_path_buf();
    move |source| RecordError {
        action,
        path,
        source: Arc::new(source),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::format::tests::track;
    use crate::record::reader::SegmentReader;
    use crate::record::segment_files::segments;

    /// A directory of its own for one test, removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("aula-record-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn config(dir: &TempDir) -> LogConfig {
        LogConfig {
            dir: dir.0.clone(),
            name: "learner-screen".into(),
            track: track(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            limits: Limits::default(),
        }
    }

    fn rtp(time_us: u64, seq: u16, len: usize) -> Record {
        let mut bytes = vec![0x80, 96];
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.resize(len, 0x5a);
        Record {
            time_us,
            entry: Entry::Rtp(bytes),
        }
    }

    fn marker(time_us: u64, marker: Marker) -> Record {
        Record {
            time_us,
            entry: Entry::Marker(marker),
        }
    }

    /// Every segment's header, and every record in order. The log must hold no corruption and
    /// no torn tail.
    fn read_log(config: &LogConfig) -> (Vec<SegmentHeader>, Vec<Record>) {
        let (mut headers, mut records) = (Vec::new(), Vec::new());
        for (index, path) in segments(&config.dir, &config.name).unwrap() {
            let data = fs::read(&path).unwrap();
            let mut reader = SegmentReader::new(&data).unwrap();
            records.extend(reader.by_ref().map(|item| item.unwrap()));
            assert_eq!(reader.torn_tail(), 0, "segment {index}");
            assert_eq!(reader.header().segment_index, index);
            headers.push(reader.header().clone());
        }
        (headers, records)
    }

    fn file_sizes(config: &LogConfig) -> Vec<u64> {
        let segments = segments(&config.dir, &config.name).unwrap();
        segments
            .iter()
            .map(|(_, path)| fs::metadata(path).unwrap().len())
            .collect()
    }

    #[test]
    fn rtp_sender_reports_and_markers_round_trip_across_segments_of_ten_seconds() {
        let dir = TempDir::new("round-trip");
        let config = config(&dir);
        let start = Instant::now();
        let mut log = LogWriter::create(config.clone()).unwrap();
        let records: Vec<Record> = (0..500u64)
            .map(|i| {
                let time_us = i * 50_000;
                match i % 50 {
                    0 => Record {
                        time_us,
                        entry: Entry::SenderReport(vec![0x80, 200, 0, 6, i as u8]),
                    },
                    1 => marker(time_us, Marker::KeyframeRequest),
                    2 => marker(
                        time_us,
                        Marker::LayerSwitch {
                            layer: (i % 3) as u8,
                        },
                    ),
                    3 => marker(time_us, Marker::Muted(i % 100 == 3)),
                    _ => rtp(time_us, i as u16, 1000),
                }
            })
            .collect();
        for record in &records {
            let now = start + Duration::from_micros(record.time_us);
            log.append(record.clone(), now).unwrap();
        }
        let stats = log.close().unwrap();

        let (headers, read) = read_log(&config);
        assert_eq!(read, records);
        assert_eq!(headers.len(), 3, "0–10 s, 10–20 s, 20–25 s");
        assert!(headers.iter().all(|h| h.track == track()));
        let sizes = file_sizes(&config);
        assert_eq!(
            stats,
            LogStats {
                segments: 3,
                records: 500,
                bytes: sizes.iter().sum(),
            }
        );
        for (index, path) in segments(&config.dir, &config.name).unwrap() {
            let data = fs::read(path).unwrap();
            let times: Vec<u64> = SegmentReader::new(&data)
                .unwrap()
                .map(|r| r.unwrap().time_us)
                .collect();
            assert_eq!(times[0], u64::from(index) * 10_000_000);
            let last = (u64::from(index) * 10_000_000 + 9_950_000).min(24_950_000);
            assert_eq!(*times.last().unwrap(), last);
        }
    }

    #[test]
    fn rotates_before_a_segment_would_pass_8_mib() {
        let dir = TempDir::new("rotate-size");
        let config = config(&dir);
        let now = Instant::now();
        let mut log = LogWriter::create(config.clone()).unwrap();
        let records: Vec<Record> = (0..15_000u64).map(|i| rtp(i, i as u16, 1200)).collect();
        for record in &records {
            log.append(record.clone(), now).unwrap();
        }
        log.close().unwrap();

        let sizes = file_sizes(&config);
        assert_eq!(sizes.len(), 3);
        let record_size = 1200 + crate::record::format::RECORD_OVERHEAD as u64;
        for &size in &sizes[..2] {
            assert!(size <= 8 * 1024 * 1024 && size + record_size > 8 * 1024 * 1024);
        }
        assert_eq!(read_log(&config).1, records);
    }

    #[test]
    fn sequence_numbers_that_wrap_come_back_in_the_order_written() {
        let dir = TempDir::new("wraparound");
        let config = config(&dir);
        let now = Instant::now();
        let mut log = LogWriter::create(config.clone()).unwrap();
        let seqs: Vec<u16> = (0..12u16).map(|i| 65_530u16.wrapping_add(i)).collect();
        for (i, &seq) in seqs.iter().enumerate() {
            log.append(rtp(i as u64 * 20_000, seq, 200), now).unwrap();
        }
        log.close().unwrap();

        let read: Vec<u16> = read_log(&config)
            .1
            .iter()
            .map(|record| match &record.entry {
                Entry::Rtp(bytes) => u16::from_be_bytes([bytes[2], bytes[3]]),
                other => panic!("not RTP: {other:?}"),
            })
            .collect();
        assert_eq!(read, seqs);
        assert_eq!(read[5..7], [65_535, 0]);
    }

    #[test]
    fn a_killed_writer_loses_only_what_it_had_not_flushed() {
        let dir = TempDir::new("killed");
        let config = config(&dir);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut log = LogWriter::create(config.clone()).unwrap();
        // Written at 0 ms, 400 ms, 800 ms; flushed with the one written at 1000 ms.
        let flushed: Vec<Record> = (0..4u64).map(|i| rtp(i * 1000, i as u16, 500)).collect();
        for (record, ms) in flushed.iter().zip([0, 400, 800, 1000]) {
            log.append(record.clone(), at(ms)).unwrap();
        }
        for i in 4..10u64 {
            log.append(rtp(i * 1000, i as u16, 500), at(1100 + i * 100))
                .unwrap();
        }
        // As with `kill -9`: no destructor runs, what the writer buffered never reaches the file.
        std::mem::forget(log);

        assert_eq!(read_log(&config).1, flushed);
    }

    #[test]
    fn a_full_queue_drops_records_and_the_log_shows_a_gap_with_their_count() {
        let dir = TempDir::new("full-queue");
        let config = config(&dir);
        let (mut sender, queue) = channel(4);
        let pushed: Vec<bool> = (0..10u64)
            .map(|i| sender.try_push(rtp(i * 10, i as u16, 100)))
            .collect();
        assert_eq!(
            pushed,
            [
                true, true, true, true, false, false, false, false, false, false
            ]
        );
        assert_eq!(sender.shared.dropped.load(Ordering::Relaxed), 6);

        // The writer catches up: the gap marker goes in before the next record.
        let now = Instant::now();
        let mut log = LogWriter::create(config.clone()).unwrap();
        let written: Vec<Record> = queue.try_iter().collect();
        for record in &written {
            log.append(record.clone(), now).unwrap();
        }
        let refill: Vec<bool> = (10..15u64)
            .map(|i| sender.try_push(rtp(i * 10, i as u16, 100)))
            .collect();
        assert_eq!(refill, [true, true, true, false, false]);
        // The writer takes one more off the queue; then the sender goes, and the gap owed for
        // the last two drops is queued as the log's last record.
        log.append(queue.recv().unwrap(), now).unwrap();
        drop(sender);
        log.run(queue, Instant::now).unwrap();

        let gap = |time_us, dropped| {
            marker(
                time_us,
                Marker::Gap {
                    dropped,
                    reason: GapReason::QueueFull,
                },
            )
        };
        let mut expected: Vec<Record> = (0..4u64).map(|i| rtp(i * 10, i as u16, 100)).collect();
        expected.push(gap(40, 6));
        expected.extend((10..13u64).map(|i| rtp(i * 10, i as u16, 100)));
        expected.push(gap(130, 2));
        assert_eq!(read_log(&config).1, expected);
    }

    #[test]
    fn a_started_log_is_written_on_its_thread_and_closed_when_the_sender_goes() {
        let dir = TempDir::new("thread");
        let config = config(&dir);
        let (mut sender, recording) = start(config.clone()).unwrap();
        let records: Vec<Record> = (0..300u64)
            .map(|i| rtp(i * 100_000, i as u16, 800))
            .collect();
        for record in &records {
            while !sender.try_push(record.clone()) {
                thread::sleep(Duration::from_millis(1));
            }
        }
        drop(sender);
        let stats = recording.finish().unwrap();
        let read = read_log(&config).1;
        assert_eq!(stats.segments, 3);
        assert_eq!(stats.records, read.len() as u64);
        // Retried pushes may have left gap markers (with the count of failed attempts).
        let rtp: Vec<Record> = read
            .into_iter()
            .filter(|r| matches!(r.entry, Entry::Rtp(_)))
            .collect();
        assert_eq!(rtp, records);
    }

    #[test]
    fn a_removed_directory_fails_the_recording_and_the_sender_keeps_dropping() {
        let dir = TempDir::new("removed");
        let config = config(&dir);
        let (mut sender, recording) = start(config.clone()).unwrap();
        assert!(sender.try_push(rtp(0, 0, 100)));
        let first = segment_path(&config.dir, &config.name, 0);
        wait_for(|| first.exists());
        fs::remove_dir_all(&config.dir).unwrap();
        // The next record starts a segment, in a directory that is gone.
        assert!(sender.try_push(rtp(10_000_000, 1, 100)));
        wait_for(|| recording.failure().is_some());

        let failure = recording.failure().unwrap();
        assert_eq!(failure.action, "create");
        assert_eq!(failure.source.kind(), io::ErrorKind::NotFound);
        assert!(sender.failed());
        for i in 2..100 {
            assert!(!sender.try_push(rtp(10_000_000 + i, i as u16, 100)));
        }
        assert_eq!(recording.dropped(), 98);
        drop(sender);
        assert_eq!(recording.finish().unwrap_err().action, "create");
    }

    #[test]
    fn a_segment_that_exists_is_never_overwritten() {
        let dir = TempDir::new("exists");
        let config = config(&dir);
        fs::create_dir_all(&config.dir).unwrap();
        let first = segment_path(&config.dir, &config.name, 0);
        fs::write(&first, b"another recording").unwrap();
        let error = LogWriter::create(config).err().unwrap();
        assert_eq!(error.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&first).unwrap(), b"another recording");
    }

    #[test]
    fn a_time_earlier_than_the_last_is_written_as_the_last_and_an_oversized_packet_as_a_gap() {
        let dir = TempDir::new("clamp");
        let config = config(&dir);
        let now = Instant::now();
        let mut log = LogWriter::create(config.clone()).unwrap();
        log.append(rtp(5_000, 1, 100), now).unwrap();
        log.append(rtp(4_000, 2, 100), now).unwrap();
        log.append(rtp(6_000, 3, 70_000), now).unwrap();
        log.close().unwrap();

        let gap = Marker::Gap {
            dropped: 1,
            reason: GapReason::Oversized,
        };
        let expected = vec![rtp(5_000, 1, 100), rtp(5_000, 2, 100), marker(6_000, gap)];
        assert_eq!(read_log(&config).1, expected);
    }

    fn wait_for(condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out");
            thread::sleep(Duration::from_millis(5));
        }
    }
}
