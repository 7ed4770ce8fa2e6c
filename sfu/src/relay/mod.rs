//! Links between Aula nodes (issue 14, item 3): one QUIC connection per pair of nodes with mutual
//! TLS from the cluster CA, RTP and RTCP in QUIC datagrams tagged with a flow id per track, and a
//! reliable control stream beside them.
//!
//! - [`framing`]: pure encoding and decoding of datagrams and control messages.
//! - [`tls`]: the cluster CA, node certificates, and the rustls configs that only trust them.
//! - [`link`]: the quinn endpoint and the link it connects or accepts, with its metrics.
//!
//! Not wired into the router or room placement yet.

pub mod framing;
pub mod link;
pub mod tls;
