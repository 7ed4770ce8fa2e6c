//! From RTP packets back to the codec's frames, which is what a file stores. Pure.
//!
//! - [`vp8`]: several packets a frame, and a frame is only usable if all of it arrived and the
//!   picture it builds on was shown: after a loss, video resumes at the next keyframe.
//! - [`opus`]: one packet a frame, each decodable alone: a loss is a short silence.

pub mod opus;
pub mod vp8;

/// A frame of a stream, as the codec encoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The stream's RTP timestamp, unwrapped (see `reorder`).
    pub timestamp: i64,
    pub data: Vec<u8>,
    /// Whether it decodes without the frames before it (always, for audio).
    pub keyframe: bool,
    /// Media was lost just before this frame, from this RTP timestamp on: the first frame not
    /// shown (video), or the end of the last frame played (audio).
    pub lost_since: Option<i64>,
}
