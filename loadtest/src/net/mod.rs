//! UDP for many peers: one multiplexed socket per shard, and STUN routing of first contacts.

pub mod socket;
pub mod stun;
