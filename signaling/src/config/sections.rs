//! The sections of the configuration file a single node reads (`[http]`, `[rtc]`, `[keys]`,
//! `[room]`, `[recording]`, `[webhooks]`, `[dev]`): their fields and defaults. How the file
//! is loaded and checked as a whole is in `config.rs`, the `[cluster]` section in `cluster`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default for `[room] reconnect_timeout_secs`: a Wi-Fi to 4G switch takes a few seconds.
pub const DEFAULT_RECONNECT_TIMEOUT_SECS: u64 = 15;

/// Default for `[http] ws_idle_timeout_secs`: three missed 10 s pings.
pub const DEFAULT_WS_IDLE_TIMEOUT_SECS: u64 = 30;

/// Default for `[http] header_read_timeout_secs`: a browser sends its request header at once;
/// ten seconds leave room for a very slow link, not for a connection parked on purpose.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// Default for `[http] max_connections`: well above a large school's peak (each participant
/// keeps one WebSocket), well below the usual descriptor limits of a service.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default for `[http] max_connections_per_ip`: a school behind one NAT address fits, one
/// client cannot take every connection.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// Default for `[http] max_unjoined_websockets`: sockets normally join within a second, so this
/// is never reached by a class starting, only by sockets opened and left unjoined.
pub const DEFAULT_MAX_UNJOINED_WEBSOCKETS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// HTTP + WebSocket listen address.
    pub bind: SocketAddr,
    /// Seconds without any frame from a client (pongs count) before its WebSocket is closed and
    /// it leaves the room; also the time a new socket has to join. At least 1.
    pub ws_idle_timeout_secs: u64,
    /// Seconds a connection has to send a complete request header (also the idle time allowed
    /// between requests on a kept-alive connection) before it is closed. At least 1.
    pub header_read_timeout_secs: u64,
    /// Open connections (WebSockets included) above which new ones are refused with 503.
    /// At least 1.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 client: its /64) above which its new
    /// ones are refused with 503; 0 for no such cap (behind a reverse proxy every client has
    /// the proxy's address).
    pub max_connections_per_ip: usize,
    /// WebSockets open but not joined (nor resumed) yet above which new ones are refused with
    /// 503. At least 1.
    pub max_unjoined_websockets: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtcConfig {
    /// The one UDP socket all media flows through.
    pub udp_bind: SocketAddr,
    /// Addresses written into ICE candidates. Empty lets the SFU pick (see `aula_sfu::SfuConfig`).
    pub advertised_ips: Vec<IpAddr>,
    /// Router shards, each a thread (see `aula_sfu::shard`): by default one per core. 1 to
    /// 256.
    pub workers: usize,
}

/// The key pair that signs access tokens. Both or neither: neither means dev mode.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    pub api_key: Option<String>,
    pub api_secret: Option<String>,
}

/// Hand-written so that a `{:?}` of the config (e.g. in a log line) never prints the secret.
impl fmt::Debug for KeysConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysConfig")
            .field("api_key", &self.api_key)
            .field(
                "api_secret",
                &self.api_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomConfig {
    /// How long an empty room is kept before it is removed; 0 removes it at once.
    pub empty_timeout_secs: u64,
    /// How long a participant whose connection dropped (a network change, a laptop lid) is
    /// kept, tracks and all, waiting to resume; 0 removes it at once.
    pub reconnect_timeout_secs: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            empty_timeout_secs: 0,
            reconnect_timeout_secs: DEFAULT_RECONNECT_TIMEOUT_SECS,
        }
    }
}

/// Recording rooms (see `crate::recording`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Where recordings go: one directory per recording, `<dir>/<id>/`.
    pub dir: PathBuf,
    /// Kinds of room recorded from their start without anyone asking: `"support"` (the support
    /// desk's private rooms), `"class"` (every other room). None by default.
    pub auto: Vec<RoomKind>,
    /// Days a recording is kept once exported (and uploaded, with `upload`); none: forever.
    pub keep_days: Option<u32>,
    /// Where exported recordings are uploaded: `s3://bucket/prefix` (credentials from the
    /// environment) or `file:///path`. None: they stay in `dir` only.
    pub upload: Option<String>,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./recordings"),
            auto: Vec::new(),
            keep_days: None,
            upload: None,
        }
    }
}

/// What a room is for, as `[recording] auto` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// A support desk session's private room.
    Support,
    /// Any other room.
    Class,
}

/// Where room, participant and support events are POSTed, signed with the API secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// `http://` or `https://` endpoint; none disables webhooks.
    pub url: Option<String>,
    /// PEM file of extra root certificates trusted for an `https://` endpoint (a private CA);
    /// the web PKI's roots are always trusted.
    pub ca_file: Option<PathBuf>,
    /// Deliveries per event before it is dropped (with a warning); at least 1.
    pub max_attempts: u32,
    /// Per-attempt timeout, milliseconds.
    pub timeout_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: None,
            ca_file: None,
            max_attempts: 5,
            timeout_ms: 5000,
        }
    }
}

/// Switches for testing the server itself; all off in production.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevConfig {
    /// Serve `POST /test/impairment`, which makes the SFU drop, rate-limit and delay one
    /// participant's media (weak-network tests without netem). It takes no credentials: anyone
    /// who reaches the HTTP port can degrade anyone's call, so never in production. Also
    /// `aula serve --test-impairment`.
    pub test_impairment: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7880)),
            ws_idle_timeout_secs: DEFAULT_WS_IDLE_TIMEOUT_SECS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_unjoined_websockets: DEFAULT_MAX_UNJOINED_WEBSOCKETS,
        }
    }
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7882)),
            advertised_ips: Vec::new(),
            workers: aula_sfu::api::default_workers(),
        }
    }
}
