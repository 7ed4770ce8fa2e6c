//! The on-disk format of a capture log segment. Pure: bytes in, bytes out.
//!
//! A segment is a header followed by records, all integers big-endian:
//!
//! ```text
//! header:  magic "AULAREC\0" (8) | version u16 | body length u32 | body | CRC32 u32
//! body:    segment index u32 | wall-clock start, unix µs u64 | ssrc u32 | clock rate u32
//!          | source u8 | participant str | codec mime str | fmtp str
//!          | extmap count u8, then per extmap: id u8 | uri str
//!          (str = length u16 | UTF-8 bytes; body length at most MAX_RECORD_LEN)
//! record:  kind u8 | time µs u64 | length u32 | bytes | CRC32 u32
//! ```
//!
//! The header's CRC covers everything before it; a record's covers its kind, time, length and
//! bytes. A record's time is monotonic microseconds since the log started (the wall-clock start
//! in the header is that same instant), never decreasing within a log. The header is repeated in
//! every segment so that each segment can be read on its own.
//!
//! A fixed-field header rather than JSON keeps the segment reader free of a parser (and this
//! crate free of serde); the version number is there to change it.

use aula_protocol::TrackSource;

/// The first bytes of every segment.
pub const MAGIC: [u8; 8] = *b"AULAREC\0";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// The most bytes one record (or a header body) may carry. RTP and RTCP packets arrive in UDP
/// datagrams, so no real record comes near it: a length above it is corruption.
pub const MAX_RECORD_LEN: usize = 64 * 1024;
/// The longest string a header holds, in bytes.
pub const MAX_STR_LEN: usize = 1024;
/// The most extmaps a header holds.
pub const MAX_EXTMAPS: usize = 32;
/// Bytes a record takes besides its own: kind, time, length, CRC.
pub const RECORD_OVERHEAD: usize = RECORD_PREFIX + 4;
/// Kind, time and length: the part of a record before its bytes.
const RECORD_PREFIX: usize = 1 + 8 + 4;
/// Magic, version and body length: the part of a header before its body.
const HEADER_PREFIX: usize = MAGIC.len() + 2 + 4;

const KIND_RTP: u8 = 1;
const KIND_SENDER_REPORT: u8 = 2;
const KIND_MARKER: u8 = 3;

const MARKER_LAYER_SWITCH: u8 = 1;
const MARKER_KEYFRAME_REQUEST: u8 = 2;
const MARKER_MUTED: u8 = 3;
const MARKER_GAP: u8 = 4;
const MARKER_SELF_MUTED: u8 = 5;

const GAP_QUEUE_FULL: u8 = 1;
const GAP_OVERSIZED: u8 = 2;

/// What a logged track is, written at the start of every segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// E.g. `video/VP8`, `audio/opus`.
    pub codec_mime: String,
    pub clock_rate: u32,
    /// The SDP `a=fmtp` parameters, as negotiated.
    pub fmtp: String,
    /// The negotiated RTP header extensions: (id, URI).
    pub extmaps: Vec<(u8, String)>,
    pub ssrc: u32,
    pub participant: String,
    pub source: TrackSource,
    /// The wall-clock time, in unix microseconds, at which record time 0 happened.
    pub wall_clock_start_us: u64,
}

/// A segment's header: the track, and which segment of its log this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub track: TrackInfo,
    /// 0 for the log's first segment, then counting up.
    pub segment_index: u32,
}

/// One record of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Monotonic microseconds since the log started.
    pub time_us: u64,
    pub entry: Entry,
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An RTP packet as the publisher sent it, after SRTP decryption.
    Rtp(Vec<u8>),
    /// An RTCP sender report from the publisher: it maps RTP time to wall-clock time, which lip
    /// sync between a participant's audio and video needs.
    SenderReport(Vec<u8>),
    /// Something the SFU did or saw, that playback needs to know.
    Marker(Marker),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// From here on the log holds this simulcast layer (0 is the lowest).
    LayerSwitch { layer: u8 },
    /// The SFU asked the publisher for a keyframe.
    KeyframeRequest,
    /// A moderator paused the track (`true`: the SFU stops forwarding it), or its publisher
    /// resumed it (`false`).
    Muted(bool),
    /// The publisher muted its own track (`true`: it sends silence or black, or nothing), or
    /// unmuted it (`false`).
    SelfMuted(bool),
    /// Records are missing here: `dropped` of them, for `reason`.
    Gap { dropped: u64, reason: GapReason },
}

/// Why records are missing from a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The writer's queue was full: the disk did not keep up, and records were dropped rather
    /// than delaying forwarding.
    QueueFull,
    /// A packet was larger than [`MAX_RECORD_LEN`] (which no UDP datagram is).
    Oversized,
}

/// Why a segment's header cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The data ends inside the header: a segment whose creation was cut short.
    #[error("segment header is truncated")]
    Truncated,
    #[error("not a capture log segment (bad magic)")]
    BadMagic,
    #[error("unsupported capture log version {0}")]
    UnsupportedVersion(u16),
    #[error("segment header is corrupt")]
    Corrupt,
}

impl Record {
    /// Whether the record's bytes are within [`MAX_RECORD_LEN`]. One that is not would read
    /// back as corruption, so the writer writes a gap instead.
    pub fn fits(&self) -> bool {
        match &self.entry {
            Entry::Rtp(bytes) | Entry::SenderReport(bytes) => bytes.len() <= MAX_RECORD_LEN,
            Entry::Marker(_) => true,
        }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let (kind, bytes): (u8, &[u8]) = match &self.entry {
            Entry::Rtp(bytes) => (KIND_RTP, bytes),
            Entry::SenderReport(bytes) => (KIND_SENDER_REPORT, bytes),
            Entry::Marker(marker) => (KIND_MARKER, &marker.encode()),
        };
        out.push(kind);
        out.extend_from_slice(&self.time_us.to_be_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    /// The record at the start of `data` and how many bytes it takes, if `data` starts with a
    /// whole, intact record of a known kind.
    pub fn decode(data: &[u8]) -> Option<(Record, usize)> {
        let prefix = data.get(..RECORD_PREFIX)?;
        let kind = prefix[0];
        let time_us = u64::from_be_bytes(prefix[1..9].try_into().ok()?);
        let len = u32::from_be_bytes(prefix[9..13].try_into().ok()?) as usize;
        if len > MAX_RECORD_LEN {
            return None;
        }
        let size = RECORD_PREFIX + len + 4;
        let covered = data.get(..RECORD_PREFIX + len)?;
        let crc = u32::from_be_bytes(data.get(RECORD_PREFIX + len..size)?.try_into().ok()?);
        if crc32fast::hash(covered) != crc {
            return None;
        }
        let bytes = &covered[RECORD_PREFIX..];
        let entry = match kind {
            KIND_RTP => Entry::Rtp(bytes.to_vec()),
            KIND_SENDER_REPORT => Entry::SenderReport(bytes.to_vec()),
            KIND_MARKER => Entry::Marker(Marker::decode(bytes)?),
            _ => return None,
        };
        Some((Record { time_us, entry }, size))
    }
}

impl Marker {
    fn encode(&self) -> Vec<u8> {
        match *self {
            Marker::LayerSwitch { layer } => vec![MARKER_LAYER_SWITCH, layer],
            Marker::KeyframeRequest => vec![MARKER_KEYFRAME_REQUEST],
            Marker::Muted(muted) => vec![MARKER_MUTED, u8::from(muted)],
            Marker::SelfMuted(muted) => vec![MARKER_SELF_MUTED, u8::from(muted)],
            Marker::Gap { dropped, reason } => {
                let reason = match reason {
                    GapReason::QueueFull => GAP_QUEUE_FULL,
                    GapReason::Oversized => GAP_OVERSIZED,
                };
                let mut bytes = vec![MARKER_GAP, reason];
                bytes.extend_from_slice(&dropped.to_be_bytes());
                bytes
            }
        }
    }

    fn decode(bytes: &[u8]) -> Option<Marker> {
        Some(match *bytes {
            [MARKER_LAYER_SWITCH, layer] => Marker::LayerSwitch { layer },
            [MARKER_KEYFRAME_REQUEST] => Marker::KeyframeRequest,
            [MARKER_MUTED, 0] => Marker::Muted(false),
            [MARKER_MUTED, 1] => Marker::Muted(true),
            [MARKER_SELF_MUTED, 0] => Marker::SelfMuted(false),
            [MARKER_SELF_MUTED, 1] => Marker::SelfMuted(true),
            [MARKER_GAP, reason, ref dropped @ ..] => Marker::Gap {
                dropped: u64::from_be_bytes(dropped.try_into().ok()?),
                reason: match reason {
                    GAP_QUEUE_FULL => GapReason::QueueFull,
                    GAP_OVERSIZED => GapReason::Oversized,
                    _ => return None,
                },
            },
            _ => return None,
        })
    }
}

impl SegmentHeader {
    /// The encoded header. Strings longer than [`MAX_STR_LEN`] are cut (at a character
    /// boundary), and extmaps past the first [`MAX_EXTMAPS`] left out: real SDP values are far
    /// shorter, and so the header stays under [`MAX_RECORD_LEN`].
    pub fn encode(&self) -> Vec<u8> {
        let track = &self.track;
        let mut body = Vec::new();
        body.extend_from_slice(&self.segment_index.to_be_bytes());
        body.extend_from_slice(&track.wall_clock_start_us.to_be_bytes());
        body.extend_from_slice(&track.ssrc.to_be_bytes());
        body.extend_from_slice(&track.clock_rate.to_be_bytes());
        body.push(source_code(track.source));
        put_str(&mut body, &track.participant);
        put_str(&mut body, &track.codec_mime);
        put_str(&mut body, &track.fmtp);
        let extmaps = &track.extmaps[..track.extmaps.len().min(MAX_EXTMAPS)];
        body.push(extmaps.len() as u8);
        for (id, uri) in extmaps {
            body.push(*id);
            put_str(&mut body, uri);
        }
        let mut out = Vec::with_capacity(HEADER_PREFIX + body.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// The header at the start of `data` and how many bytes it takes.
    pub fn decode(data: &[u8]) -> Result<(SegmentHeader, usize), HeaderError> {
        // A segment cut short inside its magic is truncated, not foreign.
        if !MAGIC.starts_with(&data[..data.len().min(MAGIC.len())]) {
            return Err(HeaderError::BadMagic);
        }
        let prefix = data.get(..HEADER_PREFIX).ok_or(HeaderError::Truncated)?;
        let version = u16::from_be_bytes([prefix[8], prefix[9]]);
        if version != VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let len = u32::from_be_bytes([prefix[10], prefix[11], prefix[12], prefix[13]]) as usize;
        if len > MAX_RECORD_LEN {
            return Err(HeaderError::Corrupt);
        }
        let size = HEADER_PREFIX + len + 4;
        let covered = data
            .get(..HEADER_PREFIX + len)
            .ok_or(HeaderError::Truncated)?;
        let crc = data
            .get(HEADER_PREFIX + len..size)
            .ok_or(HeaderError::Truncated)?;
        if crc32fast::hash(covered).to_be_bytes() != crc {
            return Err(HeaderError::Corrupt);
        }
        let header = Body(&covered[HEADER_PREFIX..])
            .header()
            .ok_or(HeaderError::Corrupt)?;
        Ok((header, size))
    }
}

/// A header body being read, front to back.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn header(mut self) -> Option<SegmentHeader> {
        let segment_index = self.u32()?;
        let wall_clock_start_us = u64::from_be_bytes(self.take(8)?.try_into().ok()?);
        let ssrc = self.u32()?;
        let clock_rate = self.u32()?;
        let source = source_from_code(self.u8()?)?;
        let participant = self.str()?;
        let codec_mime = self.str()?;
        let fmtp = self.str()?;
        let extmaps = (0..self.u8()?)
            .map(|_| Some((self.u8()?, self.str()?)))
            .collect::<Option<Vec<_>>>()?;
        if !self.0.is_empty() {
            return None;
        }
        let track = TrackInfo {
            codec_mime,
            clock_rate,
            fmtp,
            extmaps,
            ssrc,
            participant,
            source,
            wall_clock_start_us,
        };
        Some(SegmentHeader {
            track,
            segment_index,
        })
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_STR_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn source_code(source: TrackSource) -> u8 {
    match source {
        TrackSource::Camera => 1,
        TrackSource::Microphone => 2,
        TrackSource::ScreenShare => 3,
        TrackSource::ScreenShareAudio => 4,
    }
}

fn source_from_code(code: u8) -> Option<TrackSource> {
    Some(match code {
        1 => TrackSource::Camera,
        2 => TrackSource::Microphone,
        3 => TrackSource::ScreenShare,
        4 => TrackSource::ScreenShareAudio,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn track() -> TrackInfo {
        TrackInfo {
            codec_mime: "video/VP8".into(),
            clock_rate: 90_000,
            fmtp: "max-fr=30;max-fs=3600".into(),
            extmaps: vec![
                (1, "urn:ietf:params:rtp-hdrext:sdes:mid".into()),
                (
                    3,
                    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time".into(),
                ),
            ],
            ssrc: 0x1234_5678,
            participant: "learner-ana".into(),
            source: TrackSource::ScreenShare,
            wall_clock_start_us: 1_760_000_000_000_000,
        }
    }

    fn encoded(record: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        record.encode(&mut out);
        out
    }

    #[test]
    fn header_round_trips_for_every_source() {
        for source in [
            TrackSource::Camera,
            TrackSource::Microphone,
            TrackSource::ScreenShare,
            TrackSource::ScreenShareAudio,
        ] {
            let header = SegmentHeader {
                track: TrackInfo { source, ..track() },
                segment_index: 7,
            };
            let mut bytes = header.encode();
            let size = bytes.len();
            bytes.extend_from_slice(b"records follow");
            assert_eq!(SegmentHeader::decode(&bytes), Ok((header, size)));
        }
    }

    #[test]
    fn header_cut_short_is_truncated_and_any_flipped_bit_is_caught() {
        let bytes = SegmentHeader {
            track: track(),
            segment_index: 0,
        }
        .encode();
        for end in 0..bytes.len() {
            assert_eq!(
                SegmentHeader::decode(&bytes[..end]),
                Err(HeaderError::Truncated),
                "cut at {end}"
            );
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(SegmentHeader::decode(&flipped).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn header_of_another_file_or_version_is_refused() {
        let mut bytes = SegmentHeader {
            track: track(),
            segment_index: 0,
        }
        .encode();
        assert_eq!(
            SegmentHeader::decode(b"RIFF\0\0\0\0WAVE"),
            Err(HeaderError::BadMagic)
        );
        bytes[9] = 2;
        assert_eq!(
            SegmentHeader::decode(&bytes),
            Err(HeaderError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn header_cuts_overlong_strings_at_a_character_boundary() {
        let header = SegmentHeader {
            track: TrackInfo {
                participant: "é".repeat(1_000),
                ..track()
            },
            segment_index: 0,
        };
        let (decoded, _) = SegmentHeader::decode(&header.encode()).unwrap();
        assert_eq!(decoded.track.participant, "é".repeat(MAX_STR_LEN / 2));
    }

    #[test]
    fn every_kind_of_record_round_trips() {
        let entries = [
            Entry::Rtp(vec![0x80, 96, 0xff, 0xff, 1, 2, 3, 4]),
            Entry::Rtp(Vec::new()),
            Entry::SenderReport(vec![0x80, 200, 0, 6]),
            Entry::Marker(Marker::LayerSwitch { layer: 2 }),
            Entry::Marker(Marker::KeyframeRequest),
            Entry::Marker(Marker::Muted(true)),
            Entry::Marker(Marker::Muted(false)),
            Entry::Marker(Marker::SelfMuted(true)),
            Entry::Marker(Marker::SelfMuted(false)),
            Entry::Marker(Marker::Gap {
                dropped: 12_345,
                reason: GapReason::QueueFull,
            }),
            Entry::Marker(Marker::Gap {
                dropped: 1,
                reason: GapReason::Oversized,
            }),
        ];
        for entry in entries {
            let record = Record {
                time_us: u64::MAX - 1,
                entry,
            };
            let mut bytes = encoded(&record);
            let size = bytes.len();
            bytes.push(0xaa);
            assert_eq!(Record::decode(&bytes), Some((record, size)));
        }
    }

    #[test]
    fn a_record_cut_short_or_with_any_flipped_bit_is_refused() {
        let bytes = encoded(&Record {
            time_us: 1_000,
            entry: Entry::Rtp(vec![0x80, 111, 0, 1, 9, 9, 9]),
        });
        for end in 0..bytes.len() {
            assert_eq!(Record::decode(&bytes[..end]), None, "cut at {end}");
        }
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert_eq!(Record::decode(&flipped), None, "flip of bit {i}");
        }
    }

    #[test]
    fn a_length_over_the_maximum_is_refused_even_with_a_matching_crc() {
        let mut bytes = vec![KIND_RTP];
        bytes.extend_from_slice(&0u64.to_be_bytes());
        bytes.extend_from_slice(&(MAX_RECORD_LEN as u32 + 1).to_be_bytes());
        bytes.resize(RECORD_PREFIX + MAX_RECORD_LEN + 1, 0);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(Record::decode(&bytes), None);
    }

    #[test]
    fn an_unknown_kind_or_marker_is_refused_even_with_a_matching_crc() {
        for (kind, bytes) in [
            (9u8, &[1u8][..]),
            (KIND_MARKER, &[99]),
            (KIND_MARKER, &[3, 2]),
            (KIND_MARKER, &[4, 9, 0, 0, 0, 0, 0, 0, 0, 1]),
        ] {
            let mut data = vec![kind];
            data.extend_from_slice(&0u64.to_be_bytes());
            data.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            data.extend_from_slice(bytes);
            let crc = crc32fast::hash(&data);
            data.extend_from_slice(&crc.to_be_bytes());
            assert_eq!(Record::decode(&data), None);
        }
    }
}
