//! Keyframe detection from RTP payloads, so a forwarder can start a subscriber (or switch it to
//! another simulcast layer) exactly on a picture the decoder can use on its own.

/// Video codecs the SFU understands well enough to find keyframes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    /// From a mime type such as `video/VP8` (case-insensitive). `None` for audio and codecs we
    /// cannot inspect; those are forwarded without keyframe gating.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let mime = mime.to_ascii_lowercase();
        match mime.as_str() {
            "video/vp8" => Some(Self::Vp8),
            "video/h264" => Some(Self::H264),
            _ => None,
        }
    }

    /// Whether this RTP payload starts a keyframe. Malformed payloads are "not a keyframe".
    pub fn is_keyframe(self, payload: &[u8]) -> bool {
        match self {
            Self::Vp8 => vp8_is_keyframe(payload),
            Self::H264 => h264_is_keyframe(payload),
        }
    }
}

/// RFC 7741 §4.2: skip the VP8 payload descriptor, then bit 0 of the first payload-header byte
/// is the inverse keyframe flag. Only the first packet of a frame (S=1, PID=0) carries it.
fn vp8_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&ext) = payload.get(at) else {
            return false;
        };
        at += 1;
        if ext & 0x80 != 0 {
            // PictureID: 7 bits, or 15 when its M bit is set.
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
}

/// RFC 6184: a keyframe starts with an IDR slice (5) or the SPS (7) sent in front of it, either
/// as a single NAL unit, inside a STAP-A (24), or as the first fragment of an FU-A (28).
fn h264_is_keyframe(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    let is_key = |nal_type: u8| nal_type == IDR || nal_type == SPS;
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        24 => {
            let mut at = 1;
            while let (Some(&hi), Some(&lo)) = (payload.get(at), payload.get(at + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                match payload.get(at + 2) {
                    Some(&nal) if is_key(nal & 0x1f) => return true,
                    Some(_) => at += 2 + size,
                    None => return false,
                }
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        nal_type => is_key(nal_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_and_without_extensions() {
        // S=1, PID=0, no extension; payload header P=0.
        assert!(VideoCodec::Vp8.is_keyframe(&[0x10, 0x00, 0x9d]));
        // Same but P=1: interframe.
        assert!(!VideoCodec::Vp8.is_keyframe(&[0x10, 0x01, 0x9d]));
        // X=1 with I (15-bit picture id), L and T: 1 + 1 + 2 + 1 + 1 bytes of descriptor.
        assert!(VideoCodec::Vp8.is_keyframe(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x00]));
        assert!(!VideoCodec::Vp8.is_keyframe(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x01]));
        // Not the start of a partition.
        assert!(!VideoCodec::Vp8.is_keyframe(&[0x00, 0x00]));
    }

    #[test]
    fn h264_keyframes_in_every_packetization() {
        assert!(VideoCodec::H264.is_keyframe(&[0x65, 0x88])); // IDR
        assert!(!VideoCodec::H264.is_keyframe(&[0x41, 0x9a])); // non-IDR slice
        // STAP-A holding SPS.
        assert!(VideoCodec::H264.is_keyframe(&[0x78, 0x00, 0x02, 0x67, 0x42]));
        // FU-A start of an IDR, and a middle fragment.
        assert!(VideoCodec::H264.is_keyframe(&[0x7c, 0x85, 0x00]));
        assert!(!VideoCodec::H264.is_keyframe(&[0x7c, 0x05, 0x00]));
    }

    #[test]
    fn truncated_payloads_are_not_keyframes() {
        for codec in [VideoCodec::Vp8, VideoCodec::H264] {
            for len in 0..4 {
                let _ = codec.is_keyframe(&[0xff; 4][..len]);
            }
            assert!(!codec.is_keyframe(&[]));
        }
        // STAP-A whose length field points past the end.
        assert!(!VideoCodec::H264.is_keyframe(&[0x78, 0xff, 0xff]));
    }
}
