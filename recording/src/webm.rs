//! Writing a WebM file (VP8 and/or Opus) with libwebm's muxer, through the `webm` crate.
//!
//! libwebm in file mode writes what a browser needs to seek: a Cues element (a cue point at each
//! cluster's first video keyframe), the segment's Duration, and a SeekHead pointing at both. It needs a seekable destination to go back and fill them in.
//! Frames go in as they were sent: no transcoding. The video track's size is the first
//! keyframe's; a later keyframe of another size (the sender scaled down, a simulcast layer
//! switch) is decoded at its own size, which VP8 decoders and browsers handle.

use std::io::{Seek, Write};

use webm::mux::{AudioCodecId, SegmentBuilder, SegmentMode, TrackNum, VideoCodecId, Writer};

use crate::depacketize::{opus, vp8};
use crate::timeline::TimedFrame;

/// What goes into one file: a participant's video, its audio, or both.
#[derive(Debug, Clone, Copy)]
pub struct Media<'a> {
    pub video: &'a [TimedFrame],
    pub audio: &'a [TimedFrame],
    pub audio_channels: u8,
}

/// Why the muxer failed.
#[derive(Debug, thiserror::Error)]
#[error("WebM muxer: {0}")]
pub struct MuxError(String);

/// Writes `media` as WebM into `dest`: times relative to `start_us` (server µs), the segment
/// `duration_us` long. Returns `dest`.
pub fn write<W: Write + Seek>(
    dest: W,
    media: Media<'_>,
    start_us: i64,
    duration_us: i64,
) -> Result<W, MuxError> {
    let failed = |what: &str| {
        let what = what.to_owned();
        move |error: webm::mux::Error| MuxError(format!("{what}: {error:?}"))
    };
    let mut builder = SegmentBuilder::new(Writer::new(dest))
        .map_err(failed("segment"))?
        .set_mode(SegmentMode::File)
        .map_err(failed("mode"))?
        .set_writing_app("aula")
        .map_err(failed("writing app"))?;
    let mut video_track = None;
    if let Some(first) = media.video.first() {
        let (width, height) = vp8::dimensions(&first.data)
            .ok_or_else(|| MuxError("video does not start with a keyframe".into()))?;
        let (next, track) = builder
            .add_video_track(width.into(), height.into(), VideoCodecId::VP8, None)
            .map_err(failed("video track"))?;
        builder = next;
        video_track = Some(track);
    }
    let mut audio_track = None;
    if !media.audio.is_empty() {
        let channels = media.audio_channels.into();
        let (next, track) = builder
            .add_audio_track(opus::CLOCK_RATE, channels, AudioCodecId::Opus, None)
            .map_err(failed("audio track"))?;
        builder = next
            .set_codec_private(track, &opus::head(media.audio_channels))
            .map_err(failed("codec private"))?;
        audio_track = Some(track);
    }
    let mut segment = builder.build();

    let mut video = media.video.iter().peekable();
    let mut audio = media.audio.iter().peekable();
    loop {
        let video_next = video
            .peek()
            .is_some_and(|v| audio.peek().is_none_or(|a| v.at_us <= a.at_us));
        let (frame, track) = match (video_track, audio_track) {
            (Some(track), _) if video_next => {
                (video.next().expect("peeked"), TrackNum::from(track))
            }
            (_, Some(track)) if audio.peek().is_some() => {
                (audio.next().expect("peeked"), TrackNum::from(track))
            }
            _ => break,
        };
        let timestamp_ns = ((frame.at_us - start_us).max(0) as u64) * 1_000;
        segment
            .add_frame(track, &frame.data, timestamp_ns, frame.keyframe)
            .map_err(failed("frame"))?;
    }
    let duration_ms = (duration_us.max(1) as u64).div_ceil(1_000);
    segment
        .finalize(Some(duration_ms))
        .map(Writer::into_inner)
        .map_err(|_| MuxError("finalize failed".into()))
}
