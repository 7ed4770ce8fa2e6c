//! Exports of synthetic recordings, on virtual time: track logs written with the SFU's own log
//! writer from simulated publishers (VP8 frames with real frame headers, Opus frames from
//! libopus, RTCP sender reports), then exported, and the files read back with
//! `matroska-demuxer` and the `ogg` crate.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use aula_protocol::TrackSource;
use aula_recording::depacketize::vp8;
use aula_recording::manifest::{Format, Manifest, Sync};
use aula_recording::rtp::unix_us_to_ntp;
use aula_sfu::record::format::{Entry, Marker, Record, TrackInfo};
use aula_sfu::record::policy::Limits;
use aula_sfu::record::segment_files::segment_path;
use aula_sfu::record::writer::{self, LogConfig};
use matroska_demuxer::{Frame, MatroskaFile, TrackType};
use rtc::shared::marshal::Marshal;

/// The server's clock at the start of every recording, Unix µs.
const START_US: u64 = 1_750_000_000_000_000;
/// Publishers' clocks run this far behind the server's.
const SENDER_BEHIND_US: i64 = 3_000_000;

/// One simulated publisher's track: what it sends, and how late each packet reaches the SFU.
struct Sim {
    source: TrackSource,
    ssrc: u32,
    first_timestamp: u32,
    /// Network delay on top of the sender's clock offset.
    delay_us: i64,
    sender_reports: bool,
    /// (arrival µs since the recording started, entry), in any order.
    entries: Vec<(i64, Entry)>,
    sequence: u16,
    /// The second of capture time of the last sender report: one goes out each second.
    reported_second: Option<i64>,
}

impl Sim {
    fn new(source: TrackSource, ssrc: u32) -> Sim {
        Sim {
            source,
            ssrc,
            first_timestamp: 5000,
            delay_us: 20_000,
            sender_reports: true,
            entries: Vec::new(),
            sequence: 1000,
            reported_second: None,
        }
    }

    fn clock_rate(&self) -> i64 {
        match self.source.kind() {
            aula_protocol::TrackKind::Audio => 48_000,
            aula_protocol::TrackKind::Video => 90_000,
        }
    }

    /// The RTP timestamp of capture time `at_us` (since the recording started).
    fn timestamp(&self, at_us: i64) -> u32 {
        self.first_timestamp
            .wrapping_add((at_us * self.clock_rate() / 1_000_000) as u32)
    }

    /// Sends `payloads` captured at `at_us`; the marker bit on the last.
    fn send(&mut self, at_us: i64, payloads: Vec<Vec<u8>>) {
        let count = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            let mut packet = vec![0x80, if i + 1 == count { 0x80 | 96 } else { 96 }];
            packet.extend_from_slice(&self.sequence.to_be_bytes());
            packet.extend_from_slice(&self.timestamp(at_us).to_be_bytes());
            packet.extend_from_slice(&self.ssrc.to_be_bytes());
            packet.extend_from_slice(&payload);
            self.sequence = self.sequence.wrapping_add(1);
            let jitter = i64::from(self.sequence) * 7919 % 15_000;
            self.entries
                .push((at_us + self.delay_us + jitter, Entry::Rtp(packet)));
        }
        if self.sender_reports && self.reported_second != Some(at_us / 1_000_000) {
            self.reported_second = Some(at_us / 1_000_000);
            let report = rtc::rtcp::sender_report::SenderReport {
                ssrc: self.ssrc,
                ntp_time: unix_us_to_ntp(START_US as i64 + at_us - SENDER_BEHIND_US),
                rtp_time: self.timestamp(at_us),
                ..Default::default()
            };
            let bytes = report.marshal().unwrap().to_vec();
            self.entries
                .push((at_us + self.delay_us, Entry::SenderReport(bytes)));
        }
    }

    fn marker(&mut self, at_us: i64, marker: Marker) {
        self.entries.push((at_us, Entry::Marker(marker)));
    }

    /// Writes the log with the SFU's log writer, as `name` in `dir`.
    fn write(mut self, dir: &Path, participant: &str, name: &str) {
        self.entries.sort_by_key(|(at, _)| *at);
        let (codec_mime, fmtp) = match self.source.kind() {
            aula_protocol::TrackKind::Audio => ("audio/opus", "minptime=10;useinbandfec=1"),
            aula_protocol::TrackKind::Video => ("video/VP8", ""),
        };
        let config = LogConfig {
            dir: dir.to_owned(),
            name: name.to_owned(),
            track: TrackInfo {
                codec_mime: codec_mime.into(),
                clock_rate: self.clock_rate() as u32,
                fmtp: fmtp.into(),
                extmaps: vec![],
                ssrc: self.ssrc,
                participant: participant.into(),
                source: self.source,
                wall_clock_start_us: START_US,
            },
            queue_capacity: self.entries.len() + 16,
            limits: Limits::default(),
        };
        let (mut sender, recording) = writer::start(config).unwrap();
        for (at, entry) in self.entries {
            assert!(sender.try_push(Record {
                time_us: at.max(0) as u64,
                entry,
            }));
        }
        drop(sender);
        recording.finish().unwrap();
    }
}

/// A VP8 frame: real frame header (tag, and on keyframes start code and size), then filler.
fn vp8_frame(keyframe: bool, width: u16, height: u16, size: usize) -> Vec<u8> {
    let tag = u32::from(!keyframe) | 0x10 | ((size as u32) << 5);
    let mut data = tag.to_le_bytes()[..3].to_vec();
    if keyframe {
        data.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        data.extend_from_slice(&width.to_le_bytes());
        data.extend_from_slice(&height.to_le_bytes());
    }
    data.resize(size, 0x5a);
    data
}

/// RTP payloads of a VP8 frame: RFC 7741 descriptors with a 15-bit PictureID, 500 bytes each.
fn vp8_payloads(frame: &[u8], picture_id: u16) -> Vec<Vec<u8>> {
    frame
        .chunks(500)
        .enumerate()
        .map(|(i, chunk)| {
            let mut payload = vec![if i == 0 { 0x90 } else { 0x80 }, 0x80];
            payload.extend_from_slice(&(0x8000 | picture_id & 0x7fff).to_be_bytes());
            payload.extend_from_slice(chunk);
            payload
        })
        .collect()
}

/// A camera at 30 fps from 0 to `duration_us`: keyframes where `keyframe(frame index)`, at
/// `size(frame index)`; packets `lose` says are dropped before the SFU.
fn camera(
    sim: &mut Sim,
    from_us: i64,
    duration_us: i64,
    keyframe: impl Fn(i64) -> bool,
    size: impl Fn(i64) -> (u16, u16),
    lose: impl Fn(u16) -> bool,
) {
    let frames = duration_us / 33_333;
    for i in 0..frames {
        let (width, height) = size(i);
        let frame = vp8_frame(
            keyframe(i),
            width,
            height,
            if keyframe(i) { 1400 } else { 700 },
        );
        let before = sim.entries.len();
        sim.send(from_us + i * 33_333, vp8_payloads(&frame, i as u16));
        let mut sequence = sim
            .sequence
            .wrapping_sub((sim.entries.len() - before) as u16);
        let sent: Vec<usize> = (before..sim.entries.len()).collect();
        let mut dropped = Vec::new();
        for index in sent {
            if matches!(sim.entries[index].1, Entry::Rtp(_)) {
                if lose(sequence) {
                    dropped.push(index);
                }
                sequence = sequence.wrapping_add(1);
            }
        }
        for index in dropped.into_iter().rev() {
            sim.entries.remove(index);
        }
    }
}

/// A microphone: 20 ms Opus frames of a 440 Hz tone from 0 to `duration_us`.
fn microphone(sim: &mut Sim, duration_us: i64, lose: impl Fn(i64) -> bool) {
    let mut encoder =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    for i in 0..duration_us / 20_000 {
        let pcm: Vec<i16> = (0..960)
            .map(|n| {
                let t = (i * 960 + n) as f64 / 48_000.0;
                ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
            })
            .collect();
        let packet = encoder.encode_vec(&pcm, 1000).unwrap();
        if lose(i) {
            sim.sequence = sim.sequence.wrapping_add(1);
            continue;
        }
        sim.send(i * 20_000, vec![packet]);
    }
}

/// A recording directory, removed when the test ends.
struct RecordingDir(PathBuf);

impl std::ops::Deref for RecordingDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for RecordingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn recording_dir(test: &str) -> RecordingDir {
    let dir = std::env::temp_dir().join(format!("aula-export-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    RecordingDir(dir)
}

/// A WebM file read back: its duration (s), whether it has cues, its tracks' codecs, and each
/// track's frames.
struct ReadBack {
    duration_s: f64,
    cues: bool,
    video_size: Option<(u64, u64)>,
    codecs: Vec<String>,
    video: Vec<Frame>,
    audio: Vec<Frame>,
}

fn read_webm(path: &Path) -> ReadBack {
    let bytes = std::fs::read(path).unwrap();
    // The Cues element's ID.
    let cues = bytes.windows(4).any(|w| w == [0x1c, 0x53, 0xbb, 0x6b]);
    let mut file = MatroskaFile::open(File::open(path).unwrap()).unwrap();
    assert_eq!(file.ebml_header().doc_type(), "webm");
    let scale = file.info().timestamp_scale().get() as f64;
    let duration_s = file.info().duration().expect("a duration") * scale / 1e9;
    let mut kinds = BTreeMap::new();
    let mut codecs = Vec::new();
    let mut video_size = None;
    for track in file.tracks() {
        kinds.insert(track.track_number().get(), track.track_type());
        codecs.push(track.codec_id().to_owned());
        if let Some(video) = track.video() {
            video_size = Some((video.pixel_width().get(), video.pixel_height().get()));
        }
        if track.track_type() == TrackType::Audio {
            assert_eq!(&track.codec_private().unwrap()[..8], b"OpusHead");
        }
    }
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    let mut frame = Frame::default();
    while file.next_frame(&mut frame).unwrap() {
        match kinds[&frame.track] {
            TrackType::Video => video.push(frame.clone()),
            _ => audio.push(frame.clone()),
        }
    }
    ReadBack {
        duration_s,
        cues,
        video_size,
        codecs,
        video,
        audio,
    }
}

fn manifest(dir: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Timestamps (ms, the default scale) strictly increasing.
fn assert_increasing(frames: &[Frame]) {
    for pair in frames.windows(2) {
        assert!(
            pair[1].timestamp > pair[0].timestamp,
            "{} then {}",
            pair[0].timestamp,
            pair[1].timestamp
        );
    }
}

/// A camera and a microphone of one participant, 12 s, keyframes every 3 s; video 150 ms
/// later than audio on the network.
fn class_camera_and_microphone(dir: &Path, sender_reports: bool) {
    let mut video = Sim::new(TrackSource::Camera, 11);
    video.delay_us = 170_000;
    video.sender_reports = sender_reports;
    camera(
        &mut video,
        0,
        12_000_000,
        |i| i % 90 == 0,
        |_| (640, 360),
        |_| false,
    );
    video.write(dir, "teacher", "teacher-camera");
    let mut audio = Sim::new(TrackSource::Microphone, 12);
    audio.sender_reports = sender_reports;
    microphone(&mut audio, 12_000_000, |_| false);
    audio.write(dir, "teacher", "teacher-mic");
}

#[test]
fn camera_and_microphone_become_one_seekable_webm_in_sync() {
    let dir = recording_dir("sync");
    class_camera_and_microphone(&dir, true);
    let manifest = aula_recording::export(&dir).unwrap();
    assert_eq!(manifest, self::manifest(&dir));
    assert_eq!(manifest.participants, ["teacher"]);
    assert_eq!(manifest.files.len(), 1);
    let entry = &manifest.files[0];
    assert_eq!(entry.format, Format::Webm);
    assert_eq!(
        entry.sources,
        [TrackSource::Camera, TrackSource::Microphone]
    );
    assert!(
        entry
            .tracks
            .iter()
            .all(|t| t.sync == Sync::SenderReports && t.gaps.is_empty()),
        "{:#?}",
        entry.tracks
    );
    assert!(
        (11_900..=12_100).contains(&entry.duration_ms),
        "{}",
        entry.duration_ms
    );

    let file = read_webm(&dir.join(&entry.path));
    assert!(file.cues);
    assert!(
        (11.9..12.1).contains(&file.duration_s),
        "{}",
        file.duration_s
    );
    assert_eq!(file.codecs, ["V_VP8", "A_OPUS"]);
    assert_eq!(file.video_size, Some((640, 360)));
    assert_eq!(file.video.len(), 360);
    assert_eq!(file.audio.len(), 600);
    assert_increasing(&file.video);
    assert_increasing(&file.audio);
    assert_eq!(
        file.video
            .iter()
            .filter(|f| f.is_keyframe == Some(true))
            .count(),
        4
    );
    // Captured together, played together: video frame 3k and audio frame 5k were both captured
    // at k × 100 ms, though the video arrived 150 ms later.
    for k in 0..120 {
        let skew = file.video[3 * k].timestamp as i64 - file.audio[5 * k].timestamp as i64;
        assert!(skew.abs() < 40, "skew {skew} ms at {k}");
    }
}

#[test]
fn without_sender_reports_arrival_time_places_the_tracks() {
    let dir = recording_dir("arrival");
    class_camera_and_microphone(&dir, false);
    let manifest = aula_recording::export(&dir).unwrap();
    let entry = &manifest.files[0];
    assert!(entry.tracks.iter().all(|t| t.sync == Sync::Arrival));
    let file = read_webm(&dir.join(&entry.path));
    assert_eq!((file.video.len(), file.audio.len()), (360, 600));
    // The network's 150 ms difference stays in: that is what sender reports are for.
    let skew = file.video[30].timestamp as i64 - file.audio[50].timestamp as i64;
    assert!((130..=170).contains(&skew), "{skew}");
}

#[test]
fn sequence_numbers_and_timestamps_wrapping_around_lose_nothing() {
    let dir = recording_dir("wrap");
    let mut video = Sim::new(TrackSource::Camera, 21);
    video.sequence = 65_000;
    video.first_timestamp = u32::MAX - 90_000;
    camera(
        &mut video,
        0,
        4_000_000,
        |i| i % 60 == 0,
        |_| (320, 180),
        |_| false,
    );
    video.write(&dir, "learner", "learner-camera");
    let mut audio = Sim::new(TrackSource::Microphone, 22);
    audio.sequence = 65_500;
    audio.first_timestamp = u32::MAX - 48_000;
    microphone(&mut audio, 4_000_000, |_| false);
    audio.write(&dir, "learner", "learner-mic");

    let manifest = aula_recording::export(&dir).unwrap();
    let entry = &manifest.files[0];
    assert!(entry.tracks.iter().all(|t| t.gaps.is_empty()));
    let file = read_webm(&dir.join(&entry.path));
    assert_eq!((file.video.len(), file.audio.len()), (120, 200));
    assert_increasing(&file.video);
    assert_increasing(&file.audio);
    assert!((3.9..4.1).contains(&file.duration_s));
}

#[test]
fn video_waits_ten_seconds_for_its_first_keyframe_and_marks_them() {
    let dir = recording_dir("no-keyframe");
    let mut video = Sim::new(TrackSource::Camera, 31);
    camera(
        &mut video,
        0,
        12_000_000,
        |i| i == 300,
        |_| (640, 360),
        |_| false,
    );
    video.write(&dir, "teacher", "teacher-camera");
    let mut audio = Sim::new(TrackSource::Microphone, 32);
    microphone(&mut audio, 12_000_000, |_| false);
    audio.write(&dir, "teacher", "teacher-mic");

    let manifest = aula_recording::export(&dir).unwrap();
    let entry = &manifest.files[0];
    let gaps = &entry.tracks[0].gaps;
    assert_eq!(gaps.len(), 1);
    assert!(
        gaps[0].at_ms < 30 && (9_950..=10_050).contains(&gaps[0].duration_ms),
        "{gaps:?}"
    );
    let file = read_webm(&dir.join(&entry.path));
    assert_eq!(file.video.len(), 60);
    assert_eq!(file.video[0].is_keyframe, Some(true));
    assert!(
        (9_950..=10_050).contains(&file.video[0].timestamp),
        "{}",
        file.video[0].timestamp
    );
    assert_eq!(file.audio.len(), 600);
    assert!(file.audio[0].timestamp < 30);
}

#[test]
fn five_percent_loss_skips_video_to_the_next_keyframe_and_conceals_audio() {
    let dir = recording_dir("loss");
    // Pseudo-random 5 % of packets.
    let lost = |n: u64| (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 100 < 5;
    let mut video = Sim::new(TrackSource::Camera, 41);
    camera(
        &mut video,
        0,
        20_000_000,
        |i| i % 60 == 0,
        |_| (640, 360),
        |s| lost(u64::from(s)),
    );
    video.write(&dir, "learner", "learner-camera");
    let mut audio = Sim::new(TrackSource::Microphone, 42);
    microphone(&mut audio, 20_000_000, |i| lost(i as u64 + 7));
    audio.write(&dir, "learner", "learner-mic");

    let manifest = aula_recording::export(&dir).unwrap();
    let entry = &manifest.files[0];
    let file = read_webm(&dir.join(&entry.path));
    assert_increasing(&file.video);
    assert_increasing(&file.audio);
    let video_gaps = &entry.tracks[0].gaps;
    assert!(!video_gaps.is_empty());
    // Each gap ends at a keyframe: the frame at its end.
    for gap in video_gaps {
        let end = gap.at_ms + gap.duration_ms;
        let resumed = file
            .video
            .iter()
            .find(|f| f.timestamp as i64 >= end - 1)
            .unwrap();
        assert_eq!(resumed.is_keyframe, Some(true), "gap {gap:?}");
    }
    // Fewer frames than sent, but not all lost.
    assert!(
        (100..600).contains(&file.video.len()),
        "{}",
        file.video.len()
    );
    // Audio: every lost 20 ms is an empty frame in its place; 1000 in all.
    assert_eq!(file.audio.len(), 1000);
    let concealed = file.audio.iter().filter(|f| f.data.len() == 1).count();
    assert!((20..=80).contains(&concealed), "{concealed}");
    assert_eq!(concealed, entry.tracks[1].gaps.len());
}

#[test]
fn a_simulcast_layer_switch_continues_on_the_new_layer_from_its_keyframe() {
    let dir = recording_dir("layer-switch");
    let mut low = Sim::new(TrackSource::Camera, 51);
    camera(
        &mut low,
        0,
        5_000_000,
        |i| i % 90 == 0,
        |_| (320, 180),
        |_| false,
    );
    low.marker(5_000_000 + 15_000, Marker::LayerSwitch { layer: 2 });
    // The high layer: its own SSRC, sequence numbers and timestamps; the SFU switched on its
    // keyframe, which comes first.
    let mut high = Sim::new(TrackSource::Camera, 52);
    (high.sequence, high.first_timestamp) = (40_000, 3_000_000_000);
    camera(
        &mut high,
        5_000_000,
        5_000_000,
        |i| i % 90 == 0,
        |_| (1280, 720),
        |_| false,
    );
    low.entries.append(&mut high.entries);
    low.entries.retain(|(at, entry)| {
        // Nothing of the high layer before the switch, nothing of the low one after.
        let Entry::Rtp(packet) = entry else {
            return true;
        };
        let high = packet[11] == 52;
        high == (*at >= 5_015_000)
    });
    low.write(&dir, "teacher", "teacher-camera");

    let manifest = aula_recording::export(&dir).unwrap();
    let entry = &manifest.files[0];
    assert_eq!(entry.sources, [TrackSource::Camera]);
    assert!(
        entry.tracks[0].gaps.is_empty(),
        "{:?}",
        entry.tracks[0].gaps
    );
    let file = read_webm(&dir.join(&entry.path));
    assert_eq!(file.codecs, ["V_VP8"]);
    assert_eq!(file.video.len(), 300);
    assert_increasing(&file.video);
    let switch = &file.video[150];
    assert_eq!(switch.is_keyframe, Some(true));
    assert_eq!(vp8::dimensions(&switch.data), Some((1280, 720)));
    let step = switch.timestamp - file.video[149].timestamp;
    assert!((20..=50).contains(&step), "{step} ms across the switch");
}

#[test]
fn a_resolution_change_keeps_every_frame_and_the_new_size() {
    let dir = recording_dir("resolution");
    let mut video = Sim::new(TrackSource::ScreenShare, 61);
    let size = |i: i64| if i < 150 { (1280, 720) } else { (960, 540) };
    camera(&mut video, 0, 10_000_000, |i| i % 150 == 0, size, |_| false);
    video.write(&dir, "learner", "learner-screen");

    let manifest = aula_recording::export(&dir).unwrap();
    let entry = &manifest.files[0];
    assert_eq!(entry.sources, [TrackSource::ScreenShare]);
    assert!(entry.path.ends_with(".screenshare.webm"), "{}", entry.path);
    let file = read_webm(&dir.join(&entry.path));
    assert_eq!(file.video_size, Some((1280, 720)));
    assert_eq!(file.video.len(), 300);
    assert_eq!(vp8::dimensions(&file.video[150].data), Some((960, 540)));
}

#[test]
fn a_corrupt_record_mid_segment_costs_only_what_it_held() {
    let dir = recording_dir("corrupt");
    let mut video = Sim::new(TrackSource::Camera, 71);
    camera(
        &mut video,
        0,
        6_000_000,
        |i| i % 30 == 0,
        |_| (640, 360),
        |_| false,
    );
    video.write(&dir, "teacher", "teacher-camera");
    let segment = segment_path(&dir, "teacher-camera", 0);
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    let manifest = aula_recording::export(&dir).unwrap();
    let track = &manifest.files[0].tracks[0];
    assert_eq!(track.damaged, 1);
    // One packet lost: video skipped to the next keyframe, at most a second.
    assert_eq!(track.gaps.len(), 1);
    assert!(track.gaps[0].duration_ms <= 1_000, "{:?}", track.gaps);
    let file = read_webm(&dir.join(&manifest.files[0].path));
    assert!(
        (150..180).contains(&file.video.len()),
        "{}",
        file.video.len()
    );
    assert_increasing(&file.video);
}

#[test]
fn a_microphone_alone_becomes_ogg_opus() {
    let dir = recording_dir("ogg");
    let mut audio = Sim::new(TrackSource::Microphone, 81);
    microphone(&mut audio, 5_000_000, |i| i == 100);
    audio.write(&dir, "agent", "agent-mic");

    let manifest = aula_recording::export(&dir).unwrap();
    let entry = &manifest.files[0];
    assert_eq!(entry.format, Format::Ogg);
    assert_eq!(entry.path, "agent.microphone.ogg");
    assert_eq!(entry.tracks[0].gaps.len(), 1);
    let mut reader = ogg::PacketReader::new(File::open(dir.join(&entry.path)).unwrap());
    let mut packets = Vec::new();
    while let Some(packet) = reader.read_packet().unwrap() {
        packets.push(packet);
    }
    assert!(packets[0].data.starts_with(b"OpusHead"));
    assert!(packets[1].data.starts_with(b"OpusTags"));
    assert_eq!(packets.len(), 2 + 250);
    let last = packets.last().unwrap();
    assert!(last.last_in_stream());
    assert_eq!(last.absgp_page(), 250 * 960);
    // Decodes: libopus takes every packet, the concealment frame included.
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pcm = [0i16; 960];
    for packet in &packets[2..] {
        assert_eq!(decoder.decode(&packet.data, &mut pcm, false).unwrap(), 960);
    }
}

#[test]
fn logs_of_another_codec_are_skipped_and_said_so() {
    let dir = recording_dir("skipped");
    let mut audio = Sim::new(TrackSource::Microphone, 91);
    microphone(&mut audio, 1_000_000, |_| false);
    audio.write(&dir, "agent", "agent-mic");
    std::fs::copy(
        segment_path(&dir, "agent-mic", 0),
        segment_path(&dir, "other", 0),
    )
    .unwrap();
    // Rewrite the copy's header with another codec.
    let bytes = std::fs::read(segment_path(&dir, "other", 0)).unwrap();
    let mut reader = aula_sfu::record::reader::SegmentReader::new(&bytes).unwrap();
    let mut header = reader.header().clone();
    header.track.codec_mime = "video/H264".into();
    let mut out = header.encode();
    for record in reader.by_ref() {
        record.unwrap().encode(&mut out);
    }
    std::fs::write(segment_path(&dir, "other", 0), out).unwrap();

    let manifest = aula_recording::export(&dir).unwrap();
    assert_eq!(manifest.files.len(), 1);
    assert_eq!(manifest.skipped.len(), 1);
    assert_eq!(manifest.skipped[0].log, "other");
}
