//! The `aula` command line: `aula serve`, `aula token` and `aula recording export`.
//!
//! Kept in the library (not `main.rs`) so the argument parsing and the token command are unit
//! tested like the rest.

use std::path::PathBuf;
use std::time::Duration;

use aula_protocol::{PublishSource, Role};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::token::{self, AccessClaims};

#[derive(Debug, Parser)]
#[command(
    name = "aula",
    version,
    about = "Aula: live classes over WebRTC (SFU + signaling)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP + WebSocket signaling and the SFU).
    Serve {
        /// Config file (see aula.sample.toml). Without one: built-in defaults, dev mode.
        #[arg(long, short, env = "AULA_CONFIG")]
        config: Option<PathBuf>,
        /// Serve POST /test/impairment (loss, rate cap, delay on one participant's media), as
        /// `[dev] test_impairment = true` does. Unauthenticated: for test servers only.
        #[arg(long)]
        test_impairment: bool,
        /// HTTP and WebSocket port, overriding `[http] bind`'s (default 7880).
        #[arg(long, env = "AULA_HTTP_PORT")]
        http_port: Option<u16>,
        /// Media (UDP) port, overriding `[rtc] udp_bind`'s (default 7882).
        #[arg(long, env = "AULA_UDP_PORT")]
        udp_port: Option<u16>,
    },
    /// Print an access token signed with the configured (or dev) keys.
    Token {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        #[arg(long, value_enum)]
        role: CliRole,
        /// Display name (default: the identity).
        #[arg(long)]
        name: Option<String>,
        /// Validity in seconds (default: 6 hours, one school day).
        #[arg(long, default_value_t = 6 * 3600)]
        ttl_secs: u64,
        #[command(flatten)]
        grants: GrantArgs,
        /// Config file whose [keys] sign the token. Without one: the dev keys.
        #[arg(long, short, env = "AULA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Work on recordings.
    Recording {
        #[command(subcommand)]
        command: RecordingCommand,
    },
    /// Certificates for the links between the nodes of a cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordingCommand {
    /// Turn a recording's capture logs into WebM and Ogg files and a manifest.json, written
    /// into its directory (and its recording.json marked ready or failed).
    Export {
        /// A recording id (`RC_...`, found in the config's `[recording] dir`), or a recording
        /// directory (holding `<track>.<index>.seg` capture logs).
        recording: String,
        /// Config file whose `[recording] dir` holds the recordings. Without one: the default.
        #[arg(long, short, env = "AULA_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// The cluster CA and node certificates: nodes accept relay links only from nodes holding a
/// certificate of their cluster's CA (see `cluster::certs`).
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make a new cluster CA: `ca.pem` (give it to every node) and `ca.key` (keep it offline).
    Ca {
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue node `node`'s certificate, signed by the CA in `ca`: `node.pem` and `node.key`.
    Cert {
        /// The node id, as in `[cluster] node_id`.
        #[arg(long)]
        node: String,
        /// The directory holding `ca.pem` and `ca.key`.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Overrides of the role's default grants (see `token::role_permissions`); absent flags keep
/// the role's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct GrantArgs {
    /// May publish at all (`true`/`false`).
    #[arg(long)]
    pub can_publish: Option<bool>,
    /// Comma-separated sources publishing covers: camera,microphone,screen.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub sources: Option<Vec<CliSource>>,
    /// May subscribe to others' tracks (`true`/`false`).
    #[arg(long)]
    pub can_subscribe: Option<bool>,
    /// May send chat and data messages (`true`/`false`).
    #[arg(long)]
    pub can_publish_data: Option<bool>,
    /// Invisible to the others (e.g. a recorder); never publishes.
    #[arg(long)]
    pub hidden: bool,
    /// May use the admin HTTP API with this token.
    #[arg(long)]
    pub admin: bool,
    /// May start and stop recording the room (`--can-record` alone means true; default:
    /// teachers and agents).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub can_record: Option<bool>,
    /// May list and play back every recording (`--can-review` alone means true; default:
    /// agents and admins).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub can_review: Option<bool>,
}

impl GrantArgs {
    fn apply(&self, claims: &mut AccessClaims) {
        if let Some(v) = self.can_publish {
            claims.can_publish = v;
        }
        if let Some(sources) = &self.sources {
            claims.publish_sources = sources.iter().map(|s| PublishSource::from(*s)).collect();
        }
        if let Some(v) = self.can_subscribe {
            claims.can_subscribe = v;
        }
        if let Some(v) = self.can_publish_data {
            claims.can_publish_data = v;
        }
        claims.hidden = self.hidden;
        claims.admin = self.admin;
        if self.can_record.is_some() {
            claims.can_record = self.can_record;
        }
        if self.can_review.is_some() {
            claims.can_review = self.can_review;
        }
    }
}

/// `Role` for clap (the protocol crate does not depend on clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CliRole {
    Teacher,
    Student,
    Assistant,
    Agent,
    Learner,
}

impl From<CliRole> for Role {
    fn from(role: CliRole) -> Self {
        match role {
            CliRole::Teacher => Role::Teacher,
            CliRole::Student => Role::Student,
            CliRole::Assistant => Role::Assistant,
            CliRole::Agent => Role::Agent,
            CliRole::Learner => Role::Learner,
        }
    }
}

/// `PublishSource` for clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CliSource {
    Camera,
    Microphone,
    Screen,
}

impl From<CliSource> for PublishSource {
    fn from(source: CliSource) -> Self {
        match source {
            CliSource::Camera => PublishSource::Camera,
            CliSource::Microphone => PublishSource::Microphone,
            CliSource::Screen => PublishSource::Screen,
        }
    }
}

/// The warning printed whenever the dev keys are in use, so that nobody runs them unknowingly.
pub fn dev_keys_warning() -> String {
    let dev = token::ApiKeys::dev();
    format!(
        "WARNING: no [keys] configured; using the PUBLIC dev keys (api_key = {:?}, api_secret = {:?}). \
         Anyone can mint tokens and /api/dev-token is open. Set [keys] in the config for production.",
        dev.key, dev.secret
    )
}

/// `aula token`: the signed token for these arguments.
pub fn token_command(
    config: &Config,
    room: &str,
    identity: &str,
    role: Role,
    name: Option<&str>,
    ttl: Duration,
    grants: &GrantArgs,
) -> Result<String, token::TokenError> {
    let mut claims = AccessClaims::new(room, identity, role, ttl);
    if let Some(name) = name {
        claims = claims.with_name(name);
    }
    grants.apply(&mut claims);
    token::mint(&config.api_keys(), &claims)
}

/// The directory `aula recording export <recording>` exports: an id names a directory in the
/// config's `[recording] dir`; anything else is a directory's path.
pub fn recording_dir(config: &Config, recording: &str) -> PathBuf {
    crate::recording::store::dir_of(&config.recording.dir, recording)
        .unwrap_or_else(|| PathBuf::from(recording))
}

/// Exports the recording in `dir` as the server does when a recording ends (without the
/// upload); see `aula_recording::export`. Blocks.
pub fn export_command(dir: &std::path::Path) -> Result<aula_recording::manifest::Manifest, String> {
    crate::recording::export_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recording_export() {
        let cli = Cli::try_parse_from(["aula", "recording", "export", "/var/aula/rec/1"])
            .expect("export takes a directory");
        let Command::Recording {
            command: RecordingCommand::Export { recording, config },
        } = cli.command
        else {
            panic!("not a recording export: {:?}", cli.command);
        };
        assert_eq!((recording.as_str(), config), ("/var/aula/rec/1", None));
        assert!(Cli::try_parse_from(["aula", "recording", "export"]).is_err());
        let cli = Cli::try_parse_from([
            "aula",
            "recording",
            "export",
            "RC_abcdefghijkl",
            "--config",
            "a.toml",
        ])
        .expect("export takes an id and a config");
        assert!(matches!(
            cli.command,
            Command::Recording {
                command: RecordingCommand::Export {
                    config: Some(_),
                    ..
                }
            }
        ));
    }

    #[test]
    fn an_export_finds_a_recording_id_in_the_configured_dir() {
        let mut config = Config::default();
        config.recording.dir = PathBuf::from("/var/aula/rec");
        assert_eq!(
            recording_dir(&config, "RC_abcdefghijkl"),
            PathBuf::from("/var/aula/rec/RC_abcdefghijkl")
        );
        assert_eq!(
            recording_dir(&config, "old/RC_1"),
            PathBuf::from("old/RC_1")
        );
        assert_eq!(recording_dir(&config, "RC_../x"), PathBuf::from("RC_../x"));
    }

    #[test]
    fn parses_serve_and_token() {
        let cli = Cli::try_parse_from(["aula", "serve"]).expect("serve needs no arguments");
        assert!(matches!(
            cli.command,
            Command::Serve {
                config: None,
                test_impairment: false,
                http_port: None,
                udp_port: None,
            }
        ));
        let cli =
            Cli::try_parse_from(["aula", "serve", "--http-port", "8080", "--udp-port", "9000"])
                .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Serve {
                http_port: Some(8080),
                udp_port: Some(9000),
                ..
            }
        ));
        let cli = Cli::try_parse_from(["aula", "serve", "--test-impairment"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Serve {
                test_impairment: true,
                ..
            }
        ));

        let cli = Cli::try_parse_from([
            "aula",
            "token",
            "--room",
            "math",
            "--identity",
            "ana",
            "--role",
            "student",
        ])
        .expect("token args");
        let Command::Token { role, ttl_secs, .. } = cli.command else {
            panic!("not token");
        };
        assert_eq!(role, CliRole::Student);
        assert_eq!(ttl_secs, 21600);

        assert!(
            Cli::try_parse_from([
                "aula",
                "token",
                "--room",
                "r",
                "--identity",
                "i",
                "--role",
                "admin"
            ])
            .is_err()
        );
    }

    #[test]
    fn grant_flags_override_the_role() {
        let cli = Cli::try_parse_from([
            "aula",
            "token",
            "--room",
            "math",
            "--identity",
            "rec",
            "--role",
            "student",
            "--can-publish",
            "true",
            "--sources",
            "screen,microphone",
            "--can-publish-data",
            "false",
            "--hidden",
            "--admin",
            "--can-record",
            "--can-review",
        ])
        .expect("grant flags parse");
        let Command::Token { grants, .. } = cli.command else {
            panic!("not token");
        };
        let jwt = token_command(
            &Config::default(),
            "math",
            "rec",
            Role::Student,
            None,
            Duration::from_secs(60),
            &grants,
        )
        .expect("mint");
        let claims = token::verify(&token::ApiKeys::dev(), &jwt).expect("verify");
        assert!(claims.can_publish && claims.hidden && claims.admin && !claims.can_publish_data);
        assert_eq!(claims.can_record, Some(true));
        assert_eq!(claims.can_review, Some(true));
        assert_eq!(
            claims.publish_sources,
            vec![PublishSource::Screen, PublishSource::Microphone]
        );
        assert!(claims.can_subscribe);
    }

    #[test]
    fn token_command_signs_with_config_keys() {
        let config = Config::default();
        let jwt = token_command(
            &config,
            "math",
            "ana",
            Role::Student,
            Some("Ana"),
            Duration::from_secs(60),
            &GrantArgs::default(),
        )
        .expect("mint");
        let claims = token::verify(&token::ApiKeys::dev(), &jwt).expect("dev keys verify");
        assert_eq!(claims.name, "Ana");
        assert!(!claims.can_publish);
        assert!(dev_keys_warning().contains(&token::ApiKeys::dev().secret));
    }
}
