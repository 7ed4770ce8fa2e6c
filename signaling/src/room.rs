//! Rooms and their participants: the control plane's only shared state.
//!
//! [`Registry`] is plain data behind one mutex, never held across an `.await`. Its methods
//! change the state *and* queue the resulting messages on the participants' outboxes in the same
//! critical section, so every participant sees events in the order the state changed (a
//! `ParticipantJoined` can never overtake the `Joined` of the same newcomer, a track can never be
//! both missing from a newcomer's snapshot and from its later `TrackPublished`). Calls to the
//! media plane, which are async, are returned to the caller to perform after the lock is released.
//!
//! Outboxes are unbounded because queuing must not block under the lock. A client that stops
//! reading is bounded by the session's idle timeout, which closes it.
//!
//! This file holds what the registry is made of: a [`Room`] and its [`Member`]s, what a
//! session's writer is asked to do, and a new participant's identity; `registry` holds the
//! [`Registry`] of every room.

use std::collections::{HashMap, HashSet};

use aula_protocol::{ErrorCode, ParticipantInfo, Permissions, Role, ServerEvent, ServerMessage};
use tokio::sync::mpsc;

mod registry;

pub(crate) use registry::{EmptiedRoom, JoinOutcome, Registry};

/// What a session's writer is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// Send this message.
    Message(ServerMessage),
    /// Send this event (moderation, chat, support).
    Event(ServerEvent),
    /// End the session: send `Left { reason }` if given, then close the WebSocket.
    End { left: Option<String> },
}

pub(crate) type Outbox = mpsc::UnboundedSender<Outgoing>;

/// Why a participant was removed by someone other than itself.
pub(crate) const REASON_DUPLICATE: &str = "duplicate identity";
pub(crate) const REASON_PEER_FAILED: &str = aula_protocol::LEFT_PEER_CONNECTION_FAILED;

/// A refused request: the error code and the message for people.
pub(crate) type Refused = (ErrorCode, String);

/// A participant as the registry knows it.
#[derive(Debug)]
pub(crate) struct Member {
    pub info: ParticipantInfo,
    /// Live permissions: from the token at join, then changed by moderators.
    pub permissions: Permissions,
    /// What its token granted at join: tells a moderator's changes apart, and a rejoin with the
    /// same token from one with another (see [`crate::rejoin`]).
    pub token_permissions: Permissions,
    pub outbox: Outbox,
    /// Sent once, in `Joined`; `None` when reconnects are off.
    pub resume_token: Option<String>,
}

impl Member {
    pub fn send(&self, msg: ServerMessage) {
        // A closed outbox means the session is ending; its cleanup removes it.
        let _ = self.outbox.send(Outgoing::Message(msg));
    }

    pub fn send_event(&self, event: ServerEvent) {
        let _ = self.outbox.send(Outgoing::Event(event));
    }

    fn is_hidden(&self) -> bool {
        self.permissions.hidden
    }
}

#[derive(Debug, Default)]
pub(crate) struct Room {
    /// In join order, so that snapshots list participants the way they arrived. Classes are tens
    /// to a few hundred people; linear scans are cheaper than keeping two maps in sync.
    pub members: Vec<Member>,
    /// Bumped on every join so that a delayed "remove if still empty" knows whether the room
    /// was reused in between.
    generation: u64,
    /// New non-staff joins are refused while set.
    pub locked: bool,
    /// Raised hands, first raised first.
    pub hands: Vec<String>,
    /// When each hand in `hands` was raised, as a count (not a clock): a hand given back after a
    /// rejoin goes back to its place among those still raised (see [`crate::rejoin`]).
    pub hand_tickets: HashMap<String, u64>,
    /// Hands raised so far: the last ticket given.
    pub hands_raised: u64,
    /// What lost participants had, until they come back or it expires.
    pub comebacks: crate::rejoin::Memory,
    /// Tracks a moderator paused in the SFU; resumed when their publisher unmutes them.
    pub force_muted: HashSet<String>,
}

impl Room {
    pub fn member(&self, sid: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.info.sid == sid)
    }

    pub fn member_mut(&mut self, sid: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.info.sid == sid)
    }

    pub fn broadcast(&self, msg: &ServerMessage, except: Option<&str>) {
        for m in &self.members {
            if Some(m.info.sid.as_str()) != except {
                m.send(msg.clone());
            }
        }
    }

    pub fn broadcast_event(&self, event: &ServerEvent) {
        for m in &self.members {
            m.send_event(event.clone());
        }
    }

    /// Puts `sid`'s hand at the end of the queue.
    pub fn queue_hand(&mut self, sid: &str) {
        self.hands_raised += 1;
        self.hand_tickets.insert(sid.to_owned(), self.hands_raised);
        self.hands.push(sid.to_owned());
    }

    /// Takes `sid`'s hand out of the queue; false if it was not in it.
    pub fn dequeue_hand(&mut self, sid: &str) -> bool {
        self.hand_tickets.remove(sid);
        let before = self.hands.len();
        self.hands.retain(|h| h != sid);
        self.hands.len() != before
    }

    /// The participants others may see: hidden ones (recorders) are never listed.
    pub fn visible(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.is_hidden())
    }

    /// Removes a member and tells the others: its tracks go first, then the participant, so a
    /// client that only tracks `TrackUnpublished` still drops the tracks.
    fn remove(&mut self, sid: &str) -> Option<Member> {
        let pos = self.members.iter().position(|m| m.info.sid == sid)?;
        let member = self.members.remove(pos);
        if self.dequeue_hand(sid) {
            crate::moderation::send_hand_queue(self);
        }
        if member.is_hidden() {
            // Never announced, so never un-announced (and a hidden member publishes nothing).
            return Some(member);
        }
        for track in &member.info.tracks {
            self.broadcast(
                &ServerMessage::TrackUnpublished {
                    track_sid: track.sid.clone(),
                    participant_sid: sid.to_owned(),
                },
                None,
            );
        }
        self.broadcast(
            &ServerMessage::ParticipantLeft {
                participant_sid: sid.to_owned(),
            },
            None,
        );
        Some(member)
    }
}

/// A participant's public info as first announced (no tracks yet).
pub(crate) fn participant_info(
    sid: String,
    identity: &str,
    name: &str,
    role: Role,
) -> ParticipantInfo {
    ParticipantInfo {
        sid,
        identity: identity.to_owned(),
        name: if name.is_empty() { identity } else { name }.to_owned(),
        role,
        tracks: Vec::new(),
        hand_raised: false,
    }
}

/// A fresh participant sid: `PA_` and 12 random alphanumerics (~71 bits), unguessable so that a
/// sid seen in the room cannot be used to address another session.
pub(crate) fn new_participant_sid() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("PA_{suffix}")
}

#[cfg(test)]
mod tests;
