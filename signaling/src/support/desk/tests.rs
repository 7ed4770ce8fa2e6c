//! The support desk's tests: queueing, routing, transfers, roles and ratings. Apart from
//! `desk.rs` for its length.

use super::*;
use tokio::sync::mpsc::{self, UnboundedReceiver};

fn caller(sid: &str, role: Role) -> (Caller, UnboundedReceiver<Outgoing>) {
    let (outbox, rx) = mpsc::unbounded_channel();
    (
        Caller {
            sid: sid.into(),
            identity: format!("id-{sid}"),
            name: format!("Name {sid}"),
            role,
            outbox,
        },
        rx,
    )
}

fn events(rx: &mut UnboundedReceiver<Outgoing>) -> Vec<ServerEvent> {
    let mut out = Vec::new();
    while let Ok(Outgoing::Event(e)) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// The `SupportAssigned` among the events received (agents get a queue update after it).
fn assignment(rx: &mut UnboundedReceiver<Outgoing>) -> Option<ServerEvent> {
    events(rx)
        .into_iter()
        .find(|e| matches!(e, ServerEvent::SupportAssigned { .. }))
}

fn skills(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn queue_then_route_transfer_and_end() {
    let now = Instant::now();
    let mut desk = Desk::new(ApiKeys::dev());
    let (learner, mut l_rx) = caller("L", Role::Learner);
    let effects = desk
        .request_help(learner.clone(), "audio", "en", now)
        .expect("queued");
    assert!(effects.started.is_empty());
    assert_eq!(
        events(&mut l_rx),
        vec![ServerEvent::SupportQueued {
            position: 1,
            estimated_wait_secs: None
        }]
    );
    assert_eq!(
        desk.request_help(learner, "audio", "en", now)
            .unwrap_err()
            .0,
        ErrorCode::Conflict
    );

    let (agent, mut a_rx) = caller("A", Role::Agent);
    let later = now + Duration::from_secs(7);
    let effects = desk
        .go_on_duty(agent, &skills(&["audio", "en"]), 1, later)
        .expect("on duty");
    assert_eq!(effects.started.len(), 1);
    assert_eq!(effects.started[0].waited, Duration::from_secs(7));
    let ServerEvent::SupportAssigned {
        session_id,
        room,
        token: t,
        ..
    } = assignment(&mut a_rx).expect("agent assigned")
    else {
        panic!("not assigned");
    };
    let claims = token::verify(&ApiKeys::dev(), &t).expect("valid token");
    assert_eq!(
        (claims.room.as_str(), claims.role),
        (room.as_str(), Role::Agent)
    );
    let ServerEvent::SupportAssigned { token: lt, .. } = events(&mut l_rx).pop().expect("l") else {
        panic!("learner not assigned");
    };
    let learner_claims = token::verify(&ApiKeys::dev(), &lt).expect("valid");
    assert!(
        learner_claims
            .permissions()
            .allows(aula_protocol::TrackSource::ScreenShare)
    );

    // Transfer to billing: nobody has it, so the learner waits, first in line.
    let effects = desk
        .transfer("A", &session_id, "billing", later)
        .expect("transfer");
    assert!(effects.started.is_empty());
    assert!(events(&mut a_rx).contains(&ServerEvent::SupportEnded {
        session_id: session_id.clone(),
        reason: REASON_TRANSFERRED.into()
    }));
    let (billing, mut b_rx) = caller("B", Role::Agent);
    let effects = desk
        .go_on_duty(billing, &skills(&["billing"]), 2, later)
        .expect("on duty");
    assert_eq!(
        effects.started[0].session_id, session_id,
        "same session, same room"
    );
    assert!(assignment(&mut b_rx).is_some());

    // Only its agent or learner ends it.
    assert_eq!(
        desk.end("A", &session_id, later).unwrap_err().0,
        ErrorCode::UnknownSession
    );
    let effects = desk
        .end("L", &session_id, later + Duration::from_secs(60))
        .expect("end");
    assert_eq!(effects.ended[0].duration, Duration::from_secs(60));
    assert_eq!(effects.ended[0].room, room);
}

#[test]
fn roles_and_inputs_are_checked() {
    let now = Instant::now();
    let mut desk = Desk::new(ApiKeys::dev());
    let (student, _rx) = caller("S", Role::Student);
    assert_eq!(
        desk.go_on_duty(student.clone(), &skills(&["audio"]), 1, now)
            .unwrap_err()
            .0,
        ErrorCode::Forbidden
    );
    assert_eq!(
        desk.request_help(student, "audio", "en", now)
            .unwrap_err()
            .0,
        ErrorCode::Forbidden
    );
    let (agent, _rx) = caller("A", Role::Agent);
    for (list, cap) in [
        (skills(&[]), 1),
        (skills(&["a b"]), 1),
        (skills(&["audio"]), 0),
    ] {
        assert_eq!(
            desk.go_on_duty(agent.clone(), &list, cap, now)
                .unwrap_err()
                .0,
            ErrorCode::BadMessage
        );
    }
}

#[test]
fn positions_follow_the_queue() {
    let now = Instant::now();
    let mut desk = Desk::new(ApiKeys::dev());
    let (agent, _a) = caller("A", Role::Agent);
    desk.go_on_duty(agent, &skills(&["audio"]), 1, now)
        .expect("duty");
    let (l1, _r1) = caller("L1", Role::Learner);
    let (l2, mut r2) = caller("L2", Role::Learner);
    let (l3, mut r3) = caller("L3", Role::Learner);
    desk.request_help(l1, "audio", "en", now)
        .expect("routed at once");
    desk.request_help(l2, "audio", "en", now).expect("queued");
    desk.request_help(l3, "audio", "en", now).expect("queued");
    assert_eq!(
        events(&mut r3).pop(),
        Some(ServerEvent::SupportQueued {
            position: 2,
            estimated_wait_secs: Some(600)
        })
    );
    desk.cancel_help("L2", now).expect("cancel");
    assert_eq!(
        events(&mut r3).pop(),
        Some(ServerEvent::SupportQueued {
            position: 1,
            estimated_wait_secs: Some(300)
        })
    );
    assert!(
        events(&mut r2)
            .iter()
            .all(|e| matches!(e, ServerEvent::SupportQueued { .. }))
    );
    assert_eq!(desk.queue(now).len(), 1);
    assert_eq!(desk.agents(now)[0].active, 1);
}

#[test]
fn agents_see_the_queue_and_names_and_language_carry_over() {
    let now = Instant::now();
    let mut desk = Desk::new(ApiKeys::dev());
    let (agent, mut a_rx) = caller("A", Role::Agent);
    desk.go_on_duty(agent, &skills(&["audio"]), 1, now)
        .expect("duty");
    assert_eq!(
        events(&mut a_rx),
        vec![ServerEvent::SupportQueue { waiting: vec![] }]
    );
    let (l1, _r1) = caller("L1", Role::Learner);
    let (l2, _r2) = caller("L2", Role::Learner);
    desk.request_help(l1, "audio", "zh", now).expect("routed");
    let ServerEvent::SupportAssigned {
        session_id,
        peer_name,
        language,
        token: t,
        ..
    } = assignment(&mut a_rx).expect("assigned")
    else {
        unreachable!("matched");
    };
    assert_eq!((peer_name.as_str(), language.as_str()), ("Name L1", "zh"));
    let claims = token::verify(&ApiKeys::dev(), &t).expect("valid");
    assert_eq!(
        claims.name, "Name A",
        "the agent's name in the private room"
    );

    desk.request_help(l2, "billing", "en", now + Duration::from_secs(5))
        .expect("queued");
    assert_eq!(
        events(&mut a_rx).pop(),
        Some(ServerEvent::SupportQueue {
            waiting: vec![WaitingLearner {
                name: "Name L2".into(),
                topic: "billing".into(),
                language: "en".into(),
                waited_secs: 0,
            }]
        })
    );

    // A transfer keeps the learner's language: the next agent sees it.
    desk.transfer("A", &session_id, "video", now + Duration::from_secs(9))
        .expect("transfer");
    let Some(ServerEvent::SupportQueue { waiting }) = events(&mut a_rx).pop() else {
        panic!("no queue after the transfer");
    };
    let seen: Vec<_> = waiting
        .iter()
        .map(|w| (w.name.as_str(), w.language.as_str(), w.waited_secs))
        .collect();
    assert_eq!(seen, vec![("Name L1", "zh", 0), ("Name L2", "en", 4)]);
}

#[test]
fn only_the_learner_rates_an_ended_session_once() {
    let now = Instant::now();
    let mut desk = Desk::new(ApiKeys::dev());
    let (agent, _a) = caller("A", Role::Agent);
    desk.go_on_duty(agent, &skills(&["audio"]), 1, now)
        .expect("duty");
    let (learner, mut l_rx) = caller("L", Role::Learner);
    desk.request_help(learner, "audio", "en", now)
        .expect("routed");
    let Some(ServerEvent::SupportAssigned { session_id, .. }) = events(&mut l_rx).pop() else {
        panic!("not assigned");
    };
    let refused = |desk: &mut Desk, sid: &str| desk.rate(sid, &session_id).unwrap_err().0;
    assert_eq!(
        refused(&mut desk, "L"),
        ErrorCode::UnknownSession,
        "not before it ends"
    );
    desk.end("A", &session_id, now).expect("ended");
    assert_eq!(
        refused(&mut desk, "A"),
        ErrorCode::UnknownSession,
        "the agent"
    );
    desk.rate("L", &session_id).expect("the learner rates");
    assert_eq!(refused(&mut desk, "L"), ErrorCode::UnknownSession, "twice");
}
