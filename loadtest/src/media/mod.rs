//! What publishers send: synthetic VP8 and Opus-sized payloads carrying their send time.

pub mod audio;
pub mod source;
pub mod vp8;
