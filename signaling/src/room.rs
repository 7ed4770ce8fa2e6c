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

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use aula_protocol::{
    ErrorCode, ParticipantConnection, ParticipantInfo, Permissions, Role, RoomInfo, ServerEvent,
    ServerMessage, TrackInfo,
};
use aula_sfu::PublishedTrack;
use tokio::sync::mpsc;

use crate::cluster::{RoomState, RoomStates};

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
mod tests {
    use super::*;
    use aula_protocol::{TrackKind, TrackSource};
    use tokio::sync::mpsc::UnboundedReceiver;

    fn member(sid: &str, identity: &str, role: Role) -> (Member, UnboundedReceiver<Outgoing>) {
        let (outbox, rx) = mpsc::unbounded_channel();
        (
            Member {
                info: participant_info(sid.into(), identity, "", role),
                permissions: crate::token::role_permissions(role),
                token_permissions: crate::token::role_permissions(role),
                outbox,
                resume_token: None,
            },
            rx,
        )
    }

    fn drain(rx: &mut UnboundedReceiver<Outgoing>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(m);
        }
        out
    }

    fn camera(sid: &str) -> PublishedTrack {
        PublishedTrack {
            sid: sid.into(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            simulcast: true,
            mime_type: "video/VP8".into(),
        }
    }

    #[test]
    fn join_snapshot_broadcast_and_leave_cleanup() {
        let mut reg = Registry::new(false);
        let (t, mut t_rx) = member("PA_t", "teacher", Role::Teacher);
        assert_eq!(
            reg.join("math", t),
            JoinOutcome {
                room_created: true,
                ..JoinOutcome::default()
            }
        );
        assert!(matches!(
            &drain(&mut t_rx)[..],
            [Outgoing::Message(ServerMessage::Joined { room, .. })] if room.participants.is_empty()
        ));

        assert_eq!(reg.track_published("PA_t", &camera("TR_1")), Some(vec![]));
        let (s, mut s_rx) = member("PA_s", "student", Role::Student);
        let outcome = reg.join("math", s);
        assert_eq!(outcome.subscribe_to, vec!["TR_1".to_string()]);
        let Outgoing::Message(ServerMessage::Joined {
            room, participant, ..
        }) = &drain(&mut s_rx)[0]
        else {
            panic!("student did not get Joined first");
        };
        assert_eq!(participant.sid, "PA_s");
        assert_eq!(room.participants.len(), 1);
        assert_eq!(room.participants[0].tracks[0].sid, "TR_1");
        let t_msgs = drain(&mut t_rx);
        assert!(t_msgs.iter().any(|m| matches!(m,
            Outgoing::Message(ServerMessage::ParticipantJoined { participant }) if participant.sid == "PA_s")));

        // The teacher leaves: the student hears about its track, then the participant.
        let (_, emptied) = reg.leave("PA_t").expect("teacher was there");
        assert_eq!(emptied, None);
        assert_eq!(
            drain(&mut s_rx),
            vec![
                Outgoing::Message(ServerMessage::TrackUnpublished {
                    track_sid: "TR_1".into(),
                    participant_sid: "PA_t".into()
                }),
                Outgoing::Message(ServerMessage::ParticipantLeft {
                    participant_sid: "PA_t".into()
                }),
            ]
        );
        assert!(reg.leave("PA_t").is_none(), "leave is idempotent");
        reg.leave("PA_s").expect("student was there");
        assert_eq!(reg.room_count(), 0);
        assert_eq!(reg.participant_count(), 0);
    }

    #[test]
    fn duplicate_identity_replaces_the_older_session() {
        let mut reg = Registry::new(false);
        let (a1, mut a1_rx) = member("PA_1", "alice", Role::Teacher);
        let (b, mut b_rx) = member("PA_b", "bob", Role::Student);
        reg.join("r", a1);
        reg.join("r", b);
        drain(&mut a1_rx);
        drain(&mut b_rx);

        let (a2, mut a2_rx) = member("PA_2", "alice", Role::Teacher);
        let outcome = reg.join("r", a2);
        assert_eq!(outcome.replaced.as_deref(), Some("PA_1"));
        assert!(drain(&mut a1_rx).contains(&Outgoing::End {
            left: Some(REASON_DUPLICATE.into())
        }));
        let b_msgs = drain(&mut b_rx);
        assert!(
            matches!(&b_msgs[0], Outgoing::Message(ServerMessage::ParticipantLeft { participant_sid }) if participant_sid == "PA_1")
        );
        assert!(
            matches!(&b_msgs[1], Outgoing::Message(ServerMessage::ParticipantJoined { participant }) if participant.sid == "PA_2")
        );
        let Outgoing::Message(ServerMessage::Joined { room, .. }) = &drain(&mut a2_rx)[0] else {
            panic!("no Joined");
        };
        assert_eq!(
            room.participants.len(),
            1,
            "the replaced session is not listed"
        );
        assert_eq!(reg.participant_count(), 2);
    }

    #[test]
    fn track_events_reach_everyone_and_pick_subscribers() {
        let mut reg = Registry::new(false);
        let (t, mut t_rx) = member("PA_t", "t", Role::Teacher);
        let (s, _s_rx) = member("PA_s", "s", Role::Student);
        let (mut n, _n_rx) = member("PA_n", "n", Role::Student);
        n.permissions.can_subscribe = false;
        reg.join("r", t);
        reg.join("r", s);
        reg.join("r", n);
        drain(&mut t_rx);

        let subs = reg
            .track_published("PA_t", &camera("TR_1"))
            .expect("publisher known");
        assert_eq!(subs, vec!["PA_s".to_string()]);
        assert!(matches!(&drain(&mut t_rx)[..],
            [Outgoing::Message(ServerMessage::TrackPublished { track })] if track.sid == "TR_1" && track.participant_sid == "PA_t"));
        assert!(reg.track_published("PA_gone", &camera("TR_2")).is_none());

        assert!(reg.mute("PA_t", "TR_1", true));
        assert!(!reg.mute("PA_s", "TR_1", true), "not the student's track");
        assert!(!reg.mute("PA_t", "TR_nope", true));
        assert!(matches!(
            &drain(&mut t_rx)[..],
            [Outgoing::Message(ServerMessage::TrackMuted {
                muted: true,
                ..
            })]
        ));

        assert!(reg.track_unpublished("PA_t", "TR_1"));
        assert!(!reg.track_unpublished("PA_t", "TR_1"));
        assert!(reg.send_to("PA_s", ServerMessage::Pong));
        assert!(!reg.send_to("PA_gone", ServerMessage::Pong));
    }

    #[test]
    fn kick_ends_the_session() {
        let mut reg = Registry::new(false);
        let (t, mut t_rx) = member("PA_t", "t", Role::Teacher);
        reg.join("r", t);
        drain(&mut t_rx);
        assert_eq!(reg.kick("PA_t", REASON_PEER_FAILED), Some(None));
        assert_eq!(
            drain(&mut t_rx),
            vec![Outgoing::End {
                left: Some(REASON_PEER_FAILED.into())
            }]
        );
        assert_eq!(reg.room_count(), 0);
        assert_eq!(reg.kick("PA_t", REASON_PEER_FAILED), None);
    }

    #[test]
    fn empty_rooms_kept_until_reaped_unless_reused() {
        let mut reg = Registry::new(true);
        let (a, _a_rx) = member("PA_a", "a", Role::Teacher);
        reg.join("r", a);
        let (_, emptied) = reg.leave("PA_a").expect("present");
        let emptied = emptied.expect("room emptied");
        assert_eq!(reg.room_count(), 1);

        // Reused before the timeout: not removed.
        let (b, _b_rx) = member("PA_b", "b", Role::Teacher);
        reg.join("r", b);
        assert!(!reg.remove_room_if_empty(&emptied));
        let (_, emptied) = reg.leave("PA_b").expect("present");
        assert!(reg.remove_room_if_empty(&emptied.expect("emptied")));
        assert_eq!(reg.room_count(), 0);
    }

    /// The sids in the hand queue, by identity.
    fn hand_identities(reg: &Registry, room: &str) -> Vec<String> {
        let room = reg.room(room).expect("room");
        room.hands
            .iter()
            .map(|sid| room.member(sid).expect("member").info.identity.clone())
            .collect()
    }

    #[test]
    fn a_room_taken_over_gives_its_class_back_and_keeps_newcomers_out() {
        // On the origin: a locked class, two hands up (bo first), ana on stage, a recorder.
        let mut origin = Registry::new(false);
        let mut receivers = Vec::new();
        for (sid, identity, role) in [
            ("PA_t", "teacher", Role::Teacher),
            ("PA_a", "ana", Role::Student),
            ("PA_b", "bo", Role::Student),
            ("PA_c", "cy", Role::Student),
        ] {
            let (m, rx) = member(sid, identity, role);
            origin.join("r", m);
            receivers.push(rx);
        }
        let (mut recorder, _rec_rx) = member("PA_rec", "recorder", Role::Student);
        recorder.permissions.hidden = true;
        origin.join("r", recorder);
        origin.raise_hand("PA_b").expect("raise");
        origin.raise_hand("PA_c").expect("raise");
        origin.invite_to_stage("PA_t", "PA_a").expect("invite");
        origin.lock_room("PA_t", true).expect("lock");
        let state = origin.saved_state("r").expect("a state");
        assert!(state.locked);
        let saved: Vec<&str> = state
            .participants
            .iter()
            .map(|p| p.identity.as_str())
            .collect();
        assert_eq!(
            saved,
            ["teacher", "ana", "bo", "cy"],
            "hidden ones are not saved"
        );
        assert!(state.participants.iter().all(|p| p.in_room));
        assert_eq!(origin.saved_state("nowhere"), None);

        // The next origin: the room is not created until someone comes back, but it is locked.
        let mut next = Registry::new(false);
        assert!(next.restore_room_state("r", state.clone()));
        assert_eq!(next.room_count(), 0);
        let (stranger, _x) = member("PA_x", "stranger", Role::Student);
        assert_eq!(
            next.may_join("r", &stranger).unwrap_err().0,
            ErrorCode::RoomLocked
        );
        assert_eq!(next.saved_state("r"), Some(state.clone()));

        // cy first (its hand went up after bo's), then bo, ana, the teacher: all let in.
        for (sid, identity, role) in [
            ("PA_c2", "cy", Role::Student),
            ("PA_b2", "bo", Role::Student),
            ("PA_a2", "ana", Role::Student),
            ("PA_t2", "teacher", Role::Teacher),
        ] {
            let (m, _rx) = member(sid, identity, role);
            next.may_join("r", &m).expect("was in the class");
            let outcome = next.join("r", m);
            assert_eq!(outcome.room_created, sid == "PA_c2", "{sid}");
        }
        assert_eq!(hand_identities(&next, "r"), ["bo", "cy"]);
        let ana = next.permissions("PA_a2").expect("ana");
        assert!(ana.can_publish, "back on stage");
        assert!(!next.permissions("PA_b2").expect("bo").can_publish);
        let room = next.room("r").expect("room");
        assert!(room.locked);
        assert_eq!(
            next.may_join("r", &stranger).unwrap_err().0,
            ErrorCode::RoomLocked,
            "still locked to newcomers"
        );
        // A hand raised now goes after those given back.
        let (d, _d_rx) = member("PA_d", "dee", Role::Student);
        next.join("r", d);
        next.raise_hand("PA_d").expect("raise");
        assert_eq!(hand_identities(&next, "r"), ["bo", "cy", "dee"]);

        // A room live with participants keeps its own state.
        assert!(!next.restore_room_state("r", RoomState::default()));
        assert!(next.room("r").expect("room").locked);

        // The teacher back first and locking the (locked) room again keeps the class's way in.
        let mut again = Registry::new(false);
        assert!(again.restore_room_state("r", state));
        let (t, _t_rx) = member("PA_t3", "teacher", Role::Teacher);
        again.join("r", t);
        again.lock_room("PA_t3", true).expect("lock");
        let (bo, _bo_rx) = member("PA_b3", "bo", Role::Student);
        again.may_join("r", &bo).expect("bo was in the class");
    }

    #[test]
    fn sids_are_prefixed_and_distinct() {
        let a = new_participant_sid();
        let b = new_participant_sid();
        assert!(a.starts_with("PA_") && a.len() == 15);
        assert_ne!(a, b);
    }
}
