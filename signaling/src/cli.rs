//! The `aula` command line: `aula serve` and `aula token`.
//!
//! Kept in the library (not `main.rs`) so the argument parsing and the token command are unit
//! tested like the rest.

use std::path::PathBuf;
use std::time::Duration;

use aula_protocol::Role;
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
        /// Config file whose [keys] sign the token. Without one: the dev keys.
        #[arg(long, short, env = "AULA_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// `Role` for clap (the protocol crate does not depend on clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CliRole {
    Teacher,
    Student,
}

impl From<CliRole> for Role {
    fn from(role: CliRole) -> Self {
        match role {
            CliRole::Teacher => Role::Teacher,
            CliRole::Student => Role::Student,
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
) -> Result<String, token::TokenError> {
    let mut claims = AccessClaims::new(room, identity, role, ttl);
    if let Some(name) = name {
        claims = claims.with_name(name);
    }
    token::mint(&config.api_keys(), &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_serve_and_token() {
        let cli = Cli::try_parse_from(["aula", "serve"]).expect("serve needs no arguments");
        assert!(matches!(cli.command, Command::Serve { config: None }));

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
    fn token_command_signs_with_config_keys() {
        let config = Config::default();
        let jwt = token_command(
            &config,
            "math",
            "ana",
            Role::Student,
            Some("Ana"),
            Duration::from_secs(60),
        )
        .expect("mint");
        let claims = token::verify(&token::ApiKeys::dev(), &jwt).expect("dev keys verify");
        assert_eq!(claims.name, "Ana");
        assert!(!claims.can_publish);
        assert!(dev_keys_warning().contains(&token::ApiKeys::dev().secret));
    }
}
