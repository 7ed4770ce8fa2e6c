//! The client's reader task: routes the server's messages to the peer tasks and the
//! application, resumes a dropped socket and joins again a lost session (see
//! [`crate::connection`]).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use aula_protocol::{
    LEFT_PEER_CONNECTION_FAILED, PeerTarget, ServerEvent, ServerFrame, ServerMessage,
};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, warn};

use crate::ClientEvent;
use crate::connection::{
    self, ATTEMPT_TIMEOUT, Failed, Joined, REJOIN_WINDOW, RESUME_WINDOW, Targets, WsSink, WsStream,
    receive, refused_for_good, rejoin_delay, retry_delay, try_resume,
};
use crate::error::ClientError;
use crate::peer::{Peer, PeerCommand, PeerContext, PeerHandle};
use crate::publish::{Route, RouteTo};

use super::{Flags, Publisher, Session, lock, media_ip_for, negotiate_publish};

/// Routes server messages; resumes a dropped socket and joins again a lost session; ends on
/// `Left` (other than for a failed media path), or when neither worked.
pub(super) struct Reader {
    pub(super) ctx: PeerContext,
    pub(super) media_ip: IpAddr,
    pub(super) session: Arc<Mutex<Session>>,
    pub(super) subscribe: Option<PeerHandle>,
    /// Where to resume or join again: our node, then the others it named.
    pub(super) targets: Targets,
    /// The access token, to join again with.
    pub(super) token: String,
    /// Who we are in the current session.
    pub(super) participant_sid: String,
    /// To resume a dropped socket; `None` when the server keeps no dropped participants.
    pub(super) resume_token: Option<String>,
    /// Hands the writer a new socket (`Some`) or tells it the current one is gone.
    pub(super) sockets: mpsc::UnboundedSender<Option<WsSink>>,
    /// [`Client::drop_connection_for_test`].
    pub(super) drop_connection: Arc<Notify>,
    pub(super) flags: Arc<Flags>,
    /// [`ClientEvent::Reconnecting`] was emitted for the outage under way.
    pub(super) reconnecting: bool,
}

/// Why reading from one socket stopped.
enum Ended {
    /// The server said `Left`: the session is over.
    Left(String),
    /// The socket dropped or failed: the session may be resumed.
    Dropped(String),
}

impl Reader {
    pub(super) async fn run(mut self, mut stream: WsStream, shutdown: Arc<watch::Sender<()>>) {
        let reason = loop {
            let ended = self.read(&mut stream).await;
            // This socket is done: the writer's half goes too, so the server sees it close.
            let _ = self.sockets.send(None);
            drop(stream);
            let leaving = self.flags.leaving.load(Ordering::Relaxed);
            let lost = match ended {
                Ended::Left(reason) if reason == LEFT_PEER_CONNECTION_FAILED && !leaving => reason,
                Ended::Left(reason) => break reason,
                Ended::Dropped(why) if leaving => break why,
                Ended::Dropped(why) => match self.resume(&why).await {
                    Some(resumed) => {
                        stream = resumed;
                        continue;
                    }
                    None => why,
                },
            };
            if !self.flags.auto_rejoin.load(Ordering::Relaxed) {
                break lost;
            }
            match self.rejoin(&lost).await {
                Some(joined) => stream = joined,
                None => break lost,
            }
        };
        // The server has dropped our session; the peer connections are dead weight now.
        shutdown.send_replace(());
        {
            let mut session = lock(&self.session);
            if let Some(pending) = session.pending_answer.take() {
                let _ = pending.send(Err(ClientError::Closed));
            }
            session.route_to(RouteTo::Closed);
        }
        self.emit(ClientEvent::Disconnected { reason });
    }

    /// Handles what one socket brings until it ends.
    async fn read(&mut self, stream: &mut WsStream) -> Ended {
        loop {
            let frame = tokio::select! {
                frame = receive(stream) => frame,
                () = self.drop_connection.notified() => {
                    return Ended::Dropped("connection dropped for a test".to_owned());
                }
            };
            match frame {
                Ok(ServerFrame::Message(ServerMessage::Left { reason })) => {
                    return Ended::Left(reason);
                }
                Ok(ServerFrame::Message(message)) => self.handle(message).await,
                Ok(ServerFrame::Event(event)) => {
                    if let ServerEvent::Alternates { urls } = &event {
                        self.targets.set_alternates(urls);
                    }
                    self.emit(ClientEvent::Room(event));
                }
                Err(ClientError::Closed) => return Ended::Dropped("connection closed".to_owned()),
                // A message we cannot parse is the server's bug or a newer protocol; skip it.
                Err(ClientError::Protocol(e)) => warn!("{e}"),
                Err(e) => return Ended::Dropped(e.to_string()),
            }
        }
    }

    /// Says once per outage that we are reconnecting.
    fn announce_reconnecting(&mut self, why: &str) {
        if !self.reconnecting {
            self.reconnecting = true;
            self.emit(ClientEvent::Reconnecting {
                reason: why.to_owned(),
            });
        }
    }

    /// Tries to resume the session for [`RESUME_WINDOW`]; the new socket's reading half, or
    /// `None` when the server refused or the window passed (the session is lost).
    async fn resume(&mut self, why: &str) -> Option<WsStream> {
        let token = self.resume_token.clone()?;
        self.announce_reconnecting(why);
        let deadline = tokio::time::Instant::now() + RESUME_WINDOW;
        for attempt in 0.. {
            tokio::time::sleep(retry_delay(attempt)).await;
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let url = self.targets.url();
            match try_resume(&url, &token).await {
                Ok((sink, stream)) => {
                    self.targets.reached(&url);
                    let _ = self.sockets.send(Some(sink));
                    self.reconnecting = false;
                    self.emit(ClientEvent::Reconnected);
                    return Some(stream);
                }
                Err(Failed {
                    error: ClientError::Server { code, message },
                    ..
                }) => {
                    // Refused (the seat is gone, the token expired; or another node that never
                    // had us, ours being down): no point trying again. The join goes there
                    // first (`targets` still points at it).
                    self.emit(ClientEvent::Error { code, message });
                    return None;
                }
                Err(failed) => self.attempt_failed(attempt, "resume", &url, failed),
            }
        }
        None
    }

    /// Logs a failed attempt at `url`; one that could not reach the node at all moves the next
    /// attempt on to the next node (see [`Targets`]).
    fn attempt_failed(&mut self, attempt: u32, what: &str, url: &str, failed: Failed) {
        if failed.unreachable {
            self.targets.unreachable();
            debug!(
                attempt,
                url,
                next = self.targets.url(),
                "{what} attempt: unreachable: {}",
                failed.error
            );
        } else {
            debug!(attempt, url, "{what} attempt failed: {}", failed.error);
        }
    }

    /// Joins the room again with our token for [`REJOIN_WINDOW`] (see [`Client`]'s docs); the
    /// new socket's reading half, or `None` when the server refused for good or the window
    /// passed (the session is over).
    async fn rejoin(&mut self, why: &str) -> Option<WsStream> {
        self.announce_reconnecting(why);
        self.end_media();
        let deadline = tokio::time::Instant::now() + REJOIN_WINDOW;
        for attempt in 0.. {
            tokio::time::sleep(rejoin_delay(attempt)).await;
            if attempt > 0 && tokio::time::Instant::now() >= deadline {
                break;
            }
            let url = self.targets.url();
            match connection::join_at(&url, &self.token, ATTEMPT_TIMEOUT).await {
                Ok(joined) => {
                    self.media_ip_for(&url).await;
                    self.targets.reached(&url);
                    return Some(self.rejoined(joined));
                }
                Err(Failed {
                    error: ClientError::Server { code, message },
                    ..
                }) if refused_for_good(code) => {
                    self.emit(ClientEvent::Error { code, message });
                    return None;
                }
                Err(failed) => self.attempt_failed(attempt, "rejoin", &url, failed),
            }
        }
        None
    }

    /// We joined again at `url`, perhaps another node than before (see [`Targets`]): media goes
    /// from the local address that reaches it.
    async fn media_ip_for(&mut self, url: &str) {
        if url != self.targets.current() {
            tracing::info!(url, "joining again through another node");
        }
        match media_ip_for(url).await {
            Ok(ip) => {
                self.media_ip = ip;
                lock(&self.session).media_ip = Some(ip);
            }
            Err(e) => warn!(url, "keeping the local media address: {e}"),
        }
    }

    /// The lost session's connections go; a published track waits for the next session.
    fn end_media(&mut self) {
        // Dropping the handle ends the task.
        self.subscribe = None;
        let mut session = lock(&self.session);
        session.generation += 1;
        session.publish = None;
        session.publish_stop = None;
        if let Some(pending) = session.pending_answer.take() {
            let _ = pending.send(Err(ClientError::Closed));
        }
        session.route_to(RouteTo::Rejoining);
    }

    /// We are in the room again as a new participant: tell the application, and publish again
    /// what we published.
    fn rejoined(&mut self, joined: Joined) -> WsStream {
        let _ = self.sockets.send(Some(joined.sink));
        self.resume_token = joined.resume_token;
        let previous_sid =
            std::mem::replace(&mut self.participant_sid, joined.participant.sid.clone());
        self.reconnecting = false;
        tracing::info!(
            previous_sid,
            participant_sid = self.participant_sid,
            "joined the room again"
        );
        self.emit(ClientEvent::Rejoined {
            participant: joined.participant,
            room: joined.room,
            previous_sid,
        });
        self.publish_again();
        joined.stream
    }

    /// Publishes the audio track again on a new connection, if the application still holds
    /// its [`PublishedAudio`]; in a task, since the answer comes through this reader.
    fn publish_again(&self) {
        let generation = {
            let session = lock(&self.session);
            match &session.audio {
                Some(route) if route.receiver_count() > 0 => session.generation,
                _ => return,
            }
        };
        let publisher = Publisher {
            media_ip: self.media_ip,
            ctx: self.ctx.clone(),
            session: self.session.clone(),
        };
        let sid = self.participant_sid.clone();
        tokio::spawn(async move {
            let published = negotiate_publish(&publisher, &sid).await;
            let mut session = lock(&publisher.session);
            if session.generation != generation {
                return; // lost again meanwhile; the next rejoin publishes it
            }
            match published {
                Ok((track_id, commands)) => {
                    if let Some(route) = &session.audio {
                        route.send_replace(Route {
                            to: RouteTo::Live(commands),
                            track_id: track_id.into(),
                        });
                    }
                }
                Err(e) => {
                    // A refusal also reached the application as `ClientEvent::Error`.
                    warn!("publishing the audio track again failed: {e}");
                    session.publish = None;
                    session.publish_stop = None;
                    session.route_to(RouteTo::Closed);
                }
            }
        });
    }

    fn emit(&self, event: ClientEvent) {
        // Fails only when the client is gone, and then nobody is listening.
        let _ = self.ctx.control.send(event);
    }

    async fn handle(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::ParticipantJoined { participant } => {
                self.emit(ClientEvent::ParticipantJoined(participant))
            }
            ServerMessage::ParticipantLeft { participant_sid } => {
                self.emit(ClientEvent::ParticipantLeft { participant_sid })
            }
            ServerMessage::TrackPublished { track } => {
                self.emit(ClientEvent::TrackPublished(track))
            }
            ServerMessage::TrackUnpublished {
                track_sid,
                participant_sid,
            } => self.emit(ClientEvent::TrackUnpublished {
                track_sid,
                participant_sid,
            }),
            ServerMessage::TrackMuted {
                track_sid,
                participant_sid,
                muted,
            } => self.emit(ClientEvent::TrackMuted {
                track_sid,
                participant_sid,
                muted,
            }),
            ServerMessage::PublishAnswer { sdp } => {
                let (publish, pending) = {
                    let mut session = lock(&self.session);
                    (session.publish.clone(), session.pending_answer.take())
                };
                match (publish, pending) {
                    (Some(publish), Some(pending)) => {
                        // Through the peer's queue, so candidates that follow the answer are
                        // applied after it.
                        if publish
                            .send(PeerCommand::RemoteAnswer(sdp, pending))
                            .await
                            .is_err()
                        {
                            warn!("publish connection gone before its answer");
                        }
                    }
                    _ => warn!("PublishAnswer without a pending offer"),
                }
            }
            ServerMessage::SubscribeOffer { sdp } => {
                match self.subscribe_offer(sdp).await {
                    Ok(()) => {}
                    // The client is being dropped; its peer task went first.
                    Err(ClientError::Closed) => debug!("subscribe offer after close"),
                    Err(e) => {
                        warn!("subscribe offer: {e}");
                        self.emit(ClientEvent::MediaFailed {
                            target: PeerTarget::Subscribe,
                        });
                    }
                }
            }
            ServerMessage::Candidate { target, candidate } => {
                let commands = match target {
                    PeerTarget::Publish => lock(&self.session).publish.clone(),
                    PeerTarget::Subscribe => {
                        self.subscribe.as_ref().map(|peer| peer.commands.clone())
                    }
                };
                match commands {
                    Some(commands) => {
                        let _ = commands.send(PeerCommand::RemoteCandidate(candidate)).await;
                    }
                    None => debug!(?target, "candidate for a connection we do not have"),
                }
            }
            ServerMessage::Error { code, message } => {
                // The server handles our messages in order, so an error while an offer is
                // outstanding is the verdict on that offer.
                if let Some(pending) = lock(&self.session).pending_answer.take() {
                    let _ = pending.send(Err(ClientError::Server {
                        code,
                        message: message.clone(),
                    }));
                }
                self.emit(ClientEvent::Error { code, message });
            }
            ServerMessage::ConnectionQuality {
                participant_sid,
                quality,
                loss_permille,
                rtt_ms,
            } => self.emit(ClientEvent::ConnectionQuality {
                participant_sid,
                quality,
                loss_permille,
                rtt_ms,
            }),
            ServerMessage::Joined { .. } => warn!("Joined twice"),
            ServerMessage::Pong => {}
            // Handled by `run`.
            ServerMessage::Left { .. } => {}
        }
    }

    async fn subscribe_offer(&mut self, sdp: String) -> Result<(), ClientError> {
        let peer = match &self.subscribe {
            Some(peer) => peer,
            None => {
                let peer = Peer::subscriber(self.media_ip, self.ctx.clone()).await?;
                self.subscribe.insert(peer.spawn())
            }
        };
        peer.commands
            .send(PeerCommand::RemoteOffer(sdp))
            .await
            .map_err(|_| ClientError::Closed)
    }
}
