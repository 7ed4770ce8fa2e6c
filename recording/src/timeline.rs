//! One track's log turned into frames on the shared timeline. Pure.
//!
//! The records are split into runs at simulcast layer switches: the new layer is another RTP
//! stream (its own SSRC, sequence numbers and timestamps), so nothing carries over, and video
//! waits for the new layer's keyframe (the SFU asks for one when it switches). Within a run each
//! SSRC is reordered ([`reorder`]), depacketized ([`depacketize`]) and mapped onto the server's
//! clock ([`sync`]). Runs follow each other in log order; a frame that would land before the
//! one kept last (clocks of two streams disagreeing by a few ms) is moved just after it, since a
//! file's timestamps may not go back.
//!
//! Audio is then made continuous: where packets were lost, or the sender paused, Opus packets
//! with an empty frame fill the hole (a decoder conceals them as a lost frame, in practice a
//! fade to silence). Players schedule audio by counting samples, not by block timestamps, so
//! without them every hole would pull the sound ahead of the picture.

use aula_sfu::record::format::{Entry, Marker, Record, TrackInfo};

use crate::depacketize::{self, Frame, opus};
use crate::reorder;
use crate::rtp::{self, Packet, SenderReport};
use crate::sync::StreamClock;

/// A frame on the shared timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedFrame {
    /// Server wall-clock time, Unix µs.
    pub at_us: i64,
    pub data: Vec<u8>,
    pub keyframe: bool,
    /// Media is missing from this time (server µs) up to this frame.
    pub lost_since_us: Option<i64>,
}

/// The media of a track's log: its RTP packets split at layer switches, its sender reports.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub runs: Vec<Vec<Packet>>,
    pub reports: Vec<SenderReport>,
}

/// The kind of media a track carries, for the depacketizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Vp8,
    Opus,
}

impl Codec {
    /// The codec of a log's `codec_mime`, if it is one the exporter handles.
    pub fn of(track: &TrackInfo) -> Option<Codec> {
        match track.codec_mime.to_ascii_lowercase().as_str() {
            "video/vp8" => Some(Codec::Vp8),
            "audio/opus" => Some(Codec::Opus),
            _ => None,
        }
    }
}

/// Splits a log's records into RTP runs (at layer switch markers) and sender reports, with
/// their arrival on the server's clock.
pub fn parse(track: &TrackInfo, records: &[Record]) -> Parsed {
    let mut parsed = Parsed {
        runs: vec![Vec::new()],
        reports: Vec::new(),
    };
    for record in records {
        let arrival_us = (track.wall_clock_start_us + record.time_us) as i64;
        match &record.entry {
            Entry::Rtp(bytes) => {
                if let Some(packet) = rtp::parse_rtp(bytes, arrival_us) {
                    parsed
                        .runs
                        .last_mut()
                        .expect("one run at least")
                        .push(packet);
                }
            }
            Entry::SenderReport(bytes) => {
                parsed
                    .reports
                    .extend(rtp::parse_sender_reports(bytes, arrival_us));
            }
            Entry::Marker(Marker::LayerSwitch { .. }) => parsed.runs.push(Vec::new()),
            Entry::Marker(_) => {}
        }
    }
    parsed.runs.retain(|run| !run.is_empty());
    parsed
}

/// The track's frames on the server's clock, in order; `sender_offset` is the participant's
/// (see [`crate::sync::sender_offset`]).
pub fn frames(
    codec: Codec,
    clock_rate: u32,
    parsed: &Parsed,
    sender_offset: Option<i64>,
) -> Vec<TimedFrame> {
    let mut timed: Vec<TimedFrame> = Vec::new();
    for run in &parsed.runs {
        for stream in reorder::streams(run.clone()) {
            let reports: Vec<SenderReport> = parsed
                .reports
                .iter()
                .filter(|r| r.ssrc == stream.ssrc)
                .copied()
                .collect();
            let clock = StreamClock::new(&stream, clock_rate, &reports, sender_offset);
            let frames = match codec {
                Codec::Vp8 => depacketize::vp8::frames(&stream.packets),
                Codec::Opus => depacketize::opus::frames(&stream.packets),
            };
            for Frame {
                timestamp,
                data,
                keyframe,
                lost_since,
            } in frames
            {
                let last_us = timed.last().map(|f| f.at_us);
                let at_us = clock
                    .server_us(timestamp)
                    .max(last_us.map_or(i64::MIN, |t| t + 1));
                timed.push(TimedFrame {
                    at_us,
                    data,
                    keyframe,
                    lost_since_us: lost_since.map(|t| clock.server_us(t).min(at_us)),
                });
            }
        }
    }
    if codec == Codec::Opus {
        timed = fill_audio_holes(timed);
    }
    timed
}

/// Audio frames with every hole longer than a concealment frame filled with empty Opus frames,
/// so that the samples before each real frame add up to its time (to 2.5 ms).
fn fill_audio_holes(frames: Vec<TimedFrame>) -> Vec<TimedFrame> {
    let mut filled: Vec<TimedFrame> = Vec::with_capacity(frames.len());
    // Where the audio written so far ends.
    let mut end_us: Option<i64> = None;
    for frame in frames {
        if let Some(mut at_us) = end_us {
            for filler in opus::concealment(samples_between(at_us, frame.at_us)) {
                let samples = opus::samples(&filler);
                filled.push(TimedFrame {
                    at_us,
                    data: filler,
                    keyframe: true,
                    lost_since_us: None,
                });
                at_us += samples_us(samples);
            }
        }
        end_us = Some(frame.at_us + samples_us(opus::samples(&frame.data)));
        filled.push(frame);
    }
    filled
}

/// How long `samples` 48 kHz samples last, in µs.
fn samples_us(samples: u32) -> i64 {
    i64::from(samples) * 1_000_000 / i64::from(opus::CLOCK_RATE)
}

/// Whole 48 kHz samples from `from_us` to `to_us` (0 if it is earlier).
fn samples_between(from_us: i64, to_us: i64) -> u32 {
    ((to_us - from_us).max(0) * i64::from(opus::CLOCK_RATE) / 1_000_000) as u32
}
