//! What a room's origin keeps in Redis so that the class survives the origin (issue 14).
//!
//! Why: a room's state lives on its origin only. When that node dies, another claims the
//! room's lease (epoch + 1) and the participants' SDKs join again there by themselves, with the
//! same tokens. Started afresh, the new origin would open a locked room to anyone, forget the
//! raised hands, and refuse the camera of a student the teacher had invited on stage. What
//! those participants need back is what one node gives back to a participant lost and come
//! back (`crate::rejoin`): the lock, each one's permissions as moderators changed them, each
//! raised hand at its place. So that is all a [`RoomState`] holds, by identity (the only thing
//! that survives a rejoin: sids, tracks and connections do not): small, and read back only at
//! a failover.
//!
//! The origin saves it when it changes, coalesced (see `relay::saved`), under its lease's
//! epoch; Redis refuses a save under any other epoch than the room's newest (see
//! `Directory::save_room_state`), so a former origin that lost its lease (a zombie, cut off
//! from the cluster but still running) cannot overwrite the new origin's state. A node that
//! takes a room over loads it before the first join there and gives it to the room: those
//! who were in it are let back in even though it is locked, and get their standing back when
//! they join with the same identity and token. The value is JSON, like the rest of the
//! directory, for an operator reading Redis by hand.

use aula_protocol::Permissions;
use serde::{Deserialize, Serialize};

use super::node::KEY_PREFIX;

/// Most participants a saved state holds: more than any class (tens to a few hundred), so it
/// only bounds a pathological room (and the size of one Redis value).
pub const MAX_SAVED: usize = 2000;

/// The part of a room's state that survives its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomState {
    /// New students are refused while set.
    pub locked: bool,
    /// How many hands were raised in the room so far (see `Room::hand_tickets`): hands raised
    /// on the new origin queue after those given back.
    pub hands_raised: u64,
    /// Those in the room, then those lost from it and still remembered (`crate::rejoin`).
    pub participants: Vec<SavedParticipant>,
}

/// One participant's standing, by identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedParticipant {
    pub identity: String,
    /// Was in the room: let back in while it is locked.
    pub in_room: bool,
    /// What its token granted; a rejoin with another token starts from that token.
    pub token_permissions: Permissions,
    /// Its live permissions, when moderators changed them (on stage, or off it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    /// When its hand was raised (the room's count), if it is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hand: Option<u64>,
}

/// The value under a room's state key: the state and the lease epoch it was saved under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub epoch: u64,
    pub state: RoomState,
}

/// The rooms of this node as the origin side of a cluster reads and restores them: the
/// control plane's registry.
pub trait RoomStates: Send + Sync {
    /// What to save of `room`, if this node has it (joined, or restored and not joined yet).
    fn save(&self, room: &str) -> Option<RoomState>;
    /// Gives `room` the state its former origin saved. False when the room is live here
    /// already, with participants: its own state is the newer one, and is kept.
    fn restore(&self, room: &str, state: RoomState) -> bool;
}

/// The key holding a room's saved state.
pub fn state_key(room: &str) -> String {
    format!("{KEY_PREFIX}state:{room}")
}

impl Saved {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a saved room state always serializes")
    }

    pub fn decode(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn student() -> Permissions {
        Permissions {
            can_subscribe: true,
            can_publish_data: true,
            ..Permissions::default()
        }
    }

    #[test]
    fn encoding_round_trips_and_stays_small() {
        let mut on_stage = student();
        on_stage.can_publish = true;
        let saved = Saved {
            epoch: 7,
            state: RoomState {
                locked: true,
                hands_raised: 12,
                participants: vec![
                    SavedParticipant {
                        identity: "ana".into(),
                        in_room: true,
                        token_permissions: student(),
                        permissions: Some(on_stage),
                        hand: None,
                    },
                    SavedParticipant {
                        identity: "bo".into(),
                        in_room: true,
                        token_permissions: student(),
                        permissions: None,
                        hand: Some(11),
                    },
                ],
            },
        };
        let value = saved.encode();
        assert_eq!(Saved::decode(&value).expect("decodes"), saved);
        assert!(value.starts_with(r#"{"epoch":7,"#), "{value}");
        // Unchanged permissions and lowered hands are left out.
        assert_eq!(value.matches("\"hand\"").count(), 1, "{value}");
        assert_eq!(value.matches("\"permissions\"").count(), 1, "{value}");
        assert!(Saved::decode(r#"{"epoch":-1,"state":{}}"#).is_err());
        assert!(Saved::decode("").is_err());
    }

    #[test]
    fn key_is_namespaced() {
        assert_eq!(state_key("math 1"), "aula:cluster:state:math 1");
    }
}
