//! The registry's tests: joins, leaves, tracks and kicks as each participant's outbox sees
//! them, and a room carried over from a dead origin. Apart from `room.rs` for their length.

use super::*;
use aula_protocol::{TrackKind, TrackSource};
use aula_sfu::PublishedTrack;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cluster::RoomState;

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
