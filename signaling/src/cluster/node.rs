//! A node's entry in the directory: who it is, where it is reached, how loaded it is.
//!
//! Pure data and its encoding, no I/O, so the format is unit tested without Redis. The value is
//! JSON so that an operator reading Redis by hand (`redis-cli GET aula:cluster:node:ID`) sees
//! what a node announced, and so that fields can be added later without breaking older nodes
//! (unknown fields are ignored when decoding).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Prefix of every key the cluster writes, so Redis can be shared with other applications.
pub const KEY_PREFIX: &str = "aula:cluster:";

/// How loaded a node is, measured over the last refresh interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// The process's CPU use, in cores (1.0 is one core busy).
    pub cpu: f64,
    /// Participants joined on this node.
    pub participants: u64,
    /// Media sent, bits per second.
    pub egress_bps: u64,
}

/// What a node announces about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    /// Where clients and other nodes reach it (`host:port`), as configured (a port 0 there is
    /// the port the node bound).
    pub public_addrs: Vec<String>,
    /// Where other nodes open relay links to it (`host:port`, UDP), if it takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_addr: Option<String>,
    pub load: Load,
    /// When this entry was written, milliseconds since the Unix epoch: tells how fresh it is.
    pub updated_ms: u64,
}

/// The key a node's entry lives under.
pub fn node_key(id: &str) -> String {
    format!("{KEY_PREFIX}node:{id}")
}

/// The pattern matching every node's key, for listing them.
pub fn node_key_pattern() -> String {
    format!("{KEY_PREFIX}node:*")
}

/// `at` in milliseconds since the Unix epoch, as `updated_ms` holds it.
pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl NodeInfo {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a NodeInfo always serializes")
    }

    pub fn decode(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeInfo {
        NodeInfo {
            id: "eu-1".into(),
            region: "eu".into(),
            public_addrs: vec!["eu-1.school.example:7880".into()],
            relay_addr: None,
            load: Load {
                cpu: 0.5,
                participants: 12,
                egress_bps: 3_000_000,
            },
            updated_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn encoding_round_trips() {
        let node = sample();
        assert_eq!(NodeInfo::decode(&node.encode()).expect("decodes"), node);
    }

    #[test]
    fn newer_fields_are_ignored_and_garbage_refused() {
        let mut value: serde_json::Value = serde_json::from_str(&sample().encode()).expect("JSON");
        value["added_later"] = serde_json::json!(true);
        assert_eq!(
            NodeInfo::decode(&value.to_string()).expect("decodes"),
            sample()
        );
        assert!(NodeInfo::decode("not json").is_err());
        assert!(NodeInfo::decode(r#"{"id":"x"}"#).is_err());
    }

    #[test]
    fn keys_are_namespaced() {
        assert_eq!(node_key("eu-1"), "aula:cluster:node:eu-1");
        assert_eq!(node_key_pattern(), "aula:cluster:node:*");
    }
}
