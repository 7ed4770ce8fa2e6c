//! Grants and class moderation over the protocol: every privileged action as staff, and the same
//! action from a student, refused with a clear code and without any change.
//!
//! Most tests run the real server (`aula_signaling::start`). The ones that need published tracks
//! use [`Harness`], a fake media plane (`common::media`) that records what it is asked to do, with the SFU's
//! events injected: no media has to flow to check that a revoked track is unpublished.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use aula_protocol::{
    ClientMessage, ErrorCode, Permissions, PublishSource, Role, ServerEvent, ServerFrame,
    ServerMessage, TrackAnnouncement, TrackKind, TrackSource,
};
use aula_sfu::{PublishedTrack, SfuEvent};
use aula_signaling::{Config, Server, start};
use common::media::{Call, FakeMedia, start_with_fake_media};
use common::{Client, eventually, token_with};
use tokio::sync::mpsc;

fn sid_of(joined: &ServerMessage) -> String {
    match joined {
        ServerMessage::Joined { participant, .. } => participant.sid.clone(),
        other => panic!("not Joined: {other:?}"),
    }
}

async fn real_server() -> Server {
    start(Config::loopback_ephemeral())
        .await
        .expect("server starts")
}

async fn join(addr: SocketAddr, identity: &str, role: Role) -> (Client, String) {
    let (client, joined) = Client::join(addr, "class", identity, role).await;
    let sid = sid_of(&joined);
    (client, sid)
}

fn announce(source: TrackSource) -> ClientMessage {
    ClientMessage::PublishOffer {
        sdp: "not really SDP".into(),
        tracks: vec![TrackAnnouncement {
            track_id: "t1".into(),
            source,
        }],
    }
}

/// Everything a participant may do only as staff, aimed at `other` (and a made-up track).
fn privileged_actions(other: &str, teacher: &str) -> Vec<ClientMessage> {
    let all = Permissions {
        can_publish: true,
        publish_sources: PublishSource::ALL.to_vec(),
        can_subscribe: true,
        can_publish_data: true,
        hidden: false,
        can_moderate: true,
    };
    vec![
        ClientMessage::LowerHand {
            participant_sid: Some(other.into()),
        },
        ClientMessage::InviteToStage {
            participant_sid: other.into(),
        },
        ClientMessage::RemoveFromStage {
            participant_sid: other.into(),
        },
        ClientMessage::MuteParticipantTrack {
            track_sid: "TR_made_up".into(),
        },
        ClientMessage::MuteAllStudents,
        ClientMessage::RemoveParticipant {
            participant_sid: other.into(),
            reason: None,
        },
        ClientMessage::RemoveParticipant {
            participant_sid: teacher.into(),
            reason: Some("coup".into()),
        },
        ClientMessage::LockRoom { locked: true },
        ClientMessage::EndClass,
        ClientMessage::SetPermissions {
            participant_sid: other.into(),
            permissions: all,
        },
    ]
}

#[tokio::test]
async fn a_student_is_refused_every_privileged_action_and_nothing_changes() {
    let server = real_server().await;
    let addr = server.http_addr();
    let (mut teacher, t_sid) = join(addr, "teacher", Role::Teacher).await;
    let (mut student, s_sid) = join(addr, "student", Role::Student).await;
    let (mut other, o_sid) = join(addr, "other", Role::Student).await;
    other.raise_hand_and_sync().await;
    teacher.sync().await;
    student.sync().await;

    // Aimed at the other student, then at itself (lowering one's own hand is not privileged).
    let at_self = privileged_actions(&s_sid, &t_sid)
        .into_iter()
        .filter(|a| !matches!(a, ClientMessage::LowerHand { .. }));
    for action in privileged_actions(&o_sid, &t_sid)
        .into_iter()
        .chain(at_self)
    {
        student.send(&action).await;
        assert_eq!(
            student.error_code().await,
            ErrorCode::Forbidden,
            "{action:?} must be forbidden to a student"
        );
    }
    // A student may not publish either, until invited on stage.
    student.send(&announce(TrackSource::Microphone)).await;
    assert_eq!(student.error_code().await, ErrorCode::Forbidden);

    // Nothing changed: nobody was told anything, everyone is still there, the room is open,
    // the hand is still raised, and the other student's permissions are untouched.
    assert_eq!(teacher.sync().await, vec![], "the teacher saw no change");
    assert_eq!(
        other.sync().await,
        vec![],
        "the other student saw no change"
    );
    assert_eq!(server.participant_count(), 3);
    let (late, joined) = Client::join(addr, "class", "late", Role::Student).await;
    let ServerMessage::Joined { room, .. } = joined else {
        unreachable!("join checked the variant");
    };
    assert!(!room.locked, "the room is still unlocked");
    let listed = |sid: &str| room.participants.iter().find(|p| p.sid == sid).cloned();
    assert!(listed(&t_sid).is_some() && listed(&s_sid).is_some());
    assert!(listed(&o_sid).expect("other still there").hand_raised);
    other.send(&announce(TrackSource::Microphone)).await;
    assert_eq!(
        other.error_code().await,
        ErrorCode::Forbidden,
        "the refused invite granted nothing"
    );
    late.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn publish_offers_are_checked_against_the_granted_sources() {
    let server = real_server().await;
    let addr = server.http_addr();
    // A learner allowed to share its screen only.
    let token = token_with("class", "ana", Role::Learner, |c| {
        c.publish_sources = vec![PublishSource::Screen];
    });
    let (mut learner, _) = Client::join_token(addr, token).await;
    learner.send(&announce(TrackSource::Camera)).await;
    assert_eq!(learner.error_code().await, ErrorCode::Forbidden);
    // An allowed source passes the permission check and reaches the SFU, which refuses the SDP.
    learner.send(&announce(TrackSource::ScreenShare)).await;
    assert_eq!(learner.error_code().await, ErrorCode::BadSdp);

    // A token that does not publish at all.
    let token = token_with("class", "bo", Role::Teacher, |c| c.can_publish = false);
    let (mut muted_teacher, _) = Client::join_token(addr, token).await;
    muted_teacher.send(&announce(TrackSource::Camera)).await;
    assert_eq!(muted_teacher.error_code().await, ErrorCode::Forbidden);
    server.shutdown().await;
}

#[tokio::test]
async fn a_hidden_participant_is_invisible_and_does_not_publish() {
    let server = real_server().await;
    let addr = server.http_addr();
    let (mut teacher, t_sid) = join(addr, "teacher", Role::Teacher).await;
    let token = token_with("class", "recorder", Role::Teacher, |c| c.hidden = true);
    let (mut recorder, joined) = Client::join_token(addr, token).await;
    let ServerMessage::Joined {
        room, permissions, ..
    } = joined
    else {
        unreachable!("join checked the variant");
    };
    assert_eq!(room.participants.len(), 1, "the recorder sees the teacher");
    let permissions = permissions.expect("permissions in joined");
    assert!(permissions.hidden && !permissions.can_publish && !permissions.can_moderate);

    let (_student, joined) = Client::join(addr, "class", "student", Role::Student).await;
    let ServerMessage::Joined { room, .. } = joined else {
        unreachable!("join checked the variant");
    };
    let sids: Vec<_> = room.participants.iter().map(|p| p.sid.clone()).collect();
    assert_eq!(sids, vec![t_sid], "the recorder is not in the snapshot");

    recorder.send(&announce(TrackSource::Camera)).await;
    assert_eq!(recorder.error_code().await, ErrorCode::Forbidden);
    recorder
        .send(&ClientMessage::LockRoom { locked: true })
        .await;
    assert_eq!(recorder.error_code().await, ErrorCode::Forbidden);
    recorder.send(&ClientMessage::Leave).await;
    recorder.expect_closed().await;

    // The teacher heard of the student only: never of the recorder, coming or going.
    let seen = teacher.sync().await;
    let joins: Vec<_> = seen
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Message(ServerMessage::ParticipantJoined { participant }) => {
                Some(participant.identity.clone())
            }
            ServerFrame::Message(ServerMessage::ParticipantLeft { .. }) => Some("left".to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(joins, vec!["student".to_owned()]);
    server.shutdown().await;
}

#[tokio::test]
async fn hands_queue_in_order_for_staff_and_invite_to_stage_grants_publishing() {
    let server = real_server().await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut first, first_sid) = join(addr, "first", Role::Student).await;
    let (mut second, second_sid) = join(addr, "second", Role::Student).await;
    first.raise_hand_and_sync().await;
    second.raise_hand_and_sync().await;
    let queue = |sids: Vec<&String>| ServerEvent::HandQueue {
        participant_sids: sids.into_iter().cloned().collect(),
    };
    teacher
        .event_until(|e| *e == queue(vec![&first_sid, &second_sid]))
        .await;

    // An assistant joining later is shown the queue at once.
    let (mut assistant, _) = join(addr, "assistant", Role::Assistant).await;
    assistant
        .event_until(|e| *e == queue(vec![&first_sid, &second_sid]))
        .await;

    first
        .send(&ClientMessage::LowerHand {
            participant_sid: None,
        })
        .await;
    teacher
        .event_until(|e| *e == queue(vec![&second_sid]))
        .await;

    teacher
        .send(&ClientMessage::InviteToStage {
            participant_sid: second_sid.clone(),
        })
        .await;
    let ServerEvent::PermissionsChanged { permissions, .. } = second
        .event_until(|e| matches!(e, ServerEvent::PermissionsChanged { .. }))
        .await
    else {
        unreachable!("matched");
    };
    assert!(permissions.can_publish);
    assert_eq!(
        permissions.publish_sources,
        vec![PublishSource::Camera, PublishSource::Microphone]
    );
    teacher.event_until(|e| *e == queue(vec![])).await;
    // On stage: the offer passes the permission check (and fails only as SDP).
    second.send(&announce(TrackSource::Microphone)).await;
    assert_eq!(second.error_code().await, ErrorCode::BadSdp);
    second.send(&announce(TrackSource::ScreenShare)).await;
    assert_eq!(second.error_code().await, ErrorCode::Forbidden);
    server.shutdown().await;
}

#[tokio::test]
async fn a_locked_room_refuses_new_students_but_not_staff_recorders_or_returning_ones() {
    let server = real_server().await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut student, _) = join(addr, "student", Role::Student).await;
    teacher
        .send(&ClientMessage::LockRoom { locked: true })
        .await;
    for client in [&mut teacher, &mut student] {
        client
            .event_until(|e| *e == ServerEvent::RoomLocked { locked: true })
            .await;
    }

    let mut latecomer = Client::connect(addr).await;
    latecomer
        .send(&ClientMessage::Join {
            version: aula_protocol::PROTOCOL_VERSION,
            token: common::dev_token("class", "latecomer", Role::Student),
        })
        .await;
    assert_eq!(latecomer.expect_error().await, ErrorCode::RoomLocked);
    latecomer.expect_closed().await;

    // Staff get in; so does a student reconnecting (its old session is replaced).
    let (_assistant, _) = join(addr, "assistant", Role::Assistant).await;
    let (_student_again, _) = join(addr, "student", Role::Student).await;
    let recorder = token_with("class", "recorder", Role::Student, |c| c.hidden = true);
    let (_recorder, _) = Client::join_token(addr, recorder).await;

    teacher
        .send(&ClientMessage::LockRoom { locked: false })
        .await;
    teacher
        .event_until(|e| *e == ServerEvent::RoomLocked { locked: false })
        .await;
    let (_latecomer, _) = join(addr, "latecomer", Role::Student).await;
    server.shutdown().await;
}

#[tokio::test]
async fn removing_a_participant_tells_it_why_and_the_others_that_it_left() {
    let server = real_server().await;
    let addr = server.http_addr();
    let (mut assistant, _) = join(addr, "assistant", Role::Assistant).await;
    let (mut student, s_sid) = join(addr, "student", Role::Student).await;
    assistant
        .send(&ClientMessage::RemoveParticipant {
            participant_sid: s_sid.clone(),
            reason: Some("disruptive".into()),
        })
        .await;
    let closing = student.expect_closed_frames().await;
    assert!(
        closing.contains(&ServerFrame::Message(ServerMessage::Left {
            reason: "disruptive".into()
        })),
        "{closing:?}"
    );
    assistant
        .message_until(|m| {
            matches!(m, ServerMessage::ParticipantLeft { participant_sid } if *participant_sid == s_sid)
        })
        .await;

    // Unknown sids are reported as such (to staff only: a student got `forbidden` above).
    assistant
        .send(&ClientMessage::RemoveParticipant {
            participant_sid: "PA_nobody".into(),
            reason: None,
        })
        .await;
    assert_eq!(assistant.error_code().await, ErrorCode::UnknownParticipant);
    server.shutdown().await;
}

#[tokio::test]
async fn ending_the_class_ends_everyone_and_the_room() {
    let server = real_server().await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut assistant, _) = join(addr, "assistant", Role::Assistant).await;
    let (mut student, _) = join(addr, "student", Role::Student).await;
    // An assistant moderates but does not end the class.
    assistant.send(&ClientMessage::EndClass).await;
    assert_eq!(assistant.error_code().await, ErrorCode::Forbidden);
    assert_eq!(server.participant_count(), 3);

    teacher.send(&ClientMessage::EndClass).await;
    for client in [&mut teacher, &mut assistant, &mut student] {
        let frames = client.expect_closed_frames().await;
        assert!(
            frames.contains(&ServerFrame::Message(ServerMessage::Left {
                reason: "class ended".into()
            })),
            "{frames:?}"
        );
    }
    eventually("the room is gone", || server.room_count() == 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_teacher_revokes_an_assistants_moderation_live() {
    let server = real_server().await;
    let addr = server.http_addr();
    let (mut teacher, t_sid) = join(addr, "teacher", Role::Teacher).await;
    let (mut assistant, a_sid) = join(addr, "assistant", Role::Assistant).await;
    let (_student, s_sid) = join(addr, "student", Role::Student).await;

    // The assistant cannot act on the teacher.
    assistant
        .send(&ClientMessage::RemoveParticipant {
            participant_sid: t_sid.clone(),
            reason: None,
        })
        .await;
    assert_eq!(assistant.error_code().await, ErrorCode::Forbidden);

    teacher
        .send(&ClientMessage::SetPermissions {
            participant_sid: a_sid.clone(),
            permissions: Permissions {
                can_publish: true,
                publish_sources: vec![PublishSource::Camera, PublishSource::Microphone],
                can_subscribe: true,
                can_publish_data: true,
                hidden: false,
                can_moderate: false,
            },
        })
        .await;
    let ServerEvent::PermissionsChanged { permissions, .. } = assistant
        .event_until(|e| matches!(e, ServerEvent::PermissionsChanged { .. }))
        .await
    else {
        unreachable!("matched");
    };
    assert!(!permissions.can_moderate);

    for action in [
        ClientMessage::LockRoom { locked: true },
        ClientMessage::RemoveParticipant {
            participant_sid: s_sid.clone(),
            reason: None,
        },
        ClientMessage::MuteAllStudents,
    ] {
        assistant.send(&action).await;
        assert_eq!(assistant.error_code().await, ErrorCode::Forbidden);
    }
    assert_eq!(server.participant_count(), 3, "the student is still there");
    server.shutdown().await;
}

#[tokio::test]
async fn chat_and_data_are_relayed_and_rate_limited() {
    let server = real_server().await;
    let addr = server.http_addr();
    let (mut teacher, _) = join(addr, "teacher", Role::Teacher).await;
    let (mut student, s_sid) = join(addr, "student", Role::Student).await;
    teacher.sync().await;

    // The burst passes; the next line is refused.
    for i in 0..5 {
        student
            .send(&ClientMessage::Chat {
                text: format!("line {i}"),
            })
            .await;
    }
    student
        .send(&ClientMessage::Chat {
            text: "one too many".into(),
        })
        .await;
    assert_eq!(student.error_code().await, ErrorCode::RateLimited);
    let chats: Vec<_> = teacher
        .sync()
        .await
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Event(ServerEvent::Chat { from, text, .. }) => Some((from, text)),
            _ => None,
        })
        .collect();
    assert_eq!(chats.len(), 5);
    assert!(chats.iter().all(|(from, _)| *from == s_sid));
    assert_eq!(chats[4].1, "line 4");

    student
        .send(&ClientMessage::Data {
            topic: "quiz".into(),
            payload: "B".into(),
        })
        .await;
    let event = teacher
        .event_until(|e| matches!(e, ServerEvent::Data { .. }))
        .await;
    assert_eq!(
        event,
        ServerEvent::Data {
            from: s_sid.clone(),
            topic: "quiz".into(),
            payload: "B".into()
        }
    );
    student
        .send(&ClientMessage::Data {
            topic: "quiz".into(),
            payload: "x".repeat(5000),
        })
        .await;
    assert_eq!(student.error_code().await, ErrorCode::PayloadTooLarge);

    // A token without data grants chats nothing.
    let token = token_with("class", "quiet", Role::Student, |c| {
        c.can_publish_data = false;
    });
    let (mut quiet, _) = Client::join_token(addr, token).await;
    quiet.send(&ClientMessage::Chat { text: "hi".into() }).await;
    assert_eq!(quiet.error_code().await, ErrorCode::Forbidden);
    server.shutdown().await;
}

// --- With a fake media plane: tracks, stage and mutes. ---

struct Harness {
    server: Server,
    media: Arc<FakeMedia>,
    events: mpsc::UnboundedSender<SfuEvent>,
}

impl Harness {
    async fn start() -> Self {
        let (server, media, events) = start_with_fake_media(Config::loopback_ephemeral()).await;
        Self {
            server,
            media,
            events,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.http_addr()
    }

    /// Injects "media arrived" for a track of `participant`.
    fn publish(&self, participant: &str, sid: &str, source: TrackSource) {
        let kind = match source {
            TrackSource::Microphone | TrackSource::ScreenShareAudio => TrackKind::Audio,
            TrackSource::Camera | TrackSource::ScreenShare => TrackKind::Video,
        };
        self.events
            .send(SfuEvent::TrackPublished {
                participant: participant.into(),
                track: PublishedTrack {
                    sid: sid.into(),
                    kind,
                    source,
                    simulcast: false,
                    mime_type: "audio/opus".into(),
                },
            })
            .expect("dispatcher running");
    }
}

/// Teacher and a student already invited on stage with a live microphone track `TR_mic`.
async fn class_with_student_on_stage(h: &Harness) -> (Client, String, Client, String) {
    let (mut teacher, t_sid) = join(h.addr(), "teacher", Role::Teacher).await;
    let (mut student, s_sid) = join(h.addr(), "student", Role::Student).await;
    teacher
        .send(&ClientMessage::InviteToStage {
            participant_sid: s_sid.clone(),
        })
        .await;
    student
        .event_until(|e| matches!(e, ServerEvent::PermissionsChanged { permissions, .. } if permissions.can_publish))
        .await;
    student.send(&announce(TrackSource::Microphone)).await;
    student
        .message_until(|m| matches!(m, ServerMessage::PublishAnswer { .. }))
        .await;
    h.publish(&s_sid, "TR_mic", TrackSource::Microphone);
    teacher
        .message_until(
            |m| matches!(m, ServerMessage::TrackPublished { track } if track.sid == "TR_mic"),
        )
        .await;
    (teacher, t_sid, student, s_sid)
}

#[tokio::test]
async fn removing_from_stage_unpublishes_the_students_tracks_at_once() {
    let h = Harness::start().await;
    let (mut teacher, _, mut student, s_sid) = class_with_student_on_stage(&h).await;

    teacher
        .send(&ClientMessage::RemoveFromStage {
            participant_sid: s_sid.clone(),
        })
        .await;
    teacher
        .message_until(|m| matches!(m, ServerMessage::TrackUnpublished { track_sid, .. } if track_sid == "TR_mic"))
        .await;
    let ServerEvent::PermissionsChanged { permissions, .. } = student
        .event_until(|e| matches!(e, ServerEvent::PermissionsChanged { .. }))
        .await
    else {
        unreachable!("matched");
    };
    assert!(!permissions.can_publish);
    eventually("the SFU was told to unpublish", || {
        h.media.has(&Call::Unpublish("TR_mic".into()))
    })
    .await;
    student.send(&announce(TrackSource::Microphone)).await;
    assert_eq!(student.error_code().await, ErrorCode::Forbidden);
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_moderator_mute_pauses_the_track_until_its_publisher_unmutes() {
    let h = Harness::start().await;
    let (mut teacher, _, mut student, s_sid) = class_with_student_on_stage(&h).await;

    // A student cannot mute the teacher's or anyone's track.
    student
        .send(&ClientMessage::MuteParticipantTrack {
            track_sid: "TR_mic".into(),
        })
        .await;
    assert_eq!(student.error_code().await, ErrorCode::Forbidden);
    assert!(!h.media.has(&Call::Pause("TR_mic".into(), true)));

    teacher
        .send(&ClientMessage::MuteParticipantTrack {
            track_sid: "TR_mic".into(),
        })
        .await;
    let muted = ServerMessage::TrackMuted {
        track_sid: "TR_mic".into(),
        participant_sid: s_sid.clone(),
        muted: true,
    };
    for client in [&mut teacher, &mut student] {
        client.message_until(|m| *m == muted).await;
    }
    eventually("paused in the SFU", || {
        h.media.has(&Call::Pause("TR_mic".into(), true))
    })
    .await;

    student
        .send(&ClientMessage::MuteTrack {
            track_sid: "TR_mic".into(),
            muted: false,
        })
        .await;
    eventually("resumed in the SFU", || {
        h.media.has(&Call::Pause("TR_mic".into(), false))
    })
    .await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn mute_all_students_pauses_student_microphones_only() {
    let h = Harness::start().await;
    let (mut teacher, t_sid, _student, _) = class_with_student_on_stage(&h).await;
    teacher.send(&announce(TrackSource::Microphone)).await;
    teacher
        .message_until(|m| matches!(m, ServerMessage::PublishAnswer { .. }))
        .await;
    h.publish(&t_sid, "TR_teacher_mic", TrackSource::Microphone);
    teacher
        .message_until(|m| matches!(m, ServerMessage::TrackPublished { track } if track.sid == "TR_teacher_mic"))
        .await;
    teacher.send(&ClientMessage::MuteAllStudents).await;
    eventually("student mic paused", || {
        h.media.has(&Call::Pause("TR_mic".into(), true))
    })
    .await;
    teacher.sync().await;
    assert!(!h.media.has(&Call::Pause("TR_teacher_mic".into(), true)));
    h.server.shutdown().await;
}

#[tokio::test]
async fn tracks_arriving_without_the_grant_are_unpublished_and_not_announced() {
    let h = Harness::start().await;
    let (mut teacher, _, _student, s_sid) = class_with_student_on_stage(&h).await;
    // On stage means camera and microphone, not the screen.
    h.publish(&s_sid, "TR_screen", TrackSource::ScreenShare);
    eventually("the screen track is refused", || {
        h.media.has(&Call::Unpublish("TR_screen".into()))
    })
    .await;
    let seen = teacher.sync().await;
    assert!(
        !seen.iter().any(|f| matches!(f,
            ServerFrame::Message(ServerMessage::TrackPublished { track }) if track.sid == "TR_screen")),
        "{seen:?}"
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn can_subscribe_false_gets_no_subscriptions_until_granted() {
    let h = Harness::start().await;
    let (mut teacher, t_sid) = join(h.addr(), "teacher", Role::Teacher).await;
    let token = token_with("class", "blind", Role::Student, |c| c.can_subscribe = false);
    let (_blind, joined) = Client::join_token(h.addr(), token).await;
    let b_sid = sid_of(&joined);
    let (_student, s_sid) = join(h.addr(), "student", Role::Student).await;
    h.publish(&t_sid, "TR_cam", TrackSource::Camera);
    eventually("the student subscribed", || {
        h.media
            .has(&Call::Subscribe(s_sid.clone(), "TR_cam".into()))
    })
    .await;
    teacher.sync().await;
    assert!(
        !h.media
            .has(&Call::Subscribe(b_sid.clone(), "TR_cam".into()))
    );

    // The teacher grants subscribing: the SFU is asked to forward the room's tracks.
    teacher
        .send(&ClientMessage::SetPermissions {
            participant_sid: b_sid.clone(),
            permissions: Permissions {
                can_subscribe: true,
                can_publish_data: true,
                ..Default::default()
            },
        })
        .await;
    eventually("subscribed once granted", || {
        h.media
            .has(&Call::Subscribe(b_sid.clone(), "TR_cam".into()))
    })
    .await;
    // And revoking it again unsubscribes.
    teacher
        .send(&ClientMessage::SetPermissions {
            participant_sid: b_sid.clone(),
            permissions: Permissions::default(),
        })
        .await;
    eventually("unsubscribed once revoked", || {
        h.media
            .has(&Call::Unsubscribe(b_sid.clone(), "TR_cam".into()))
    })
    .await;
    h.server.shutdown().await;
}
