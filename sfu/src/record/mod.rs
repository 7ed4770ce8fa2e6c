//! The capture log: what a recording stores of each published track, crash-safe by
//! construction (issue 13, item 2).
//!
//! Every track being recorded gets a log: its packets after SRTP decryption (RTP), the
//! publisher's RTCP sender reports (for lip sync), and markers of what the SFU did (layer
//! switches, keyframe requests, mute, gaps). Exporting a log to a playable file is a separate
//! step, after the recording; the log is only made to survive anything that can happen while
//! recording.
//!
//! How it survives:
//!
//! - **Append-only.** A byte once written is never rewritten, so a crash can only damage the
//!   end of the file: the record being appended.
//! - **A CRC32 per record**, and one over each segment's header. The reader tells an intact
//!   record from a torn or corrupt one without trusting anything else, cuts a torn last record
//!   off, and resyncs past corruption in the middle ([`reader`] explains how).
//! - **Segments.** A log is a series of files of at most 10 s or 8 MiB each; each starts with
//!   the full header, so each can be read alone, and damage to one costs at most that one.
//! - **Flush and fsync policy.** The writer hands its buffer to the OS at most 1 s after writing
//!   into it, and fsyncs each segment (and the directory) when closing it.
//!
//! So a `kill -9` of the server loses at most the last second before it, plus what was still
//! queued for the writer (a fraction of a second: see [`writer::DEFAULT_QUEUE_CAPACITY`]), since
//! the OS keeps what was flushed. A power cut or kernel crash loses at most what came after the
//! last fsync, the open segment. And the disk can never slow forwarding down: the router only
//! pushes into a bounded queue, and a full queue drops records and leaves a gap marker, never
//! waits ([`writer`]).
//!
//! - [`format`]: the bytes on disk (pure).
//! - [`reader`]: reading a segment back (pure).
//! - [`policy`]: when to flush and when to start the next segment (pure, time passed in).
//! - [`writer`]: the writer thread, its queue, and the files.
//! - [`segment_files`]: the segments' file names.
//! - [`capture`]: what the router records of each track, and when (which layer, keyframes).

pub mod capture;
pub mod format;
pub mod policy;
pub mod reader;
pub mod segment_files;
pub mod writer;
