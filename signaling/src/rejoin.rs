//! What a room gives back to a participant that comes back after it was lost.
//!
//! A participant is *lost* when it leaves the room not by its own choice: its media path failed
//! (the server ends its session with `peer connection failed`), or its WebSocket dropped and it
//! was not resumed within the reconnect window. The SDKs then join again by themselves with the
//! same token: a new participant (a new sid) with the same identity. Started from its token
//! alone, a student the teacher had invited on stage would come back unable to publish (its
//! camera refused as `forbidden`) and its raised hand would be gone from the queue.
//!
//! So a lost participant's room keeps its [`Standing`] (its live permissions, as moderators left
//! them, and its raised hand with its place in the queue) by identity for [`REMEMBERED_FOR`], and
//! a join of that identity with the same token permissions within that time gets it back before
//! it is announced: its `joined` already says where it is, the staff see it back on stage with
//! its hand up. A new session of the same identity that replaces an older one still in the room
//! (a rejoin that came before the server noticed the loss, or a reloaded tab) takes over the
//! older one's standing the same way.
//!
//! Moderators win. The standing is taken when the participant is removed, so what a moderator did
//! while it was reconnecting (taken off stage, hand dismissed) is already in it; leaving, being
//! removed by a moderator and the end of the class remember nothing; locking the room forgets
//! everyone (they are refused while it is locked anyway); an emptied room that is removed takes
//! its memory with it.
//!
//! The same memory carries a class over to a new origin node when its origin dies (a cluster,
//! see `crate::cluster::RoomState`): the origin saves, by identity, the standing of everyone in
//! the room and of everyone it remembers ([`saved_state`]); the node that takes the room over
//! puts those standings in the room's memory ([`restore_state`]), as if all of them had just
//! been lost, and marks those that were in the room as *admitted*: let back in while the room
//! is locked (the lock keeps newcomers out, not the class). Everything else applies unchanged:
//! the same token to get the standing back, [`REMEMBERED_FOR`] from the takeover to come back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use aula_protocol::Permissions;

use crate::cluster::{MAX_SAVED, RoomState, SavedParticipant};
use crate::room::{EmptiedRoom, Member, Registry, Room};

/// How long a lost participant's standing is kept. Chosen with the SDKs' timers: a dropped
/// WebSocket is resumed for 15 s (the server's `reconnect_timeout_secs` default, the SDKs'
/// resume window), and only then is the participant removed and remembered; the SDKs start
/// rejoining at about the same moment and keep trying for 60 s (`REJOIN_WINDOW_MS`), an attempt
/// taking up to 10 s. A session ended for a failed media path is removed at once, while the
/// SDK may still spend its 15 s resume window before rejoining. 60 + 10 + 15 s, rounded up
/// for clocks that noticed the outage at different moments, gives two minutes; much longer,
/// and a student back after the class moved on would reappear on a stage the teacher had
/// forgotten about.
pub(crate) const REMEMBERED_FOR: Duration = Duration::from_secs(120);

/// Most lost participants a room remembers at once; the oldest is forgotten first. Only those
/// with something to give back take a place (on stage, a hand up, other moderator changes),
/// usually a handful, so this only bounds a pathological room.
pub(crate) const MAX_REMEMBERED: usize = 256;

/// What a moderator gave or took from a participant, as it was when it was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standing {
    /// What its token granted: a rejoin must come with the same (the same token, or one just
    /// like it). A token granting something else is the application's newer word and wins.
    pub token_permissions: Permissions,
    /// Its live permissions: the token's, as moderators changed them (on stage, or not).
    pub permissions: Permissions,
    /// When its hand was raised (the room's count, see [`Room::hand_tickets`]), if it was up.
    pub hand: Option<u64>,
}

impl Standing {
    /// Whether there is anything to give back.
    fn matters(&self) -> bool {
        self.permissions != self.token_permissions || self.hand.is_some()
    }
}

#[derive(Debug)]
struct Entry {
    identity: String,
    lost_at: Instant,
    standing: Standing,
    /// Was in the room when its former origin saved it: let back in while it is locked.
    admitted: bool,
}

/// A room's lost participants, by identity, oldest first; time is passed in.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    entries: VecDeque<Entry>,
}

impl Memory {
    /// Keeps `identity`'s standing (replacing an older one) if it has anything to give back.
    pub fn remember(&mut self, identity: &str, standing: Standing, now: Instant) {
        self.expire(now);
        self.entries.retain(|e| e.identity != identity);
        if !standing.matters() {
            return;
        }
        if self.entries.len() >= MAX_REMEMBERED {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            identity: identity.to_owned(),
            lost_at: now,
            standing,
            admitted: false,
        });
    }

    /// Keeps a standing carried over from the room's former origin (see the module docs), even
    /// one with nothing to give back when `admitted` (it still lets its owner in). Bounded by
    /// the size of a saved state rather than [`MAX_REMEMBERED`]: the whole class is carried.
    fn carry(&mut self, identity: &str, standing: Standing, admitted: bool, now: Instant) {
        self.expire(now);
        self.entries.retain(|e| e.identity != identity);
        if !standing.matters() && !admitted {
            return;
        }
        if self.entries.len() >= MAX_SAVED {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            identity: identity.to_owned(),
            lost_at: now,
            standing,
            admitted,
        });
    }

    /// Whether `identity` was in the room when its former origin saved it, less than
    /// [`REMEMBERED_FOR`] ago: let back in while the room is locked.
    pub fn admits(&self, identity: &str, now: Instant) -> bool {
        self.entries.iter().any(|e| {
            e.admitted
                && e.identity == identity
                && now.saturating_duration_since(e.lost_at) < REMEMBERED_FOR
        })
    }

    /// Takes `identity`'s standing, if it was lost less than [`REMEMBERED_FOR`] ago and its
    /// token granted the same. Taken either way: one join uses it up.
    pub fn take(
        &mut self,
        identity: &str,
        token_permissions: &Permissions,
        now: Instant,
    ) -> Option<Standing> {
        self.expire(now);
        let pos = self.entries.iter().position(|e| e.identity == identity)?;
        let entry = self.entries.remove(pos)?;
        (entry.standing.token_permissions == *token_permissions).then_some(entry.standing)
    }

    /// Forgets everyone (the room was locked, or the class ended).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn expire(&mut self, now: Instant) {
        self.entries
            .retain(|e| now.saturating_duration_since(e.lost_at) < REMEMBERED_FOR);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Where a hand raised at `ticket` goes back in a queue whose hands were raised at `queue`
/// (in queue order): after every hand raised before it, before every hand raised after it
/// (including one lowered and raised again meanwhile).
pub(crate) fn queue_place(queue: impl IntoIterator<Item = u64>, ticket: u64) -> usize {
    let mut place = 0;
    for (i, other) in queue.into_iter().enumerate() {
        if other > ticket {
            return i;
        }
        place = i + 1;
    }
    place
}

/// What [`restore`] gave back, for [`announce`] to tell.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restored {
    permissions: bool,
    hand: bool,
}

/// Remembers `sid`'s standing; called under the registry lock just before it is removed, so a
/// moderator's last change is in it. Hidden participants (recorders) have none.
pub(crate) fn remember(room: &mut Room, sid: &str, now: Instant) {
    let Some(member) = room.member(sid) else {
        return;
    };
    if member.permissions.hidden {
        return;
    }
    let identity = member.info.identity.clone();
    let standing = Standing {
        token_permissions: member.token_permissions.clone(),
        permissions: member.permissions.clone(),
        hand: room.hand_tickets.get(sid).copied(),
    };
    room.comebacks.remember(&identity, standing, now);
}

/// Gives a newcomer back what its identity had when it was lost. Called before it is announced
/// (and before it is in `room.members`), so that its `joined`, the others'
/// `participant_joined` and the staff's view of its permissions already say so.
pub(crate) fn restore(room: &mut Room, member: &mut Member, now: Instant) -> Restored {
    let mut restored = Restored::default();
    if member.permissions.hidden {
        return restored;
    }
    let Some(standing) = room
        .comebacks
        .take(&member.info.identity, &member.token_permissions, now)
    else {
        return restored;
    };
    if member.permissions != standing.permissions {
        member.permissions = standing.permissions;
        restored.permissions = true;
    }
    if let Some(ticket) = standing.hand {
        let sid = member.info.sid.clone();
        let tickets = room
            .hands
            .iter()
            .map(|h| room.hand_tickets.get(h).copied().unwrap_or(u64::MAX));
        let place = queue_place(tickets, ticket);
        room.hands.insert(place, sid.clone());
        room.hand_tickets.insert(sid, ticket);
        member.info.hand_raised = true;
        restored.hand = true;
    }
    restored
}

/// What the room's next origin needs to give its participants back their standing (see the
/// module docs): everyone in the room (hidden ones aside), then everyone remembered.
pub(crate) fn saved_state(room: &Room, now: Instant) -> RoomState {
    let saved = |identity: &str, standing: &Standing, in_room: bool| SavedParticipant {
        identity: identity.to_owned(),
        in_room,
        token_permissions: standing.token_permissions.clone(),
        permissions: (standing.permissions != standing.token_permissions)
            .then(|| standing.permissions.clone()),
        hand: standing.hand,
    };
    let mut participants: Vec<SavedParticipant> = room
        .members
        .iter()
        .filter(|m| !m.permissions.hidden)
        .map(|m| {
            let standing = Standing {
                token_permissions: m.token_permissions.clone(),
                permissions: m.permissions.clone(),
                hand: room.hand_tickets.get(&m.info.sid).copied(),
            };
            saved(&m.info.identity, &standing, true)
        })
        .collect();
    let remembered = room.comebacks.entries.iter().filter(|e| {
        now.saturating_duration_since(e.lost_at) < REMEMBERED_FOR
            && !participants.iter().any(|p| p.identity == e.identity)
    });
    let remembered: Vec<SavedParticipant> = remembered
        .map(|e| saved(&e.identity, &e.standing, e.admitted))
        .collect();
    participants.extend(remembered);
    participants.truncate(MAX_SAVED);
    RoomState {
        locked: room.locked,
        hands_raised: room.hands_raised,
        participants,
    }
}

/// Gives a room taken over from a dead origin the state that origin saved: its lock, and the
/// standing of each of its participants, remembered from `now` as if they had just been lost.
pub(crate) fn restore_state(room: &mut Room, state: RoomState, now: Instant) {
    room.locked = state.locked;
    room.hands_raised = room.hands_raised.max(state.hands_raised);
    for p in state.participants {
        let standing = Standing {
            permissions: p.permissions.unwrap_or_else(|| p.token_permissions.clone()),
            token_permissions: p.token_permissions,
            hand: p.hand,
        };
        room.comebacks.carry(&p.identity, standing, p.in_room, now);
    }
}

/// Tells what [`restore`] gave back, once the newcomer is in the room: its permissions to itself
/// (the staff were told when it joined), the hand queue to the staff and those in it.
pub(crate) fn announce(room: &Room, sid: &str, restored: Restored) {
    if restored.permissions
        && let Some(member) = room.member(sid)
    {
        member.send_event(crate::moderation::permissions_event(member));
    }
    if restored.hand {
        crate::moderation::send_hand_queue(room);
    }
}

impl Registry {
    /// Removes a participant whose connection was lost, remembering its standing in the same
    /// critical section (see [`Registry::leave`]).
    pub fn leave_lost(&mut self, sid: &str) -> Option<(Member, Option<EmptiedRoom>)> {
        if let Some(room) = self.room_of_mut(sid) {
            remember(room, sid, Instant::now());
        }
        self.leave(sid)
    }

    /// Ends a session that failed, remembering its standing (see [`Registry::kick`]).
    pub fn kick_lost(&mut self, sid: &str, reason: &str) -> Option<Option<EmptiedRoom>> {
        if let Some(room) = self.room_of_mut(sid) {
            remember(room, sid, Instant::now());
        }
        self.kick(sid, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aula_protocol::Role;

    fn student() -> Permissions {
        crate::token::role_permissions(Role::Student)
    }

    fn on_stage() -> Standing {
        let mut permissions = student();
        permissions.can_publish = true;
        permissions
            .publish_sources
            .extend(crate::token::stage_sources());
        Standing {
            token_permissions: student(),
            permissions,
            hand: None,
        }
    }

    fn hand(ticket: u64) -> Standing {
        Standing {
            token_permissions: student(),
            permissions: student(),
            hand: Some(ticket),
        }
    }

    #[test]
    fn a_rejoin_with_the_same_token_gets_its_standing_back_once() {
        let t0 = Instant::now();
        let mut memory = Memory::default();
        memory.remember("ana", on_stage(), t0);
        memory.remember("bo", hand(3), t0);
        let later = t0 + Duration::from_secs(70);
        assert_eq!(memory.take("ana", &student(), later), Some(on_stage()));
        assert_eq!(memory.take("ana", &student(), later), None, "used up");
        assert_eq!(memory.take("bo", &student(), later), Some(hand(3)));
        assert_eq!(memory.take("cy", &student(), later), None);
    }

    #[test]
    fn nothing_to_give_back_is_not_kept() {
        let mut memory = Memory::default();
        let plain = Standing {
            token_permissions: student(),
            permissions: student(),
            hand: None,
        };
        let now = Instant::now();
        memory.remember("ana", on_stage(), now);
        // Lost again, this time off stage: the newer standing replaces the older.
        memory.remember("ana", plain, now);
        assert_eq!(memory.len(), 0);
        assert_eq!(memory.take("ana", &student(), now), None);
    }

    #[test]
    fn standings_expire() {
        let t0 = Instant::now();
        let mut memory = Memory::default();
        memory.remember("ana", on_stage(), t0);
        memory.remember("bo", on_stage(), t0 + Duration::from_secs(60));
        let t1 = t0 + REMEMBERED_FOR;
        assert_eq!(memory.take("ana", &student(), t1), None, "expired");
        assert_eq!(
            memory.len(),
            1,
            "expired entries are dropped, not just skipped"
        );
        assert!(memory.take("bo", &student(), t1).is_some());
    }

    #[test]
    fn another_token_is_the_applications_newer_word() {
        let now = Instant::now();
        let mut memory = Memory::default();
        memory.remember("ana", on_stage(), now);
        let assistant = crate::token::role_permissions(Role::Assistant);
        assert_eq!(memory.take("ana", &assistant, now), None);
        assert_eq!(memory.take("ana", &student(), now), None, "used up anyway");
    }

    #[test]
    fn bounded_oldest_forgotten_first() {
        let now = Instant::now();
        let mut memory = Memory::default();
        for i in 0..=MAX_REMEMBERED {
            memory.remember(&format!("s{i}"), hand(i as u64), now);
        }
        assert_eq!(memory.len(), MAX_REMEMBERED);
        assert_eq!(memory.take("s0", &student(), now), None);
        assert!(memory.take("s1", &student(), now).is_some());
        memory.clear();
        assert_eq!(memory.take("s2", &student(), now), None);
    }

    #[test]
    fn a_hand_goes_back_between_those_raised_before_and_after_it() {
        // Queue raised at 2, 5, 9; a hand raised at 4 goes second.
        assert_eq!(queue_place([2, 5, 9], 4), 1);
        assert_eq!(queue_place([2, 5, 9], 1), 0);
        assert_eq!(queue_place([2, 5, 9], 10), 3);
        assert_eq!(queue_place([], 4), 0);
        // One raised before it lowered and raised again (now 12): it goes after the others
        // raised before 4, and before the re-raised hand.
        assert_eq!(queue_place([2, 5, 12], 4), 1);
        assert_eq!(queue_place([5, 12], 4), 0);
    }
}
