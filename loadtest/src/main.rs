//! `aula-loadtest`: many light WebRTC clients against one SFU on this machine; reports join
//! time, end-to-end latency, loss, jitter, bitrate and the server's CPU per forwarded packet.
//!
//! Layout: [`run`] orchestrates a run; [`scenario`] says who joins; [`signal`] negotiates with
//! the server; [`shard`] drives many [`peer`]s on one multiplexed socket ([`net`]); [`media`]
//! makes the payloads; [`stats`] and [`report`] turn packets into numbers; [`server`] and
//! [`procfs`] observe the server; [`guard`] keeps the traffic on this machine.

mod cli;
mod clock;
mod guard;
mod http;
mod media;
mod net;
mod peer;
mod procfs;
mod progress;
mod report;
mod run;
mod scenario;
mod server;
mod shard;
mod signal;
mod stats;

use clap::Parser;

/// Warnings only; `rtc`'s DTLS warns once per connection about a missing server name, and its
/// SRTP handler once per replayed packet, which with hundreds of clients would bury everything
/// else. The SFU sends replays on purpose: the extra copies of a resend on a lossy path are
/// dropped by the receiver's replay check.
const DEFAULT_LOG_FILTER: &str = "warn,rtc_dtls=error,rtc::peer_connection::handler=error";

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    // Two workers: the shards and the signaling tasks share them; on a 2-core machine the
    // server under test needs the rest, and the report shows how much we took.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aula-loadtest: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aula-loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
