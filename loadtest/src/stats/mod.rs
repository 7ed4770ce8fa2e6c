//! Measurements a subscriber takes without decoding: loss, jitter, and their summaries.

pub mod jitter;
pub mod seq;
pub mod summary;

pub use jitter::Jitter;
pub use seq::SeqTracker;
pub use summary::Summary;
