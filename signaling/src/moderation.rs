//! Class moderation: hands, stage, mutes, removal, lock, end of class, live permission changes.
//!
//! Every action is a [`Registry`] method that checks who may do it *and* changes the state
//! under the registry's lock, queuing the resulting messages in the same critical section (the
//! ordering argument of [`crate::room`]). What the media plane must do (unpublish, pause,
//! (un)subscribe) is returned as [`MediaEffect`]s for the caller to apply after the lock.
//!
//! The rule for who may act on whom is one function, [`authorize`]: the actor must be allowed to
//! moderate (staff, unless a teacher revoked it) and must outrank the target
//! ([`aula_protocol::Role::rank`]), so an assistant can mute a student but not the teacher, and
//! a teacher can revoke an assistant. Refusals come back as `forbidden` before anything is
//! looked up or changed, so a student probing with made-up sids learns nothing.

use aula_protocol::{
    ErrorCode, Permissions, Role, ServerEvent, ServerMessage, TrackKind, TrackSource,
};

use crate::room::{EmptiedRoom, Member, Refused, Registry, Room};

/// `left` reason for a participant removed by a moderator without a reason of its own.
pub(crate) const REASON_REMOVED: &str = "removed by a moderator";
/// `left` reason for everyone when the teacher ends the class.
pub(crate) const REASON_CLASS_ENDED: &str = "class ended";
/// Longest reason a moderator may give, in bytes.
const MAX_REASON_BYTES: usize = 200;

/// Work for the media plane, to do after the registry lock is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MediaEffect {
    /// Stop a track at once (its publisher lost the right to send it).
    Unpublish { track_sid: String },
    /// Pause (moderator mute) or resume forwarding a track.
    Pause { track_sid: String, paused: bool },
    Subscribe {
        participant: String,
        track_sid: String,
    },
    Unsubscribe {
        participant: String,
        track_sid: String,
    },
}

fn forbidden(message: impl Into<String>) -> Refused {
    (ErrorCode::Forbidden, message.into())
}

fn unknown_participant(sid: &str) -> Refused {
    (
        ErrorCode::UnknownParticipant,
        format!("no participant {sid} in your room"),
    )
}

/// The actor must moderate; the target (if any) must be in the actor's room and outranked.
fn authorize(room: &Room, actor: &str, target: Option<&str>) -> Result<(), Refused> {
    let actor = room
        .member(actor)
        .ok_or_else(|| unknown_participant(actor))?;
    if !actor.permissions.can_moderate {
        return Err(forbidden(
            "only the teacher and assistants with moderation rights may do this",
        ));
    }
    let Some(target) = target else {
        return Ok(());
    };
    let target = room
        .member(target)
        .ok_or_else(|| unknown_participant(target))?;
    if actor.info.role.rank() <= target.info.role.rank() {
        return Err(forbidden(format!(
            "a {:?} cannot moderate a {:?}",
            actor.info.role, target.info.role
        )));
    }
    Ok(())
}

/// The hand queue as staff see it.
pub(crate) fn hand_queue(room: &Room) -> ServerEvent {
    ServerEvent::HandQueue {
        participant_sids: room.hands.clone(),
    }
}

/// Sends the queue to staff and to everyone in it (who can then show their position).
pub(crate) fn send_hand_queue(room: &Room) {
    let event = hand_queue(room);
    for m in &room.members {
        if m.permissions.can_moderate || room.hands.contains(&m.info.sid) {
            m.send_event(event.clone());
        }
    }
}

/// A member's permissions as staff and the member itself are told them.
pub(crate) fn permissions_event(member: &Member) -> ServerEvent {
    ServerEvent::PermissionsChanged {
        participant_sid: member.info.sid.clone(),
        permissions: member.permissions.clone(),
    }
}

/// What a participant who becomes staff (by joining, or by being granted moderation) must know
/// to moderate: the others' permissions (who is on stage, which assistant moderates) and the
/// raised hands.
pub(crate) fn send_staff_view(room: &Room, to: &Member) {
    for m in room.visible().filter(|m| m.info.sid != to.info.sid) {
        to.send_event(permissions_event(m));
    }
    if !room.hands.is_empty() {
        to.send_event(hand_queue(room));
    }
}

/// Tells the target and the staff of the room about the target's new permissions.
fn send_permissions(room: &Room, target: &str) {
    let Some(member) = room.member(target) else {
        return;
    };
    let event = permissions_event(member);
    for m in &room.members {
        if m.info.sid == target || m.permissions.can_moderate {
            m.send_event(event.clone());
        }
    }
}

/// Sets a hand's state and announces the queue; false if nothing changed.
fn set_hand(room: &mut Room, sid: &str, raised: bool) -> bool {
    let Some(member) = room.member_mut(sid) else {
        return false;
    };
    if member.info.hand_raised == raised {
        return false;
    }
    member.info.hand_raised = raised;
    if raised {
        room.queue_hand(sid);
    } else {
        room.dequeue_hand(sid);
    }
    // The queue changed for those who were in it too (their position moved).
    let event = hand_queue(room);
    for m in &room.members {
        if m.permissions.can_moderate || room.hands.contains(&m.info.sid) || m.info.sid == sid {
            m.send_event(event.clone());
        }
    }
    true
}

/// Replaces `target`'s permissions and works out what the media plane must undo or start.
/// `hidden` never changes live (announcing or un-announcing a participant mid-class would be
/// a different feature); a hidden participant never publishes or moderates.
fn apply_permissions(room: &mut Room, target: &str, mut new: Permissions) -> Vec<MediaEffect> {
    let Some(member) = room.member(target) else {
        return Vec::new();
    };
    let old = member.permissions.clone();
    new.hidden = old.hidden;
    if new.hidden {
        new.can_publish = false;
        new.can_moderate = false;
    }
    new.publish_sources.sort_by_key(|s| *s as u8);
    new.publish_sources.dedup();

    let mut effects = Vec::new();
    let revoked: Vec<String> = member
        .info
        .tracks
        .iter()
        .filter(|t| !new.allows(t.source))
        .map(|t| t.sid.clone())
        .collect();
    let others_tracks: Vec<String> = room
        .members
        .iter()
        .filter(|m| m.info.sid != target)
        .flat_map(|m| m.info.tracks.iter().map(|t| t.sid.clone()))
        .collect();
    if old.can_subscribe && !new.can_subscribe {
        effects.extend(others_tracks.iter().map(|t| MediaEffect::Unsubscribe {
            participant: target.to_owned(),
            track_sid: t.clone(),
        }));
    } else if !old.can_subscribe && new.can_subscribe {
        effects.extend(others_tracks.iter().map(|t| MediaEffect::Subscribe {
            participant: target.to_owned(),
            track_sid: t.clone(),
        }));
    }
    if let Some(member) = room.member_mut(target) {
        member.permissions = new;
        member.info.tracks.retain(|t| !revoked.contains(&t.sid));
    }
    // The tracks go for everyone at once; the SFU's own `TrackUnpublished` that follows is then
    // a no-op in the registry.
    for track_sid in revoked {
        room.broadcast(
            &ServerMessage::TrackUnpublished {
                track_sid: track_sid.clone(),
                participant_sid: target.to_owned(),
            },
            None,
        );
        room.force_muted.remove(&track_sid);
        effects.push(MediaEffect::Unpublish { track_sid });
    }
    send_permissions(room, target);
    if !old.can_moderate
        && let Some(member) = room.member(target)
        && member.permissions.can_moderate
    {
        send_staff_view(room, member);
    }
    effects
}

/// Mutes one track by a moderator: the state, the broadcast and the SFU pause.
fn force_mute(room: &mut Room, track_sid: &str) -> Option<MediaEffect> {
    let (publisher, track) = room.members.iter_mut().find_map(|m| {
        let sid = m.info.sid.clone();
        m.info
            .tracks
            .iter_mut()
            .find(|t| t.sid == track_sid)
            .map(|t| (sid, t))
    })?;
    track.muted = true;
    room.force_muted.insert(track_sid.to_owned());
    room.broadcast(
        &ServerMessage::TrackMuted {
            track_sid: track_sid.to_owned(),
            participant_sid: publisher,
            muted: true,
        },
        None,
    );
    Some(MediaEffect::Pause {
        track_sid: track_sid.to_owned(),
        paused: true,
    })
}

impl Registry {
    fn room_for(&mut self, actor: &str) -> Result<&mut Room, Refused> {
        self.room_of_mut(actor)
            .ok_or_else(|| (ErrorCode::NotJoined, "you are not in a room".to_owned()))
    }

    /// Raises the actor's own hand. Hidden participants have no hand to raise.
    pub fn raise_hand(&mut self, actor: &str) -> Result<(), Refused> {
        let room = self.room_for(actor)?;
        if room.member(actor).is_some_and(|m| m.permissions.hidden) {
            return Err(forbidden("hidden participants cannot raise a hand"));
        }
        set_hand(room, actor, true);
        Ok(())
    }

    /// Lowers the actor's own hand, or (staff) someone else's.
    pub fn lower_hand(&mut self, actor: &str, target: Option<&str>) -> Result<(), Refused> {
        let room = self.room_for(actor)?;
        let target = match target {
            Some(t) if t != actor => {
                authorize(room, actor, Some(t))?;
                t
            }
            _ => actor,
        };
        set_hand(room, target, false);
        Ok(())
    }

    /// Lets the target publish camera and microphone, lowering its hand.
    pub fn invite_to_stage(&mut self, actor: &str, target: &str) -> Result<(), Refused> {
        let room = self.room_for(actor)?;
        authorize(room, actor, Some(target))?;
        let Some(member) = room.member(target) else {
            return Err(unknown_participant(target));
        };
        if member.permissions.hidden {
            return Err(forbidden("hidden participants cannot go on stage"));
        }
        let mut new = member.permissions.clone();
        new.can_publish = true;
        new.publish_sources.extend(crate::token::stage_sources());
        set_hand(room, target, false);
        // Only adds rights: no media effects.
        apply_permissions(room, target, new);
        Ok(())
    }

    /// Revokes the target's publishing; its tracks are unpublished at once.
    pub fn remove_from_stage(
        &mut self,
        actor: &str,
        target: &str,
    ) -> Result<Vec<MediaEffect>, Refused> {
        let room = self.room_for(actor)?;
        authorize(room, actor, Some(target))?;
        let Some(member) = room.member(target) else {
            return Err(unknown_participant(target));
        };
        let new = Permissions {
            can_publish: false,
            publish_sources: Vec::new(),
            ..member.permissions.clone()
        };
        Ok(apply_permissions(room, target, new))
    }

    /// Replaces the target's permissions. Only a teacher may grant moderation.
    pub fn set_permissions(
        &mut self,
        actor: &str,
        target: &str,
        new: Permissions,
    ) -> Result<Vec<MediaEffect>, Refused> {
        let room = self.room_for(actor)?;
        authorize(room, actor, Some(target))?;
        let granting_moderation = new.can_moderate
            && !room
                .member(target)
                .is_some_and(|m| m.permissions.can_moderate);
        let actor_is_teacher = room
            .member(actor)
            .is_some_and(|m| m.info.role == Role::Teacher);
        if granting_moderation && !actor_is_teacher {
            return Err(forbidden("only a teacher may grant moderation"));
        }
        Ok(apply_permissions(room, target, new))
    }

    /// Mutes another participant's track (the SFU pauses it).
    pub fn mute_participant_track(
        &mut self,
        actor: &str,
        track_sid: &str,
    ) -> Result<Vec<MediaEffect>, Refused> {
        let room = self.room_for(actor)?;
        authorize(room, actor, None)?;
        let publisher = room
            .members
            .iter()
            .find(|m| m.info.tracks.iter().any(|t| t.sid == track_sid))
            .map(|m| m.info.sid.clone())
            .ok_or_else(|| {
                (
                    ErrorCode::UnknownTrack,
                    format!("no track {track_sid} in your room"),
                )
            })?;
        if publisher != actor {
            authorize(room, actor, Some(&publisher))?;
        }
        Ok(force_mute(room, track_sid).into_iter().collect())
    }

    /// Mutes every student's microphone that is not muted yet.
    pub fn mute_all_students(&mut self, actor: &str) -> Result<Vec<MediaEffect>, Refused> {
        let room = self.room_for(actor)?;
        authorize(room, actor, None)?;
        let tracks: Vec<String> = room
            .members
            .iter()
            .filter(|m| m.info.role == Role::Student)
            .flat_map(|m| m.info.tracks.iter())
            .filter(|t| {
                t.kind == TrackKind::Audio && t.source == TrackSource::Microphone && !t.muted
            })
            .map(|t| t.sid.clone())
            .collect();
        Ok(tracks.iter().filter_map(|t| force_mute(room, t)).collect())
    }

    /// Whether a track was paused by a moderator; clears the mark (the publisher unmutes it).
    pub fn take_force_muted(&mut self, publisher: &str, track_sid: &str) -> bool {
        self.room_of_mut(publisher)
            .is_some_and(|room| room.force_muted.remove(track_sid))
    }

    /// Removes the target; it gets `left` with the reason. Returns the emptied room, if any.
    pub fn remove_participant(
        &mut self,
        actor: &str,
        target: &str,
        reason: Option<&str>,
    ) -> Result<Option<EmptiedRoom>, Refused> {
        let room = self.room_for(actor)?;
        authorize(room, actor, Some(target))?;
        let reason = reason
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or(REASON_REMOVED);
        if reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control) {
            return Err((
                ErrorCode::BadMessage,
                format!("reason must be printable and at most {MAX_REASON_BYTES} bytes"),
            ));
        }
        Ok(self.kick(target, reason).flatten())
    }

    /// Locks or unlocks the room and tells everyone.
    pub fn lock_room(&mut self, actor: &str, locked: bool) -> Result<(), Refused> {
        let room = self.room_for(actor)?;
        authorize(room, actor, None)?;
        if locked && !room.locked {
            // Who was lost before the lock is not put back on stage once the door is closed
            // (and is refused anyway while it stays locked). Locking a locked room changes
            // nothing: a class taken over from a dead origin, locked, is let back in by its
            // memory (see `crate::rejoin`), which a teacher's second lock must not undo.
            room.comebacks.clear();
        }
        if room.locked != locked {
            room.locked = locked;
            room.broadcast_event(&ServerEvent::RoomLocked { locked });
        }
        Ok(())
    }

    /// Ends the class: only a teacher. Everyone (the teacher too) is told `class ended`.
    pub fn end_class(&mut self, actor: &str) -> Result<Vec<String>, Refused> {
        let room = self.room_for(actor)?;
        authorize(room, actor, None)?;
        if !room
            .member(actor)
            .is_some_and(|m| m.info.role == Role::Teacher)
        {
            return Err(forbidden("only a teacher may end the class"));
        }
        room.comebacks.clear();
        let sids: Vec<String> = room.members.iter().map(|m| m.info.sid.clone()).collect();
        for sid in &sids {
            // The room empties with the last one; no timeout applies to an ended class.
            if let Some(Some(emptied)) = self.kick(sid, REASON_CLASS_ENDED) {
                self.remove_room_if_empty(&emptied);
            }
        }
        Ok(sids)
    }

    // --- The admin API acts with the server's own authority: no actor, no rank check, but
    // the target must be in the named room. ---

    fn admin_target(&mut self, room: &str, sid: &str) -> Result<&mut Room, Refused> {
        self.room_mut(room)
            .filter(|r| r.member(sid).is_some())
            .ok_or_else(|| unknown_participant(sid))
    }

    /// Replaces a participant's permissions (as [`Registry::set_permissions`] without a rank).
    pub fn admin_set_permissions(
        &mut self,
        room: &str,
        sid: &str,
        new: Permissions,
    ) -> Result<Vec<MediaEffect>, Refused> {
        let room = self.admin_target(room, sid)?;
        Ok(apply_permissions(room, sid, new))
    }

    /// Mutes one of a participant's tracks.
    pub fn admin_mute(
        &mut self,
        room: &str,
        sid: &str,
        track_sid: &str,
    ) -> Result<Vec<MediaEffect>, Refused> {
        let room = self.admin_target(room, sid)?;
        let owns = room
            .member(sid)
            .is_some_and(|m| m.info.tracks.iter().any(|t| t.sid == track_sid));
        if !owns {
            return Err((
                ErrorCode::UnknownTrack,
                format!("{sid} has no track {track_sid}"),
            ));
        }
        Ok(force_mute(room, track_sid).into_iter().collect())
    }

    /// Removes a participant; it is told `reason`.
    pub fn admin_remove(
        &mut self,
        room: &str,
        sid: &str,
        reason: &str,
    ) -> Result<Option<EmptiedRoom>, Refused> {
        self.admin_target(room, sid)?;
        Ok(self.kick(sid, reason).flatten())
    }

    /// Whether `actor` may send chat and data (checked before its rate limit is charged).
    pub fn data_allowed(&self, actor: &str) -> Result<(), Refused> {
        self.data_sender(actor).map(|_| ())
    }

    /// The sender's member entry, if it may send chat and data.
    fn data_sender(&self, actor: &str) -> Result<(&Room, &Member), Refused> {
        let room = self
            .room_of(actor)
            .ok_or_else(|| (ErrorCode::NotJoined, "you are not in a room".to_owned()))?;
        let member = room
            .member(actor)
            .ok_or_else(|| unknown_participant(actor))?;
        if !member.permissions.can_publish_data {
            return Err(forbidden("your permissions do not allow chat or data"));
        }
        Ok((room, member))
    }

    /// Relays a chat line to the room (the sender included: that is its delivery receipt).
    pub fn chat(&self, actor: &str, text: &str) -> Result<(), Refused> {
        let (room, member) = self.data_sender(actor)?;
        room.broadcast_event(&ServerEvent::Chat {
            from: actor.to_owned(),
            name: member.info.name.clone(),
            text: text.to_owned(),
        });
        Ok(())
    }

    /// Relays a data message to everyone else in the room.
    pub fn data(&self, actor: &str, topic: &str, payload: &str) -> Result<(), Refused> {
        let (room, _) = self.data_sender(actor)?;
        let event = ServerEvent::Data {
            from: actor.to_owned(),
            topic: topic.to_owned(),
            payload: payload.to_owned(),
        };
        for m in room.members.iter().filter(|m| m.info.sid != actor) {
            m.send_event(event.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{Outgoing, participant_info};
    use aula_protocol::PublishSource;
    use aula_sfu::PublishedTrack;
    use tokio::sync::mpsc::{self, UnboundedReceiver};

    fn join(reg: &mut Registry, sid: &str, role: Role) -> UnboundedReceiver<Outgoing> {
        let (outbox, rx) = mpsc::unbounded_channel();
        reg.join(
            "r",
            Member {
                info: participant_info(sid.into(), sid, "", role),
                permissions: crate::token::role_permissions(role),
                token_permissions: crate::token::role_permissions(role),
                outbox,
                resume_token: None,
            },
        );
        rx
    }

    fn events(rx: &mut UnboundedReceiver<Outgoing>) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Outgoing::Event(e) = m {
                out.push(e);
            }
        }
        out
    }

    fn mic(sid: &str) -> PublishedTrack {
        PublishedTrack {
            sid: sid.into(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            simulcast: false,
            mime_type: "audio/opus".into(),
        }
    }

    #[test]
    fn hands_queue_in_order_and_staff_see_it() {
        let mut reg = Registry::new(false);
        let mut t = join(&mut reg, "t", Role::Teacher);
        let _a = join(&mut reg, "a", Role::Student);
        let _b = join(&mut reg, "b", Role::Student);
        reg.raise_hand("b").expect("raise");
        reg.raise_hand("a").expect("raise");
        reg.raise_hand("b").expect("raising twice is a no-op");
        let last = events(&mut t).pop().expect("teacher saw the queue");
        assert_eq!(
            last,
            ServerEvent::HandQueue {
                participant_sids: vec!["b".into(), "a".into()]
            }
        );
        // A student may not lower another's hand; the teacher may.
        assert_eq!(
            reg.lower_hand("a", Some("b")).unwrap_err().0,
            ErrorCode::Forbidden
        );
        reg.lower_hand("t", Some("b")).expect("teacher lowers");
        assert_eq!(
            events(&mut t).pop(),
            Some(ServerEvent::HandQueue {
                participant_sids: vec!["a".into()]
            })
        );
    }

    #[test]
    fn staff_learn_everyones_permissions() {
        let permissions_of = |events: Vec<ServerEvent>| -> Vec<(String, bool)> {
            events
                .into_iter()
                .filter_map(|e| match e {
                    ServerEvent::PermissionsChanged {
                        participant_sid,
                        permissions,
                    } => Some((participant_sid, permissions.can_publish)),
                    _ => None,
                })
                .collect()
        };
        let mut reg = Registry::new(false);
        let mut t = join(&mut reg, "t", Role::Teacher);
        let mut s = join(&mut reg, "s", Role::Student);
        // The teacher is told the newcomer's; the student is told nobody's.
        assert_eq!(permissions_of(events(&mut t)), vec![("s".into(), false)]);
        reg.invite_to_stage("t", "s").expect("invite");
        reg.raise_hand("s").expect("raise");
        events(&mut s);
        let _s2 = join(&mut reg, "s2", Role::Student);
        assert!(permissions_of(events(&mut s)).is_empty());

        // An assistant joining later learns who is on stage, and the raised hands.
        let mut a = join(&mut reg, "a", Role::Assistant);
        let joined = events(&mut a);
        assert_eq!(
            permissions_of(joined.clone()),
            vec![("t".into(), true), ("s".into(), true), ("s2".into(), false)]
        );
        assert!(joined.contains(&ServerEvent::HandQueue {
            participant_sids: vec!["s".into()]
        }));

        // Revoked, then granted moderation again: it is sent the room as it stands then.
        let mut revoked = reg.permissions("a").expect("present");
        revoked.can_moderate = false;
        reg.set_permissions("t", "a", revoked.clone())
            .expect("revoke");
        events(&mut a);
        revoked.can_moderate = true;
        reg.set_permissions("t", "a", revoked).expect("grant");
        let granted = permissions_of(events(&mut a));
        assert!(granted.contains(&("s".into(), true)), "{granted:?}");
    }

    #[test]
    fn stage_grants_then_revokes_with_unpublish() {
        let mut reg = Registry::new(false);
        let _t = join(&mut reg, "t", Role::Teacher);
        let mut s = join(&mut reg, "s", Role::Student);
        assert_eq!(
            reg.invite_to_stage("s", "s").unwrap_err().0,
            ErrorCode::Forbidden
        );
        reg.invite_to_stage("t", "s").expect("invite");
        let p = reg.permissions("s").expect("present");
        assert!(p.allows(TrackSource::Microphone) && !p.allows(TrackSource::ScreenShare));
        assert!(matches!(
            events(&mut s).pop(),
            Some(ServerEvent::PermissionsChanged { permissions, .. }) if permissions.can_publish
        ));
        reg.track_published("s", &mic("TR_m")).expect("published");
        let effects = reg.remove_from_stage("t", "s").expect("remove");
        assert_eq!(
            effects,
            vec![MediaEffect::Unpublish {
                track_sid: "TR_m".into()
            }]
        );
        assert!(!reg.permissions("s").expect("present").can_publish);
        assert!(!reg.track_unpublished("s", "TR_m"), "already forgotten");
    }

    #[test]
    fn assistants_outranked_by_teacher_only() {
        let mut reg = Registry::new(false);
        let _t = join(&mut reg, "t", Role::Teacher);
        let mut a = join(&mut reg, "a", Role::Assistant);
        let _a2 = join(&mut reg, "a2", Role::Assistant);
        let _s = join(&mut reg, "s", Role::Student);
        assert_eq!(
            reg.remove_participant("a", "t", None).unwrap_err().0,
            ErrorCode::Forbidden
        );
        assert_eq!(
            reg.remove_participant("a", "a2", None).unwrap_err().0,
            ErrorCode::Forbidden
        );
        // The teacher revokes the assistant's moderation; it can no longer lock the room.
        let revoked = Permissions {
            can_moderate: false,
            ..reg.permissions("a").expect("present")
        };
        reg.set_permissions("t", "a", revoked)
            .expect("teacher revokes");
        assert!(events(&mut a).iter().any(|e| matches!(e,
            ServerEvent::PermissionsChanged { permissions, .. } if !permissions.can_moderate)));
        assert_eq!(
            reg.lock_room("a", true).unwrap_err().0,
            ErrorCode::Forbidden
        );
        // An assistant cannot grant moderation to a student.
        let mut grant = reg.permissions("s").expect("present");
        grant.can_moderate = true;
        assert_eq!(
            reg.set_permissions("a2", "s", grant).unwrap_err().0,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn narrowing_sources_unpublishes_only_those_tracks() {
        let mut reg = Registry::new(false);
        let _t = join(&mut reg, "t", Role::Teacher);
        let _l = join(&mut reg, "a", Role::Assistant);
        reg.track_published("a", &mic("TR_m")).expect("published");
        let mut p = reg.permissions("a").expect("present");
        p.publish_sources = vec![PublishSource::Camera];
        let effects = reg.set_permissions("t", "a", p).expect("set");
        assert_eq!(
            effects,
            vec![MediaEffect::Unpublish {
                track_sid: "TR_m".into()
            }]
        );
    }

    #[test]
    fn mute_all_and_end_class() {
        let mut reg = Registry::new(false);
        let mut t = join(&mut reg, "t", Role::Teacher);
        let _s = join(&mut reg, "s", Role::Student);
        reg.invite_to_stage("t", "s").expect("invite");
        reg.track_published("s", &mic("TR_s")).expect("published");
        reg.track_published("t", &mic("TR_t")).expect("published");
        let effects = reg.mute_all_students("t").expect("mute all");
        assert_eq!(
            effects,
            vec![MediaEffect::Pause {
                track_sid: "TR_s".into(),
                paused: true
            }]
        );
        assert!(reg.take_force_muted("s", "TR_s"));
        assert!(!reg.take_force_muted("s", "TR_s"));
        assert_eq!(reg.end_class("s").unwrap_err().0, ErrorCode::Forbidden);
        assert_eq!(reg.end_class("t").expect("ended").len(), 2);
        assert_eq!(reg.room_count(), 0);
        let mut ends = 0;
        while let Ok(m) = t.try_recv() {
            if m == (Outgoing::End {
                left: Some(REASON_CLASS_ENDED.into()),
            }) {
                ends += 1;
            }
        }
        assert_eq!(ends, 1);
    }
}
