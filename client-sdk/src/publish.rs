//! Publishing: the audio track handle and the task that paces the tone.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::error::ClientError;
use crate::peer::PeerCommand;
use crate::tone::{FRAME_DURATION, ToneConfig, ToneEncoder};

/// What feeds a published audio track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AudioSource {
    /// A sine tone encoded with Opus, one packet every 20 ms, starting once media connects.
    /// The payloads are exactly the outputs of a [`ToneEncoder`] built with the same config.
    Tone(ToneConfig),
    /// Nothing by itself: the application sends each payload with
    /// [`PublishedAudio::send_payload`] (e.g. numbered test payloads).
    Manual,
}

/// Where a published track's payloads go now, and the id it was last announced with. The
/// session changes it when it rejoins (see [`crate::Client`]): the track is published again on
/// the new session's connection.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) to: RouteTo,
    pub(crate) track_id: Arc<str>,
}

#[derive(Debug, Clone)]
pub(crate) enum RouteTo {
    /// The publish connection of the current session.
    Live(mpsc::Sender<PeerCommand>),
    /// The session is being joined again: payloads are dropped until the track is back.
    Rejoining,
    /// The session is over.
    Closed,
}

/// A published audio track. Dropping it stops the tone; the track stays negotiated until the
/// client leaves (or rejoins: a track whose handle is gone is not published again).
///
/// Every payload, whether from the tone or [`send_payload`](Self::send_payload), becomes one
/// RTP packet: the sequence number grows by one and the timestamp by 960 (one 20 ms frame at
/// 48 kHz) per packet, and the first packet carries the marker bit.
///
/// When the client rejoins (see [`crate::Client`]), the track is published again by itself, on
/// the new session's publish connection, as a new track (new id and sid, a new RTP stream); in
/// between, payloads are dropped as a network outage would, and the tone goes on ticking.
pub struct PublishedAudio {
    route: watch::Receiver<Route>,
    tone: Option<JoinHandle<()>>,
}

impl PublishedAudio {
    pub(crate) fn new(route: watch::Receiver<Route>, tone: Option<ToneEncoder>) -> Self {
        let tone = tone.map(|encoder| tokio::spawn(play_tone(encoder, route.clone())));
        Self { route, tone }
    }

    /// The MediaStreamTrack id announced in `PublishOffer` (not the server-assigned sid, which
    /// arrives in [`crate::ClientEvent::TrackPublished`]). A rejoin publishes the track again
    /// under a new id; until it is through, this is the previous one.
    pub fn track_id(&self) -> String {
        self.route.borrow().track_id.to_string()
    }

    /// Sends `payload` as the next RTP packet of the track. Waits only when the connection's
    /// task is more than a few dozen packets behind.
    ///
    /// While the media path is down and the session is being joined again, the payload is
    /// dropped (`Ok`), as the network would drop it. [`ClientError::Closed`] once the session
    /// is over.
    pub async fn send_payload(&self, payload: Bytes) -> Result<(), ClientError> {
        send(&self.route, payload).await
    }
}

/// Sends one payload on the current route; see [`PublishedAudio::send_payload`].
async fn send(route: &watch::Receiver<Route>, payload: Bytes) -> Result<(), ClientError> {
    let current = route.borrow().to.clone();
    match current {
        RouteTo::Live(commands) => {
            // The connection's task is gone: it failed (the session is about to be joined
            // again) or the session is over.
            if commands.send(PeerCommand::Send(payload)).await.is_err()
                && matches!(route.borrow().to, RouteTo::Closed)
            {
                return Err(ClientError::Closed);
            }
            Ok(())
        }
        RouteTo::Rejoining => Ok(()),
        RouteTo::Closed => Err(ClientError::Closed),
    }
}

impl Drop for PublishedAudio {
    fn drop(&mut self) {
        if let Some(tone) = &self.tone {
            tone.abort();
        }
    }
}

/// Sends one frame every 20 ms until the session is over.
async fn play_tone(mut encoder: ToneEncoder, route: watch::Receiver<Route>) {
    // The default `Burst` catch-up keeps the long-run rate at exactly 50 packets/s even when
    // the runtime is late, which is what a jitter buffer at the receiver expects.
    let mut ticker = tokio::time::interval(FRAME_DURATION);
    loop {
        ticker.tick().await;
        let frame = match encoder.next_frame() {
            Ok(frame) => frame,
            Err(e) => {
                // Only a misconfigured encoder fails, and it would fail every frame.
                warn!("Opus encoding failed, stopping the tone: {e}");
                return;
            }
        };
        if send(&route, frame).await.is_err() {
            return;
        }
    }
}
