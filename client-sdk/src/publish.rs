//! Publishing: the audio track handle and the task that paces the tone.

use bytes::Bytes;
use tokio::sync::mpsc;
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

/// A published audio track. Dropping it stops the tone; the track stays negotiated until the
/// client leaves.
///
/// Every payload, whether from the tone or [`send_payload`](Self::send_payload), becomes one
/// RTP packet: the sequence number grows by one and the timestamp by 960 (one 20 ms frame at
/// 48 kHz) per packet, and the first packet carries the marker bit.
pub struct PublishedAudio {
    track_id: String,
    commands: mpsc::Sender<PeerCommand>,
    tone: Option<JoinHandle<()>>,
}

impl PublishedAudio {
    pub(crate) fn new(
        track_id: String,
        commands: mpsc::Sender<PeerCommand>,
        tone: Option<ToneEncoder>,
    ) -> Self {
        let tone = tone.map(|encoder| tokio::spawn(play_tone(encoder, commands.clone())));
        Self {
            track_id,
            commands,
            tone,
        }
    }

    /// The MediaStreamTrack id announced in `PublishOffer` (not the server-assigned sid, which
    /// arrives in [`crate::ClientEvent::TrackPublished`]).
    pub fn track_id(&self) -> &str {
        &self.track_id
    }

    /// Sends `payload` as the next RTP packet of the track. Waits only when the connection's
    /// task is more than a few dozen packets behind.
    pub async fn send_payload(&self, payload: Bytes) -> Result<(), ClientError> {
        self.commands
            .send(PeerCommand::Send(payload))
            .await
            .map_err(|_| ClientError::Closed)
    }
}

impl Drop for PublishedAudio {
    fn drop(&mut self) {
        if let Some(tone) = &self.tone {
            tone.abort();
        }
    }
}

/// Sends one frame every 20 ms until the connection's task goes away.
async fn play_tone(mut encoder: ToneEncoder, commands: mpsc::Sender<PeerCommand>) {
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
        if commands.send(PeerCommand::Send(frame)).await.is_err() {
            return;
        }
    }
}
