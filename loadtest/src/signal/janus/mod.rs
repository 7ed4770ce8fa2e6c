//! One participant's signaling against Janus's videoroom plugin, so the same scenarios, peers
//! and media measure Janus exactly as they measure Aula: only this part differs.
//!
//! Per participant: one WebSocket and one Janus session; a handle per peer connection.
//! - Publisher: `create` the room (the first one wins, the rest get "exists"), `join` as
//!   publisher, `configure` with our offer; Janus's answer comes in the event. Its `webrtcup`
//!   (Janus's side of ICE + DTLS is up) is what counts as "publisher connected", since only
//!   then does Janus offer the feed to subscribers.
//! - Subscriber: learns feeds from `listparticipants` (a pure subscriber, like a class
//!   student, who joins after the teacher is live) or from its own publisher handle's events
//!   (meeting/support: the `joined` list and later new-publisher events); `join` as subscriber
//!   with `streams: [{feed}]`, Janus's offer comes in the event, `start` carries our answer.
//!   Feeds found while an offer/answer is in flight wait for it, then go in one `subscribe`.
//! - Our one host candidate per peer is trickled, then `completed`. Janus's candidates are in
//!   its SDP (`full_trickle = false`).
//! - A keepalive every [`KEEPALIVE`]: Janus drops sessions idle for `session_timeout` (60 s).

pub mod api;
mod connection;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aula_protocol::PeerTarget;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use self::api::{Candidate, Jsep, Kind, Request, VideoRoomRequest};
use self::connection::{CallError, Connection};
use super::{ParticipantEvent, ParticipantSpec};
use crate::peer::PeerOutput;
use crate::scenario::Cast;
use crate::shard::{PeerId, PublisherOffer, ShardCommand, ShardHandle};

/// Each request, and the WebSocket connect, must finish within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Well inside Janus's 60 s `session_timeout`.
const KEEPALIVE: Duration = Duration::from_secs(25);
/// A pure subscriber asks for the room's publishers this often, at most [`FEED_POLLS`] times.
const FEED_POLL: Duration = Duration::from_millis(250);
const FEED_POLLS: u32 = 120;
/// Audio's share of the REMB cap Janus gives a publisher.
const AUDIO_BPS: u32 = 64_000;

/// What a room must allow, from the scenario: Janus rooms are capped in publishers and cap
/// each publisher's bitrate by REMB (our synthetic sources ignore REMB, but a cap below what
/// is sent would make Janus's view of the stream odd).
#[derive(Debug, Clone, Copy)]
pub struct RoomPlan {
    pub publishers: u32,
    pub bitrate: u32,
}

/// Room name -> plan, for every room of the run.
pub fn room_plans(cast: &Cast) -> Arc<HashMap<String, RoomPlan>> {
    let mut plans: HashMap<String, RoomPlan> = HashMap::new();
    for spec in cast.all() {
        let plan = plans.entry(spec.room.clone()).or_insert(RoomPlan {
            publishers: 0,
            bitrate: 0,
        });
        if let Some(media) = &spec.publish {
            plan.publishers += 1;
            let video: u32 = media.video_layers.iter().map(|l| l.bitrate_bps).sum();
            // 25% headroom over what the source sends.
            plan.bitrate = plan.bitrate.max((video + AUDIO_BPS) / 4 * 5);
        }
    }
    Arc::new(plans)
}

/// Runs one participant until `stop` turns true (then leaves) or Janus ends the session.
pub async fn run(
    server: SocketAddr,
    rooms: Arc<HashMap<String, RoomPlan>>,
    spec: ParticipantSpec,
    shard: ShardHandle,
    events: mpsc::UnboundedSender<ParticipantEvent>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let join_started = Instant::now();
    let mut conn = Connection::open(server, STEP_TIMEOUT).await?;
    let create = conn.request("create");
    let session = conn
        .call(create, STEP_TIMEOUT)
        .await
        .context("creating the Janus session")?
        .data
        .context("session create answered without an id")?
        .id;
    conn.session = Some(session);

    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let subscribe_peer = match spec.subscribe {
        true => Some(shard.add_subscriber(join_started, out_tx.clone()).await?),
        false => None,
    };
    let plan = rooms.get(&spec.room).copied().unwrap_or(RoomPlan {
        publishers: 1,
        bitrate: 1_000_000,
    });
    let mut me = Participant {
        room: api::room_id(&spec.room),
        conn,
        spec,
        shard,
        events,
        publish: None,
        subscribe: None,
        own_feed: None,
        subscription: Subscription::default(),
        joined_reported: false,
    };
    if let Some(peer) = subscribe_peer {
        me.subscribe = Some(Handle {
            id: me.attach().await?,
            peer,
        });
    }
    if me.spec.publish.is_some() {
        me.publish(plan, out_tx.clone()).await?;
    } else if me.subscribe.is_some() {
        let feeds = me.poll_feeds().await?;
        me.want(feeds).await?;
    }

    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    me.conn.close().await;
                    return Ok(());
                }
            }
            _ = keepalive.tick() => {
                let request = me.conn.request("keepalive");
                me.conn.send(&request).await?;
            }
            output = out_rx.recv() => {
                let Some(output) = output else { bail!("shard stopped") };
                me.on_peer_output(output).await?;
            }
            message = me.conn.next() => me.on_janus(message?).await?,
        }
    }
}

/// A Janus handle and the peer connection it negotiates.
#[derive(Debug, Clone, Copy)]
struct Handle {
    id: u64,
    peer: PeerId,
}

/// The subscribe side's negotiation state.
#[derive(Debug, Default)]
struct Subscription {
    /// `join` as subscriber has been sent; later feeds go in `subscribe` requests.
    joined: bool,
    /// An offer from Janus awaits our answer (and `start`): new requests must wait.
    negotiating: bool,
    subscribed: HashSet<u64>,
    pending: Vec<u64>,
}

struct Participant {
    conn: Connection,
    room: u64,
    spec: ParticipantSpec,
    shard: ShardHandle,
    events: mpsc::UnboundedSender<ParticipantEvent>,
    publish: Option<Handle>,
    subscribe: Option<Handle>,
    own_feed: Option<u64>,
    subscription: Subscription,
    joined_reported: bool,
}

impl Participant {
    async fn attach(&mut self) -> anyhow::Result<u64> {
        let mut attach = self.conn.request("attach");
        attach.plugin = Some(api::VIDEOROOM);
        Ok(self
            .conn
            .call(attach, STEP_TIMEOUT)
            .await
            .context("attaching to the videoroom plugin")?
            .data
            .context("attach answered without a handle id")?
            .id)
    }

    fn message(&mut self, handle: u64, body: VideoRoomRequest, jsep: Option<Jsep>) -> Request {
        let mut request = self.conn.request("message");
        request.handle_id = Some(handle);
        request.body = Some(body);
        request.jsep = jsep;
        request
    }

    fn report_joined(&mut self) {
        if !self.joined_reported {
            self.joined_reported = true;
            let _ = self.events.send(ParticipantEvent::Joined);
        }
    }

    /// Creates the room if needed, joins as publisher, and sends our offer with `configure`.
    async fn publish(
        &mut self,
        plan: RoomPlan,
        out: mpsc::UnboundedSender<PeerOutput>,
    ) -> anyhow::Result<()> {
        let Some(media) = self.spec.publish.clone() else {
            return Ok(());
        };
        let simulcast = media.simulcast();
        let handle = self.attach().await?;
        let create = VideoRoomRequest::Create {
            room: self.room,
            description: self.spec.room.clone(),
            publishers: plan.publishers.max(1),
            bitrate: plan.bitrate,
            audiocodec: "opus",
            videocodec: "vp8",
            permanent: false,
        };
        let create = self.message(handle, create, None);
        match self.conn.call(create, STEP_TIMEOUT).await {
            Ok(_) => debug!(room = self.room, "created the Janus room"),
            Err(CallError::Refused(e)) if e.code == i64::from(api::ERROR_ROOM_EXISTS) => {}
            Err(e) => return Err(e).context("creating the room"),
        }
        let join = VideoRoomRequest::join_publisher(self.room, self.spec.identity.clone());
        let join = self.message(handle, join, None);
        let joined = self
            .conn
            .call(join, STEP_TIMEOUT)
            .await
            .context("joining as publisher")?;
        let data = joined.videoroom().cloned().unwrap_or_default();
        self.own_feed = data.id;
        self.report_joined();

        let PublisherOffer { peer, sdp, .. } = self
            .shard
            .add_publisher(media, self.spec.identity.clone(), out)
            .await?;
        self.publish = Some(Handle { id: handle, peer });
        let configure = VideoRoomRequest::Configure {
            audio: true,
            video: true,
        };
        // The media plan lists simulcast layers from lowest to highest (q, h, f).
        let offer = match simulcast {
            true => Jsep::offer_rids_low_to_high(sdp),
            false => Jsep::offer(sdp),
        };
        let configure = self.message(handle, configure, Some(offer));
        let configured = self
            .conn
            .call(configure, STEP_TIMEOUT)
            .await
            .context("configure (publish offer)")?;
        let answer = configured
            .jsep
            .clone()
            .context("configure was answered without a JSEP answer")?;
        self.shard.send(ShardCommand::RemoteDescription {
            peer,
            sdp: answer.sdp,
        })?;
        // Publishers already live; later ones arrive as events.
        self.want(data.publishers.iter().map(|p| p.id).collect())
            .await
    }

    /// A pure subscriber's feeds: the room's active publishers, polled (bounded) until one is
    /// there. The run only starts subscribers after the first publishers' `webrtcup`, so this
    /// normally answers at once.
    async fn poll_feeds(&mut self) -> anyhow::Result<Vec<u64>> {
        let Some(handle) = self.subscribe else {
            return Ok(Vec::new());
        };
        for _ in 0..FEED_POLLS {
            let list = VideoRoomRequest::ListParticipants { room: self.room };
            let list = self.message(handle.id, list, None);
            match self.conn.call(list, STEP_TIMEOUT).await {
                Ok(reply) => {
                    let feeds: Vec<u64> = reply
                        .videoroom()
                        .map(|d| d.participants.iter())
                        .into_iter()
                        .flatten()
                        .filter(|p| p.publisher)
                        .map(|p| p.id)
                        .collect();
                    if !feeds.is_empty() {
                        return Ok(feeds);
                    }
                }
                Err(CallError::Refused(e)) if e.code == i64::from(api::ERROR_NO_SUCH_ROOM) => {}
                Err(e) => return Err(e).context("listing the room's publishers"),
            }
            tokio::time::sleep(FEED_POLL).await;
        }
        bail!("no publisher appeared in the room within {FEED_POLLS} polls")
    }

    /// Subscribes to `feeds` not yet subscribed (now, or once the negotiation in flight ends).
    async fn want(&mut self, feeds: Vec<u64>) -> anyhow::Result<()> {
        if self.subscribe.is_none() {
            return Ok(());
        }
        for feed in feeds {
            if Some(feed) != self.own_feed
                && !self.subscription.subscribed.contains(&feed)
                && !self.subscription.pending.contains(&feed)
            {
                self.subscription.pending.push(feed);
            }
        }
        self.flush_subscriptions().await
    }

    async fn flush_subscriptions(&mut self) -> anyhow::Result<()> {
        let Some(handle) = self.subscribe else {
            return Ok(());
        };
        if self.subscription.negotiating || self.subscription.pending.is_empty() {
            return Ok(());
        }
        let feeds = std::mem::take(&mut self.subscription.pending);
        let body = match self.subscription.joined {
            false => VideoRoomRequest::join_subscriber(self.room, &feeds),
            true => VideoRoomRequest::Subscribe {
                streams: feeds.iter().map(|&feed| api::FeedRef { feed }).collect(),
            },
        };
        let request = self.message(handle.id, body, None);
        let reply = match self.conn.call(request, STEP_TIMEOUT).await {
            Ok(reply) => reply,
            Err(e) if self.subscription.joined => {
                // One feed we could not add must not end a participant with others.
                warn!(identity = %self.spec.identity, "subscribe to {feeds:?}: {e}");
                let _ = self.events.send(ParticipantEvent::Failed(format!(
                    "subscribe {feeds:?}: {e}"
                )));
                return Ok(());
            }
            Err(e) => return Err(e).context("joining as subscriber"),
        };
        self.subscription.joined = true;
        self.subscription.subscribed.extend(feeds);
        self.report_joined();
        // The offer is normally in the reply; if Janus sends it later, `on_janus` takes it.
        if let Some(jsep) = reply.jsep.clone() {
            self.take_offer(handle.peer, jsep)?;
        }
        Ok(())
    }

    fn take_offer(&mut self, peer: PeerId, jsep: Jsep) -> anyhow::Result<()> {
        if jsep.kind != "offer" {
            warn!(identity = %self.spec.identity, "expected an offer from Janus, got {}", jsep.kind);
            return Ok(());
        }
        self.subscription.negotiating = true;
        self.shard.send(ShardCommand::RemoteDescription {
            peer,
            sdp: jsep.sdp,
        })
    }

    fn handle_for(&self, target: PeerTarget) -> Option<Handle> {
        match target {
            PeerTarget::Publish => self.publish,
            PeerTarget::Subscribe => self.subscribe,
        }
    }

    async fn on_peer_output(&mut self, output: PeerOutput) -> anyhow::Result<()> {
        match output {
            PeerOutput::Answer(sdp) => {
                let Some(handle) = self.subscribe else {
                    return Ok(());
                };
                let start = self.message(
                    handle.id,
                    VideoRoomRequest::Start {},
                    Some(Jsep::answer(sdp)),
                );
                self.conn
                    .call(start, STEP_TIMEOUT)
                    .await
                    .context("start (subscribe answer)")?;
                self.subscription.negotiating = false;
                self.flush_subscriptions().await?;
            }
            PeerOutput::LocalCandidate(target, candidate) => {
                let Some(handle) = self.handle_for(target) else {
                    return Ok(());
                };
                // Our only candidate (one host address per peer), so the end follows at once.
                for candidate in [
                    Candidate::One {
                        candidate: candidate.candidate,
                        sdp_mid: candidate.sdp_mid,
                        sdp_m_line_index: candidate.sdp_m_line_index.unwrap_or(0),
                    },
                    Candidate::Completed { completed: true },
                ] {
                    let mut trickle = self.conn.request("trickle");
                    trickle.handle_id = Some(handle.id);
                    trickle.candidate = Some(candidate);
                    self.conn.send(&trickle).await?;
                }
            }
            // Publishers count as connected at Janus's `webrtcup`, subscribers at first media.
            PeerOutput::Connected(_) => {}
            PeerOutput::Failed(target) => {
                let _ = self.events.send(ParticipantEvent::Failed(format!(
                    "{target:?} connection failed"
                )));
            }
        }
        Ok(())
    }

    async fn on_janus(&mut self, message: api::Incoming) -> anyhow::Result<()> {
        let from = |handle: Option<Handle>| handle.is_some_and(|h| Some(h.id) == message.sender);
        match message.janus {
            Kind::Webrtcup if from(self.publish) => {
                let _ = self
                    .events
                    .send(ParticipantEvent::Connected(PeerTarget::Publish));
            }
            Kind::Event if from(self.publish) => {
                let feeds: Vec<u64> = message
                    .videoroom()
                    .map(|d| d.publishers.iter().map(|p| p.id).collect())
                    .unwrap_or_default();
                if !feeds.is_empty() {
                    self.want(feeds).await?;
                }
            }
            Kind::Event if from(self.subscribe) => {
                let what = message.videoroom().and_then(|d| d.videoroom.as_deref());
                debug!(identity = %self.spec.identity, ?what, "subscriber event");
                if let (Some(handle), Some(jsep)) = (self.subscribe, message.jsep) {
                    self.take_offer(handle.peer, jsep)?;
                }
            }
            Kind::Hangup if from(self.publish) || from(self.subscribe) => {
                let reason = message.reason.unwrap_or_default();
                let _ = self.events.send(ParticipantEvent::Failed(format!(
                    "{}: Janus hung up a handle: {reason}",
                    self.spec.identity
                )));
            }
            Kind::Timeout | Kind::Detached if from(self.publish) || from(self.subscribe) => {
                bail!("Janus ended the session or a handle ({:?})", message.janus)
            }
            Kind::Timeout => bail!("Janus timed the session out"),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::source::SIMULCAST_LAYERS;
    use crate::scenario::{self, Scenario, Sizes};

    #[test]
    fn simulcast_layers_are_listed_low_to_high_as_rid_order_says() {
        let rates: Vec<u32> = SIMULCAST_LAYERS.iter().map(|l| l.bitrate_bps).collect();
        assert!(rates.windows(2).all(|w| w[0] < w[1]), "{rates:?}");
    }

    #[test]
    fn rooms_are_sized_for_the_scenario() {
        let sizes = Sizes {
            subscribers: 50,
            participants: 6,
            pairs: 3,
            fps: 30,
            keyframe_interval: 90,
            student_region: None,
            student_access: None,
        };
        let class = room_plans(&scenario::cast(Scenario::Class, &sizes, "x"));
        let plan = class.values().next().copied().unwrap();
        assert_eq!((class.len(), plan.publishers), (1, 1));
        // All three layers and audio fit under the REMB cap.
        let sent: u32 = SIMULCAST_LAYERS.iter().map(|l| l.bitrate_bps).sum::<u32>() + AUDIO_BPS;
        assert!(plan.bitrate > sent);
        let meeting = room_plans(&scenario::cast(Scenario::Meeting, &sizes, "x"));
        assert_eq!(meeting.values().next().map(|p| p.publishers), Some(6));
        let support = room_plans(&scenario::cast(Scenario::Support, &sizes, "x"));
        assert!(support.len() == 3 && support.values().all(|p| p.publishers == 2));
    }
}
