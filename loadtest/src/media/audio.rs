//! Opus-sized audio payloads carrying their send time.
//!
//! The SFU forwards audio without looking inside, so the payload only has to be the right size
//! at the right rate: Opus at ~32 kbit/s in 20 ms frames is 80 bytes 50 times a second. The
//! first 8 bytes are the send time ([`crate::clock::Epoch`] microseconds, big-endian).

use bytes::{BufMut, Bytes, BytesMut};

/// Opus frame duration browsers use; 50 packets a second.
pub const FRAME_MILLIS: u64 = 20;
/// RTP clock ticks per frame at Opus's 48 kHz clock.
pub const RTP_TICKS_PER_FRAME: u32 = 960;
/// 32 kbit/s at 50 packets a second.
pub const PAYLOAD_BYTES: usize = 80;

/// One audio payload stamped with `sent_at`.
pub fn payload(sent_at: u64) -> Bytes {
    let mut body = BytesMut::with_capacity(PAYLOAD_BYTES);
    body.put_u64(sent_at);
    body.put_bytes(0x5a, PAYLOAD_BYTES - 8);
    body.freeze()
}

/// The send time of a payload written by [`payload`]; `None` if it is too short.
pub fn sent_at(payload: &[u8]) -> Option<u64> {
    let stamp: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let p = payload(123_456_789);
        assert_eq!(p.len(), PAYLOAD_BYTES);
        assert_eq!(sent_at(&p), Some(123_456_789));
        assert_eq!(sent_at(&p[..7]), None);
    }
}
