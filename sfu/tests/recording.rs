//! Recording through the real router and `rtc` peers, on the simulator's virtual time: what a
//! recording writes of a published track (see `aula_sfu::record::capture`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aula_protocol::TrackKind;
use aula_sfu::qos::PeerSample;
use aula_sfu::record::capture::{RecordingSpec, TrackLog};
use aula_sfu::record::format::{Entry, Marker, Record, SegmentHeader};
use aula_sfu::record::reader::SegmentReader;
use aula_sfu::record::segment_files::segments;
use aula_sfu::sim::{Sim, vp8_payload};

const FRAME: Duration = Duration::from_millis(33);

/// A directory of its own for one test, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("aula-recording-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `send` every frame until the SFU has opened the track; returns its sid.
fn publish(sim: &mut Sim, mut send: impl FnMut(&mut Sim)) -> String {
    for _ in 0..500 {
        if let Some((_, sid)) = sim.published.first() {
            return sid.clone();
        }
        send(sim);
        sim.step(FRAME);
    }
    panic!("the SFU never published the track");
}

fn start(sim: &mut Sim, dir: &Path, participants: &[&str]) {
    let spec = RecordingSpec {
        id: "rec".into(),
        dir: dir.to_path_buf(),
        participants: participants.iter().map(|&p| p.to_owned()).collect(),
        wall_clock_start_us: 1_760_000_000_000_000,
    };
    sim.router.start_recording(sim.now, spec).unwrap();
}

/// Stops the recording, waits for its one log to be on disk, and reads it back.
fn stop_and_read(sim: &mut Sim, dir: &Path) -> (SegmentHeader, Vec<Record>) {
    let mut logs: Vec<TrackLog> = sim.router.stop_recording("rec").unwrap();
    assert_eq!(logs.len(), 1);
    let log = logs.pop().unwrap();
    let stats = log.log.finish().unwrap();
    let (mut header, mut records) = (None, Vec::new());
    for (_, path) in segments(dir, &log.name).unwrap() {
        let data = std::fs::read(path).unwrap();
        let mut reader = SegmentReader::new(&data).unwrap();
        records.extend(reader.by_ref().map(|r| r.unwrap()));
        header.get_or_insert(reader.header().clone());
    }
    assert_eq!(stats.records, records.len() as u64);
    (header.unwrap(), records)
}

fn keyframe_requests(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.entry == Entry::Marker(Marker::KeyframeRequest))
        .map(|r| r.time_us)
        .collect()
}

fn rtp(records: &[Record]) -> Vec<&[u8]> {
    records
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::Rtp(bytes) => Some(&bytes[..]),
            _ => None,
        })
        .collect()
}

fn ssrc(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[8..12].try_into().unwrap())
}

#[test]
fn a_keyframe_is_asked_for_at_start_and_at_most_once_a_second_until_it_comes() {
    let dir = TempDir::new("keyframe");
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Video);
    publish(&mut sim, |sim| {
        sim.send(teacher, &vp8_payload(false, b"delta"))
    });
    let plis_before = sim.router.metrics().plis_sent.get();
    start(&mut sim, &dir.0, &["teacher"]);

    // 3.5 s of delta frames: nothing can be decoded, so nothing is recorded but requests.
    for _ in 0..106 {
        sim.send(teacher, &vp8_payload(false, b"delta"));
        sim.step(FRAME);
    }
    let asked = sim.router.metrics().plis_sent.get() - plis_before;
    sim.send(teacher, &vp8_payload(true, b"key"));
    sim.step(FRAME);
    for _ in 0..60 {
        sim.send(teacher, &vp8_payload(false, b"delta"));
        sim.step(FRAME);
    }
    let asked_after = sim.router.metrics().plis_sent.get() - plis_before;
    let (header, records) = stop_and_read(&mut sim, &dir.0);

    assert_eq!(header.track.codec_mime.to_lowercase(), "video/vp8");
    assert_eq!(header.track.participant, "teacher");
    let requests = keyframe_requests(&records);
    assert_eq!(requests.len(), 4, "at 0, 1, 2 and 3 s: {requests:?}");
    assert!(requests[0] < 200_000, "the first at once: {requests:?}");
    assert!(
        requests.windows(2).all(|w| w[1] - w[0] >= 1_000_000),
        "at most once a second: {requests:?}"
    );
    assert_eq!(asked, 4, "each request went to the publisher");
    assert_eq!(asked_after, asked, "none once the keyframe came");
    let packets = rtp(&records);
    assert_eq!(packets.len(), 61, "from the keyframe on");
    assert_eq!(&packets[0][packets[0].len() - 3..], b"key");
    let seqs: Vec<u16> = packets
        .iter()
        .map(|p| u16::from_be_bytes([p[2], p[3]]))
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
}

#[test]
fn a_simulcast_layer_switch_writes_a_marker_and_the_log_keeps_the_best_layer() {
    let dir = TempDir::new("simulcast");
    let mut sim = Sim::new();
    let teacher = sim.add_simulcast_publisher("teacher", &["q", "h"]);
    publish(&mut sim, |sim| {
        sim.send_layer(teacher, 0, &vp8_payload(false, b"q"));
        sim.send_layer(teacher, 1, &vp8_payload(false, b"h"));
    });
    start(&mut sim, &dir.0, &["teacher"]);
    let frame = |sim: &mut Sim, layers: &[usize], keyframe: bool| {
        for &layer in layers {
            let body = [b'q', b'h'][layer];
            sim.send_layer(teacher, layer, &vp8_payload(keyframe, &[body]));
        }
        sim.step(FRAME);
    };
    // Both layers; the log starts on the higher one's keyframe.
    for _ in 0..10 {
        frame(&mut sim, &[0, 1], false);
    }
    frame(&mut sim, &[0, 1], true);
    for _ in 0..30 {
        frame(&mut sim, &[0, 1], false);
    }
    // The publisher drops the higher layer (short of bandwidth): the log goes on with the
    // lower one from its next keyframe, which it asks for.
    for _ in 0..40 {
        frame(&mut sim, &[0], false);
    }
    frame(&mut sim, &[0], true);
    for _ in 0..30 {
        frame(&mut sim, &[0], false);
    }
    let (_, records) = stop_and_read(&mut sim, &dir.0);

    let switches: Vec<(usize, u8)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.entry {
            Entry::Marker(Marker::LayerSwitch { layer }) => Some((i, layer)),
            _ => None,
        })
        .collect();
    assert_eq!(
        switches.iter().map(|s| s.1).collect::<Vec<_>>(),
        [1, 0],
        "{switches:?}"
    );
    let layer_of = |packet: &[u8]| match packet.last() {
        Some(b'q') => 0,
        Some(b'h') => 1,
        other => panic!("unexpected payload end {other:?}"),
    };
    let (first, second) = records.split_at(switches[1].0);
    let before = rtp(first);
    let after = rtp(second);
    assert_eq!(before.len(), 31, "only the higher layer, from its keyframe");
    assert!(before.iter().all(|p| layer_of(p) == 1));
    assert_eq!(after.len(), 31, "only the lower layer, from its keyframe");
    assert!(after.iter().all(|p| layer_of(p) == 0));
    assert_ne!(ssrc(before[0]), ssrc(after[0]));
    // One request at the start, one (or two: at most one a second) while the log waited to
    // switch down, none once it had.
    let waiting = keyframe_requests(first);
    assert!((2..=3).contains(&waiting.len()), "{waiting:?}");
    assert!(waiting[0] < 200_000, "{waiting:?}");
    assert!(keyframe_requests(second).is_empty());
}

#[test]
fn audio_is_recorded_from_the_first_packet_with_the_publishers_sender_reports() {
    let dir = TempDir::new("audio");
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Audio);
    publish(&mut sim, |sim| sim.send(teacher, b"warm-up"));
    start(&mut sim, &dir.0, &["teacher"]);
    for i in 0..150u32 {
        sim.send(teacher, format!("frame-{i}").as_bytes());
        sim.step(Duration::from_millis(20));
    }
    let (header, records) = stop_and_read(&mut sim, &dir.0);

    assert_eq!(header.track.codec_mime.to_lowercase(), "audio/opus");
    assert_eq!(header.track.clock_rate, 48_000);
    let packets = rtp(&records);
    assert_eq!(packets.len(), 150);
    assert!(packets[0].ends_with(b"frame-0") && packets[149].ends_with(b"frame-149"));
    assert!(keyframe_requests(&records).is_empty(), "audio needs none");
    let reports = records
        .iter()
        .filter(|r| matches!(&r.entry, Entry::SenderReport(sr) if sr[1] == 200))
        .count();
    assert!(reports >= 1, "3 s of audio brings a sender report");
    let times: Vec<u64> = records.iter().map(|r| r.time_us).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(*times.last().unwrap() >= 2_900_000);
}

#[test]
fn the_qos_samples_count_a_lossy_links_nacks_and_keyframe_requests() {
    let dir = TempDir::new("qos-feedback");
    let mut sim = Sim::new();
    let teacher = sim.add_publisher("teacher", TrackKind::Video);
    let track = publish(&mut sim, |sim| {
        sim.send(teacher, &vp8_payload(true, b"warm-up"))
    });
    sim.subscribe("student", &track);
    for _ in 0..100 {
        if !sim.client("student").received.is_empty() {
            break;
        }
        sim.send(teacher, &vp8_payload(true, b"warm-up"));
        sim.step(FRAME);
    }
    assert!(!sim.client("student").received.is_empty(), "video flows");
    start(&mut sim, &dir.0, &["teacher", "student"]);

    // One datagram in seven to the clients is lost, and one in five of the teacher's: the
    // student NACKs what it misses, and the SFU what it misses of the teacher's. The
    // recording asks for a keyframe at once (before the first sample, whose counts are the
    // base) and a second later, until one comes at 1.5 s.
    sim.drop_every_nth_to_clients = Some(7);
    sim.lossy_uplink = Some(("teacher".to_owned(), 5));
    for i in 0..120 {
        sim.send(teacher, &vp8_payload(i == 45, b"frame"));
        sim.step(FRAME);
    }
    for log in sim.router.stop_recording("rec").unwrap() {
        log.log.finish().unwrap();
    }

    let total = |participant: &str, count: fn(&PeerSample) -> u64| -> u64 {
        let samples = sim.qos_samples.iter().filter(|(p, _)| p == participant);
        samples.map(|(_, sample)| count(sample)).sum()
    };
    let samples = |participant: &str| {
        let all = sim.qos_samples.iter();
        all.filter(|(p, _)| p == participant).count()
    };
    assert!(samples("student") >= 3, "a sample a second");
    assert!(
        total("student", |s| s.nacks_received) > 0,
        "the student's NACKs"
    );
    assert!(total("teacher", |s| s.nacks_sent) > 0, "the SFU's NACKs");
    assert!(
        total("teacher", |s| s.keyframe_requests_sent) > 0,
        "the recording asked the teacher for a keyframe"
    );
    assert_eq!(
        total("student", |s| s.nacks_sent),
        0,
        "it publishes nothing"
    );
}
