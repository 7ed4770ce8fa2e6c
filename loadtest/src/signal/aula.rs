//! One participant's signaling against Aula: dev token, WebSocket `/ws`, join, publish,
//! answer subscribe offers, trickle candidates both ways, leave.
//!
//! Media never touches this task: the participant's peers live in a shard, and this task only
//! relays SDP and candidates between the shard and the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aula_protocol::{ClientMessage, PROTOCOL_VERSION, PeerTarget, ServerFrame, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

use super::{Access, ParticipantEvent, ParticipantSpec};
use crate::http;
use crate::peer::PeerOutput;
use crate::shard::{PeerId, PublisherOffer, ShardCommand, ShardHandle};

/// Token request, WebSocket connect and `Joined` must each finish within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs one participant until `stop` turns true (then leaves) or the server ends the session.
pub async fn run(
    server: SocketAddr,
    spec: ParticipantSpec,
    shard: ShardHandle,
    events: mpsc::UnboundedSender<ParticipantEvent>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let join_started = Instant::now();
    let role = role_for(&spec);
    let mut path = format!(
        "/api/dev-token?room={}&identity={}&role={role}",
        http::encode(&spec.room),
        http::encode(&spec.identity)
    );
    if let Some(region) = &spec.region {
        path.push_str(&format!("&region={}", http::encode(region)));
    }
    let (status, body) = http::get(server, &path, STEP_TIMEOUT).await?;
    if status != 200 {
        bail!("dev token: HTTP {status}: {body} (is the server in dev mode?)");
    }
    let token = serde_json::from_str::<serde_json::Value>(&body)?
        .get("token")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .context("dev token response has no token")?;

    let (ws, _) = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::connect_async(format!("ws://{server}/ws")),
    )
    .await
    .context("WebSocket connect timed out")??;
    let (mut ws_tx, mut ws_rx) = ws.split();

    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let subscribe_peer = if spec.subscribe {
        Some(shard.add_subscriber(join_started, out_tx.clone()).await?)
    } else {
        None
    };
    send(
        &mut ws_tx,
        &ClientMessage::Join {
            version: PROTOCOL_VERSION,
            token,
        },
    )
    .await?;

    let mut publish_peer: Option<PeerId> = None;
    let mut joined = false;
    let joined_deadline = tokio::time::sleep(STEP_TIMEOUT);
    tokio::pin!(joined_deadline);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    // Best effort: the run is over either way.
                    let _ = send(&mut ws_tx, &ClientMessage::Leave).await;
                    let _ = ws_tx.close().await;
                    return Ok(());
                }
            }
            _ = &mut joined_deadline, if !joined => bail!("no Joined within {STEP_TIMEOUT:?}"),
            output = out_rx.recv() => {
                let Some(output) = output else { bail!("shard stopped") };
                match output {
                    PeerOutput::Answer(sdp) => {
                        send(&mut ws_tx, &ClientMessage::SubscribeAnswer { sdp }).await?;
                    }
                    PeerOutput::LocalCandidate(target, candidate) => {
                        send(&mut ws_tx, &ClientMessage::Candidate { target, candidate }).await?;
                    }
                    PeerOutput::Connected(target) => {
                        let _ = events.send(ParticipantEvent::Connected(target));
                    }
                    PeerOutput::Failed(target) => {
                        let _ = events.send(ParticipantEvent::Failed(format!("{target:?} connection failed")));
                    }
                }
            }
            message = ws_rx.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => bail!("server closed the WebSocket"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("WebSocket: {e}"),
                };
                let message = match serde_json::from_str(&text) {
                    Ok(ServerFrame::Message(message)) => message,
                    // Room events (permissions, recording, hands) mean nothing to a load client.
                    Ok(ServerFrame::Event(_)) => continue,
                    Err(e) => {
                        warn!("unparsable server message: {e}");
                        continue;
                    }
                };
                match message {
                    ServerMessage::Joined { participant, .. } => {
                        joined = true;
                        debug!(identity = %spec.identity, sid = %participant.sid, "joined");
                        if let Some(access) = spec.access {
                            // Before the media connects: the SFU applies it from the start.
                            impair(access, &participant.sid).await?;
                        }
                        let _ = events.send(ParticipantEvent::Joined);
                        if let Some(plan) = spec.publish.clone() {
                            let PublisherOffer { peer, sdp, tracks } = shard
                                .add_publisher(plan, spec.identity.clone(), out_tx.clone())
                                .await?;
                            publish_peer = Some(peer);
                            send(&mut ws_tx, &ClientMessage::PublishOffer { sdp, tracks }).await?;
                        }
                    }
                    ServerMessage::PublishAnswer { sdp } => {
                        let peer = publish_peer.context("publish answer without an offer")?;
                        shard.send(ShardCommand::RemoteDescription { peer, sdp })?;
                    }
                    ServerMessage::SubscribeOffer { sdp } => match subscribe_peer {
                        Some(peer) => shard.send(ShardCommand::RemoteDescription { peer, sdp })?,
                        None => debug!(identity = %spec.identity, "ignoring a subscribe offer"),
                    },
                    ServerMessage::Candidate { target, candidate } => {
                        let peer = match target {
                            PeerTarget::Publish => publish_peer,
                            PeerTarget::Subscribe => subscribe_peer,
                        };
                        if let Some(peer) = peer {
                            shard.send(ShardCommand::RemoteCandidate { peer, candidate })?;
                        }
                    }
                    ServerMessage::Error { code, message } => {
                        warn!(identity = %spec.identity, ?code, "server error: {message}");
                        let _ = events.send(ParticipantEvent::Failed(format!("{code:?}: {message}")));
                    }
                    ServerMessage::Left { reason } => bail!("server ended the session: {reason}"),
                    _ => {}
                }
            }
        }
    }
}

/// Impairs the participant's path on the node serving its media (by sid: that node may serve
/// its media without knowing its room).
async fn impair(access: Access, sid: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "participant_sid": sid,
        "delay_ms": access.delay_ms,
        "loss": access.loss,
    });
    let (status, reply) = http::post_json(
        access.node,
        "/test/impairment",
        &body.to_string(),
        STEP_TIMEOUT,
    )
    .await?;
    if status != 200 {
        bail!(
            "POST /test/impairment on {}: HTTP {status}: {reply} (start the node with [dev] test_impairment = true)",
            access.node
        );
    }
    Ok(())
}

async fn send<S>(ws: &mut S, message: &ClientMessage) -> anyhow::Result<()>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let text = serde_json::to_string(message)?;
    ws.send(Message::Text(text.into())).await?;
    Ok(())
}

/// The role Aula's grants need, as the dev-token endpoint spells it: only teachers may publish
/// today. A string rather than a match on `Role`, so new roles in the protocol do not break
/// the load generator.
fn role_for(spec: &ParticipantSpec) -> &'static str {
    if spec.publish.is_some() {
        "teacher"
    } else {
        "student"
    }
}
