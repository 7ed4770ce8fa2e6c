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

    /// The picture size a keyframe payload declares, for codecs where it is cheap to read
    /// (VP8 carries it in every keyframe header; H.264's is in the SPS, not read here).
    pub fn keyframe_size(self, payload: &[u8]) -> Option<(u32, u32)> {
        match self {
            Self::Vp8 => vp8_keyframe_size(payload),
            Self::H264 => None,
        }
    }
}

/// The VP8 payload descriptor's picture numbers (RFC 7741 §4.2), from which a receiver finds
/// each frame's references (with temporal layers, Chrome keeps per-TL0PICIDX state). Each
/// simulcast layer's encoder numbers its pictures on its own, so a forwarder switching layers
/// must keep them continuous, as it does the sequence numbers; otherwise the receiver can take
/// a new layer's frame for one of the old layer's, and wait for a reference that never comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Numbers {
    /// The 15-bit picture ID. A 7-bit one is read as `None` and left alone: no browser sends
    /// them, and rewriting one would need the payload to grow.
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
}

impl Vp8Numbers {
    /// The numbers of any VP8 packet (every packet of a frame carries them). `None` for a
    /// malformed descriptor.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let at = Vp8Descriptor::parse(payload)?;
        Some(Self {
            picture_id: at
                .picture_id
                .map(|i| u16::from_be_bytes([payload[i], payload[i + 1]]) & 0x7fff),
            tl0_pic_idx: at.tl0_pic_idx.map(|i| payload[i]),
        })
    }

    /// Writes these numbers over the ones `payload` carries; fields the payload does not carry
    /// are not added.
    pub fn write(self, payload: &mut [u8]) {
        let Some(at) = Vp8Descriptor::parse(payload) else {
            return;
        };
        if let (Some(i), Some(id)) = (at.picture_id, self.picture_id) {
            let [hi, lo] = (id & 0x7fff).to_be_bytes();
            payload[i] = 0x80 | hi;
            payload[i + 1] = lo;
        }
        if let (Some(i), Some(tl0)) = (at.tl0_pic_idx, self.tl0_pic_idx) {
            payload[i] = tl0;
        }
    }
}

/// A VP8 frame's temporal layer (RFC 7741 §4.2, the T/K byte), read so that a forwarder can
/// lower a subscriber's frame rate by dropping the frames of the upper layers. Chromium sends
/// it on every packet of a simulcast layer encoded with temporal layers (L1T2, L1T3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Temporal {
    /// TID: 0 is the base layer, which no frame of a higher layer is needed to decode.
    pub id: u8,
    /// The Y bit: this frame references only base-layer (TID 0) frames, so a receiver that
    /// had none of this layer's earlier frames can start on it: where to switch up.
    pub sync: bool,
}

impl Vp8Temporal {
    /// `None` when the descriptor carries no TID (the T bit is clear, as from encoders without
    /// temporal layers), or is malformed.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let at = Vp8Descriptor::parse(payload)?.tid?;
        Some(Self {
            id: payload[at] >> 6,
            sync: payload[at] & 0x20 != 0,
        })
    }
}

/// Where the fields of a VP8 payload descriptor are (RFC 7741 §4.2); every index is in bounds.
struct Vp8Descriptor {
    /// First of the two bytes of a 15-bit picture ID.
    picture_id: Option<usize>,
    tl0_pic_idx: Option<usize>,
    /// The TID/Y/KEYIDX byte, when the T bit says it holds a TID.
    tid: Option<usize>,
    /// Length of the descriptor: where the VP8 payload starts.
    len: usize,
}

impl Vp8Descriptor {
    fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let mut descriptor = Self {
            picture_id: None,
            tl0_pic_idx: None,
            tid: None,
            len: 1,
        };
        if first & 0x80 == 0 {
            return Some(descriptor);
        }
        let ext = *payload.get(1)?;
        let mut at = 2;
        if ext & 0x80 != 0 {
            // PictureID: 7 bits, or 15 when its M bit is set.
            if *payload.get(at)? & 0x80 != 0 {
                payload.get(at + 1)?;
                descriptor.picture_id = Some(at);
                at += 2;
            } else {
                at += 1;
            }
        }
        if ext & 0x40 != 0 {
            payload.get(at)?;
            descriptor.tl0_pic_idx = Some(at);
            at += 1;
        }
        if ext & 0x30 != 0 {
            // TID/Y/KEYIDX, present when either T or K is set; TID is valid only with T.
            payload.get(at)?;
            if ext & 0x20 != 0 {
                descriptor.tid = Some(at);
            }
            at += 1;
        }
        descriptor.len = at;
        Some(descriptor)
    }
}

/// RFC 7741 §4.2: the VP8 payload header (the bytes after the payload descriptor), present
/// only in the first packet of a frame (S=1, PID=0).
fn vp8_payload_header(payload: &[u8]) -> Option<&[u8]> {
    let first = *payload.first()?;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return None;
    }
    let descriptor = Vp8Descriptor::parse(payload)?;
    payload
        .get(descriptor.len..)
        .filter(|header| !header.is_empty())
}

/// Bit 0 of the first payload-header byte is the inverse keyframe flag.
fn vp8_is_keyframe(payload: &[u8]) -> bool {
    vp8_payload_header(payload).is_some_and(|header| header[0] & 0x01 == 0)
}

/// RFC 6386 §9.1: a keyframe's 3-byte frame tag is followed by the start code 9d 01 2a and
/// the 14-bit width and height (little-endian, the top two bits are scaling).
fn vp8_keyframe_size(payload: &[u8]) -> Option<(u32, u32)> {
    let header = vp8_payload_header(payload)?;
    if header[0] & 0x01 != 0 || header.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let dimension = |at: usize| -> Option<u32> {
        let bytes = header.get(at..at + 2)?;
        Some(u32::from(u16::from_le_bytes([bytes[0], bytes[1]]) & 0x3fff))
    };
    Some((dimension(6)?, dimension(8)?))
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
    fn vp8_numbers_are_read_and_written_in_place() {
        // X, I (15-bit id 0x0123), L (TL0PICIDX 7), T, then the payload header.
        let mut payload = [0x90, 0xe0, 0x81, 0x23, 0x07, 0x20, 0x00];
        let numbers = Vp8Numbers::read(&payload).unwrap();
        assert_eq!(numbers.picture_id, Some(0x0123));
        assert_eq!(numbers.tl0_pic_idx, Some(7));
        Vp8Numbers {
            picture_id: Some(0x7abc),
            tl0_pic_idx: Some(200),
        }
        .write(&mut payload);
        assert_eq!(payload, [0x90, 0xe0, 0xfa, 0xbc, 200, 0x20, 0x00]);
        assert!(
            VideoCodec::Vp8.is_keyframe(&payload),
            "the rest is untouched"
        );
        // A 7-bit picture id is not read (nor written), no extension means no numbers.
        let mut short = [0x90, 0x80, 0x05, 0x00];
        assert_eq!(Vp8Numbers::read(&short), Some(Vp8Numbers::default()));
        numbers.write(&mut short);
        assert_eq!(short, [0x90, 0x80, 0x05, 0x00]);
        assert_eq!(Vp8Numbers::read(&[0x10, 0x00]), Some(Vp8Numbers::default()));
        // Truncated descriptors are malformed, and writing into them changes nothing.
        for len in 0..5 {
            assert_eq!(Vp8Numbers::read(&payload[..len]), None, "{len} bytes");
            let mut truncated = payload[..len].to_vec();
            numbers.write(&mut truncated);
            assert_eq!(truncated, payload[..len]);
        }
    }

    #[test]
    fn vp8_temporal_layer_is_read_from_the_t_byte() {
        // As Chromium sends an L1T3 layer: X; I (15-bit id), L, T; TID 2 with Y; 0x9d...
        let tid2_sync = [0x90, 0xe0, 0x81, 0x23, 0x07, 0xa0, 0x9d];
        assert_eq!(
            Vp8Temporal::read(&tid2_sync),
            Some(Vp8Temporal { id: 2, sync: true })
        );
        // TID 1 without Y, KEYIDX bits set (ignored), not the start of a partition.
        let tid1 = [0x80, 0xe0, 0x81, 0x24, 0x07, 0x45, 0x00];
        assert_eq!(
            Vp8Temporal::read(&tid1),
            Some(Vp8Temporal { id: 1, sync: false })
        );
        // The base layer of a keyframe: TID 0, Y set.
        let key = [0x90, 0xe0, 0x81, 0x25, 0x08, 0x20, 0x00];
        assert_eq!(
            Vp8Temporal::read(&key),
            Some(Vp8Temporal { id: 0, sync: true })
        );
        // K without T: the byte is there (the payload header follows it) but holds no TID.
        let keyidx_only = [0x90, 0x90, 0x81, 0x23, 0x05, 0x00];
        assert_eq!(Vp8Temporal::read(&keyidx_only), None);
        assert!(VideoCodec::Vp8.is_keyframe(&keyidx_only));
        // No extension at all (a publisher without temporal layers), and a truncated T byte.
        assert_eq!(Vp8Temporal::read(&[0x10, 0x00]), None);
        assert_eq!(Vp8Temporal::read(&tid2_sync[..5]), None);
    }

    #[test]
    fn vp8_keyframe_size_is_read_from_the_frame_header() {
        // Descriptor (S=1), frame tag (keyframe), start code, 640 (scale bits set) x 360.
        let mut payload = vec![0x10, 0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a];
        payload.extend_from_slice(&(640u16 | 0xc000).to_le_bytes());
        payload.extend_from_slice(&360u16.to_le_bytes());
        assert_eq!(VideoCodec::Vp8.keyframe_size(&payload), Some((640, 360)));
        for len in 0..payload.len() {
            assert_eq!(VideoCodec::Vp8.keyframe_size(&payload[..len]), None);
        }
        payload[1] |= 0x01; // an interframe has no size
        assert_eq!(VideoCodec::Vp8.keyframe_size(&payload), None);
        assert_eq!(VideoCodec::H264.keyframe_size(&[0x65, 0x88]), None);
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
