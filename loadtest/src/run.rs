//! One run, start to end: server, shards, joins, the measurement window, the report.
//!
//! Phases are bounded: joining by `--join-timeout` (the window then starts with whoever has
//! media, and the report counts the rest as failed), measuring by `--duration`, leaving by
//! [`LEAVE_TIMEOUT`]. Publishers that must be live before others join (the class teacher) join
//! first, so join time measures the subscriber's path and not the teacher's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use aula_protocol::PeerTarget;
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::warn;

use crate::cli::{Args, Target};
use crate::clock::Epoch;
use crate::net::socket::Addressing;
use crate::progress::{self, Progress};
use crate::report::{Report, RunFacts, ServerReport};
use crate::scenario::{self, Cast, Scenario, Sizes};
use crate::server::{self, SpawnedServer};
use crate::shard::{Shard, ShardHandle};
use crate::signal::{self, Access, ParticipantEvent, ParticipantSpec};
use crate::{guard, procfs};

/// Time participants get to leave cleanly at the end.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Errors printed at the end; the rest are counted.
const ERRORS_SHOWN: usize = 5;

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.spawn_server && args.target == Target::Janus {
        anyhow::bail!(
            "--spawn-server starts Aula; Janus runs in its namespace (see bench/compare.sh)"
        );
    }
    let relay = relay_target(&args)?;
    let spawned = match args.spawn_server {
        true => Some(SpawnedServer::start(&server_binary(&args)?, args.server_workers).await?),
        false => None,
    };
    let server = match &spawned {
        Some(s) => s.http,
        None => guard::parse_target(&args.url, args.allow_netns_target)?,
    };
    let server_pid = args.server_pid.or(spawned.as_ref().map(SpawnedServer::pid));
    let sizes = Sizes {
        subscribers: args.subscribers,
        participants: args.participants,
        pairs: args.pairs,
        fps: args.fps,
        keyframe_interval: args.keyframe_interval,
        student_region: args.relay_region.clone(),
        student_access: student_access(&args, server, relay)?,
    };
    let run_id: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(6)
        .map(char::from)
        .collect();
    let cast = scenario::cast(args.scenario, &sizes, &run_id);

    let epoch = Epoch::now();
    let progress = Arc::new(Progress::default());
    let shard_count = cast.peers().div_ceil(args.peers_per_socket as usize).max(1);
    let addressing = match args.local_ip {
        Some(local) => {
            guard::check_ip(local, args.allow_netns_target).context("--local-ip")?;
            Addressing::Netns {
                local,
                server: server.ip(),
            }
        }
        None => Addressing::Loopback,
    };
    let shards = (0..shard_count)
        .map(|_| {
            let frame_interval = Duration::from_secs_f64(1.0 / f64::from(args.fps));
            Shard::spawn(epoch, progress.clone(), addressing, frame_interval)
        })
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding UDP sockets")?;

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let errors = tokio::spawn(collect_events(events_rx, progress.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut participants = JoinSet::new();
    let mut assign = Assigner::new(&shards, args.peers_per_socket as usize);
    let janus_rooms = signal::janus::room_plans(&cast);
    let target = args.target;
    let launch = |participants: &mut JoinSet<()>, assign: &mut Assigner, spec: ParticipantSpec| {
        let shard = assign.next(&spec);
        let (events, stop) = (events_tx.clone(), stop_rx.clone());
        let rooms = janus_rooms.clone();
        participants.spawn(async move {
            let identity = spec.identity.clone();
            let result = match target {
                Target::Aula => signal::aula::run(server, spec, shard, events.clone(), stop).await,
                Target::Janus => {
                    signal::janus::run(server, rooms, spec, shard, events.clone(), stop).await
                }
            };
            if let Err(e) = result {
                let _ = events.send(ParticipantEvent::Failed(format!("{identity}: {e:#}")));
            }
        });
    };

    // Phase 1: publishers others wait for.
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(args.join_timeout);
    let first_publishers = cast.first.iter().filter(|p| p.publish.is_some()).count() as u64;
    for spec in cast.first.clone() {
        launch(&mut participants, &mut assign, spec);
    }
    while progress.publishers_connected.load(Ordering::Relaxed) < first_publishers {
        if tokio::time::Instant::now() >= join_deadline {
            anyhow::bail!(
                "the first publishers did not connect within {} s: {}",
                args.join_timeout,
                progress.errors().join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Phase 2: everyone else, at the join rate, until every subscriber has media.
    let subscribers = cast.subscribers();
    let bar = progress::bar(subscribers as u64, "joining", args.json);
    let joining = async {
        let gap = Duration::from_secs_f64(1.0 / args.join_rate.max(0.1));
        for spec in cast.rest.clone() {
            launch(&mut participants, &mut assign, spec);
            tokio::time::sleep(gap).await;
        }
        loop {
            let with_media = progress.subscribers_with_media.load(Ordering::Relaxed);
            bar.set_position(with_media);
            if with_media >= subscribers as u64 || tokio::time::Instant::now() >= join_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    progress::follow(&bar, &progress, subscribers as u64, joining).await;
    bar.finish_and_clear();

    // Phase 3: the measurement window.
    let facts = measure(&args, server, relay, server_pid, &shards, &progress, &cast).await?;
    let reports = {
        let mut reports = Vec::new();
        for shard in &shards {
            reports.push(shard.finish().await?);
        }
        reports
    };

    // Phase 4: leave.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(LEAVE_TIMEOUT, async {
        while participants.join_next().await.is_some() {}
    })
    .await;
    participants.abort_all();
    drop((shards, events_tx));
    let errors = errors.await.unwrap_or_default();

    let report = Report::build(facts, reports);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    for error in errors.iter().take(ERRORS_SHOWN) {
        warn!("{error}");
    }
    if errors.len() > ERRORS_SHOWN {
        warn!("... and {} more errors", errors.len() - ERRORS_SHOWN);
    }
    Ok(())
}

/// Runs the window: samples the server and ourselves before and after, counts in between.
#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    server: SocketAddr,
    relay: Option<SocketAddr>,
    server_pid: Option<u32>,
    shards: &[ShardHandle],
    progress: &Progress,
    cast: &Cast,
) -> anyhow::Result<RunFacts> {
    let pid = server_pid.map(|p| p.to_string());
    let server_before = pid.as_deref().map(procfs::sample).transpose()?;
    let server_drops_before = pid.as_deref().map(procfs::udp_drops);
    let self_before = procfs::sample("self")?;
    let self_drops_before = procfs::udp_drops("self");
    let machine_before = procfs::machine_ticks();
    // Janus has no such counter (and its WebSocket port is no HTTP server).
    let with_metrics = args.target == Target::Aula;
    let forwarded_before = match with_metrics {
        true => server::forwarded_packets(server).await,
        false => None,
    };
    let latency_before = match with_metrics {
        true => server::forwarding_latency(server).await,
        false => None,
    };
    let traffic_before = match with_metrics {
        true => server::traffic(server).await,
        false => None,
    };
    let relay_before = match relay {
        Some(relay) => server::traffic(relay).await,
        None => None,
    };
    for shard in shards {
        shard.send(crate::shard::ShardCommand::StartWindow)?;
    }
    let started = Instant::now();
    let bar = progress::bar(args.duration, "measure", args.json);
    let subscribers = cast.subscribers() as u64;
    let window = async {
        for second in 1..=args.duration {
            tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
            bar.set_position(second);
        }
    };
    progress::follow(&bar, progress, subscribers, window).await;
    bar.finish_and_clear();
    let window_seconds = started.elapsed().as_secs_f64();
    let server_after = pid.as_deref().map(procfs::sample).transpose()?;
    let server_drops_after = pid.as_deref().map(procfs::udp_drops);
    let self_after = procfs::sample("self")?;
    let self_drops_after = procfs::udp_drops("self");
    let machine_after = procfs::machine_ticks();
    let forwarded_after = match with_metrics {
        true => server::forwarded_packets(server).await,
        false => None,
    };
    let latency_after = match with_metrics {
        true => server::forwarding_latency(server).await,
        false => None,
    };
    let traffic_after = match with_metrics {
        true => server::traffic(server).await,
        false => None,
    };
    let relay_after = match relay {
        Some(relay) => server::traffic(relay).await,
        None => None,
    };

    let server_report = match (server_pid, server_before, server_after) {
        (Some(pid), Some(before), Some(after)) => {
            let cpu_seconds = after.cpu_seconds - before.cpu_seconds;
            Some(ServerReport {
                pid,
                cpu_seconds,
                cpu_percent: cpu_seconds * 100.0 / window_seconds,
                rss_mb: after.rss_bytes as f64 / 1e6,
                peak_rss_mb: after.peak_rss_bytes as f64 / 1e6,
                udp_receive_drops: server_drops_after
                    .zip(server_drops_before)
                    .map_or(0, |(a, b)| a.saturating_sub(b)),
            })
        }
        _ => None,
    };
    Ok(RunFacts {
        target: args.target.name(),
        scenario: args.scenario,
        url: format!("http://{server}"),
        participants: cast.all().count(),
        subscribers: cast.subscribers(),
        window_seconds,
        server: server_report,
        server_forwarded: forwarded_before
            .zip(forwarded_after)
            .map(|(before, after)| after - before),
        forwarding_latency: latency_before
            .zip(latency_after)
            .and_then(|(before, after)| before.until(&after)),
        origin_traffic: traffic_before
            .zip(traffic_after)
            .map(|(before, after)| before.until(&after)),
        relay_traffic: relay_before
            .zip(relay_after)
            .map(|(before, after)| before.until(&after)),
        relay_url: relay.map(|r| format!("http://{r}")),
        client_cpu_seconds: self_after.cpu_seconds - self_before.cpu_seconds,
        udp_receive_drops: self_drops_after.saturating_sub(self_drops_before),
        machine_busy_cores: machine_before.zip(machine_after).and_then(
            |((busy0, total0), (busy1, total1))| {
                let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                Some(busy1.saturating_sub(busy0) as f64 / total as f64 * cpus as f64)
            },
        ),
    })
}

/// Counts participant events into `progress`; returns the errors.
async fn collect_events(
    mut events: mpsc::UnboundedReceiver<ParticipantEvent>,
    progress: Arc<Progress>,
) -> Vec<String> {
    while let Some(event) = events.recv().await {
        match event {
            ParticipantEvent::Connected(PeerTarget::Publish) => {
                progress
                    .publishers_connected
                    .fetch_add(1, Ordering::Relaxed);
            }
            ParticipantEvent::Joined => {
                progress.participants_joined.fetch_add(1, Ordering::Relaxed);
            }
            ParticipantEvent::Connected(PeerTarget::Subscribe) => {}
            ParticipantEvent::Failed(error) => progress.record_error(error),
        }
    }
    progress.errors()
}

/// Fills shards in order, a participant's peers always in one shard.
struct Assigner<'a> {
    shards: &'a [ShardHandle],
    per_shard: usize,
    placed: usize,
}

impl<'a> Assigner<'a> {
    fn new(shards: &'a [ShardHandle], per_shard: usize) -> Self {
        Self {
            shards,
            per_shard: per_shard.max(1),
            placed: 0,
        }
    }

    fn next(&mut self, spec: &ParticipantSpec) -> ShardHandle {
        let index = (self.placed / self.per_shard).min(self.shards.len() - 1);
        self.placed += usize::from(spec.publish.is_some()) + usize::from(spec.subscribe);
        self.shards[index].clone()
    }
}

/// The relay node (`--relay-url`), checked like `--url`; the relay scenario needs it and its
/// region, and nodes someone started (it needs Redis and certificates: `bench/relay.sh`).
fn relay_target(args: &Args) -> anyhow::Result<Option<SocketAddr>> {
    let relay = args
        .relay_url
        .as_deref()
        .map(|url| guard::parse_target(url, args.allow_netns_target).context("--relay-url"))
        .transpose()?;
    if args.scenario == Scenario::Relay {
        if args.target != Target::Aula {
            anyhow::bail!("the relay scenario is Aula's (a cluster of two nodes)");
        }
        if args.spawn_server {
            anyhow::bail!(
                "the relay scenario runs against two running nodes and their Redis (bench/relay.sh starts them): give --url (the origin) and --relay-url instead of --spawn-server"
            );
        }
        if relay.is_none() || args.relay_region.is_none() {
            anyhow::bail!("the relay scenario needs --relay-url and --relay-region");
        }
    }
    Ok(relay)
}

/// The students' own path (`--student-delay-ms`, `--student-loss`), impaired by the node that
/// serves their media: the relay in the relay scenario, the server otherwise.
fn student_access(
    args: &Args,
    server: SocketAddr,
    relay: Option<SocketAddr>,
) -> anyhow::Result<Option<Access>> {
    if args.student_delay_ms.is_none() && args.student_loss.is_none() {
        return Ok(None);
    }
    let node = match args.scenario {
        Scenario::Relay => relay.context("--relay-url")?,
        Scenario::Class if args.target == Target::Aula => server,
        _ => anyhow::bail!(
            "--student-delay-ms and --student-loss are for Aula's class and relay scenarios"
        ),
    };
    Ok(Some(Access {
        node,
        delay_ms: args.student_delay_ms.unwrap_or(0),
        loss: args.student_loss.unwrap_or(0.0),
    }))
}

/// `--server-bin`, or `aula` next to this binary (both live in `target/release`).
fn server_binary(args: &Args) -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = &args.server_bin {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().context("locating this binary")?;
    Ok(me.with_file_name("aula"))
}
