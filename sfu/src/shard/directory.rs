//! Which shard a datagram on the shared UDP port is for.
//!
//! Each shard's router routes datagrams to its peers by ufrag (a STUN binding request) and
//! then by source address (see [`crate::demux`]); it mirrors both tables here as it changes
//! them, so that the receive thread can hand a datagram to the right shard before anyone
//! parses it. An address enters only once its shard's router has checked the binding
//! request's integrity, so a spoofed request cannot steer someone's media to another shard.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};

use crate::demux::binding_request_ufrag;

#[derive(Debug, Default)]
pub struct Directory {
    addrs: RwLock<HashMap<SocketAddr, usize>>,
    ufrags: RwLock<HashMap<String, usize>>,
}

impl Directory {
    /// The shard a datagram from `from` is for: the one whose peer its ufrag names if it is a
    /// binding request, else the one whose peer has the address; `None` if no shard knows it.
    pub fn shard_for(&self, from: SocketAddr, data: &[u8]) -> Option<usize> {
        let by_ufrag = binding_request_ufrag(data).and_then(|ufrag| {
            let ufrags = self.ufrags.read().unwrap_or_else(PoisonError::into_inner);
            ufrags.get(ufrag).copied()
        });
        by_ufrag.or_else(|| {
            let addrs = self.addrs.read().unwrap_or_else(PoisonError::into_inner);
            addrs.get(&from).copied()
        })
    }

    pub fn bind_addr(&self, addr: SocketAddr, shard: usize) {
        let mut addrs = self.addrs.write().unwrap_or_else(PoisonError::into_inner);
        addrs.insert(addr, shard);
    }

    /// Forgets `addr` if `shard` has it (another may have bound it since).
    pub fn unbind_addr(&self, addr: SocketAddr, shard: usize) {
        let mut addrs = self.addrs.write().unwrap_or_else(PoisonError::into_inner);
        if addrs.get(&addr) == Some(&shard) {
            addrs.remove(&addr);
        }
    }

    pub fn bind_ufrag(&self, ufrag: &str, shard: usize) {
        let mut ufrags = self.ufrags.write().unwrap_or_else(PoisonError::into_inner);
        ufrags.insert(ufrag.to_owned(), shard);
    }

    pub fn unbind_ufrag(&self, ufrag: &str, shard: usize) {
        let mut ufrags = self.ufrags.write().unwrap_or_else(PoisonError::into_inner);
        if ufrags.get(ufrag) == Some(&shard) {
            ufrags.remove(ufrag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::signed_binding_request;

    #[test]
    fn binding_requests_go_by_ufrag_and_the_rest_by_address() {
        let directory = Directory::default();
        let from: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let request = signed_binding_request("abcd:remote", "password");
        assert_eq!(directory.shard_for(from, &request), None);
        directory.bind_ufrag("abcd", 1);
        assert_eq!(directory.shard_for(from, &request), Some(1));
        assert_eq!(directory.shard_for(from, b"\x80rtp"), None);
        directory.bind_addr(from, 1);
        assert_eq!(directory.shard_for(from, b"\x80rtp"), Some(1));
        directory.unbind_addr(from, 0);
        assert_eq!(
            directory.shard_for(from, b"\x80rtp"),
            Some(1),
            "not shard 0's"
        );
        directory.unbind_addr(from, 1);
        directory.unbind_ufrag("abcd", 1);
        assert_eq!(directory.shard_for(from, &request), None);
    }
}
