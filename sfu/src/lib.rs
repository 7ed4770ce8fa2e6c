//! Aula's media plane: a selective forwarding unit on webrtc-rs `rtc` (sans-I/O).
//!
//! - [`api`]: the handle and events the control plane uses.
//! - `worker`: the I/O shell of one router shard — its thread and loop.
//! - [`shard`]: one router shard per core behind one UDP port.
//! - `forward`: pure per-packet decisions (layer choice, sequence/timestamp rewriting).

pub mod api;
pub mod arrival_log;
pub mod bwe;
pub mod codec;
pub mod demux;
mod drop_log;
pub mod fec;
pub mod feedback_loss;
pub mod forward;
mod host;
pub mod impair;
pub mod metrics;
pub mod nack_age;
pub mod peer;
pub mod qos;
pub mod quality;
pub mod record;
pub mod red;
pub mod relay;
pub mod resend_budget;
pub mod resend_history;
pub mod router;
pub mod rtx_repair;
mod sdp;
pub mod sender_clock;
pub mod shard;
pub mod sim;
pub mod spaced_copies;
mod tap;
pub mod udp;
mod worker;

pub use api::{
    ParticipantId, PeerState, PublishedTrack, RelayLink, RenderedSize, SfuConfig, SfuError,
    SfuEvent, SfuHandle, SfuStats, TrackSid, start,
};
pub use metrics::SfuMetrics;
pub use quality::ConnectionQuality;
