//! The SFU's host candidates, and which one each datagram arrived on.
//!
//! All peers share one UDP socket, usually bound to the unspecified address (`0.0.0.0`) so
//! that it answers on loopback and on every interface at once. ICE, however, pairs each
//! datagram with the *local candidate* it was sent to (`rtc` drops a datagram whose local
//! address is not one of its candidates), so the worker learns each datagram's destination
//! address from the kernel (`IP_PKTINFO`) and the router maps it here to the advertised
//! candidate, and a reply goes out from the address the peer talks to.
//!
//! Behind a 1:1 NAT the advertised address (the public one) is not an address of this
//! machine: datagrams arrive on the private address. Such a datagram belongs to the
//! advertised address of the same family and scope (loopback or not), and replies to that
//! candidate are sent from the private address it arrived on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct HostAddrs {
    advertised: Vec<SocketAddr>,
    /// Advertised address -> the local address its datagrams arrive on, where they differ.
    arrives_on: HashMap<SocketAddr, IpAddr>,
}

impl HostAddrs {
    pub fn new(advertised: Vec<SocketAddr>) -> Self {
        Self {
            advertised,
            arrives_on: HashMap::new(),
        }
    }

    /// The host candidate a datagram sent to `local` belongs to: `local` itself when it is
    /// advertised, else the first advertised address with its port, family and scope (a
    /// NAT's public address). `None`: an address nobody was told about (drop the datagram).
    pub fn candidate_for(&mut self, local: SocketAddr) -> Option<SocketAddr> {
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        if self.advertised.contains(&local) {
            return Some(local);
        }
        let candidate = *self.advertised.iter().find(|a| {
            a.port() == local.port()
                && a.is_ipv4() == local.is_ipv4()
                && a.ip().is_loopback() == local.ip().is_loopback()
        })?;
        self.arrives_on.insert(candidate, local.ip());
        Some(candidate)
    }

    /// The address to send from for `candidate` (the local side of an ICE pair).
    pub fn source_for(&self, candidate: SocketAddr) -> IpAddr {
        self.arrives_on
            .get(&candidate)
            .copied()
            .unwrap_or(candidate.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn advertised_addresses_map_to_themselves() {
        let mut hosts = HostAddrs::new(vec![addr("127.0.0.1:7882"), addr("192.0.2.7:7882")]);
        assert_eq!(
            hosts.candidate_for(addr("127.0.0.1:7882")),
            Some(addr("127.0.0.1:7882"))
        );
        assert_eq!(
            hosts.candidate_for(addr("192.0.2.7:7882")),
            Some(addr("192.0.2.7:7882"))
        );
        assert_eq!(
            hosts.source_for(addr("192.0.2.7:7882")),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv4_mapped_destinations_are_ipv4() {
        let mut hosts = HostAddrs::new(vec![addr("127.0.0.1:7882")]);
        assert_eq!(
            hosts.candidate_for(addr("[::ffff:127.0.0.1]:7882")),
            Some(addr("127.0.0.1:7882"))
        );
    }

    #[test]
    fn a_nat_public_address_takes_the_private_arrivals_and_sends_from_them() {
        let public = addr("203.0.113.10:7882");
        let mut hosts = HostAddrs::new(vec![addr("127.0.0.1:7882"), public]);
        assert_eq!(hosts.candidate_for(addr("10.1.2.3:7882")), Some(public));
        assert_eq!(
            hosts.source_for(public),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        // Loopback still answers from loopback.
        assert_eq!(
            hosts.candidate_for(addr("127.0.0.1:7882")),
            Some(addr("127.0.0.1:7882"))
        );
    }

    #[test]
    fn unknown_scope_family_or_port_is_nobody() {
        let mut hosts = HostAddrs::new(vec![addr("192.0.2.7:7882")]);
        assert_eq!(hosts.candidate_for(addr("127.0.0.2:7882")), None);
        assert_eq!(hosts.candidate_for(addr("[2001:db8::1]:7882")), None);
        assert_eq!(hosts.candidate_for(addr("192.0.2.8:9999")), None);
    }
}
