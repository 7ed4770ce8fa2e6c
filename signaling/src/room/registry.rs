//! The [`Registry`] of every room and participant of this server: joins and leaves, rooms made
//! and removed, tracks announced, and the state a cluster carries to a room's next origin.
//! Apart from `room.rs`, which holds what a room and its members are.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use aula_protocol::{
    ErrorCode, ParticipantConnection, Permissions, RoomInfo, ServerEvent, ServerMessage, TrackInfo,
};
use aula_sfu::PublishedTrack;

use super::{Member, Outgoing, REASON_DUPLICATE, Refused, Room};
use crate::cluster::{RoomState, RoomStates};

/// What [`Registry::join`] asks the caller to do next.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct JoinOutcome {
    /// Tracks already in the room to subscribe the newcomer to.
    pub subscribe_to: Vec<String>,
    /// An older session of the same identity that was removed (its media must be torn down).
    pub replaced: Option<String>,
    /// The room did not exist before this join (a `room_started` webhook).
    pub room_created: bool,
}

/// A room left empty by a removal; when the empty timeout is not zero, the caller schedules
/// [`Registry::remove_room_if_empty`] with this generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmptiedRoom {
    pub room: String,
    pub generation: u64,
}

/// Every room and participant of this server.
#[derive(Debug)]
pub(crate) struct Registry {
    rooms: HashMap<String, Room>,
    /// Participant sid -> room name, for events that name only the participant.
    room_of: HashMap<String, String>,
    /// Whether an emptied room is removed at once (empty timeout 0) or left for the caller.
    keep_empty_rooms: bool,
    /// Rooms removed since the last [`Registry::take_ended_rooms`] (for `room_ended` webhooks).
    ended_rooms: Vec<String>,
    /// Rooms this node took over from a dead origin (a cluster), with the state it saved, until
    /// their first join here creates them (see [`Registry::restore_room_state`]); forgotten
    /// after [`crate::rejoin::REMEMBERED_FOR`], when nobody came back.
    carried: HashMap<String, (Room, Instant)>,
}

impl Registry {
    pub fn new(keep_empty_rooms: bool) -> Self {
        Self {
            rooms: HashMap::new(),
            room_of: HashMap::new(),
            keep_empty_rooms,
            ended_rooms: Vec::new(),
            carried: HashMap::new(),
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.room_of.len()
    }

    /// The room `sid` is in.
    pub fn room_of(&self, sid: &str) -> Option<&Room> {
        self.rooms.get(self.room_of.get(sid)?)
    }

    pub fn room_of_mut(&mut self, sid: &str) -> Option<&mut Room> {
        self.rooms.get_mut(self.room_of.get(sid)?)
    }

    /// Rooms removed since the last call.
    pub fn take_ended_rooms(&mut self) -> Vec<String> {
        std::mem::take(&mut self.ended_rooms)
    }

    /// Creates an empty room (admin API); false if it exists. Kept like any emptied room.
    pub fn create_room(&mut self, name: &str) -> bool {
        if self.rooms.contains_key(name) {
            return false;
        }
        self.rooms.insert(name.to_owned(), Room::default());
        true
    }

    /// Room names with their visible participant count and lock, for the admin API.
    pub fn room_list(&self) -> Vec<(String, usize, bool)> {
        let mut list: Vec<_> = self
            .rooms
            .iter()
            .map(|(name, r)| (name.clone(), r.members.len(), r.locked))
            .collect();
        list.sort();
        list
    }

    pub fn room(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    pub fn room_mut(&mut self, name: &str) -> Option<&mut Room> {
        self.rooms.get_mut(name)
    }

    /// Removes a room outright (admin API): everyone is told `reason`. False if unknown.
    pub fn delete_room(&mut self, name: &str, reason: &str) -> bool {
        let Some(room) = self.rooms.remove(name) else {
            return false;
        };
        for m in room.members {
            self.room_of.remove(&m.info.sid);
            let _ = m.outbox.send(Outgoing::End {
                left: Some(reason.to_owned()),
            });
        }
        self.ended_rooms.push(name.to_owned());
        true
    }

    /// Everyone in a room, hidden ones included.
    pub fn sids_in(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map(|r| r.members.iter().map(|m| m.info.sid.clone()).collect())
            .unwrap_or_default()
    }

    /// A participant's live permissions; `None` once it left.
    pub fn permissions(&self, sid: &str) -> Option<Permissions> {
        Some(self.room_of(sid)?.member(sid)?.permissions.clone())
    }

    /// Refuses a join into a locked room, except for staff, hidden participants (a recorder
    /// started late must still record) and an identity already in the room (a reloaded tab must
    /// get back in).
    ///
    /// In a room taken over from a dead origin, those who were in it count as already in it.
    pub fn may_join(&self, room_name: &str, member: &Member) -> Result<(), Refused> {
        let Some(room) = self
            .rooms
            .get(room_name)
            .or_else(|| self.carried(room_name))
        else {
            return Ok(());
        };
        let returning = room
            .members
            .iter()
            .any(|m| m.info.identity == member.info.identity)
            || room.comebacks.admits(&member.info.identity, Instant::now());
        let exempt = member.permissions.can_moderate || member.permissions.hidden;
        if room.locked && !exempt && !returning {
            return Err((
                ErrorCode::RoomLocked,
                format!("room {room_name} is locked by its teacher; ask them to unlock it"),
            ));
        }
        Ok(())
    }

    /// Adds `member` to `room` (creating it), queues `Joined` for it and `ParticipantJoined` for
    /// the others. An existing session with the same identity is removed first and told
    /// `Left { reason: "duplicate identity" }`: the newest connection wins, as a reloaded browser
    /// tab must not be locked out by its own ghost.
    ///
    /// A newcomer whose identity was lost from the room a moment ago (or that replaces its own
    /// older session) gets back its stage and raised hand: see [`crate::rejoin`].
    pub fn join(&mut self, room_name: &str, mut member: Member) -> JoinOutcome {
        let now = Instant::now();
        let mut outcome = JoinOutcome {
            room_created: !self.rooms.contains_key(room_name),
            ..JoinOutcome::default()
        };
        if outcome.room_created
            && let Some((carried, at)) = self.carried.remove(room_name)
            && now.saturating_duration_since(at) < crate::rejoin::REMEMBERED_FOR
        {
            // Created here now (a `room_started`, an automatic recording) with what its former
            // origin saved.
            self.rooms.insert(room_name.to_owned(), carried);
        }
        let room = self.rooms.entry(room_name.to_owned()).or_default();
        room.generation += 1;

        if let Some(old_sid) = room
            .members
            .iter()
            .find(|m| m.info.identity == member.info.identity)
            .map(|m| m.info.sid.clone())
        {
            crate::rejoin::remember(room, &old_sid, now);
            if let Some(old) = room.remove(&old_sid) {
                let _ = old.outbox.send(Outgoing::End {
                    left: Some(REASON_DUPLICATE.to_owned()),
                });
            }
            self.room_of.remove(&old_sid);
            outcome.replaced = Some(old_sid);
        }
        let restored = crate::rejoin::restore(room, &mut member, now);

        if member.permissions.can_subscribe {
            outcome.subscribe_to = room
                .members
                .iter()
                .flat_map(|m| m.info.tracks.iter().map(|t| t.sid.clone()))
                .collect();
        }
        member.send(ServerMessage::Joined {
            version: aula_protocol::PROTOCOL_VERSION,
            participant: member.info.clone(),
            room: RoomInfo {
                name: room_name.to_owned(),
                participants: room.visible().map(|m| m.info.clone()).collect(),
                locked: room.locked,
            },
            permissions: Some(member.permissions.clone()),
            resume_token: member.resume_token.clone(),
        });
        if !member.is_hidden() {
            room.broadcast(
                &ServerMessage::ParticipantJoined {
                    participant: member.info.clone(),
                },
                None,
            );
            // Staff see everyone's permissions (see `ServerEvent::PermissionsChanged`).
            let event = crate::moderation::permissions_event(&member);
            for m in room.members.iter().filter(|m| m.permissions.can_moderate) {
                m.send_event(event.clone());
            }
        }
        if member.permissions.can_moderate {
            crate::moderation::send_staff_view(room, &member);
        }
        self.room_of
            .insert(member.info.sid.clone(), room_name.to_owned());
        let sid = member.info.sid.clone();
        room.members.push(member);
        crate::rejoin::announce(room, &sid, restored);
        outcome
    }

    /// What a cluster saves of `room` for its next origin (see [`crate::rejoin::saved_state`]):
    /// a room of this node, or one taken over and not joined yet.
    pub fn saved_state(&self, room: &str) -> Option<RoomState> {
        let room = self.rooms.get(room).or_else(|| self.carried(room))?;
        Some(crate::rejoin::saved_state(room, Instant::now()))
    }

    /// A room taken over and not joined yet, unless that was too long ago.
    fn carried(&self, room: &str) -> Option<&Room> {
        let (room, at) = self.carried.get(room)?;
        (at.elapsed() < crate::rejoin::REMEMBERED_FOR).then_some(room)
    }

    /// Gives `room_name`, taken over from its dead origin, the state that origin saved (see
    /// [`crate::rejoin::restore_state`]). A room not here yet is created by its first join
    /// (so that its `room_started` and automatic recording happen here as for any new room);
    /// until then its lock and memory already apply to joins. False, and nothing changed, when
    /// the room is live here with participants: its own state is the newer one.
    pub fn restore_room_state(&mut self, room_name: &str, state: RoomState) -> bool {
        let now = Instant::now();
        self.carried.retain(|_, (_, at)| {
            now.saturating_duration_since(*at) < crate::rejoin::REMEMBERED_FOR
        });
        match self.rooms.get_mut(room_name) {
            Some(room) if !room.members.is_empty() => false,
            Some(room) => {
                crate::rejoin::restore_state(room, state, now);
                true
            }
            None => {
                let mut room = Room::default();
                crate::rejoin::restore_state(&mut room, state, now);
                self.carried.insert(room_name.to_owned(), (room, now));
                true
            }
        }
    }

    /// Removes a participant (its own leave, a closed socket, or a kick) and tells the others.
    /// `None` when it was already gone, so every cleanup path may call it.
    pub fn leave(&mut self, sid: &str) -> Option<(Member, Option<EmptiedRoom>)> {
        let room_name = self.room_of.remove(sid)?;
        let room = self.rooms.get_mut(&room_name)?;
        let member = room.remove(sid)?;
        let emptied = if room.members.is_empty() {
            if self.keep_empty_rooms {
                Some(EmptiedRoom {
                    generation: room.generation,
                    room: room_name,
                })
            } else {
                self.rooms.remove(&room_name);
                self.ended_rooms.push(room_name);
                None
            }
        } else {
            None
        };
        Some((member, emptied))
    }

    /// Removes a participant for `reason` and tells its session to end.
    pub fn kick(&mut self, sid: &str, reason: &str) -> Option<Option<EmptiedRoom>> {
        let (member, emptied) = self.leave(sid)?;
        let _ = member.outbox.send(Outgoing::End {
            left: Some(reason.to_owned()),
        });
        Some(emptied)
    }

    /// Removes a room kept after it emptied, unless someone joined it since.
    pub fn remove_room_if_empty(&mut self, emptied: &EmptiedRoom) -> bool {
        let unused = self
            .rooms
            .get(&emptied.room)
            .is_some_and(|r| r.members.is_empty() && r.generation == emptied.generation);
        if unused {
            self.rooms.remove(&emptied.room);
            self.ended_rooms.push(emptied.room.clone());
        }
        unused
    }

    /// Records a track the SFU started receiving and announces it to the whole room, publisher
    /// included (that is how the publisher learns the track's sid). Returns the other
    /// participants allowed to subscribe; `None` if the publisher is gone.
    pub fn track_published(&mut self, sid: &str, track: &PublishedTrack) -> Option<Vec<String>> {
        let room = self.rooms.get_mut(self.room_of.get(sid)?)?;
        let publisher = room.member_mut(sid)?;
        let info = TrackInfo {
            sid: track.sid.clone(),
            participant_sid: sid.to_owned(),
            kind: track.kind,
            source: track.source,
            simulcast: track.simulcast,
            muted: false,
            mime_type: track.mime_type.clone(),
        };
        publisher.info.tracks.retain(|t| t.sid != track.sid);
        publisher.info.tracks.push(info.clone());
        room.broadcast(&ServerMessage::TrackPublished { track: info }, None);
        Some(
            room.members
                .iter()
                .filter(|m| m.info.sid != sid && m.permissions.can_subscribe)
                .map(|m| m.info.sid.clone())
                .collect(),
        )
    }

    /// Forgets a track and tells the room. False if it was not known.
    pub fn track_unpublished(&mut self, sid: &str, track_sid: &str) -> bool {
        let Some(room) = self.room_of.get(sid).and_then(|r| self.rooms.get_mut(r)) else {
            return false;
        };
        let Some(publisher) = room.member_mut(sid) else {
            return false;
        };
        let before = publisher.info.tracks.len();
        publisher.info.tracks.retain(|t| t.sid != track_sid);
        if publisher.info.tracks.len() == before {
            return false;
        }
        room.broadcast(
            &ServerMessage::TrackUnpublished {
                track_sid: track_sid.to_owned(),
                participant_sid: sid.to_owned(),
            },
            None,
        );
        true
    }

    /// Mutes or unmutes one of `sid`'s own tracks and tells the room. False if `sid` has no such
    /// track (including someone else's track: only the publisher mutes its tracks).
    pub fn mute(&mut self, sid: &str, track_sid: &str, muted: bool) -> bool {
        let Some(room) = self.room_of.get(sid).and_then(|r| self.rooms.get_mut(r)) else {
            return false;
        };
        let Some(track) = room
            .member_mut(sid)
            .and_then(|m| m.info.tracks.iter_mut().find(|t| t.sid == track_sid))
        else {
            return false;
        };
        track.muted = muted;
        room.broadcast(
            &ServerMessage::TrackMuted {
                track_sid: track_sid.to_owned(),
                participant_sid: sid.to_owned(),
                muted,
            },
            None,
        );
        true
    }

    /// Queues a message for one participant. False if it is gone.
    pub fn send_to(&self, sid: &str, msg: ServerMessage) -> bool {
        self.room_of
            .get(sid)
            .and_then(|r| self.rooms.get(r))
            .and_then(|room| room.member(sid))
            .is_some_and(|m| m.outbox.send(Outgoing::Message(msg)).is_ok())
    }

    /// Tells the others in `sid`'s room that its connection dropped or came back, so that they
    /// show it instead of a frozen picture (hidden members are never announced).
    pub fn connection_changed(&self, sid: &str, state: ParticipantConnection) {
        let Some(room) = self.room_of(sid) else {
            return;
        };
        if room.member(sid).is_none_or(Member::is_hidden) {
            return;
        }
        let event = ServerEvent::ParticipantState {
            participant_sid: sid.to_owned(),
            state,
        };
        for member in room.members.iter().filter(|m| m.info.sid != sid) {
            member.send_event(event.clone());
        }
    }
}

/// The registry as a cluster's origin side saves and restores it.
impl RoomStates for Mutex<Registry> {
    fn save(&self, room: &str) -> Option<RoomState> {
        let registry = self.lock().unwrap_or_else(PoisonError::into_inner);
        registry.saved_state(room)
    }

    fn restore(&self, room: &str, state: RoomState) -> bool {
        let mut registry = self.lock().unwrap_or_else(PoisonError::into_inner);
        registry.restore_room_state(room, state)
    }
}
