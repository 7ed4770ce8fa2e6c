//! ULPFEC (RFC 5109) packets: XOR parity over a group of RTP packets, one level, as libwebrtc
//! sends and receives them for VP8.
//!
//! An FEC packet's payload (carried in RED, see [`super`]) is a 10-byte FEC header, a 4-byte
//! (or 8-byte, with a 48-bit mask) level-0 header, then the XOR of the protected packets'
//! bytes after their 12-byte fixed RTP headers (header extensions and payload), each padded
//! with zeros to the longest (§7.3):
//!
//! ```text
//! E L P X CC(4) | M PT(7) | SN base(16) | TS recovery(32) | length recovery(16)
//! protection length(16) | mask(16 or 48)
//! ```
//!
//! The fields named "recovery" are the XOR of the protected packets' own fields (first two
//! bytes, timestamp, length after the fixed header); bit *i* of the mask, from the most
//! significant, says that the packet numbered SN base + *i* is protected. When all but one of
//! a group arrived, XOR-ing them into the FEC packet gives the missing one back: [`recover`],
//! which the SFU does not need itself (browsers do it), is here to test [`encode`] against
//! and to fuzz.

/// Bytes of the FEC header.
const FEC_HEADER: usize = 10;
/// Bytes of the RTP fixed header, which the parity leaves out (sequence number and SSRC are
/// known from elsewhere).
const RTP_HEADER: usize = 12;
/// Packets a short (16-bit) mask covers; longer spans take the 48-bit mask.
const SHORT_MASK: usize = 16;
/// The most sequence numbers one FEC packet can span.
pub const MAX_SPAN: usize = 48;

/// The FEC payload protecting `packets` (whole RTP packets, as the receiver will see them:
/// see [`super::stage`]), which must be at most [`MAX_SPAN`] sequence numbers apart and
/// number at least one; `None` otherwise, or if a packet is shorter than an RTP header.
pub fn encode(packets: &[&[u8]]) -> Option<Vec<u8>> {
    let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
    if packets.is_empty() || packets.iter().any(|p| p.len() < RTP_HEADER) {
        return None;
    }
    let base = packets
        .iter()
        .map(|p| seq(p))
        .min_by_key(|&s| s.wrapping_sub(seq(packets[0])) as i16)?;
    let offsets: Vec<usize> = packets
        .iter()
        .map(|p| usize::from(seq(p).wrapping_sub(base)))
        .collect();
    let span = offsets.iter().max().copied()? + 1;
    if span > MAX_SPAN {
        return None;
    }
    let long = span > SHORT_MASK;
    let mask_len = if long { 6 } else { 2 };
    let protection = packets.iter().map(|p| p.len() - RTP_HEADER).max()?;
    let level_header = 2 + mask_len;
    let mut out = vec![0; FEC_HEADER + level_header + protection];
    let mut mask = 0u64;
    for (packet, offset) in packets.iter().zip(&offsets) {
        out[0] ^= packet[0];
        out[1] ^= packet[1];
        for i in 4..8 {
            out[i] ^= packet[i];
        }
        let length = ((packet.len() - RTP_HEADER) as u16).to_be_bytes();
        out[8] ^= length[0];
        out[9] ^= length[1];
        for (o, b) in out[FEC_HEADER + level_header..]
            .iter_mut()
            .zip(&packet[RTP_HEADER..])
        {
            *o ^= b;
        }
        mask |= 1 << (47 - offset);
    }
    // E = 0 (no extension), L as the mask's length; the version bits XOR-ed in go.
    out[0] = (out[0] & 0x3f) | if long { 0x40 } else { 0 };
    out[2..4].copy_from_slice(&base.to_be_bytes());
    out[FEC_HEADER..FEC_HEADER + 2].copy_from_slice(&(protection as u16).to_be_bytes());
    out[FEC_HEADER + 2..FEC_HEADER + level_header]
        .copy_from_slice(&mask.to_be_bytes()[2..2 + mask_len]);
    Some(out)
}

/// What an FEC payload says it protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The sequence numbers of the protected packets.
    pub protected: Vec<u16>,
    /// Bytes of parity after the headers.
    pub protection_length: usize,
    /// Where the parity starts in the payload.
    parity_at: usize,
}

/// Parses an FEC payload's headers; `None` if it is cut short or malformed (an extension
/// bit, no protected packet, or less parity than it announces).
pub fn parse(fec: &[u8]) -> Option<Header> {
    let first = *fec.first()?;
    if first & 0x80 != 0 {
        return None;
    }
    let mask_len = if first & 0x40 != 0 { 6 } else { 2 };
    let parity_at = FEC_HEADER + 2 + mask_len;
    let headers = fec.get(..parity_at)?;
    let base = u16::from_be_bytes([headers[2], headers[3]]);
    let protection_length = usize::from(u16::from_be_bytes([headers[10], headers[11]]));
    let mut mask = [0u8; 8];
    mask[2..2 + mask_len].copy_from_slice(&headers[12..parity_at]);
    let mask = u64::from_be_bytes(mask);
    let protected: Vec<u16> = (0..MAX_SPAN)
        .filter(|i| mask & (1 << (47 - i)) != 0)
        .map(|i| base.wrapping_add(i as u16))
        .collect();
    if protected.is_empty() || fec.len() < parity_at + protection_length {
        return None;
    }
    Some(Header {
        protected,
        protection_length,
        parity_at,
    })
}

/// The one packet of an FEC packet's group that did not arrive, rebuilt from the FEC payload
/// `fec`, the others of the group (`received`: whole RTP packets, any order; others are
/// ignored), and the stream's `ssrc`. `None` unless exactly one protected packet is missing,
/// or if the input does not add up (lengths past the parity).
pub fn recover(fec: &[u8], received: &[&[u8]], ssrc: u32) -> Option<Vec<u8>> {
    let header = parse(fec)?;
    let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
    let group: Vec<&[u8]> = received
        .iter()
        .copied()
        .filter(|p| p.len() >= RTP_HEADER && header.protected.contains(&seq(p)))
        .collect();
    let missing: Vec<u16> = header
        .protected
        .iter()
        .copied()
        .filter(|s| !group.iter().any(|p| seq(p) == *s))
        .collect();
    let [missing] = missing[..] else {
        return None;
    };
    let mut first = [fec[0], fec[1]];
    let mut timestamp = [fec[4], fec[5], fec[6], fec[7]];
    let mut length = [fec[8], fec[9]];
    let mut parity = fec[header.parity_at..header.parity_at + header.protection_length].to_vec();
    for packet in &group {
        first[0] ^= packet[0];
        first[1] ^= packet[1];
        for (t, b) in timestamp.iter_mut().zip(&packet[4..8]) {
            *t ^= b;
        }
        let len = ((packet.len() - RTP_HEADER) as u16).to_be_bytes();
        length[0] ^= len[0];
        length[1] ^= len[1];
        if packet.len() - RTP_HEADER > parity.len() {
            return None;
        }
        for (p, b) in parity.iter_mut().zip(&packet[RTP_HEADER..]) {
            *p ^= b;
        }
    }
    let length = usize::from(u16::from_be_bytes(length));
    if length > parity.len() {
        return None;
    }
    let mut out = Vec::with_capacity(RTP_HEADER + length);
    out.push(0x80 | (first[0] & 0x3f));
    out.push(first[1]);
    out.extend_from_slice(&missing.to_be_bytes());
    out.extend_from_slice(&timestamp);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&parity[..length]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet: `seq`, marker, payload type 96, a timestamp per frame, SSRC 7, then
    /// `payload`; with a one-byte header extension when `ext` is set.
    fn packet(seq: u16, marker: bool, timestamp: u32, ext: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x80 | if ext { 0x10 } else { 0 },
            96 | u8::from(marker) << 7,
        ];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        if ext {
            p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        }
        p.extend_from_slice(payload);
        p
    }

    fn frame(first_seq: u16, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                let seq = first_seq.wrapping_add(i as u16);
                let len = 30 + (i * 37) % 200;
                let body: Vec<u8> = (0..len)
                    .map(|b| (b as u8).wrapping_mul(seq as u8))
                    .collect();
                packet(seq, i + 1 == count, 90_000, i % 3 == 0, &body)
            })
            .collect()
    }

    #[test]
    fn any_single_loss_of_a_group_is_recovered_exactly() {
        for (first, count) in [(100, 1), (200, 5), (65_530, 12), (1_000, 16), (5, 48)] {
            let packets = frame(first, count);
            let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
            let fec = encode(&refs).expect("encodes");
            let header = parse(&fec).expect("parses");
            assert_eq!(header.protected.len(), count);
            for lost in 0..count {
                let others: Vec<&[u8]> =
                    (0..count).filter(|&i| i != lost).map(|i| refs[i]).collect();
                assert_eq!(
                    recover(&fec, &others, 7).as_deref(),
                    Some(refs[lost]),
                    "group of {count} from {first}, lost #{lost}"
                );
            }
        }
    }

    #[test]
    fn two_losses_in_a_group_or_none_recover_nothing() {
        let packets = frame(10, 6);
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let fec = encode(&refs).unwrap();
        assert_eq!(recover(&fec, &refs[2..], 7), None, "two lost");
        assert_eq!(recover(&fec, &refs, 7), None, "nothing lost");
    }

    #[test]
    fn interleaved_groups_each_repair_their_own_loss() {
        // Three FEC packets over twelve media packets, packet i in group i % 3: a burst of
        // three losses in a row is one loss per group.
        let packets = frame(300, 12);
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let fecs: Vec<Vec<u8>> = (0..3)
            .map(|g| {
                let group: Vec<&[u8]> = (g..12).step_by(3).map(|i| refs[i]).collect();
                encode(&group).unwrap()
            })
            .collect();
        let arrived: Vec<&[u8]> = (0..12)
            .filter(|i| !(4..7).contains(i))
            .map(|i| refs[i])
            .collect();
        let mut back: Vec<Vec<u8>> = fecs
            .iter()
            .filter_map(|f| recover(f, &arrived, 7))
            .collect();
        back.sort_by_key(|p| u16::from_be_bytes([p[2], p[3]]));
        assert_eq!(back, packets[4..7].to_vec());
    }

    #[test]
    fn the_header_is_libwebrtc_s_layout() {
        let packets = frame(1_000, 2);
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let fec = encode(&refs).unwrap();
        assert_eq!(fec[0] & 0xc0, 0, "E and L clear for a short mask");
        assert_eq!(u16::from_be_bytes([fec[2], fec[3]]), 1_000, "SN base");
        assert_eq!(&fec[12..14], &[0xc0, 0x00], "mask: the first two numbers");
        let protection = u16::from_be_bytes([fec[10], fec[11]]) as usize;
        assert_eq!(
            protection,
            packets.iter().map(|p| p.len() - 12).max().unwrap()
        );
        assert_eq!(fec.len(), 14 + protection);
        let long = frame(0, 17);
        let refs: Vec<&[u8]> = long.iter().map(Vec::as_slice).collect();
        let fec = encode(&refs).unwrap();
        assert_eq!(fec[0] & 0xc0, 0x40, "L set for a 48-bit mask");
        assert_eq!(parse(&fec).unwrap().protected.len(), 17);
    }

    #[test]
    fn spans_too_long_and_short_packets_are_refused() {
        let packets = frame(0, 49);
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        assert_eq!(encode(&refs), None);
        assert_eq!(encode(&[]), None);
        assert_eq!(encode(&[&[0x80, 96, 0, 1][..]]), None);
    }

    #[test]
    fn malformed_fec_payloads_are_refused() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x80; 20]), None, "extension bit");
        assert_eq!(parse(&[0; 14]), None, "empty mask");
        let mut cut = encode(&[&frame(0, 1)[0][..]]).unwrap();
        cut.pop();
        assert_eq!(parse(&cut), None, "less parity than announced");
    }
}
