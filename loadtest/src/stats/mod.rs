//! Measurements a subscriber takes without decoding: loss, jitter, frames on screen, and their
//! summaries.

pub mod frames;
pub mod jitter;
pub mod seq;
pub mod summary;

pub use frames::FrameTracker;
pub use jitter::Jitter;
pub use seq::SeqTracker;
pub use summary::Summary;
