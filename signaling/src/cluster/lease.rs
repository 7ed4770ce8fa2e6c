//! Room origin leases: which node holds a room's state, and since which election.
//!
//! A room has one *origin* node. It holds the room through a lease in Redis that expires unless
//! renewed, so a dead origin's rooms can be claimed by another node. Every claim takes the next
//! *epoch* of the room (a counter that only rises), so anything stamped with an older epoch is
//! known to come from a former origin: a stale holder's renew fails, and later its relayed
//! media can be refused. The atomic part runs in Redis (see `directory`); this module is the
//! pure part: key names, the value's JSON, and reading the claim script's reply.

use serde::{Deserialize, Serialize};

use super::node::KEY_PREFIX;

/// A room's origin and the election that made it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The origin node's id.
    pub node: String,
    /// Rises by one with every claim of the room.
    pub epoch: u64,
}

/// What [`claim_origin`](super::Directory::claim_origin) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lease is ours, with a new epoch.
    Won(Lease),
    /// The room already has an origin (possibly us, from an earlier claim): this is its lease.
    Held(Lease),
}

/// The key holding a room's current lease (it expires with the lease).
pub fn origin_key(room: &str) -> String {
    format!("{KEY_PREFIX}origin:{room}")
}

/// The key holding a room's last epoch; it outlives the lease so epochs keep rising.
pub fn epoch_key(room: &str) -> String {
    format!("{KEY_PREFIX}epoch:{room}")
}

/// The pattern matching every origin key, for listing the known origins.
pub fn origin_key_pattern() -> String {
    format!("{KEY_PREFIX}origin:*")
}

/// The room an origin key is for.
pub fn room_of_origin_key(key: &str) -> Option<&str> {
    key.strip_prefix(KEY_PREFIX)?.strip_prefix("origin:")
}

impl Lease {
    /// The value is written by the Lua scripts (`cjson`), so this only decodes: keys may come
    /// in any order and the epoch is a JSON number.
    pub fn decode(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }
}

impl Claim {
    /// Reads the claim script's reply: `won` (1 or 0) and the lease now in force.
    pub fn from_reply(won: i64, value: &str) -> Result<Self, serde_json::Error> {
        let lease = Lease::decode(value)?;
        Ok(if won == 1 {
            Claim::Won(lease)
        } else {
            Claim::Held(lease)
        })
    }

    /// The lease in force, whoever holds it.
    pub fn lease(&self) -> &Lease {
        match self {
            Claim::Won(lease) | Claim::Held(lease) => lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_reversible() {
        assert_eq!(origin_key("math 1"), "aula:cluster:origin:math 1");
        assert_eq!(epoch_key("math 1"), "aula:cluster:epoch:math 1");
        assert_eq!(
            room_of_origin_key(&origin_key("a:b*c")),
            Some("a:b*c"),
            "room names may hold the separator and glob characters"
        );
        assert_eq!(room_of_origin_key("aula:cluster:node:x"), None);
    }

    #[test]
    fn decodes_what_cjson_writes() {
        let lease = Lease::decode(r#"{"epoch":3,"node":"eu-1"}"#).expect("decodes");
        assert_eq!(
            lease,
            Lease {
                node: "eu-1".into(),
                epoch: 3
            }
        );
        assert!(Lease::decode(r#"{"node":"eu-1","epoch":-1}"#).is_err());
        assert!(Lease::decode("").is_err());
    }

    #[test]
    fn claim_reply_says_who_won() {
        let value = r#"{"node":"eu-1","epoch":2}"#;
        let won = Claim::from_reply(1, value).expect("decodes");
        assert!(matches!(won, Claim::Won(ref l) if l.epoch == 2));
        let held = Claim::from_reply(0, value).expect("decodes");
        assert!(matches!(held, Claim::Held(ref l) if l.node == "eu-1"));
        assert_eq!(won.lease(), held.lease());
    }
}
