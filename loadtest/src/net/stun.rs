//! Which peer a server's first STUN request is for.
//!
//! Before a peer has sent anything to an address, the only way to route a datagram from it is
//! the request's USERNAME, `<our ufrag>:<their ufrag>` (RFC 8445 §7.2.2); each peer's ufrag
//! is its own, so it names the peer.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// If `datagram` is a STUN binding request, the receiver's (our) ufrag. Malformed is `None`.
pub fn binding_request_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < HEADER_LEN || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    if u16::from_be_bytes([datagram[0], datagram[1]]) != BINDING_REQUEST {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = datagram.get(HEADER_LEN..HEADER_LEN + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let attr_type = u16::from_be_bytes([body[at], body[at + 1]]);
        let attr_len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + attr_len)?;
        if attr_type == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to a multiple of four bytes.
        at += 4 + attr_len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let padded = username.len().div_ceil(4) * 4;
        // A PRIORITY attribute first, so the parser must skip one.
        let mut body = vec![0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
        body.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        body.extend_from_slice(&(username.len() as u16).to_be_bytes());
        body.extend_from_slice(username);
        body.resize(8 + 4 + padded, 0);
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn finds_our_ufrag_and_survives_truncation() {
        let msg = binding_request(b"ours:theirs");
        assert_eq!(binding_request_ufrag(&msg), Some("ours"));
        for len in 0..msg.len() {
            let got = binding_request_ufrag(&msg[..len]);
            assert!(got.is_none() || got == Some("ours"));
        }
        let mut response = msg.clone();
        response[0] = 0x01;
        assert_eq!(binding_request_ufrag(&response), None);
    }
}
