//! Server configuration: one TOML file, every field optional, unknown fields refused.
//!
//! `aula serve` must run with no file at all (the embedded [`Config::default`]), so every field
//! has a default. Unknown fields are refused rather than ignored because a misspelt option
//! (`api_secet`) silently falling back to a default is how servers end up in dev mode in
//! production. The commented sample is `aula.sample.toml` at the repository root.//!
//! This file holds the file as a whole: [`Config`], how it is loaded, and the checks across
//! sections; `sections` the single node's sections, `cluster` the `[cluster]` section. Every
//! type is re-exported here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::token::ApiKeys;

mod cluster;
mod sections;

pub(crate) use cluster::is_cluster_id;
pub use cluster::{
    ClusterConfig, DEFAULT_LEASE_TTL_SECS, DEFAULT_NODE_TTL_SECS, DEFAULT_REFRESH_SECS,
    RelayConfig, RelayImpairment,
};
pub use sections::{
    DEFAULT_HEADER_READ_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_UNJOINED_WEBSOCKETS, DEFAULT_RECONNECT_TIMEOUT_SECS, DEFAULT_WS_IDLE_TIMEOUT_SECS,
    DevConfig, HttpConfig, KeysConfig, RecordingConfig, RoomConfig, RoomKind, RtcConfig,
    WebhooksConfig,
};

/// Shortest API secret accepted. HS256 keys shorter than the hash output (32 bytes) weaken the
/// MAC (RFC 7518 §3.2 requires at least 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

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
                ..RtcConfig::default()
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
        if !(1..=256).contains(&self.rtc.workers) {
            return Err(("rtc.workers", "must be 1 to 256".into()));
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
            workers: self.rtc.workers,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
