//! UDP for many peers: one multiplexed socket per shard (first contacts are routed by the
//! STUN ufrag with the SFU's own parser, `aula_sfu::demux`).

pub mod socket;
