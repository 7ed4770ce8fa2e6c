//! Exporting recordings without transcoding (issue 13, item 4): the SFU's capture logs (see
//! `aula_sfu::record`) become files a browser plays and seeks, WebM (VP8 + Opus) for each
//! participant's camera with microphone and screen share, Ogg Opus for audio alone, and a
//! `manifest.json` that places them on one timeline.
//!
//! Why these steps, in this order:
//!
//! 1. [`log`] reads every track log; the segment reader already skips damage, so a corrupt
//!    record costs only that record, and the export carries on.
//! 2. [`timeline`] splits a log at simulcast layer switches, [`reorder`]s each RTP stream by
//!    sequence number (wraparound, reordering, duplicates), [`depacketize`]s it into frames
//!    (video resumes at a keyframe after any loss; the stretch is marked), and maps every frame
//!    onto the server's clock with [`sync`], from the sender reports, so that a participant's
//!    audio and video are in sync whatever the network did to each.
//! 3. [`webm`] and [`ogg`] mux the frames as they were sent: no decoding, no encoding, so an
//!    export costs a file copy's worth of CPU, and loses nothing. libwebm writes cues and a
//!    duration, without which Chrome cannot seek in a WebM.
//! 4. [`manifest`] says which file is whose, where it starts on the shared timeline, and where
//!    media was lost.
//!
//! Everything but [`log`] and [`export`] is pure: bytes or frames in, frames or bytes out.

pub mod depacketize;
pub mod export;
pub mod log;
pub mod manifest;
pub mod ogg;
pub mod reorder;
pub mod rtp;
pub mod sync;
pub mod timeline;
pub mod webm;

pub use export::{ExportError, export};
