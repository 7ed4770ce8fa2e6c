//! The support desk over the protocol: on duty, ask for help, routing into a private room,
//! queueing with positions, transfer, end, and the wait/duration histograms on `/metrics`.

mod common;

use aula_protocol::{ClientMessage, ErrorCode, Role, ServerEvent, ServerMessage, TrackSource};
use aula_signaling::{Config, start};
use common::{Client, http};

fn on_duty(skills: &[&str], capacity: u32) -> ClientMessage {
    ClientMessage::GoOnDuty {
        skills: skills.iter().map(|s| s.to_string()).collect(),
        capacity,
    }
}

fn help(topic: &str) -> ClientMessage {
    ClientMessage::RequestHelp {
        topic: topic.into(),
        language: "en".into(),
    }
}

/// `(session_id, room, token)` of the next `SupportAssigned`.
async fn assigned(client: &mut Client) -> (String, String, String) {
    match client
        .event_until(|e| matches!(e, ServerEvent::SupportAssigned { .. }))
        .await
    {
        ServerEvent::SupportAssigned {
            session_id,
            room,
            token,
            ..
        } => (session_id, room, token),
        _ => unreachable!("matched"),
    }
}

#[tokio::test]
async fn learners_are_routed_queued_transferred_and_served_in_private_rooms() {
    let server = start(Config::loopback_ephemeral())
        .await
        .expect("server starts");
    let addr = server.http_addr();
    let (mut agent, _) = Client::join(addr, "desk", "agent-audio", Role::Agent).await;
    let (mut billing, _) = Client::join(addr, "desk", "agent-billing", Role::Agent).await;
    let (mut ana, _) = Client::join(addr, "lobby", "ana", Role::Learner).await;
    let (mut bo, _) = Client::join(addr, "lobby", "bo", Role::Learner).await;
    let (mut student, _) = Client::join(addr, "lobby", "sam", Role::Student).await;

    // Roles are checked: a student neither asks nor goes on duty.
    student.send(&help("audio")).await;
    assert_eq!(student.error_code().await, ErrorCode::Forbidden);
    student.send(&on_duty(&["audio"], 1)).await;
    assert_eq!(student.error_code().await, ErrorCode::Forbidden);

    // No agent yet: Ana waits first in line, with no estimate.
    ana.send(&help("audio")).await;
    assert_eq!(
        ana.event_until(|e| matches!(e, ServerEvent::SupportQueued { .. }))
            .await,
        ServerEvent::SupportQueued {
            position: 1,
            estimated_wait_secs: None
        }
    );
    agent.send(&on_duty(&["audio", "en"], 1)).await;
    billing.send(&on_duty(&["billing"], 1)).await;
    let (session, room, agent_token) = assigned(&mut agent).await;
    let (ana_session, ana_room, ana_token) = assigned(&mut ana).await;
    assert_eq!((&session, &room), (&ana_session, &ana_room));

    // Bo waits behind the busy audio agent, with an estimate.
    bo.send(&help("audio")).await;
    let ServerEvent::SupportQueued {
        position,
        estimated_wait_secs,
    } = bo
        .event_until(|e| matches!(e, ServerEvent::SupportQueued { .. }))
        .await
    else {
        unreachable!("matched");
    };
    assert_eq!(position, 1);
    assert!(estimated_wait_secs.is_some());

    // Both join the private room; the learner may share its screen.
    let (mut agent_room, _) = Client::join_token(addr, agent_token).await;
    let (mut ana_room_client, joined) = Client::join_token(addr, ana_token).await;
    let ServerMessage::Joined {
        room: info,
        permissions,
        ..
    } = joined
    else {
        unreachable!("checked");
    };
    assert_eq!(info.participants.len(), 1, "the agent is there");
    assert!(
        permissions
            .expect("permissions")
            .allows(TrackSource::ScreenShare)
    );

    // The audio agent hands Ana to billing: it is released and takes Bo.
    agent
        .send(&ClientMessage::TransferSession {
            session_id: session.clone(),
            skill: "billing".into(),
        })
        .await;
    let (billing_session, billing_room, _) = assigned(&mut billing).await;
    assert_eq!((&billing_session, &billing_room), (&session, &room));
    let (bo_session, _, _) = assigned(&mut bo).await;
    assert_ne!(bo_session, session);

    // Only a session's own agent or learner ends it.
    agent
        .send(&ClientMessage::EndSupportSession {
            session_id: session.clone(),
        })
        .await;
    assert_eq!(agent.error_code().await, ErrorCode::UnknownSession);
    ana.send(&ClientMessage::EndSupportSession {
        session_id: session.clone(),
    })
    .await;
    billing
        .event_until(
            |e| matches!(e, ServerEvent::SupportEnded { session_id, .. } if *session_id == session),
        )
        .await;
    // The private room closes.
    for client in [&mut agent_room, &mut ana_room_client] {
        let frames = client.expect_closed_frames().await;
        assert!(
            frames.iter().any(|f| matches!(f,
                aula_protocol::ServerFrame::Message(ServerMessage::Left { reason }) if reason == "support session ended")),
            "{frames:?}"
        );
    }

    let metrics = http(addr, "GET", "/metrics").await.body;
    assert!(
        metrics.contains("aula_support_queue_wait_seconds_count 3"),
        "two first assignments and one transfer: {metrics}"
    );
    assert!(metrics.contains("aula_support_session_duration_seconds_count 1"));
    server.shutdown().await;
}

#[tokio::test]
async fn agents_see_the_queue_and_learners_rate_ended_sessions_once() {
    let server = start(Config::loopback_ephemeral())
        .await
        .expect("server starts");
    let addr = server.http_addr();
    let (mut agent, _) = Client::join(addr, "desk", "agent-audio", Role::Agent).await;
    let (mut ana, _) = Client::join(addr, "lobby", "ana", Role::Learner).await;
    let (mut bo, _) = Client::join(addr, "lobby", "bo", Role::Learner).await;

    // An agent going on duty sees the queue, and sees it change.
    agent.send(&on_duty(&["audio"], 1)).await;
    assert_eq!(
        agent
            .event_until(|e| matches!(e, ServerEvent::SupportQueue { .. }))
            .await,
        ServerEvent::SupportQueue { waiting: vec![] }
    );
    bo.send(&help("billing")).await;
    let ServerEvent::SupportQueue { waiting } = agent
        .event_until(|e| matches!(e, ServerEvent::SupportQueue { waiting } if !waiting.is_empty()))
        .await
    else {
        unreachable!("matched");
    };
    let seen: Vec<_> = waiting
        .iter()
        .map(|w| (w.name.as_str(), w.topic.as_str(), w.language.as_str()))
        .collect();
    assert_eq!(seen, vec![("bo", "billing", "en")]);

    ana.send(&help("audio")).await;
    let (session, _, _) = assigned(&mut ana).await;
    let rate = |good| ClientMessage::RateSupportSession {
        session_id: session.clone(),
        good,
    };
    // Not while the session lasts, never by the agent, and once by the learner.
    ana.send(&rate(true)).await;
    assert_eq!(ana.error_code().await, ErrorCode::UnknownSession);
    ana.send(&ClientMessage::EndSupportSession {
        session_id: session.clone(),
    })
    .await;
    ana.event_until(|e| matches!(e, ServerEvent::SupportEnded { .. }))
        .await;
    agent.send(&rate(false)).await;
    assert_eq!(agent.error_code().await, ErrorCode::UnknownSession);
    ana.send(&rate(true)).await;
    ana.send(&rate(false)).await;
    assert_eq!(ana.error_code().await, ErrorCode::UnknownSession);

    let metrics = http(addr, "GET", "/metrics").await.body;
    assert!(
        metrics.contains(r#"aula_support_ratings_total{rating="good"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"aula_support_ratings_total{rating="bad"} 0"#));
    server.shutdown().await;
}
