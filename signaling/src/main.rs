//! The `aula` binary: see [`aula_signaling::cli`].

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use aula_signaling::Config;
use aula_signaling::cli::{
    Cli, Command, RecordingCommand, dev_keys_warning, export_command, recording_dir, token_command,
};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Exit code for configuration and usage errors (as clap uses for bad arguments).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            test_impairment,
            http_port,
            udp_port,
        } => {
            let mut config = match Config::load_or_default(config.as_deref()) {
                Ok(config) => config,
                Err(e) => return config_error(&e),
            };
            config.dev.test_impairment |= test_impairment;
            if let Some(port) = http_port {
                config.http.bind.set_port(port);
            }
            if let Some(port) = udp_port {
                config.rtc.udp_bind.set_port(port);
            }
            init_logging(&config.log_level);
            if config.is_dev_mode() {
                tracing::warn!("{}", dev_keys_warning());
            }
            if config.dev.test_impairment {
                tracing::warn!(
                    "POST /test/impairment is on: anyone reaching the HTTP port can degrade any participant's media; never in production"
                );
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("aula: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("aula: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token {
            room,
            identity,
            role,
            name,
            ttl_secs,
            grants,
            config,
        } => {
            let config = match Config::load_or_default(config.as_deref()) {
                Ok(config) => config,
                Err(e) => return config_error(&e),
            };
            if config.is_dev_mode() {
                eprintln!("{}", dev_keys_warning());
            }
            let ttl = Duration::from_secs(ttl_secs);
            match token_command(
                &config,
                &room,
                &identity,
                role.into(),
                name.as_deref(),
                ttl,
                &grants,
            ) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("aula: cannot make token: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Cluster { command } => match aula_signaling::cluster::certs::run(&command) {
            Ok(written) => {
                for path in written {
                    println!("wrote {}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("aula: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Recording {
            command: RecordingCommand::Export { recording, config },
        } => {
            let config = match Config::load_or_default(config.as_deref()) {
                Ok(config) => config,
                Err(e) => return config_error(&e),
            };
            export_recording(&recording_dir(&config, &recording))
        }
    }
}

/// `aula recording export`: exports, then lists the files written.
fn export_recording(dir: &std::path::Path) -> ExitCode {
    match export_command(dir) {
        Ok(manifest) => {
            for file in &manifest.files {
                println!(
                    "{}: {} from {:.1} s, {:.1} s long",
                    dir.join(&file.path).display(),
                    file.participant,
                    file.offset_ms as f64 / 1000.0,
                    file.duration_ms as f64 / 1000.0,
                );
            }
            for skipped in &manifest.skipped {
                println!("skipped {}: {}", skipped.log, skipped.reason);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aula: cannot export the recording: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: &aula_signaling::config::ConfigError) -> ExitCode {
    eprintln!("aula: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// Warnings of `rtc` that every browser connection raises and that say nothing wrong: DTLS
/// 1.2 ignoring the TLS 1.3 extensions Chromium offers in its hello (key share, PSK modes,
/// supported versions: three lines per connection, six per participant), and the DTLS
/// server's note that it has no server name. Left at their level, a class of a thousand
/// writes six thousand warnings that hide the ones that matter.
const QUIET_UPSTREAM: [&str; 2] = [
    "rtc_dtls::handshake::handshake_message_client_hello=error",
    "rtc_dtls::config=error",
];

/// The configured filter, with [`QUIET_UPSTREAM`] unless it says something of `rtc_dtls`
/// itself (whoever asks for those logs gets them).
fn log_filter(level: &str) -> String {
    if level.contains("rtc_dtls") {
        return level.to_owned();
    }
    std::iter::once(level)
        .chain(QUIET_UPSTREAM)
        .collect::<Vec<_>>()
        .join(",")
}

/// `RUST_LOG`, when set, overrides the configured level (handy for one-off debugging).
fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(log_filter(level)))
        // The config's filter was validated at load; `info` is only a last resort.
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs on stderr: stdout stays for command output (e.g. `aula token`).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for people; journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Catch the stop signals before announcing readiness, so that a supervisor that stops us
    // right after "ready" gets a graceful shutdown rather than the default signal death.
    let stop = StopSignal::install().context("cannot install signal handlers")?;
    let server = aula_signaling::start(config)
        .await
        .context("cannot start the server")?;
    let mut http = server.http_addr();
    if http.ip().is_unspecified() {
        // Bound to every interface: the address a person on this machine types.
        http.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    tracing::info!(
        "Aula ready: http://{http} (class page: http://{http}/class), media on UDP {}",
        server.udp_addr()
    );
    stop.wait().await;
    tracing::info!("stopping");
    server.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what systemd and Docker send).
struct StopSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_filter_quiets_rtcs_harmless_warnings_unless_it_names_them() {
        let filter = log_filter("info");
        assert!(EnvFilter::try_new(&filter).is_ok(), "{filter}");
        assert_eq!(
            filter,
            "info,rtc_dtls::handshake::handshake_message_client_hello=error,rtc_dtls::config=error"
        );
        assert_eq!(log_filter("info,rtc_dtls=debug"), "info,rtc_dtls=debug");
        assert!(EnvFilter::try_new(log_filter("")).is_ok());
    }
}
