//! One relay link as the control plane uses it: calls to the other node awaiting their replies,
//! the tracks arriving on it (by their index on the link), a writer that keeps control
//! messages in order, and the readers of its control stream and datagrams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aula_sfu::relay::framing::{Control, PacketKind};
use aula_sfu::relay::link::Link;
use aula_sfu::relay::track::flow_parts;
use aula_sfu::{SfuError, SfuEvent};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::ClusterMedia;
use super::wire::{Call, RemoteEvent};

/// How long a call waits for the other node's reply: far more than an SFU command takes, so
/// only a link that died without saying so hits it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = HashMap<u64, oneshot::Sender<Result<Value, Value>>>;

pub(super) struct LinkPeer {
    id: u64,
    link: Arc<Link>,
    /// To the writer task: control messages go out in the order they were queued.
    out: mpsc::UnboundedSender<Control>,
    pending: Mutex<Pending>,
    next_call: AtomicU64,
    /// The index of the next track this side sends or asks for on the link.
    next_index: AtomicU64,
    /// Track index on the link -> track sid, for tracks arriving here.
    inbound: Mutex<HashMap<u64, String>>,
}

impl LinkPeer {
    /// Serves `link` for `media` until it goes down.
    pub(super) fn start(id: u64, link: Link, media: &Arc<ClusterMedia>) -> Arc<Self> {
        let link = Arc::new(link);
        let (out, out_rx) = mpsc::unbounded_channel();
        let peer = Arc::new(Self {
            id,
            link: Arc::clone(&link),
            out,
            pending: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            // Both sides pick indexes for the tracks they ask for or send: the side with the
            // lower node id odd ones, the other even ones, so they never collide.
            next_index: AtomicU64::new(if link.peer().node_id.as_str() > media.node_id.as_str() {
                1
            } else {
                2
            }),
            inbound: Mutex::new(HashMap::new()),
        });
        tokio::spawn(write_control(link, out_rx));
        tokio::spawn(Arc::clone(&peer).read_datagrams(Arc::clone(media)));
        tokio::spawn(Arc::clone(&peer).read_control(Arc::clone(media)));
        peer
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn link(&self) -> Arc<Link> {
        Arc::clone(&self.link)
    }

    pub(super) fn next_index(&self) -> u64 {
        self.next_index.fetch_add(2, Ordering::Relaxed)
    }

    /// Packets of track `index` on this link are of `track_sid`.
    pub(super) fn expect_track(&self, index: u64, track_sid: &str) {
        lock(&self.inbound).insert(index, track_sid.to_owned());
    }

    /// Runs `call` on the other node and returns its reply.
    pub(super) async fn call(&self, call: Call) -> Result<Value, SfuError> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_value(&call).map_err(|e| SfuError::Internal(e.to_string()))?;
        let (reply, replied) = oneshot::channel();
        lock(&self.pending).insert(id, reply);
        if self.out.send(Control::Call { id, body }).is_err() {
            lock(&self.pending).remove(&id);
            return Err(link_down());
        }
        let result = tokio::time::timeout(CALL_TIMEOUT, replied).await;
        lock(&self.pending).remove(&id);
        match result {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) => Err(serde_json::from_value(error)
                .unwrap_or_else(|e| SfuError::Internal(format!("unreadable error reply: {e}")))),
            Ok(Err(_)) => Err(link_down()),
            Err(_) => Err(SfuError::Internal(
                "the relay node did not answer in time".into(),
            )),
        }
    }

    pub(super) fn send_event(&self, event: &RemoteEvent) {
        match serde_json::to_value(event) {
            Ok(body) => {
                let _ = self.out.send(Control::Event { body });
            }
            Err(e) => tracing::warn!("cannot encode a relayed event: {e}"),
        }
    }

    pub(super) fn keyframe_request(&self, track_sid: &str, layer: usize) {
        let _ = self.out.send(Control::KeyframeRequest {
            track: track_sid.to_owned(),
            layer: layer as u8,
        });
    }

    pub(super) fn layer_demand(&self, track_sid: &str, layers: &[usize]) {
        let _ = self.out.send(Control::LayerDemand {
            track: track_sid.to_owned(),
            layers: layers.iter().map(|&layer| layer as u8).collect(),
        });
    }

    pub(super) fn listener_loss(&self, track_sid: &str, fraction: u8) {
        let _ = self.out.send(Control::ListenerLoss {
            track: track_sid.to_owned(),
            fraction,
        });
    }

    /// Passes on a publisher's sender report ([`SfuEvent::RelaySenderReport`]) for a track this
    /// link carries.
    pub(super) fn sender_report(&self, event: &SfuEvent) {
        if let SfuEvent::RelaySenderReport {
            track_sid,
            ssrc,
            ntp_time,
            rtp_time,
            packets,
            octets,
            ..
        } = event
        {
            let _ = self.out.send(Control::SenderReport {
                track: track_sid.clone(),
                ssrc: *ssrc,
                ntp_time: *ntp_time,
                rtp_time: *rtp_time,
                packets: *packets,
                octets: *octets,
            });
        }
    }

    pub(super) fn nack(&self, track_sid: &str, layer: usize, seqs: Vec<u16>) {
        let _ = self.out.send(Control::Nack {
            track: track_sid.to_owned(),
            layer: layer as u8,
            seqs,
        });
    }

    /// The control stream: calls are run one at a time, in order (a candidate must not
    /// overtake the offer before it); replies wake their callers; events go to the room.
    async fn read_control(self: Arc<Self>, media: Arc<ClusterMedia>) {
        loop {
            let message = match self.link.recv_control().await {
                Ok(message) => message,
                Err(e) => {
                    tracing::info!(link = self.id, "relay link control stream ended: {e}");
                    break;
                }
            };
            match message {
                Control::Call { id, body } => {
                    let result = match serde_json::from_value::<Call>(body) {
                        Ok(call) => media.execute(&self, call).await,
                        Err(e) => Err(SfuError::Internal(format!("unknown call: {e}"))),
                    };
                    let result = result.map_err(|e| serde_json::to_value(e).unwrap_or(Value::Null));
                    let _ = self.out.send(Control::Reply { id, result });
                }
                Control::Reply { id, result } => {
                    if let Some(reply) = lock(&self.pending).remove(&id) {
                        let _ = reply.send(result);
                    }
                }
                Control::Event { body } => match serde_json::from_value::<RemoteEvent>(body) {
                    Ok(event) => media.remote_event(&self, event),
                    Err(e) => tracing::warn!(link = self.id, "unknown relayed event: {e}"),
                },
                Control::KeyframeRequest { track, layer } => {
                    media.sfu.request_keyframe(&track, usize::from(layer));
                }
                Control::LayerDemand { track, layers } => {
                    let layers = layers.into_iter().map(usize::from).collect();
                    media.sfu.relay_layer_demand(&track, self.id, layers);
                }
                Control::ListenerLoss { track, fraction } => {
                    media.sfu.relay_listener_loss(&track, self.id, fraction);
                }
                Control::SenderReport {
                    track,
                    ssrc,
                    rtp_time,
                    ..
                } => {
                    media.sfu.relay_sender_report(&track, ssrc, rtp_time);
                }
                Control::Nack { track, layer, seqs } => {
                    media
                        .sfu
                        .relay_resend(&track, self.id, usize::from(layer), seqs);
                }
                other => tracing::debug!(link = self.id, ?other, "control message ignored"),
            }
        }
        self.link.close();
        // Waiting callers get "link down" when their reply senders drop.
        lock(&self.pending).clear();
        media.link_down(&self).await;
    }

    /// Datagrams: each RTP packet goes to the local SFU as its track's; packets of tracks not
    /// (or no longer) expected are dropped.
    async fn read_datagrams(self: Arc<Self>, media: Arc<ClusterMedia>) {
        while let Ok(received) = self.link.recv_packet().await {
            if received.kind != PacketKind::Rtp {
                continue;
            }
            let Some((index, layer)) = flow_parts(received.flow) else {
                continue;
            };
            let Some(track_sid) = lock(&self.inbound).get(&index).cloned() else {
                continue;
            };
            media.sfu.relay_packet(&track_sid, layer, received.packet);
        }
    }
}

async fn write_control(link: Arc<Link>, mut out: mpsc::UnboundedReceiver<Control>) {
    while let Some(message) = out.recv().await {
        if let Err(e) = link.send_control(&message).await {
            tracing::info!(
                peer = link.peer().node_id,
                "relay link control write failed: {e}"
            );
            break;
        }
    }
}

fn link_down() -> SfuError {
    SfuError::Internal("the relay link is down".into())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
