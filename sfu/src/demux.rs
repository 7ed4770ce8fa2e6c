//! Which peer a datagram on the shared UDP port belongs to.
//!
//! All peers share one socket. A peer's first datagram is a STUN binding request whose
//! USERNAME is `<our ufrag>:<their ufrag>` (RFC 8445 §7.2.2); the SFU gives every peer
//! connection its own ufrag, so the request names the peer. From then on the source address
//! identifies it.
//!
//! The ufrag travels in clear, so anyone who sees one request can name the peer. A new source
//! address is therefore bound to a peer only by a request whose MESSAGE-INTEGRITY checks out
//! against the peer's ICE password ([`binding_request_authentic`], RFC 8445 §7.3): otherwise one
//! spoofed request would let its sender feed the peer anything.

use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::Message;

/// STUN magic cookie (RFC 8489 §5), in network order at bytes 4..8.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// If `datagram` is a STUN binding request, the local (our) ufrag from its USERNAME.
/// Anything malformed is `None`: the caller drops and counts it.
pub fn binding_request_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < HEADER_LEN || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let message_type = u16::from_be_bytes([datagram[0], datagram[1]]);
    if message_type != BINDING_REQUEST {
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

/// Whether `datagram` (a binding request) carries a MESSAGE-INTEGRITY made with `password`
/// (the short-term credential of the peer it names). Anything malformed is not.
pub fn binding_request_authentic(datagram: &[u8], password: &str) -> bool {
    let Ok(provider) = rtc::crypto::default_provider() else {
        return false;
    };
    let mut message = Message::new();
    message.unmarshal_binary(datagram).is_ok()
        && MessageIntegrity::check(&mut message, password.as_bytes(), provider.crypto()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let padded = username.len().div_ceil(4) * 4;
        // A PRIORITY attribute first, to check we skip attributes.
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
    fn integrity_is_checked_against_the_password() {
        let request = crate::sim::signed_binding_request("ours:theirs", "the-right-password");
        assert_eq!(binding_request_ufrag(&request), Some("ours"));
        assert!(binding_request_authentic(&request, "the-right-password"));
        assert!(!binding_request_authentic(&request, "a-wrong-password"));
        let mut tampered = request.clone();
        let last = tampered.len() - 9; // inside the integrity value, before the fingerprint
        tampered[last] ^= 1;
        assert!(!binding_request_authentic(&tampered, "the-right-password"));
        // No integrity at all (as a spoofer who only saw the ufrag would send).
        assert!(!binding_request_authentic(
            &binding_request(b"ours:theirs"),
            "the-right-password"
        ));
        for len in 0..request.len() {
            assert!(!binding_request_authentic(
                &request[..len],
                "the-right-password"
            ));
        }
    }

    #[test]
    fn finds_our_ufrag() {
        let msg = binding_request(b"serverufrag:clientufrag");
        assert_eq!(binding_request_ufrag(&msg), Some("serverufrag"));
    }

    #[test]
    fn rejects_malformed() {
        let good = binding_request(b"abc:def");
        for len in 0..good.len() {
            // Every truncation either parses to the right answer or to None, never panics.
            let got = binding_request_ufrag(&good[..len]);
            assert!(got.is_none() || got == Some("abc"));
        }
        let mut wrong_cookie = good.clone();
        wrong_cookie[4] = 0;
        assert_eq!(binding_request_ufrag(&wrong_cookie), None);
        let mut response = good.clone();
        response[1] = 0x01;
        response[0] = 0x01; // binding success response
        assert_eq!(binding_request_ufrag(&response), None);
        assert_eq!(binding_request_ufrag(&binding_request(b":x")), None);
        assert_eq!(binding_request_ufrag(&binding_request(&[0xff, 0xfe])), None);
    }
}
