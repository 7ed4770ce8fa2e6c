//! Command-line options.

use std::path::PathBuf;

use clap::Parser;

use crate::scenario::Scenario;

/// Which SFU the scenario runs against; only the signaling differs, peers and media are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Aula's JSON WebSocket protocol (`/ws`, dev tokens).
    Aula,
    /// Janus's videoroom plugin over its WebSocket API (`--url http://<ip>:8188`).
    Janus,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Aula => "aula",
            Target::Janus => "janus",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "aula-loadtest",
    about = "Load-test an SFU on this machine with many light WebRTC clients",
    after_help = "Example: aula-loadtest --spawn-server --scenario class --subscribers 100 --duration 20\n\
                  Two nodes: aula-loadtest --scenario relay --url http://127.0.0.1:7880 \\\n\
                  \x20 --relay-url http://127.0.0.1:17880 --relay-region asia --subscribers 20 --student-delay-ms 20"
)]
pub struct Args {
    /// The server's HTTP address; only loopback (see --allow-netns-target).
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    pub url: String,

    #[arg(long, value_enum, default_value = "aula")]
    pub target: Target,

    #[arg(long, value_enum, default_value = "class")]
    pub scenario: Scenario,

    /// class: students subscribing to the teacher.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,

    /// meeting: participants, each publishing and subscribing to all others.
    #[arg(long, default_value_t = 6)]
    pub participants: usize,

    /// support: rooms of two.
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,

    /// Measurement window in seconds, after everyone has joined.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,

    /// Seconds to wait for every subscriber's first media packet before measuring anyway.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub join_timeout: u64,

    /// Participants joining per second.
    #[arg(long, default_value_t = 50.0)]
    pub join_rate: f64,

    /// The server's pid, for its CPU and memory (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Start `aula serve` (built beforehand) on free loopback ports for this run.
    #[arg(long)]
    pub spawn_server: bool,

    /// The `aula` binary for --spawn-server [default: next to this binary].
    #[arg(long)]
    pub server_bin: Option<PathBuf>,

    /// `[rtc] workers` (router shards) for --spawn-server [default: the server's, one per
    /// core]. Old builds that do not know the setting refuse to start with it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub server_workers: Option<u16>,

    /// Also allow private and link-local targets, for a server in a network namespace the
    /// benchmark script created (Janus cannot run on loopback).
    #[arg(long)]
    pub allow_netns_target: bool,

    /// Local address for the peers' sockets instead of loopback aliases: the host side of the
    /// veth pair of a server in a network namespace (e.g. 10.98.0.2), which is the only
    /// address such a server can reach. Peers then share the address and differ by the
    /// server's port (each Janus handle has its own). Needs --allow-netns-target.
    #[arg(long)]
    pub local_ip: Option<std::net::IpAddr>,

    /// relay: the relay node's HTTP address (its `/metrics`, and where the students' access
    /// impairment is set); loopback only, like --url. With another scenario: only read for the
    /// link counters.
    #[arg(long)]
    pub relay_url: Option<String>,

    /// relay: the relay node's region, put in the students' tokens so that the origin places
    /// their media there.
    #[arg(long)]
    pub relay_region: Option<String>,

    /// class, relay: one-way delay the SFU serving a student adds to what it sends the student
    /// (the student's own path), via `POST /test/impairment` on that node, which must run with
    /// `[dev] test_impairment = true`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub student_delay_ms: Option<u64>,

    /// class, relay: random loss, both ways, on each student's own path (as --student-delay-ms).
    #[arg(long, value_parser = parse_loss)]
    pub student_loss: Option<f64>,

    /// Peers per UDP socket (and per driver task).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub peers_per_socket: u32,

    /// Video frames per second.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub fps: u32,

    /// A keyframe every this many frames (and whenever a PLI arrives).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..))]
    pub keyframe_interval: u32,

    /// Runtime worker threads of the load generator.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,

    /// Print the report as JSON on stdout (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// A share between 0 and 1.
fn parse_loss(text: &str) -> Result<f64, String> {
    let loss: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&loss) {
        Ok(loss)
    } else {
        Err(format!("{loss} is not between 0 and 1"))
    }
}
