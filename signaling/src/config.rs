//! Server configuration: one TOML file, every field optional, unknown fields refused.
//!
//! `aula serve` must run with no file at all (the embedded [`Config::default`]), so every field
//! has a default. Unknown fields are refused rather than ignored because a misspelt option
//! (`api_secet`) silently falling back to a default is how servers end up in dev mode in
//! production. The commented sample is `aula.sample.toml` at the repository root.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::token::ApiKeys;

/// Shortest API secret accepted. HS256 keys shorter than the hash output (32 bytes) weaken the
/// MAC (RFC 7518 §3.2 requires at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

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

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub rtc: RtcConfig,
    pub keys: KeysConfig,
    pub room: RoomConfig,
    pub webhooks: WebhooksConfig,
    pub recording: RecordingConfig,
    pub dev: DevConfig,
    /// Several nodes as one cluster; absent (the default) runs a single node with no Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// A `tracing` filter such as `info` or `aula_signaling=debug,info`; `RUST_LOG` overrides it.
    pub log_level: String,
}

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

/// Default for `[cluster] node_ttl_secs`: a dead node leaves the directory within seconds,
/// while a refresh or two may be late without it disappearing.
pub const DEFAULT_NODE_TTL_SECS: u64 = 10;

/// Default for `[cluster] refresh_secs`.
pub const DEFAULT_REFRESH_SECS: u64 = 3;

/// Default for `[cluster] lease_ttl_secs`: a dead origin's rooms can be claimed again this soon.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;

/// Several nodes as one cluster, sharing a directory in Redis (see `crate::cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The directory's Redis, `redis://[user:password@]host[:port][/db]`.
    pub redis_url: String,
    /// This node's id in the directory: letters, digits, `.`, `_`, `-`. Default: a random id
    /// drawn at each start (a restarted node is then a new node; the old entry expires).
    #[serde(default = "random_node_id")]
    pub node_id: String,
    /// The region the node serves, e.g. `eu-west`: same characters as `node_id`.
    pub region: String,
    /// Where clients and other nodes reach this node, `host:port` each; port 0 is the port
    /// `http.bind` bound.
    #[serde(default)]
    pub public_addrs: Vec<String>,
    /// Seconds the node's entry lives without a refresh; more than `refresh_secs`.
    #[serde(default = "default_node_ttl_secs")]
    pub node_ttl_secs: u64,
    /// Seconds between refreshes of the entry and of the cached directory; at least 1.
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
    /// Seconds a room's origin lease lasts unless renewed; more than `refresh_secs`.
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
    /// Relay links to other nodes (`[cluster.relay]`); without it the node shares the
    /// directory but serves every room's media itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayConfig>,
}

/// This node's end of the QUIC links between nodes (see `crate::cluster::relay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// UDP address the link endpoint binds.
    #[serde(default = "default_relay_bind")]
    pub bind: SocketAddr,
    /// Where other nodes reach it, `host:port` (published in the directory); port 0 is the
    /// port `bind` bound.
    pub addr: String,
    /// The cluster CA's certificate (`aula cluster ca`): only nodes it signed are trusted.
    pub ca_cert: PathBuf,
    /// This node's certificate and key (`aula cluster cert --node <node_id>`).
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// Test only: delay and loss added to everything this node sends on its relay links
    /// (load tests of a long path between nodes; see `aula_sfu::relay::impaired_socket`).
    /// Refused unless `[dev] test_impairment = true`. A path impaired both ways is both nodes
    /// set alike: 150 ms round trip = `delay_ms = 75` on each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impairment: Option<RelayImpairment>,
}

/// `[cluster.relay] impairment = { delay_ms = 75, loss = 0.01 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayImpairment {
    /// One-way delay added to each datagram sent, milliseconds (at most 10,000).
    #[serde(default)]
    pub delay_ms: u64,
    /// Share of the datagrams sent that are lost, 0 to 1, independently each.
    #[serde(default)]
    pub loss: f64,
    /// Seed of the loss pattern; default: derived from the node id, so that a rerun of the
    /// same nodes loses the same datagrams of the same sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// `loss` is checked to be a number in 0..=1 (never NaN), so equality is an equivalence.
impl Eq for RelayImpairment {}

impl RelayImpairment {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err((
                "cluster.relay.impairment",
                format!("loss must be between 0 and 1, not {}", self.loss),
            ));
        }
        if self.delay_ms > 10_000 {
            return Err((
                "cluster.relay.impairment",
                format!("delay_ms must be at most 10000, not {}", self.delay_ms),
            ));
        }
        Ok(())
    }
}

fn default_relay_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7884))
}

fn random_node_id() -> String {
    format!("node-{:08x}", rand::random::<u32>())
}

fn default_node_ttl_secs() -> u64 {
    DEFAULT_NODE_TTL_SECS
}

fn default_refresh_secs() -> u64 {
    DEFAULT_REFRESH_SECS
}

fn default_lease_ttl_secs() -> u64 {
    DEFAULT_LEASE_TTL_SECS
}

/// `host:port`, with a host and a valid port.
fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// An id that is safe in a Redis key and a log line.
pub(crate) fn is_cluster_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = redis::Client::open(self.redis_url.as_str()) {
            return Err((
                "cluster.redis_url",
                format!("{:?} is not a Redis URL: {e}", self.redis_url),
            ));
        }
        if !is_cluster_id(&self.node_id) {
            return Err((
                "cluster.node_id",
                "must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        if !is_cluster_id(&self.region) {
            return Err((
                "cluster.region",
                "must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
            ));
        }
        for addr in &self.public_addrs {
            if !is_host_port(addr) {
                return Err(("cluster.public_addrs", format!("{addr:?} is not host:port")));
            }
        }
        if let Some(relay) = &self.relay
            && !is_host_port(&relay.addr)
        {
            return Err((
                "cluster.relay.addr",
                format!("{:?} is not host:port", relay.addr),
            ));
        }
        if self.refresh_secs == 0 {
            return Err(("cluster.refresh_secs", "must be at least 1".into()));
        }
        if self.node_ttl_secs <= self.refresh_secs {
            return Err((
                "cluster.node_ttl_secs",
                "must be more than refresh_secs, or live nodes drop out between refreshes".into(),
            ));
        }
        if self.lease_ttl_secs <= self.refresh_secs {
            return Err((
                "cluster.lease_ttl_secs",
                "must be more than refresh_secs, or leases lapse between renewals".into(),
            ));
        }
        Ok(())
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
        }
    }
}

impl Default for Config {
    /// The embedded default: HTTP on `0.0.0.0:7880`, media on UDP `0.0.0.0:7882`, no keys (dev
    /// mode), log level `info`.
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            rtc: RtcConfig::default(),
            keys: KeysConfig::default(),
            room: RoomConfig::default(),
            webhooks: WebhooksConfig::default(),
            recording: RecordingConfig::default(),
            dev: DevConfig::default(),
            cluster: None,
            log_level: "info".to_owned(),
        }
    }
}

/// Why a configuration could not be used. The message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax errors, unknown fields and wrongly typed values; `toml` names the field and line.
    #[error("invalid config{}: {message}", in_file(.path))]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    /// Values that parse but do not make sense together.
    #[error("invalid config{}: `{field}`: {message}", in_file(.path))]
    Invalid {
        path: Option<PathBuf>,
        field: &'static str,
        message: String,
    },
}

/// One line naming the field (`section.key`) and the line, then what is wrong with it. `toml`'s
/// own report is several lines with the offending line quoted, and its serde message alone
/// ("invalid socket address syntax") does not say which field.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return message.to_owned();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find_map(|l| l.strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .map(str::trim);
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('[') && line.contains('='));
    match (section, key) {
        (Some(section), Some(key)) => format!("`{section}.{key}` (line {line_no}): {message}"),
        (None, Some(key)) => format!("`{key}` (line {line_no}): {message}"),
        _ => format!("line {line_no}: {message}"),
    }
}

fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default()
}

impl Config {
    /// For tests: everything on loopback with OS-chosen ports, dev keys, rooms removed at once.
    pub fn loopback_ephemeral() -> Self {
        Self {
            http: HttpConfig {
                bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                ..HttpConfig::default()
            },
            rtc: RtcConfig {
                udp_bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                advertised_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            },
            keys: KeysConfig::default(),
            // Tests see a closed socket leave at once, as before reconnects existed.
            room: RoomConfig {
                empty_timeout_secs: 0,
                reconnect_timeout_secs: 0,
            },
            webhooks: WebhooksConfig::default(),
            recording: RecordingConfig::default(),
            dev: DevConfig::default(),
            cluster: None,
            log_level: "info".to_owned(),
        }
    }

    /// Parses and validates TOML text. Missing fields take their defaults.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, None)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    /// `path`'s config, or the embedded default when there is none.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => Self::load(path),
            None => Ok(Self::default()),
        }
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.map(Path::to_owned),
            message: describe_toml_error(text, &e),
        })?;
        config
            .validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                path: path.map(Path::to_owned),
                field,
                message,
            })?;
        Ok(config)
    }

    /// Checks what serde cannot: keys come in pairs, secrets are long enough, the log filter parses.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.keys.api_key, &self.keys.api_secret) {
            (None, None) => {}
            (Some(_), None) => {
                return Err((
                    "keys.api_secret",
                    "missing; set both api_key and api_secret, or neither for dev mode".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "keys.api_key",
                    "missing; set both api_key and api_secret, or neither for dev mode".into(),
                ));
            }
            (Some(key), Some(secret)) => {
                if key.trim().is_empty() {
                    return Err(("keys.api_key", "must not be empty".into()));
                }
                if secret.len() < MIN_SECRET_BYTES {
                    return Err((
                        "keys.api_secret",
                        format!(
                            "must be at least {MIN_SECRET_BYTES} bytes (it is {}); generate one with `openssl rand -hex 32`",
                            secret.len()
                        ),
                    ));
                }
            }
        }
        if let Some(url) = &self.webhooks.url
            && let Err(e) = crate::webhook::parse_url(url)
        {
            return Err(("webhooks.url", e));
        }
        if let Some(path) = &self.webhooks.ca_file
            && let Err(e) = crate::webhook::load_ca_file(path)
        {
            return Err(("webhooks.ca_file", e));
        }
        if self.webhooks.max_attempts == 0 {
            return Err(("webhooks.max_attempts", "must be at least 1".into()));
        }
        if self.http.ws_idle_timeout_secs == 0 {
            return Err((
                "http.ws_idle_timeout_secs",
                "must be at least 1 (dead connections must be detected)".into(),
            ));
        }
        if self.http.header_read_timeout_secs == 0 {
            return Err((
                "http.header_read_timeout_secs",
                "must be at least 1 (half-open connections must be closed)".into(),
            ));
        }
        if self.http.max_connections == 0 {
            return Err(("http.max_connections", "must be at least 1".into()));
        }
        if self.http.max_unjoined_websockets == 0 {
            return Err(("http.max_unjoined_websockets", "must be at least 1".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err((
                "log_level",
                format!("{:?} is not a valid filter: {e}", self.log_level),
            ));
        }
        if self.rtc.advertised_ips.iter().any(IpAddr::is_unspecified) {
            return Err((
                "rtc.advertised_ips",
                "0.0.0.0 / :: cannot be advertised to peers; list the addresses clients reach"
                    .into(),
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
            if let Some(impairment) = cluster.relay.as_ref().and_then(|r| r.impairment.as_ref()) {
                if !self.dev.test_impairment {
                    return Err((
                        "cluster.relay.impairment",
                        "degrades the links between nodes on purpose, for load tests only: it \
                         needs `[dev] test_impairment = true` in the same file (never in \
                         production)"
                            .into(),
                    ));
                }
                impairment.validate()?;
            }
        }
        Ok(())
    }

    /// The configured signing keys, or the well-known dev keys when none are configured.
    pub fn api_keys(&self) -> ApiKeys {
        match (&self.keys.api_key, &self.keys.api_secret) {
            (Some(key), Some(secret)) => ApiKeys {
                key: key.clone(),
                secret: secret.clone(),
            },
            _ => ApiKeys::dev(),
        }
    }

    /// True when no keys are configured: anyone can mint tokens with the published dev secret,
    /// and `/api/dev-token` hands them out.
    pub fn is_dev_mode(&self) -> bool {
        self.api_keys().is_dev()
    }

    pub(crate) fn sfu_config(&self) -> aula_sfu::SfuConfig {
        aula_sfu::SfuConfig {
            udp_bind: self.rtc.udp_bind,
            advertised_ips: self.rtc.advertised_ips.clone(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let config = Config::from_toml_str("").expect("empty TOML is a valid config");
        assert_eq!(config, Config::default());
        assert_eq!(
            config.http.bind,
            "0.0.0.0:7880".parse::<SocketAddr>().expect("literal")
        );
        assert_eq!(
            config.rtc.udp_bind,
            "0.0.0.0:7882".parse::<SocketAddr>().expect("literal")
        );
        assert!(config.is_dev_mode());
    }

    #[test]
    fn sample_config_parses() {
        let text = include_str!("../../aula.sample.toml");
        let config = Config::from_toml_str(text).expect("the shipped sample must parse");
        // The sample shows the defaults, so copying it changes nothing by surprise.
        assert_eq!(config, Config::default());

        // The commented-out examples must be valid too once an operator uncomments them.
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.starts_with("api_") || rest.starts_with("advertised_ips") => {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let uncommented = uncommented.replacen("advertised_ips = []\n", "", 1);
        let config = Config::from_toml_str(&uncommented).expect("uncommented sample must parse");
        assert!(!config.is_dev_mode());
        assert_eq!(config.rtc.advertised_ips.len(), 1);
    }

    #[test]
    fn unknown_field_is_refused_and_named() {
        let err = Config::from_toml_str("[keys]\napi_secet = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`keys.api_secet`"), "{msg}");
        let err = Config::from_toml_str("bogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn bad_value_names_the_field() {
        let err = Config::from_toml_str("[http]\nbind = \"not an address\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`http.bind` (line 2)"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");

        let err = Config::from_toml_str("[room]\nempty_timeout_secs = -1\n").unwrap_err();
        assert!(err.to_string().contains("empty_timeout_secs"), "{err}");

        let err = Config::from_toml_str("[rtc]\nadvertised_ips = [\"1.2.3\"]\n").unwrap_err();
        assert!(err.to_string().contains("`rtc.advertised_ips`"), "{err}");

        // Not even TOML: still one line, with the line number.
        let err = Config::from_toml_str("[http\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn keys_come_in_pairs_and_secrets_are_long() {
        let err = Config::from_toml_str("[keys]\napi_key = \"k\"\n").unwrap_err();
        assert!(err.to_string().contains("keys.api_secret"), "{err}");
        let err =
            Config::from_toml_str("[keys]\napi_key = \"k\"\napi_secret = \"short\"\n").unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        let ok = Config::from_toml_str(&format!(
            "[keys]\napi_key = \"k\"\napi_secret = \"{}\"\n",
            "s".repeat(32)
        ))
        .expect("valid key pair");
        assert_eq!(ok.api_keys().key, "k");
        assert!(!ok.is_dev_mode());
    }

    #[test]
    fn idle_timeout_must_be_positive() {
        let err = Config::from_toml_str("[http]\nws_idle_timeout_secs = 0\n").unwrap_err();
        assert!(
            err.to_string().contains("http.ws_idle_timeout_secs"),
            "{err}"
        );
        let ok = Config::from_toml_str("[http]\nws_idle_timeout_secs = 5\n").expect("valid");
        assert_eq!(ok.http.ws_idle_timeout_secs, 5);
    }

    #[test]
    fn connection_limits_have_defaults_and_must_be_positive() {
        let http = Config::default().http;
        assert_eq!(http.header_read_timeout_secs, 10);
        assert_eq!(http.max_connections, 4096);
        assert_eq!(http.max_connections_per_ip, 256);
        assert_eq!(http.max_unjoined_websockets, 1024);
        for field in [
            "header_read_timeout_secs",
            "max_connections",
            "max_unjoined_websockets",
        ] {
            let err = Config::from_toml_str(&format!("[http]\n{field} = 0\n")).unwrap_err();
            assert!(err.to_string().contains(&format!("http.{field}")), "{err}");
        }
        let ok = Config::from_toml_str("[http]\nmax_connections_per_ip = 0\n").expect("valid");
        assert_eq!(
            ok.http.max_connections_per_ip, 0,
            "0 turns the per-address cap off"
        );
    }

    #[test]
    fn webhooks_need_an_http_url_and_an_attempt() {
        let ok = Config::from_toml_str("[webhooks]\nurl = \"http://127.0.0.1:9000/hooks\"\n")
            .expect("valid");
        assert_eq!(ok.webhooks.max_attempts, 5);
        assert!(Config::from_toml_str("[webhooks]\nurl = \"https://backend/hooks\"\n").is_ok());
        let err = Config::from_toml_str("[webhooks]\nurl = \"ftp://backend/hooks\"\n").unwrap_err();
        assert!(err.to_string().contains("`webhooks.url`"), "{err}");
        let err =
            Config::from_toml_str("[webhooks]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("`webhooks.ca_file`"), "{err}");
        let err = Config::from_toml_str("[webhooks]\nmax_attempts = 0\n").unwrap_err();
        assert!(err.to_string().contains("max_attempts"), "{err}");
    }

    #[test]
    fn test_impairment_is_off_unless_switched_on() {
        assert!(!Config::default().dev.test_impairment);
        assert!(!Config::loopback_ephemeral().dev.test_impairment);
        let on = Config::from_toml_str("[dev]\ntest_impairment = true\n").expect("valid");
        assert!(on.dev.test_impairment);
        let err = Config::from_toml_str("[dev]\ntest_impairments = true\n").unwrap_err();
        assert!(err.to_string().contains("`dev.test_impairments`"), "{err}");
    }

    #[test]
    fn bad_log_level_is_refused() {
        let err = Config::from_toml_str("log_level = \"info,=[\"\n").unwrap_err();
        assert!(err.to_string().contains("log_level"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Config::load(Path::new("/nonexistent/aula.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/aula.toml"), "{err}");
    }

    #[test]
    fn secret_is_not_debug_printed() {
        let mut config = Config::default();
        config.keys.api_secret = Some("super-secret-value".into());
        assert!(!format!("{config:?}").contains("super-secret-value"));
    }

    #[test]
    fn cluster_is_off_by_default_and_validated() {
        assert_eq!(Config::default().cluster, None);
        let base = "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nregion = \"eu-west\"\n";
        let config = Config::from_toml_str(base).expect("valid");
        let cluster = config.cluster.expect("present");
        assert!(cluster.node_id.starts_with("node-"), "{}", cluster.node_id);
        assert_eq!(
            (
                cluster.node_ttl_secs,
                cluster.refresh_secs,
                cluster.lease_ttl_secs
            ),
            (10, 3, 10)
        );
        let other = Config::from_toml_str(base)
            .expect("valid")
            .cluster
            .expect("present");
        assert_ne!(cluster.node_id, other.node_id, "random ids differ");

        let full = format!(
            "{base}node_id = \"eu-1\"\npublic_addrs = [\"eu-1.school.example:7880\", \"[::1]:7880\"]\n"
        );
        let cluster = Config::from_toml_str(&full)
            .expect("valid")
            .cluster
            .expect("present");
        assert_eq!(cluster.node_id, "eu-1");
        assert_eq!(cluster.public_addrs.len(), 2);

        for (extra, field) in [
            ("node_id = \"a b\"\n", "cluster.node_id"),
            ("public_addrs = [\"host\"]\n", "cluster.public_addrs"),
            ("refresh_secs = 0\n", "cluster.refresh_secs"),
            ("node_ttl_secs = 3\n", "cluster.node_ttl_secs"),
            ("lease_ttl_secs = 2\n", "cluster.lease_ttl_secs"),
            ("redis_urls = \"x\"\n", "cluster.redis_urls"),
        ] {
            let err = Config::from_toml_str(&format!("{base}{extra}")).unwrap_err();
            assert!(err.to_string().contains(field), "{extra}: {err}");
        }
        let err =
            Config::from_toml_str("[cluster]\nredis_url = \"http://127.0.0.1\"\nregion = \"eu\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("cluster.redis_url"), "{err}");
        let err = Config::from_toml_str("[cluster]\nredis_url = \"redis://h\"\n").unwrap_err();
        assert!(err.to_string().contains("region"), "{err}");
    }

    #[test]
    fn relay_impairment_is_for_tests_only() {
        let relay = "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nregion = \"eu\"\n\
                     [cluster.relay]\naddr = \"127.0.0.1:7884\"\nca_cert = \"ca.pem\"\n\
                     node_cert = \"n.pem\"\nnode_key = \"n.key\"\n";
        let plain = Config::from_toml_str(relay).expect("valid");
        let plain = plain.cluster.expect("cluster").relay.expect("relay");
        assert_eq!(plain.impairment, None, "off unless set");

        let impaired = format!("{relay}impairment = {{ delay_ms = 75, loss = 0.01 }}\n");
        let err = Config::from_toml_str(&impaired).unwrap_err().to_string();
        assert!(err.contains("cluster.relay.impairment"), "{err}");
        assert!(err.contains("test_impairment = true"), "{err}");

        let on = format!("[dev]\ntest_impairment = true\n{impaired}");
        let config = Config::from_toml_str(&on).expect("valid with the test switch");
        let impairment = config.cluster.unwrap().relay.unwrap().impairment.unwrap();
        assert_eq!(
            impairment,
            RelayImpairment {
                delay_ms: 75,
                loss: 0.01,
                seed: None
            }
        );

        for (bad, what) in [
            ("{ loss = 1.5 }", "loss"),
            ("{ loss = -0.1 }", "loss"),
            ("{ loss = nan }", "loss"),
            ("{ delay_ms = 20000 }", "delay_ms"),
            ("{ delay = 75 }", "delay"),
        ] {
            let text = format!("[dev]\ntest_impairment = true\n{relay}impairment = {bad}\n");
            let err = Config::from_toml_str(&text).unwrap_err().to_string();
            assert!(err.contains(what), "{bad}: {err}");
        }
    }

    #[test]
    fn sample_cluster_section_parses_once_uncommented() {
        let text = include_str!("../../aula.sample.toml");
        let (before, section) = text
            .split_once("# [cluster]\n")
            .expect("sample has [cluster]");
        let uncommented: String = section
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") || rest.starts_with("[cluster.") => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::from_toml_str(&format!("{before}[cluster]\n{uncommented}"))
            .expect("uncommented cluster section parses");
        let cluster = config.cluster.expect("present");
        assert_eq!(cluster.node_id, "eu-west-1");
        let relay = cluster.relay.as_ref().expect("[cluster.relay] present");
        assert_eq!(relay.addr, "eu-west-1.school.example:7884");
        assert_eq!(relay.bind.port(), 7884);
        assert_eq!(
            (
                cluster.node_ttl_secs,
                cluster.refresh_secs,
                cluster.lease_ttl_secs
            ),
            (
                DEFAULT_NODE_TTL_SECS,
                DEFAULT_REFRESH_SECS,
                DEFAULT_LEASE_TTL_SECS
            )
        );
    }

    #[test]
    fn loopback_ephemeral_is_loopback_and_dev() {
        let config = Config::loopback_ephemeral();
        assert!(config.http.bind.ip().is_loopback());
        assert_eq!(config.http.bind.port(), 0);
        assert!(config.rtc.udp_bind.ip().is_loopback());
        assert!(config.is_dev_mode());
    }
}
