//! Room logic driven by scripted media-plane events: what the control plane does when the SFU
//! says a track started, an offer is ready, or a peer failed. Uses a fake [`MediaPlane`] so no
//! media is needed to get there.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aula_protocol::{
    ClientMessage, ConnectionQuality, ErrorCode, IceCandidate, PeerTarget, Role, ServerFrame,
    ServerMessage, TrackAnnouncement, TrackKind, TrackSource,
};
use aula_sfu::{PeerState, PublishedTrack, RenderedSize, SfuError, SfuEvent};
use aula_signaling::media::MediaPlane;
use aula_signaling::{Config, Server};
use common::media::start_with_plane;
use common::{Client, eventually, http, token_with};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    PublishOffer(String),
    SubscribeAnswer(String),
    Candidate(String),
    Subscribe(String, String),
    Remove(String),
    RenderedSize(String, String, RenderedSize),
    Staff(String),
}

/// Records every call; an SDP or candidate of `"bad"` is refused like the real SFU would, and
/// so is a rendered size for `TR_stale` (as for a track the SFU no longer forwards).
#[derive(Default)]
struct FakeMedia {
    calls: Mutex<Vec<Call>>,
}

impl FakeMedia {
    fn record(&self, call: Call) {
        self.calls.lock().expect("not poisoned").push(call);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }
}

impl MediaPlane for FakeMedia {
    fn publish_offer<'a>(
        &'a self,
        participant: &'a str,
        sdp: String,
        _tracks: Vec<TrackAnnouncement>,
    ) -> BoxFuture<'a, Result<String, SfuError>> {
        self.record(Call::PublishOffer(participant.into()));
        Box::pin(async move {
            if sdp == "bad" {
                Err(SfuError::BadSdp("fake".into()))
            } else {
                Ok(format!("answer to {sdp}"))
            }
        })
    }

    fn subscribe_answer<'a>(
        &'a self,
        participant: &'a str,
        _sdp: String,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::SubscribeAnswer(participant.into()));
        Box::pin(async { Ok(()) })
    }

    fn add_candidate<'a>(
        &'a self,
        participant: &'a str,
        _target: PeerTarget,
        candidate: IceCandidate,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::Candidate(participant.into()));
        Box::pin(async move {
            if candidate.candidate == "bad" {
                Err(SfuError::BadCandidate("fake".into()))
            } else if candidate.candidate == "explode" {
                Err(SfuError::Internal("fake".into()))
            } else {
                Ok(())
            }
        })
    }

    fn subscribe<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::Subscribe(participant.into(), track_sid.into()));
        Box::pin(async { Ok(()) })
    }

    fn remove_participant<'a>(
        &'a self,
        participant: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::Remove(participant.into()));
        Box::pin(async { Ok(()) })
    }

    fn set_staff<'a>(&'a self, participant: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::Staff(participant.into()));
        Box::pin(async { Ok(()) })
    }

    fn set_rendered_size<'a>(
        &'a self,
        participant: &'a str,
        track_sid: &'a str,
        size: RenderedSize,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.record(Call::RenderedSize(
            participant.into(),
            track_sid.into(),
            size,
        ));
        Box::pin(async move {
            if track_sid == "TR_stale" {
                Err(SfuError::UnknownTrack(track_sid.into()))
            } else {
                Ok(())
            }
        })
    }
}

struct Harness {
    server: Server,
    media: Arc<FakeMedia>,
    events: mpsc::UnboundedSender<SfuEvent>,
}

impl Harness {
    async fn start() -> Self {
        let media = Arc::new(FakeMedia::default());
        let (server, events) = start_with_plane(Config::loopback_ephemeral(), media.clone()).await;
        Self {
            server,
            media,
            events,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.http_addr()
    }

    fn emit(&self, event: SfuEvent) {
        self.events.send(event).expect("dispatcher running");
    }
}

fn sid_of(joined: &ServerMessage) -> String {
    match joined {
        ServerMessage::Joined { participant, .. } => participant.sid.clone(),
        other => panic!("not Joined: {other:?}"),
    }
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

#[tokio::test]
async fn track_published_reaches_everyone_and_subscribes_the_others() {
    let h = Harness::start().await;
    let (mut teacher, jt) = Client::join(h.addr(), "r", "t", Role::Teacher).await;
    let t_sid = sid_of(&jt);
    let (mut student, js) = Client::join(h.addr(), "r", "s", Role::Student).await;
    let s_sid = sid_of(&js);
    teacher
        .recv_until(|m| matches!(m, ServerMessage::ParticipantJoined { .. }))
        .await;

    teacher
        .send(&ClientMessage::PublishOffer {
            sdp: "offer".into(),
            tracks: vec![],
        })
        .await;
    assert_eq!(
        teacher.recv().await,
        ServerMessage::PublishAnswer {
            sdp: "answer to offer".into()
        }
    );

    h.emit(SfuEvent::TrackPublished {
        participant: t_sid.clone(),
        track: camera("TR_cam"),
    });
    for client in [&mut teacher, &mut student] {
        match client.recv().await {
            ServerMessage::TrackPublished { track } => {
                assert_eq!(track.sid, "TR_cam");
                assert_eq!(track.participant_sid, t_sid);
                assert_eq!(track.kind, TrackKind::Video);
                assert!(track.simulcast);
                assert!(!track.muted);
            }
            other => panic!("expected TrackPublished, got {other:?}"),
        }
    }
    eventually("student subscribed", || {
        h.media
            .calls()
            .contains(&Call::Subscribe(s_sid.clone(), "TR_cam".into()))
    })
    .await;
    assert!(
        !h.media
            .calls()
            .contains(&Call::Subscribe(t_sid.clone(), "TR_cam".into())),
        "the publisher is not subscribed to itself"
    );

    // The subscribe offer goes to the student only; its answer reaches the SFU.
    h.emit(SfuEvent::SubscribeOffer {
        participant: s_sid.clone(),
        sdp: "sub-offer".into(),
    });
    assert_eq!(
        student.recv().await,
        ServerMessage::SubscribeOffer {
            sdp: "sub-offer".into()
        }
    );
    student
        .send(&ClientMessage::SubscribeAnswer {
            sdp: "sub-answer".into(),
        })
        .await;
    student.assert_alive().await;
    assert!(
        h.media
            .calls()
            .contains(&Call::SubscribeAnswer(s_sid.clone()))
    );
    teacher.assert_alive().await; // nothing else queued for the teacher

    // A newcomer gets the track in its snapshot and is subscribed to it.
    let (_late, jl) = Client::join(h.addr(), "r", "late", Role::Student).await;
    let ServerMessage::Joined { room, .. } = &jl else {
        unreachable!()
    };
    let teacher_info = room
        .participants
        .iter()
        .find(|p| p.sid == t_sid)
        .expect("teacher listed");
    assert_eq!(teacher_info.tracks.len(), 1);
    assert_eq!(teacher_info.tracks[0].sid, "TR_cam");
    let late_sid = sid_of(&jl);
    eventually("newcomer subscribed", || {
        h.media
            .calls()
            .contains(&Call::Subscribe(late_sid.clone(), "TR_cam".into()))
    })
    .await;

    // Mute: only the publisher may, and everyone hears about it.
    student
        .send(&ClientMessage::MuteTrack {
            track_sid: "TR_cam".into(),
            muted: true,
        })
        .await;
    assert!(matches!(
        student
            .recv_until(|m| matches!(m, ServerMessage::Error { .. }))
            .await,
        ServerMessage::Error {
            code: ErrorCode::UnknownTrack,
            ..
        }
    ));
    teacher
        .send(&ClientMessage::MuteTrack {
            track_sid: "TR_cam".into(),
            muted: true,
        })
        .await;
    let muted = ServerMessage::TrackMuted {
        track_sid: "TR_cam".into(),
        participant_sid: t_sid.clone(),
        muted: true,
    };
    assert_eq!(
        teacher
            .recv_until(|m| matches!(m, ServerMessage::TrackMuted { .. }))
            .await,
        muted
    );
    assert_eq!(
        student
            .recv_until(|m| matches!(m, ServerMessage::TrackMuted { .. }))
            .await,
        muted
    );

    h.emit(SfuEvent::TrackUnpublished {
        participant: t_sid.clone(),
        track_sid: "TR_cam".into(),
    });
    assert_eq!(
        student
            .recv_until(|m| matches!(m, ServerMessage::TrackUnpublished { .. }))
            .await,
        ServerMessage::TrackUnpublished {
            track_sid: "TR_cam".into(),
            participant_sid: t_sid.clone()
        }
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn leaving_publisher_unpublishes_its_tracks_and_is_removed_from_the_sfu() {
    let h = Harness::start().await;
    let (teacher, jt) = Client::join(h.addr(), "r", "t", Role::Teacher).await;
    let t_sid = sid_of(&jt);
    let (mut student, _) = Client::join(h.addr(), "r", "s", Role::Student).await;
    h.emit(SfuEvent::TrackPublished {
        participant: t_sid.clone(),
        track: camera("TR_cam"),
    });
    student
        .recv_until(|m| matches!(m, ServerMessage::TrackPublished { .. }))
        .await;

    teacher.close().await;
    assert_eq!(
        student.recv().await,
        ServerMessage::TrackUnpublished {
            track_sid: "TR_cam".into(),
            participant_sid: t_sid.clone()
        }
    );
    assert_eq!(
        student.recv().await,
        ServerMessage::ParticipantLeft {
            participant_sid: t_sid.clone()
        }
    );
    eventually("teacher removed from the SFU", || {
        h.media.calls().contains(&Call::Remove(t_sid.clone()))
    })
    .await;
    // The SFU's own late TrackUnpublished for the departed teacher is ignored.
    h.emit(SfuEvent::TrackUnpublished {
        participant: t_sid.clone(),
        track_sid: "TR_cam".into(),
    });
    student.assert_alive().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn failed_peer_ends_the_session_like_a_leave() {
    let h = Harness::start().await;
    let (mut teacher, jt) = Client::join(h.addr(), "r", "t", Role::Teacher).await;
    let t_sid = sid_of(&jt);
    let (mut student, _) = Client::join(h.addr(), "r", "s", Role::Student).await;

    h.emit(SfuEvent::PeerState {
        participant: t_sid.clone(),
        target: PeerTarget::Publish,
        state: PeerState::Connected,
    });
    teacher
        .recv_until(|m| matches!(m, ServerMessage::ParticipantJoined { .. }))
        .await;
    teacher.assert_alive().await;

    h.emit(SfuEvent::PeerState {
        participant: t_sid.clone(),
        target: PeerTarget::Publish,
        state: PeerState::Failed,
    });
    let msgs = teacher.expect_closed().await;
    assert_eq!(
        msgs,
        vec![ServerMessage::Left {
            reason: "peer connection failed".into()
        }]
    );
    assert_eq!(
        student.recv().await,
        ServerMessage::ParticipantLeft {
            participant_sid: t_sid.clone()
        }
    );
    eventually("teacher removed from the SFU", || {
        h.media.calls().contains(&Call::Remove(t_sid.clone()))
    })
    .await;
    assert_eq!(h.server.participant_count(), 1);
    h.server.shutdown().await;
}

#[tokio::test]
async fn connection_quality_goes_to_the_participant_and_to_staff_only() {
    let h = Harness::start().await;
    let (mut teacher, _) = Client::join(h.addr(), "r", "t", Role::Teacher).await;
    let (mut student, js) = Client::join(h.addr(), "r", "s", Role::Student).await;
    let s_sid = sid_of(&js);
    let (mut other, _) = Client::join(h.addr(), "r", "o", Role::Student).await;
    // With the figures behind the level, rounded for people: 12.3 % loss, 85 ms round trip.
    let poor = ServerMessage::ConnectionQuality {
        participant_sid: s_sid.clone(),
        quality: ConnectionQuality::Poor,
        loss_permille: Some(123),
        rtt_ms: Some(85),
    };
    h.emit(SfuEvent::ConnectionQuality {
        participant: s_sid.clone(),
        quality: ConnectionQuality::Poor,
        loss: 0.1234,
        rtt: Some(Duration::from_micros(85_400)),
    });
    assert_eq!(student.recv_until(|m| *m == poor).await, poor);
    assert_eq!(teacher.recv_until(|m| *m == poor).await, poor);
    // The other student is told nothing about a classmate's network.
    let seen = other.sync().await;
    assert!(
        !seen.iter().any(|f| matches!(
            f,
            ServerFrame::Message(ServerMessage::ConnectionQuality { .. })
        )),
        "{seen:?}"
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_support_agent_sees_its_learners_connection_quality() {
    let h = Harness::start().await;
    let (mut agent, _) = Client::join(h.addr(), "support-x", "a", Role::Agent).await;
    let (mut learner, jl) = Client::join(h.addr(), "support-x", "l", Role::Learner).await;
    let poor = ServerMessage::ConnectionQuality {
        participant_sid: sid_of(&jl),
        quality: ConnectionQuality::Poor,
        loss_permille: Some(90),
        rtt_ms: None,
    };
    h.emit(SfuEvent::ConnectionQuality {
        participant: sid_of(&jl),
        quality: ConnectionQuality::Poor,
        loss: 0.09,
        rtt: None,
    });
    assert_eq!(learner.recv_until(|m| *m == poor).await, poor);
    assert_eq!(agent.recv_until(|m| *m == poor).await, poor);
    h.server.shutdown().await;
}

#[tokio::test]
async fn media_errors_map_to_codes_and_the_session_continues() {
    let h = Harness::start().await;
    let (mut t, _) = Client::join(h.addr(), "r", "t", Role::Teacher).await;
    t.send(&ClientMessage::PublishOffer {
        sdp: "bad".into(),
        tracks: vec![],
    })
    .await;
    assert_eq!(t.expect_error().await, ErrorCode::BadSdp);
    for (candidate, code) in [
        ("bad", ErrorCode::BadCandidate),
        ("explode", ErrorCode::Internal),
    ] {
        t.send(&ClientMessage::Candidate {
            target: PeerTarget::Publish,
            candidate: IceCandidate {
                candidate: candidate.into(),
                sdp_mid: None,
                sdp_m_line_index: None,
                username_fragment: None,
            },
        })
        .await;
        assert_eq!(t.expect_error().await, code);
    }
    t.assert_alive().await;
    h.server.shutdown().await;
}

#[tokio::test]
async fn events_for_unknown_participants_are_ignored() {
    let h = Harness::start().await;
    let (mut c, _) = Client::join(h.addr(), "r", "t", Role::Teacher).await;
    h.emit(SfuEvent::TrackPublished {
        participant: "PA_ghost".into(),
        track: camera("TR_x"),
    });
    h.emit(SfuEvent::SubscribeOffer {
        participant: "PA_ghost".into(),
        sdp: "x".into(),
    });
    h.emit(SfuEvent::PeerState {
        participant: "PA_ghost".into(),
        target: PeerTarget::Subscribe,
        state: PeerState::Failed,
    });
    c.assert_alive().await;
    assert_eq!(h.server.participant_count(), 1);
    assert!(
        h.media
            .calls()
            .iter()
            .all(|c| !matches!(c, Call::Subscribe(..)))
    );
    h.server.shutdown().await;
}

fn track_settings(track_sid: &str, width: u32, height: u32) -> ClientMessage {
    ClientMessage::TrackSettings {
        track_sid: track_sid.into(),
        width,
        height,
    }
}

#[tokio::test]
async fn rendered_sizes_reach_the_sfu_and_bad_ones_are_refused_with_a_code() {
    let h = Harness::start().await;
    let (mut teacher, jt) = Client::join(h.addr(), "r", "t", Role::Teacher).await;
    let t_sid = sid_of(&jt);
    let (mut student, js) = Client::join(h.addr(), "r", "s", Role::Student).await;
    let s_sid = sid_of(&js);
    let no_subscribe = token_with("r", "n", Role::Student, |c| c.can_subscribe = false);
    let (mut listener, _) = Client::join_token(h.addr(), no_subscribe).await;
    let (mut elsewhere, _) = Client::join(h.addr(), "other", "o", Role::Student).await;
    let microphone = PublishedTrack {
        sid: "TR_mic".into(),
        kind: TrackKind::Audio,
        source: TrackSource::Microphone,
        simulcast: false,
        mime_type: "audio/opus".into(),
    };
    for track in [camera("TR_cam"), camera("TR_stale"), microphone] {
        h.emit(SfuEvent::TrackPublished {
            participant: t_sid.clone(),
            track,
        });
    }
    eventually("student subscribed", || {
        let calls = h.media.calls();
        ["TR_cam", "TR_stale", "TR_mic"]
            .iter()
            .all(|t| calls.contains(&Call::Subscribe(s_sid.clone(), (*t).into())))
    })
    .await;

    // Shown at 640x360, then hidden: each reaches the SFU as sent, and nothing comes back.
    for (width, height) in [(640, 360), (0, 0)] {
        student.send(&track_settings("TR_cam", width, height)).await;
        let before_pong = student.sync().await;
        assert!(
            !before_pong
                .iter()
                .any(|f| matches!(f, ServerFrame::Message(ServerMessage::Error { .. }))),
            "{before_pong:?}"
        );
        assert!(h.media.calls().contains(&Call::RenderedSize(
            s_sid.clone(),
            "TR_cam".into(),
            RenderedSize { width, height }
        )));
    }

    // Refusals: each answered with its code, the session goes on, the SFU hears nothing.
    let calls_before = h.media.calls().len();
    let refused = [
        (track_settings("TR_nope", 640, 360), ErrorCode::UnknownTrack),
        (track_settings("TR_mic", 640, 360), ErrorCode::UnknownTrack),
        (track_settings("TR_cam", 16385, 360), ErrorCode::BadMessage),
        (
            track_settings("TR_cam", 640, u32::MAX),
            ErrorCode::BadMessage,
        ),
    ];
    for (msg, code) in refused {
        student.send(&msg).await;
        assert_eq!(student.error_code().await, code, "{msg:?}");
        student.sync().await;
    }
    // The publisher itself, one without the subscribe grant, one in another room.
    for client in [&mut teacher, &mut listener, &mut elsewhere] {
        client.send(&track_settings("TR_cam", 640, 360)).await;
        assert_eq!(client.error_code().await, ErrorCode::UnknownTrack);
        client.sync().await;
    }
    student
        .send_text(r#"{"type":"track_settings","track_sid":"TR_cam","width":-1,"height":360}"#)
        .await;
    assert_eq!(student.error_code().await, ErrorCode::BadMessage);
    assert_eq!(
        h.media.calls().len(),
        calls_before,
        "refused before the SFU"
    );

    // What the SFU refuses (a track it no longer forwards) comes back coded too.
    student.send(&track_settings("TR_stale", 320, 180)).await;
    assert_eq!(student.error_code().await, ErrorCode::UnknownTrack);
    student.assert_alive().await;

    let metrics = http(h.addr(), "GET", "/metrics").await.body;
    assert!(
        metrics.contains(r#"aula_signaling_messages_total{type="track_settings"} 10"#),
        "{metrics}"
    );
    h.server.shutdown().await;
}

/// Teachers and assistants are marked as staff in the media plane when they join (their
/// cameras come first when a student's bandwidth is short); students are not.
#[tokio::test]
async fn staff_are_marked_in_the_media_plane_when_they_join() {
    let h = Harness::start().await;
    let (_teacher, jt) = Client::join(h.addr(), "r", "t", Role::Teacher).await;
    let (_assistant, ja) = Client::join(h.addr(), "r", "a", Role::Assistant).await;
    let (_student, js) = Client::join(h.addr(), "r", "s", Role::Student).await;
    let staff: Vec<Call> = h
        .media
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Staff(_)))
        .collect();
    assert_eq!(
        staff,
        [Call::Staff(sid_of(&jt)), Call::Staff(sid_of(&ja))],
        "student {} is not staff",
        sid_of(&js)
    );
}
