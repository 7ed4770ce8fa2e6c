//! Writing an Ogg Opus file (RFC 7845) with the `ogg` crate, for audio without video.
//!
//! The stream is the identification header, the comment header, then the Opus packets as they
//! were sent; each page's granule position counts the 48 kHz samples up to its last packet,
//! which is how players know the duration and seek (by bisection over pages). A page ends every
//! second or so, so that seeking lands within a second. Holes were already filled (see
//! `timeline`), so the samples add up to the time.

use std::io::{self, Write};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use crate::depacketize::opus;
use crate::timeline::TimedFrame;

/// The logical stream's serial number: one stream a file, any number does.
const SERIAL: u32 = 0x4155_4c41;
/// Packets a page: 50 of 20 ms, a second.
const PACKETS_PER_PAGE: usize = 50;

/// Writes `frames` (Opus packets) as Ogg Opus into `dest`, and returns it.
pub fn write<W: Write>(dest: W, frames: &[TimedFrame], channels: u8) -> io::Result<W> {
    let mut writer = PacketWriter::new(dest);
    writer.write_packet(opus::head(channels), SERIAL, PacketWriteEndInfo::EndPage, 0)?;
    writer.write_packet(tags(), SERIAL, PacketWriteEndInfo::EndPage, 0)?;
    let mut granule = 0u64;
    for (i, frame) in frames.iter().enumerate() {
        granule += u64::from(opus::samples(&frame.data));
        let end = if i + 1 == frames.len() {
            PacketWriteEndInfo::EndStream
        } else if (i + 1) % PACKETS_PER_PAGE == 0 {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        writer.write_packet(frame.data.clone(), SERIAL, end, granule)?;
    }
    Ok(writer.into_inner())
}

/// The comment header (RFC 7845 §5.2): the vendor, no comments.
fn tags() -> Vec<u8> {
    let vendor = b"aula";
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());
    tags
}
