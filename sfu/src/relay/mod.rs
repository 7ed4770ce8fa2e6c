//! Links between Aula nodes (issue 14, item 3): one QUIC connection per pair of nodes with mutual
//! TLS from the cluster CA, RTP and RTCP in QUIC datagrams tagged with a flow id per track, and a
//! reliable control stream beside them.
//!
//! - [`framing`]: pure encoding and decoding of datagrams and control messages.
//! - [`tls`]: the cluster CA, node certificates, and the rustls configs that only trust them.
//! - [`link`]: the quinn endpoint and the link it connects or accepts, with its metrics.
//! - [`track`]: a track as carried to another node, and its flow ids.
//! - [`impaired_socket`]: delay and loss under a link's socket, for load tests.
//! - [`repair`]: loss repair on the link (gaps noticed by the receiver, resent by the sender).
//!
//! The router's side (exporting a track to a link, importing one from it) is
//! `router::relay`; the control plane decides what goes where.

pub mod framing;
pub mod impaired_socket;
pub mod link;
pub mod repair;
pub mod tls;
pub mod track;
