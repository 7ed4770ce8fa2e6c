//! A lost session is joined again by the SDK itself (issues 14 and 16): after the server ended
//! it because its media path failed (`Left` with `peer connection failed`), or after a refused
//! resume, the client joins with the same token, with backoff, and is a new participant.
//!
//! Most tests run against a scripted WebSocket server on loopback, which makes the timing and
//! the server's answers exact; the last one against a real server, whose SFU really fails a
//! publisher's connection behind total loss.

#[allow(dead_code)] // audio.rs uses the rest
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aula_client::aula_protocol::{
    ClientMessage, ErrorCode, LEFT_PEER_CONNECTION_FAILED, PROTOCOL_VERSION, ParticipantInfo, Role,
    RoomInfo, ServerMessage,
};
use aula_client::{AudioSource, Client, ClientEvent, ToneConfig};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use common::*;

const TOKEN: &str = "the-access-token";

/// What the scripted server answers to one connection's first message.
enum Answer {
    /// `Joined` as participant `sid` (with `resume_token`), then the messages given, then it
    /// keeps the socket open.
    Join {
        sid: &'static str,
        resume_token: Option<&'static str>,
        then: Vec<ServerMessage>,
    },
    /// An error, then the socket is closed (as the real server does for a refused join).
    Refuse(ErrorCode),
}

/// The first message of one connection to the scripted server, and when it came.
#[derive(Debug)]
struct Hello {
    message: ClientMessage,
    at: Instant,
}

/// A WebSocket server on loopback answering each connection's first message with the next
/// [`Answer`]; connections past the script are closed at once. Reports every first message.
async fn scripted_server(script: Vec<Answer>) -> (SocketAddr, mpsc::UnboundedReceiver<Hello>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (hellos, hellos_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut script = script.into_iter();
        // Sockets the script keeps open stay alive until the test ends.
        let mut open = Vec::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                continue;
            };
            let message = ClientMessage::parse(text.as_str()).expect("a client message");
            let _ = hellos.send(Hello {
                message,
                at: Instant::now(),
            });
            match script.next() {
                Some(Answer::Join {
                    sid,
                    resume_token,
                    then,
                }) => {
                    send(&mut ws, &joined(sid, resume_token)).await;
                    for message in then {
                        send(&mut ws, &message).await;
                    }
                    open.push(ws);
                }
                Some(Answer::Refuse(code)) => {
                    let refusal = ServerMessage::Error {
                        code,
                        message: format!("refused ({code:?})"),
                    };
                    send(&mut ws, &refusal).await;
                    let _ = ws.close(None).await;
                }
                None => {
                    let _ = ws.close(None).await;
                }
            }
        }
    });
    (addr, hellos_rx)
}

async fn send(ws: &mut WebSocketStream<TcpStream>, message: &ServerMessage) {
    let json = serde_json::to_string(message).expect("JSON");
    ws.send(Message::text(json)).await.expect("send");
}

fn joined(sid: &str, resume_token: Option<&str>) -> ServerMessage {
    ServerMessage::Joined {
        version: PROTOCOL_VERSION,
        participant: ParticipantInfo {
            sid: sid.to_owned(),
            identity: "ana".to_owned(),
            name: "Ana".to_owned(),
            role: Role::Student,
            tracks: Vec::new(),
            hand_raised: false,
        },
        room: RoomInfo {
            name: "algebra".to_owned(),
            participants: Vec::new(),
            locked: false,
        },
        permissions: None,
        resume_token: resume_token.map(str::to_owned),
    }
}

fn peer_failed() -> ServerMessage {
    ServerMessage::Left {
        reason: LEFT_PEER_CONNECTION_FAILED.to_owned(),
    }
}

async fn connect(addr: SocketAddr) -> Client {
    tokio::time::timeout(STEP, Client::connect(&format!("ws://{addr}/ws"), TOKEN))
        .await
        .expect("join in time")
        .expect("join")
}

/// The next first message of a connection to the scripted server.
async fn next_hello(hellos: &mut mpsc::UnboundedReceiver<Hello>) -> Hello {
    tokio::time::timeout(STEP, hellos.recv())
        .await
        .expect("a connection in time")
        .expect("the server runs")
}

fn assert_join_with_our_token(hello: &Hello) {
    assert_eq!(
        hello.message,
        ClientMessage::Join {
            version: PROTOCOL_VERSION,
            token: TOKEN.to_owned(),
        }
    );
}

/// The events up to the end of the session, or until `stop` accepts one (included).
async fn events_until(
    client: &mut Client,
    stop: impl Fn(&ClientEvent) -> bool,
) -> Vec<ClientEvent> {
    let mut events = Vec::new();
    tokio::time::timeout(STEP, async {
        while let Some(event) = client.next_event().await {
            let done = stop(&event);
            events.push(event);
            if done {
                break;
            }
        }
    })
    .await
    .expect("events in time");
    events
}

#[tokio::test]
async fn a_session_ended_for_a_failed_media_path_is_joined_again_with_backoff() {
    init_tracing();
    let (addr, mut hellos) = scripted_server(vec![
        Answer::Join {
            sid: "PA_first",
            resume_token: None,
            then: vec![peer_failed()],
        },
        // The media plane cannot take us yet (a cluster placing us on a node that just died).
        Answer::Refuse(ErrorCode::Internal),
        Answer::Refuse(ErrorCode::Internal),
        Answer::Join {
            sid: "PA_second",
            resume_token: Some("resume-2"),
            then: Vec::new(),
        },
    ])
    .await;
    let mut client = connect(addr).await;
    assert_eq!(client.participant().sid, "PA_first");
    let first = next_hello(&mut hellos).await;
    assert_join_with_our_token(&first);

    let events = events_until(&mut client, |e| matches!(e, ClientEvent::Rejoined { .. })).await;
    let attempts = [
        next_hello(&mut hellos).await,
        next_hello(&mut hellos).await,
        next_hello(&mut hellos).await,
    ];
    for attempt in &attempts {
        assert_join_with_our_token(attempt);
    }
    // At once, then 0.5 s, then 1 s (timers may be late, never early).
    let gaps = [
        attempts[1].at - attempts[0].at,
        attempts[2].at - attempts[1].at,
    ];
    assert!(
        attempts[0].at - first.at < Duration::from_millis(400),
        "first attempt after {:?}",
        attempts[0].at - first.at
    );
    assert!(
        gaps[0] >= Duration::from_millis(490) && gaps[0] < Duration::from_millis(900),
        "{gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(990) && gaps[1] < Duration::from_millis(1500),
        "{gaps:?}"
    );

    // Reconnecting (for the server's reason) once, the refusals are not the application's
    // business, then the new participant.
    let kinds: Vec<&ClientEvent> = events.iter().collect();
    assert_eq!(
        kinds.len(),
        2,
        "only Reconnecting and Rejoined expected: {events:?}"
    );
    assert_eq!(
        *kinds[0],
        ClientEvent::Reconnecting {
            reason: LEFT_PEER_CONNECTION_FAILED.to_owned()
        }
    );
    let ClientEvent::Rejoined {
        participant,
        room,
        previous_sid,
    } = kinds[1]
    else {
        panic!("not Rejoined: {:?}", kinds[1]);
    };
    assert_eq!(participant.sid, "PA_second");
    assert_eq!(previous_sid, "PA_first");
    assert_eq!(room.name, "algebra");
    assert_eq!(client.participant().sid, "PA_second");

    // The new session works: it is the one a dropped socket now resumes, with its token.
    client.drop_connection_for_test();
    let resume = next_hello(&mut hellos).await;
    assert_eq!(
        resume.message,
        ClientMessage::Resume {
            version: PROTOCOL_VERSION,
            resume_token: "resume-2".to_owned(),
        }
    );
}

#[tokio::test]
async fn a_refused_resume_is_followed_by_a_rejoin() {
    init_tracing();
    let (addr, mut hellos) = scripted_server(vec![
        Answer::Join {
            sid: "PA_first",
            resume_token: Some("resume-1"),
            then: Vec::new(),
        },
        // The seat is gone (the server's reconnect window passed, or it restarted).
        Answer::Refuse(ErrorCode::Unauthorized),
        Answer::Join {
            sid: "PA_second",
            resume_token: None,
            then: Vec::new(),
        },
    ])
    .await;
    let mut client = connect(addr).await;
    next_hello(&mut hellos).await;
    client.drop_connection_for_test();

    let events = events_until(&mut client, |e| matches!(e, ClientEvent::Rejoined { .. })).await;
    let resume = next_hello(&mut hellos).await;
    assert!(
        matches!(resume.message, ClientMessage::Resume { ref resume_token, .. } if resume_token == "resume-1"),
        "{:?}",
        resume.message
    );
    assert_join_with_our_token(&next_hello(&mut hellos).await);
    assert!(
        matches!(&events[..], [
            ClientEvent::Reconnecting { .. },
            ClientEvent::Error { code: ErrorCode::Unauthorized, .. },
            ClientEvent::Rejoined { participant, previous_sid, .. },
        ] if participant.sid == "PA_second" && previous_sid == "PA_first"),
        "{events:?}"
    );
    assert_eq!(client.participant().sid, "PA_second");
}

#[tokio::test]
async fn a_rejoin_refused_for_good_ends_the_session() {
    init_tracing();
    let (addr, mut hellos) = scripted_server(vec![
        Answer::Join {
            sid: "PA_first",
            resume_token: None,
            then: vec![peer_failed()],
        },
        // The token expired meanwhile: trying again cannot help.
        Answer::Refuse(ErrorCode::Unauthorized),
    ])
    .await;
    let mut client = connect(addr).await;
    next_hello(&mut hellos).await;
    let events = events_until(&mut client, |_| false).await;
    assert_join_with_our_token(&next_hello(&mut hellos).await);
    assert!(
        matches!(&events[..], [
            ClientEvent::Reconnecting { .. },
            ClientEvent::Error { code: ErrorCode::Unauthorized, .. },
            ClientEvent::Disconnected { reason },
        ] if reason == LEFT_PEER_CONNECTION_FAILED),
        "{events:?}"
    );
    // No third connection.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), hellos.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn without_auto_rejoin_or_for_another_reason_the_session_ends() {
    init_tracing();
    // The `Left` comes a moment after joining, once rejoining is switched off.
    for (reason, auto_rejoin) in [
        (LEFT_PEER_CONNECTION_FAILED, false),
        ("removed by a moderator", true),
    ] {
        let (addr, mut hellos) = left_after(Duration::from_millis(300), reason).await;
        let mut client = connect(addr).await;
        client.set_auto_rejoin(auto_rejoin);
        next_hello(&mut hellos).await;
        let events = events_until(&mut client, |_| false).await;
        assert!(
            matches!(&events[..], [ClientEvent::Disconnected { reason: r }] if r == reason),
            "{reason}, auto rejoin {auto_rejoin}: {events:?}"
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(1), hellos.recv())
                .await
                .is_err(),
            "{reason}: joined again"
        );
    }
}

/// A server that answers the first join, then ends the session with `reason` after `delay`;
/// later connections are reported and closed.
async fn left_after(
    delay: Duration,
    reason: &'static str,
) -> (SocketAddr, mpsc::UnboundedReceiver<Hello>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (hellos, hellos_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                continue;
            };
            let message = ClientMessage::parse(text.as_str()).expect("a client message");
            let _ = hellos.send(Hello {
                message,
                at: Instant::now(),
            });
            if !std::mem::take(&mut first) {
                let _ = ws.close(None).await;
                continue;
            }
            send(&mut ws, &joined("PA_first", None)).await;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send(
                    &mut ws,
                    &ServerMessage::Left {
                        reason: reason.to_owned(),
                    },
                )
                .await;
                let _ = ws.close(None).await;
            });
        }
    });
    (addr, hellos_rx)
}

const TONE: ToneConfig = ToneConfig {
    frequency_hz: ToneConfig::DISTINCT_FRAMES_HZ,
    amplitude: 0.5,
};

/// Waits up to `limit` for the first event `pick` accepts, skipping the others.
async fn wait_long<T>(
    client: &mut Client,
    limit: Duration,
    mut pick: impl FnMut(ClientEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(limit, async {
        loop {
            let event = client.next_event().await.expect("session still open");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    })
    .await
    .expect("event in time")
}

/// A real server: an assistant publishing the tone loses all its media (the test impairment
/// drops everything both ways) until the SFU gives up on its connections and the server ends
/// its session with "peer connection failed" (about 30 s: ICE disconnected, then failed).
/// Its SDK joins again by itself as a new participant, publishes the tone again, and the
/// teacher hears it; the assistant hears the teacher again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_media_path_failed_rejoins_and_is_heard_again() {
    let mut config = aula_signaling::Config::loopback_ephemeral();
    config.dev.test_impairment = true;
    config.room.reconnect_timeout_secs = 15;
    let server = TestServer::start_with(config).await;
    let http = server.server.http_addr();
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut teacher = server.join("biology", "teacher", Role::Teacher).await;
        let mut assistant = server.join("biology", "assistant", Role::Assistant).await;
        let old_sid = assistant.participant().sid.clone();
        let teacher_sid = teacher.participant().sid.clone();
        let _teacher_audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("teacher publishes");
        let audio = assistant
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("assistant publishes");
        let old_track_id = audio.track_id();
        let expected = expected_tone(TONE, 50 * 150);
        let heard = |track: &ClientEvent, from: &str| match track {
            ClientEvent::TrackPublished(track) if track.participant_sid == from => {
                Some(track.sid.clone())
            }
            _ => None,
        };
        let assistant_track = wait_for(&mut teacher, |e| heard(&e, &old_sid)).await;
        let teacher_track = wait_for(&mut assistant, |e| heard(&e, &teacher_sid)).await;
        packets_of(&mut teacher, &assistant_track, 50).await;
        packets_of(&mut assistant, &teacher_track, 50).await;

        let body = r#"{"room": "biology", "identity": "assistant", "loss": 1.0}"#;
        assert_eq!(impair(http, body).await, 200);
        let cut = Instant::now();
        let reason = wait_long(&mut assistant, Duration::from_secs(60), |e| match e {
            ClientEvent::Reconnecting { reason } => Some(reason),
            _ => None,
        })
        .await;
        assert_eq!(reason, LEFT_PEER_CONNECTION_FAILED);
        eprintln!("session ended {:?} after the cut", cut.elapsed());
        let (new_sid, previous_sid) = wait_for(&mut assistant, |e| match e {
            ClientEvent::Rejoined {
                participant,
                previous_sid,
                ..
            } => Some((participant.sid, previous_sid)),
            _ => None,
        })
        .await;
        assert_eq!(previous_sid, old_sid);
        assert_ne!(new_sid, old_sid);
        assert_eq!(assistant.participant().sid, new_sid);
        assert_eq!(assistant.participant().identity, "assistant");

        // The teacher saw the old participant go and the new one come, with a new track.
        wait_for(&mut teacher, |e| match e {
            ClientEvent::ParticipantLeft { participant_sid } if participant_sid == old_sid => {
                Some(())
            }
            _ => None,
        })
        .await;
        let new_track = wait_for(&mut teacher, |e| heard(&e, &new_sid)).await;
        assert_ne!(new_track, assistant_track);
        let packets = packets_of(&mut teacher, &new_track, 100).await;
        assert_consecutive("the assistant's tone, published again", &packets);
        align("the assistant's tone, published again", &expected, &packets);
        assert_ne!(audio.track_id(), old_track_id, "a new track id");

        // And the assistant hears the teacher again: the same track, on a new connection.
        let packets = packets_of(&mut assistant, &teacher_track, 100).await;
        assert_consecutive("the teacher, for the rejoined assistant", &packets);
        align(
            "the teacher, for the rejoined assistant",
            &expected,
            &packets,
        );
        eprintln!("back {:?} after the cut", cut.elapsed());
        assert!(
            audio
                .send_payload(bytes::Bytes::from_static(b"x"))
                .await
                .is_ok()
        );
    })
    .await
    .expect("the test finishes in time");
    server.server.shutdown().await;
}
