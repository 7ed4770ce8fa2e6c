//! The run's results: built from the shards' reports and the server probes, printed as a table
//! for people or as JSON for scripts (`compare.sh`, CI trend lines).

use std::fmt::Write as _;

use serde::Serialize;

use crate::scenario::Scenario;
use crate::server::{Buckets, Traffic};
use crate::shard::ShardReport;
use crate::stats::Summary;

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: &'static str,
    pub scenario: Scenario,
    pub url: String,
    pub cpus: usize,
    /// Measurement window actually measured, seconds.
    pub window_seconds: f64,
    pub participants: usize,
    pub join: JoinReport,
    pub latency_ms: Summary,
    pub loss: LossReport,
    /// Loss after recovery by kind, percent. The light clients negotiate no RED, so every
    /// audio packet lost here is one a player would conceal.
    pub audio_loss_percent: f64,
    pub video_loss_percent: f64,
    pub video: VideoReport,
    pub jitter_ms: JitterReport,
    pub bitrate_kbps: Summary,
    pub server: Option<ServerReport>,
    pub forwarded: ForwardedReport,
    pub client: ClientReport,
    pub machine: Option<MachineReport>,
    /// Bytes the server (`--url`; the origin of a relay run) and the relay node sent and
    /// received in the window, from their `/metrics`.
    pub traffic: Option<TrafficReport>,
}

/// The video as the subscribers would have shown it (`stats::frames`: frames complete and
/// decodable in order, WebRTC's freeze definition, a PLI after a hole unfilled for 1 s).
#[derive(Debug, Serialize)]
pub struct VideoReport {
    /// Subscribers that rendered a frame.
    pub subscribers_with_frames: usize,
    /// Token request to the first complete keyframe, milliseconds.
    pub first_frame_ms: Summary,
    /// Share of the window each subscriber's video was frozen, percent.
    pub frozen_percent: Summary,
    pub freezes: u64,
    /// Frames rendered per second, per subscriber.
    pub fps: Summary,
    /// PLIs the subscribers sent after giving up on a frame.
    pub keyframe_requests_sent: u64,
}

#[derive(Debug, Serialize)]
pub struct TrafficReport {
    pub origin: Option<Traffic>,
    /// What the origin sent in all (to its participants and to other nodes), bytes.
    pub origin_egress_bytes: Option<f64>,
    pub relay_url: Option<String>,
    pub relay: Option<Traffic>,
}

#[derive(Debug, Serialize)]
pub struct JoinReport {
    /// Subscribing participants.
    pub subscribers: usize,
    /// Those whose subscribe connection came up (ICE and DTLS).
    pub connected: usize,
    /// Those that received a first media packet.
    pub with_media: usize,
    pub failed: usize,
    /// Token request to first media packet, milliseconds.
    pub time_ms: Summary,
}

#[derive(Debug, Serialize)]
pub struct LossReport {
    /// Packets the subscribers should have received in the window, by sequence number.
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub percent: f64,
    /// The worst single subscriber's loss.
    pub worst_subscriber_percent: f64,
    pub subscribers_with_loss: usize,
    pub duplicates: u64,
}

#[derive(Debug, Serialize)]
pub struct JitterReport {
    /// RFC 3550 interarrival jitter at the end of the window, one value per received stream.
    pub audio: Summary,
    pub video: Summary,
}

#[derive(Debug, Serialize)]
pub struct ServerReport {
    pub pid: u32,
    /// CPU seconds the server used during the window.
    pub cpu_seconds: f64,
    /// Of one core: 100 is one core busy.
    pub cpu_percent: f64,
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    /// Datagrams the kernel dropped on the server's UDP sockets in the window (full buffer).
    pub udp_receive_drops: u64,
}

/// Whole-machine CPU in the window, in cores: what is left after the server and the load
/// generator is other processes, whose load makes numbers noisy.
#[derive(Debug, Serialize)]
pub struct MachineReport {
    pub busy_cores: f64,
    pub other_processes_cores: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ForwardedReport {
    pub packets: f64,
    /// `"server_metrics"` (the server's `aula_packets_forwarded_total`) or `"subscribers"`
    /// (packets the subscribers received, which misses what the network dropped).
    pub source: &'static str,
    pub per_second: f64,
    /// Forwarded packets per CPU-second of the server; needs its pid.
    pub per_cpu_second: Option<f64>,
    /// The server's forwarding latency in the window (`aula_forwarding_latency_seconds`: a
    /// datagram's arrival to the last of its copies sent), milliseconds, interpolated within
    /// the histogram's buckets; capped at its largest finite bound (50 ms).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ClientReport {
    /// CPU the load generator itself used during the window, of one core.
    pub cpu_percent: f64,
    pub packets_sent: u64,
    pub keyframe_requests_received: u64,
    pub udp_send_errors: u64,
    /// Datagrams the kernel dropped on the load generator's sockets (its own overload).
    pub udp_receive_drops: u64,
    /// Datagrams from non-loopback sources, dropped unread.
    pub foreign_datagrams_dropped: u64,
    pub unstamped_packets: u64,
}

/// What the run measured besides the shards' reports.
pub struct RunFacts {
    pub target: &'static str,
    pub scenario: Scenario,
    pub url: String,
    pub participants: usize,
    pub subscribers: usize,
    pub window_seconds: f64,
    pub server: Option<ServerReport>,
    /// Forwarded packets in the window from the server's metrics, if it has them.
    pub server_forwarded: Option<f64>,
    /// The server's forwarding-latency histogram in the window, if it has one.
    pub forwarding_latency: Option<Buckets>,
    pub client_cpu_seconds: f64,
    pub udp_receive_drops: u64,
    pub machine_busy_cores: Option<f64>,
    pub origin_traffic: Option<Traffic>,
    pub relay_traffic: Option<Traffic>,
    pub relay_url: Option<String>,
}

impl Report {
    pub fn build(facts: RunFacts, shards: Vec<ShardReport>) -> Self {
        let subscribers: Vec<_> = shards.iter().flat_map(|s| &s.subscribers).collect();
        let publishers: Vec<_> = shards.iter().flat_map(|s| &s.publishers).collect();
        let window = facts.window_seconds.max(1e-3);

        let mut join_ms: Vec<f64> = subscribers
            .iter()
            .filter_map(|s| s.join_time)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let with_media = join_ms.len();
        let mut latency_ms: Vec<f64> = shards
            .iter()
            .flat_map(|s| &s.latencies_us)
            .map(|&us| f64::from(us) / 1000.0)
            .collect();
        let percent = |lost: u64, expected: u64| {
            if expected == 0 {
                0.0
            } else {
                lost as f64 * 100.0 / expected as f64
            }
        };
        let kind_loss = |packets: fn(&&crate::shard::SubscriberResult) -> (u64, u64)| {
            let (expected, received) = subscribers
                .iter()
                .map(packets)
                .fold((0, 0), |(e, r), (e1, r1)| (e + e1, r + r1));
            percent(expected.saturating_sub(received), expected)
        };
        let audio_loss_percent = kind_loss(|s| s.audio_packets);
        let video_loss_percent = kind_loss(|s| s.video_packets);
        let mut first_frame_ms: Vec<f64> = subscribers
            .iter()
            .filter_map(|s| s.first_frame)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let with_video: Vec<_> = subscribers.iter().filter(|s| s.video_streams > 0).collect();
        let mut frozen_percent: Vec<f64> = with_video
            .iter()
            .map(|s| s.frozen.as_secs_f64() * 100.0 / window / s.video_streams as f64)
            .collect();
        let mut fps: Vec<f64> = with_video
            .iter()
            .map(|s| s.frames_rendered as f64 / window / s.video_streams as f64)
            .collect();
        let video = VideoReport {
            subscribers_with_frames: first_frame_ms.len(),
            first_frame_ms: Summary::of(&mut first_frame_ms),
            frozen_percent: Summary::of(&mut frozen_percent),
            freezes: subscribers.iter().map(|s| s.freezes).sum(),
            fps: Summary::of(&mut fps),
            keyframe_requests_sent: subscribers.iter().map(|s| s.keyframe_requests_sent).sum(),
        };
        let traffic =
            (facts.origin_traffic.is_some() || facts.relay_traffic.is_some()).then(|| {
                TrafficReport {
                    origin: facts.origin_traffic,
                    origin_egress_bytes: facts.origin_traffic.map(|t| t.egress()),
                    relay_url: facts.relay_url.clone(),
                    relay: facts.relay_traffic,
                }
            });
        let expected: u64 = subscribers.iter().map(|s| s.expected).sum();
        let received: u64 = subscribers.iter().map(|s| s.received).sum();
        let lost = expected.saturating_sub(received);
        let mut audio_jitter: Vec<f64> = subscribers
            .iter()
            .flat_map(|s| s.audio_jitter_ms.iter().copied())
            .collect();
        let mut video_jitter: Vec<f64> = subscribers
            .iter()
            .flat_map(|s| s.video_jitter_ms.iter().copied())
            .collect();
        let mut bitrate: Vec<f64> = subscribers
            .iter()
            .map(|s| s.bytes as f64 * 8.0 / window / 1000.0)
            .collect();
        let (forwarded, source) = match facts.server_forwarded {
            Some(packets) => (packets, "server_metrics"),
            None => (received as f64, "subscribers"),
        };
        let per_cpu_second = facts
            .server
            .as_ref()
            .filter(|s| s.cpu_seconds > 0.0)
            .map(|s| forwarded / s.cpu_seconds);
        let client_cores = facts.client_cpu_seconds / window;
        let machine = facts.machine_busy_cores.map(|busy| MachineReport {
            busy_cores: busy,
            other_processes_cores: facts
                .server
                .as_ref()
                .map(|s| (busy - s.cpu_seconds / window - client_cores).max(0.0)),
        });
        Self {
            target: facts.target,
            scenario: facts.scenario,
            url: facts.url,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            window_seconds: facts.window_seconds,
            participants: facts.participants,
            join: JoinReport {
                subscribers: facts.subscribers,
                connected: subscribers.iter().filter(|s| s.connected).count(),
                with_media,
                failed: facts.subscribers.saturating_sub(with_media),
                time_ms: Summary::of(&mut join_ms),
            },
            latency_ms: Summary::of(&mut latency_ms),
            loss: LossReport {
                expected,
                received,
                lost,
                percent: percent(lost, expected),
                worst_subscriber_percent: subscribers
                    .iter()
                    .map(|s| percent(s.expected.saturating_sub(s.received), s.expected))
                    .fold(0.0, f64::max),
                subscribers_with_loss: subscribers
                    .iter()
                    .filter(|s| s.received < s.expected)
                    .count(),
                duplicates: subscribers.iter().map(|s| s.duplicates).sum(),
            },
            audio_loss_percent,
            video_loss_percent,
            video,
            jitter_ms: JitterReport {
                audio: Summary::of(&mut audio_jitter),
                video: Summary::of(&mut video_jitter),
            },
            bitrate_kbps: Summary::of(&mut bitrate),
            server: facts.server,
            forwarded: ForwardedReport {
                packets: forwarded,
                source,
                per_second: forwarded / window,
                per_cpu_second,
                latency_p50_ms: facts
                    .forwarding_latency
                    .as_ref()
                    .and_then(|b| b.quantile(0.5))
                    .map(|s| s * 1e3),
                latency_p99_ms: facts
                    .forwarding_latency
                    .as_ref()
                    .and_then(|b| b.quantile(0.99))
                    .map(|s| s * 1e3),
            },
            client: ClientReport {
                cpu_percent: client_cores * 100.0,
                packets_sent: publishers.iter().map(|p| p.packets_sent).sum(),
                keyframe_requests_received: publishers.iter().map(|p| p.keyframe_requests).sum(),
                udp_send_errors: shards.iter().map(|s| s.send_errors).sum::<u64>()
                    + publishers.iter().map(|p| p.send_errors).sum::<u64>(),
                udp_receive_drops: facts.udp_receive_drops,
                foreign_datagrams_dropped: shards.iter().map(|s| s.dropped_foreign).sum(),
                unstamped_packets: subscribers.iter().map(|s| s.unstamped).sum(),
            },
            machine,
            traffic,
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let row = |t: &mut String, name: &str, value: String| {
            let _ = writeln!(t, "  {name:<28} {value}");
        };
        let pct = |s: &Summary| {
            format!(
                "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
                s.p50, s.p95, s.p99, s.max
            )
        };
        let _ = writeln!(
            t,
            "aula-loadtest: {:?} against {} at {} ({} participants, {:.1} s window, {} CPUs)",
            self.scenario, self.target, self.url, self.participants, self.window_seconds, self.cpus
        );
        row(
            &mut t,
            "subscribers with media",
            format!(
                "{}/{} ({} connected, {} failed)",
                self.join.with_media, self.join.subscribers, self.join.connected, self.join.failed
            ),
        );
        row(&mut t, "join time ms", pct(&self.join.time_ms));
        row(&mut t, "latency ms", pct(&self.latency_ms));
        row(
            &mut t,
            "loss",
            format!(
                "{:.3}% ({} of {}; worst subscriber {:.3}%, {} with loss, {} duplicates)",
                self.loss.percent,
                self.loss.lost,
                self.loss.expected,
                self.loss.worst_subscriber_percent,
                self.loss.subscribers_with_loss,
                self.loss.duplicates
            ),
        );
        row(
            &mut t,
            "loss audio / video",
            format!(
                "{:.3}% / {:.3}%",
                self.audio_loss_percent, self.video_loss_percent
            ),
        );
        let v = &self.video;
        row(
            &mut t,
            "first video frame ms",
            format!(
                "{} ({} with frames)",
                pct(&v.first_frame_ms),
                v.subscribers_with_frames
            ),
        );
        row(
            &mut t,
            "video frozen",
            format!(
                "mean {:.2}%  max {:.2}%  ({} freezes, {} PLIs sent, fps mean {:.1})",
                v.frozen_percent.mean,
                v.frozen_percent.max,
                v.freezes,
                v.keyframe_requests_sent,
                v.fps.mean
            ),
        );
        row(&mut t, "jitter audio ms", pct(&self.jitter_ms.audio));
        row(&mut t, "jitter video ms", pct(&self.jitter_ms.video));
        row(
            &mut t,
            "bitrate per subscriber kbps",
            format!(
                "mean {:.0}  min {:.0}  max {:.0}",
                self.bitrate_kbps.mean, self.bitrate_kbps.min, self.bitrate_kbps.max
            ),
        );
        row(
            &mut t,
            "forwarded packets",
            format!(
                "{:.0} ({:.0}/s, from {})",
                self.forwarded.packets, self.forwarded.per_second, self.forwarded.source
            ),
        );
        match &self.server {
            Some(s) => {
                row(
                    &mut t,
                    "server CPU",
                    format!(
                        "{:.2} s ({:.0}% of a core), pid {}",
                        s.cpu_seconds, s.cpu_percent, s.pid
                    ),
                );
                row(
                    &mut t,
                    "server RSS MB",
                    format!("{:.1} (peak {:.1})", s.rss_mb, s.peak_rss_mb),
                );
                row(
                    &mut t,
                    "server UDP receive drops",
                    s.udp_receive_drops.to_string(),
                );
            }
            None => row(&mut t, "server CPU", "unknown (give --server-pid)".into()),
        }
        if let Some(per) = self.forwarded.per_cpu_second {
            row(&mut t, "forwarded per CPU-second", format!("{per:.0}"));
        }
        if let (Some(p50), Some(p99)) =
            (self.forwarded.latency_p50_ms, self.forwarded.latency_p99_ms)
        {
            row(
                &mut t,
                "forwarding latency ms",
                format!("p50 {p50:.3}  p99 {p99:.3} (server: arrival to last copy sent)"),
            );
        }
        row(
            &mut t,
            "load generator",
            format!(
                "{:.0}% CPU, {} packets sent, {} PLI/FIR, {} send errors, {} receive drops",
                self.client.cpu_percent,
                self.client.packets_sent,
                self.client.keyframe_requests_received,
                self.client.udp_send_errors,
                self.client.udp_receive_drops
            ),
        );
        if let Some(traffic) = &self.traffic {
            let mb = |bytes: f64| bytes / 1e6;
            if let Some(origin) = &traffic.origin {
                row(
                    &mut t,
                    "server egress MB",
                    format!(
                        "{:.2} ({:.2} to participants + {:.2} on relay links)",
                        mb(origin.egress()),
                        mb(origin.udp_sent),
                        mb(origin.relay_sent)
                    ),
                );
            }
            if let Some(relay) = &traffic.relay {
                row(
                    &mut t,
                    "relay node MB",
                    format!(
                        "{:.2} received on links, {:.2} sent to participants",
                        mb(relay.relay_received),
                        mb(relay.udp_sent)
                    ),
                );
            }
        }
        if let Some(m) = &self.machine {
            let others = m
                .other_processes_cores
                .map_or(String::new(), |o| format!(", {o:.2} by other processes"));
            row(
                &mut t,
                "machine",
                format!("{:.2} of {} cores busy{others}", m.busy_cores, self.cpus),
            );
        }
        t
    }
}
