//! Aula's control plane: HTTP + WebSocket signaling, access tokens, rooms, and the `aula` binary.
//!
//! - [`config`]: the TOML configuration (every field optional; none at all is dev mode).
//! - [`token`]: JWT access tokens naming the room, the identity and the grants.
//! - `room`: rooms and participants, the only shared state.
//! - `session`: one participant's WebSocket, the protocol state machine.
//! - `moderation`: who may moderate whom, and the class moderation actions.
//! - `ratelimit`: token buckets for chat and data messages.
//! - `support`: the support desk (routing learners to agents, private rooms).
//! - [`cluster`]: several nodes as one (`[cluster]`): the directory of nodes and room origins in Redis.
//! - [`webhook`]: signed event delivery to the application's backend.
//! - `recording`: starting and stopping room recordings (the SFU captures the media).
//! - `admin`: the admin HTTP API (`/api/admin/...`).
//! - `impairment`: `/test/impairment`, weak networks for tests (only with the test switch).
//! - `listener`: accepts HTTP connections under `conn_limits`' caps, with a header deadline.
//! - `http`: routes (`/ws`, `/healthz`, `/metrics`, `/api/dev-token`, the embedded pages and SDK).
//! - `metrics`: the control plane's Prometheus metrics (the SFU registers its own alongside).
//! - [`media`]: the seam to the media plane ([`aula_sfu::SfuHandle`] in production).
//! - `server`: [`start`] wires it together and returns a [`Server`].
//!
//! The control plane decides *who* may do *what* and who subscribes to which track; the SFU only
//! moves media. Dependencies point one way: this crate uses `aula-sfu`, never the reverse.

mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
mod conn_limits;
mod http;
mod impairment;
mod listener;
pub mod media;
mod metrics;
mod moderation;
mod playback;
mod ratelimit;
mod recording;
mod rejoin;
mod room;
mod server;
mod session;
mod support;
pub mod token;
pub mod webhook;

pub use config::Config;
pub use http::WS_MAX_MESSAGE_BYTES;
/// Reading a recording's QoS timeline (its line format: `recording::qos`).
pub use recording::qos::{QOS_FILE, read as read_qos};
pub use server::{Server, start, start_with_media};
