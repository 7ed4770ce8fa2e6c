//! The server under test: optionally started here, and observed during the window (CPU and
//! memory from /proc, forwarded packets from its Prometheus `/metrics` when it has them).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::http;

/// How long a spawned server has to answer `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);
/// The counter of packets the SFU forwarded to subscribers.
const FORWARDED_METRIC: &str = "aula_packets_forwarded_total";

/// An `aula serve` started for this run on free loopback ports; killed when dropped.
pub struct SpawnedServer {
    child: Child,
    pub http: SocketAddr,
    config: PathBuf,
    pub log: PathBuf,
}

impl SpawnedServer {
    /// Starts `binary` (built beforehand: this builds nothing) with a temporary config. A port
    /// that was free a moment ago may be taken by another process before the server binds it:
    /// the server then exits at once, and is started again on other free ports (3 tries).
    /// `workers` sets `[rtc] workers`; `None` leaves the server's default.
    pub async fn start(binary: &Path, workers: Option<u16>) -> anyhow::Result<Self> {
        if !binary.exists() {
            bail!(
                "{} not found: build it first with `cargo build --release --bin aula`",
                binary.display()
            );
        }
        for _ in 0..3 {
            if let Started::Healthy(server) = Self::start_once(binary, workers).await? {
                return Ok(server);
            }
        }
        bail!("the server found its ports taken by other processes three times")
    }

    async fn start_once(binary: &Path, workers: Option<u16>) -> anyhow::Result<Started> {
        let http_port = free_port()?;
        let udp_port = free_port()?;
        let dir = std::env::temp_dir();
        let stem = format!("aula-loadtest-{}", std::process::id());
        let config = dir.join(format!("{stem}.toml"));
        let log = dir.join(format!("{stem}.log"));
        let workers = workers.map_or_else(String::new, |n| format!("workers = {n}\n"));
        // Every simulated student connects from 127.0.0.1: the per-address connection limit
        // (256 by default) would cap the class, not the server.
        std::fs::write(
            &config,
            format!(
                "log_level = \"warn\"\n\n[http]\nbind = \"127.0.0.1:{http_port}\"\n\
                 max_connections_per_ip = 0\n\n\
                 [rtc]\nudp_bind = \"127.0.0.1:{udp_port}\"\nadvertised_ips = [\"127.0.0.1\"]\n\
                 {workers}"
            ),
        )?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = Self {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            config,
            log,
        };
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if let Ok((200, _)) = http::get(server.http, "/healthz", METRICS_TIMEOUT).await {
                return Ok(Started::Healthy(server));
            }
            if server.child.try_wait()?.is_some() {
                let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Ok(Started::PortTaken);
                }
                bail!(
                    "the server exited at start; see {}:\n{log}",
                    server.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the server did not answer /healthz within {STARTUP_TIMEOUT:?}; see {}",
            server.log.display()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A loopback port nobody holds right now (the server binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What one start of a [`SpawnedServer`] came to.
enum Started {
    Healthy(SpawnedServer),
    PortTaken,
}

/// A node's byte counters: what its SFU's socket sent (to browsers), and what it sent and
/// received on relay links to other nodes. Absent counters read 0 (a node without links).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Traffic {
    pub udp_sent: f64,
    pub relay_sent: f64,
    pub relay_received: f64,
}

impl Traffic {
    /// What the node sent in all: media to its participants plus media to other nodes.
    pub fn egress(&self) -> f64 {
        self.udp_sent + self.relay_sent
    }

    /// The counts between `self` (before) and `after`.
    pub fn until(&self, after: &Traffic) -> Traffic {
        Traffic {
            udp_sent: after.udp_sent - self.udp_sent,
            relay_sent: after.relay_sent - self.relay_sent,
            relay_received: after.relay_received - self.relay_received,
        }
    }
}

/// The node's [`Traffic`] counters, if it serves `/metrics`.
pub async fn traffic(server: SocketAddr) -> Option<Traffic> {
    let (status, body) = http::get(server, "/metrics", METRICS_TIMEOUT).await.ok()?;
    (status == 200).then(|| traffic_of(&body))
}

fn traffic_of(text: &str) -> Traffic {
    let read = |name| metric_value(text, name).unwrap_or(0.0);
    Traffic {
        udp_sent: read("aula_udp_bytes_sent_total"),
        relay_sent: read("aula_relay_bytes_sent_total"),
        relay_received: read("aula_relay_bytes_received_total"),
    }
}

/// The SFU's forwarding-latency histogram: from a datagram's arrival to the last of its copies
/// sent.
const FORWARDING_LATENCY_METRIC: &str = "aula_forwarding_latency_seconds";

/// A Prometheus histogram's cumulative buckets: (upper bound in seconds, count), ascending,
/// `+Inf` last.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets(Vec<(f64, f64)>);

impl Buckets {
    /// The counts between `self` (before) and `after`; `None` if the buckets differ.
    pub fn until(&self, after: &Buckets) -> Option<Buckets> {
        (self.0.len() == after.0.len() && self.0.iter().zip(&after.0).all(|(a, b)| a.0 == b.0))
            .then(|| {
                Buckets(
                    self.0
                        .iter()
                        .zip(&after.0)
                        .map(|(a, b)| (a.0, b.1 - a.1))
                        .collect(),
                )
            })
    }

    /// The `q` quantile, interpolated within its bucket as Prometheus's `histogram_quantile`
    /// does: `None` without observations; the largest finite bound when it falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.0.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(bound, count) in &self.0 {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower);
                }
                let share = if count > below {
                    (rank - below) / (count - below)
                } else {
                    1.0
                };
                return Some(lower + (bound - lower) * share);
            }
            (lower, below) = (bound, count);
        }
        Some(lower)
    }
}

/// The server's forwarding-latency histogram, if it exports one.
pub async fn forwarding_latency(server: SocketAddr) -> Option<Buckets> {
    let (status, body) = http::get(server, "/metrics", METRICS_TIMEOUT).await.ok()?;
    (status == 200).then(|| buckets_of(&body, FORWARDING_LATENCY_METRIC))?
}

/// The buckets of histogram `name` (one series) in Prometheus text format.
fn buckets_of(text: &str, name: &str) -> Option<Buckets> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let bound = line.split("le=\"").nth(1)?.split('"').next()?;
        let bound = match bound {
            "+Inf" => f64::INFINITY,
            b => b.parse().ok()?,
        };
        let count = line.rsplit(' ').next()?.parse().ok()?;
        buckets.push((bound, count));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (!buckets.is_empty()).then_some(Buckets(buckets))
}

/// The server's forwarded-packet counter, if it exports one.
pub async fn forwarded_packets(server: SocketAddr) -> Option<f64> {
    let (status, body) = http::get(server, "/metrics", METRICS_TIMEOUT).await.ok()?;
    (status == 200).then(|| metric_value(&body, FORWARDED_METRIC))?
}

/// Sums every series of `name` in Prometheus text format (labels or not).
fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue; // a longer name sharing the prefix
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counter_from_prometheus_text() {
        let text = "# HELP aula_packets_forwarded_total x\n# TYPE aula_packets_forwarded_total counter\n\
aula_packets_forwarded_total 1234\naula_packets_forwarded_total_extra 5\n";
        assert_eq!(metric_value(text, FORWARDED_METRIC), Some(1234.0));
        assert_eq!(metric_value("x 1\n", FORWARDED_METRIC), None);
        let labelled = "aula_packets_forwarded_total{shard=\"0\"} 2\naula_packets_forwarded_total{shard=\"1\"} 3\n";
        assert_eq!(metric_value(labelled, FORWARDED_METRIC), Some(5.0));
    }

    #[test]
    fn reads_histogram_quantiles_between_two_scrapes() {
        let scrape = |counts: [u32; 4]| {
            format!(
                "# TYPE aula_forwarding_latency_seconds histogram\n\
aula_forwarding_latency_seconds_bucket{{le=\"0.001\"}} {}\n\
aula_forwarding_latency_seconds_bucket{{le=\"0.002\"}} {}\n\
aula_forwarding_latency_seconds_bucket{{le=\"0.004\"}} {}\n\
aula_forwarding_latency_seconds_bucket{{le=\"+Inf\"}} {}\n\
aula_forwarding_latency_seconds_sum 1\naula_forwarding_latency_seconds_count {}\n",
                counts[0], counts[1], counts[2], counts[3], counts[3]
            )
        };
        let before = buckets_of(&scrape([10, 10, 10, 10]), FORWARDING_LATENCY_METRIC).unwrap();
        // In the window: 50 under 1 ms, 40 in (1, 2], 10 in (2, 4].
        let after = buckets_of(&scrape([60, 100, 110, 110]), FORWARDING_LATENCY_METRIC).unwrap();
        let window = before.until(&after).unwrap();
        let near = |got: Option<f64>, want: f64| {
            assert!(
                got.is_some_and(|g| (g - want).abs() < 1e-12),
                "{got:?}, want {want}"
            )
        };
        near(window.quantile(0.5), 0.001);
        near(window.quantile(0.7), 0.0015);
        near(window.quantile(0.99), 0.0038);
        let overflow = buckets_of(&scrape([0, 0, 0, 5]), FORWARDING_LATENCY_METRIC).unwrap();
        assert_eq!(
            overflow.quantile(0.99),
            Some(0.004),
            "capped at the largest bound"
        );
        assert_eq!(before.until(&before).unwrap().quantile(0.99), None);
        assert_eq!(buckets_of("x 1\n", FORWARDING_LATENCY_METRIC), None);
    }

    #[test]
    fn reads_traffic_counters_of_every_link() {
        let text = "aula_udp_bytes_sent_total 1000\n\
aula_relay_bytes_sent_total{peer=\"asia-1\"} 300\n\
aula_relay_bytes_sent_total{peer=\"us-1\"} 200\n\
aula_relay_bytes_received_total{peer=\"asia-1\"} 7\n";
        let before = traffic_of(text);
        assert_eq!(
            before,
            Traffic {
                udp_sent: 1000.0,
                relay_sent: 500.0,
                relay_received: 7.0
            }
        );
        assert_eq!(before.egress(), 1500.0);
        assert_eq!(traffic_of("").egress(), 0.0, "a node without links");
        let after = Traffic {
            udp_sent: 1500.0,
            ..before
        };
        assert_eq!(before.until(&after).udp_sent, 500.0);
    }
}
