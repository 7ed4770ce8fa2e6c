//! One class over two nodes (issue 14): a real Redis, an origin node and a relay node in
//! another region on loopback, each a whole Aula server with its own SFU, linked over QUIC with
//! certificates of a cluster CA made here.
//!
//! The teacher is on the origin; students whose tokens name the relay's region are placed on
//! the relay, so their media flows through it while their signaling stays with the origin.

#[allow(dead_code)] // audio.rs uses the rest
mod common;
#[path = "../../signaling/tests/support/redis_server.rs"]
mod redis_server;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use aula_client::aula_protocol::Role;
use aula_client::{AudioSource, Client, ClientEvent, ToneConfig};
use aula_sfu::relay::tls::{generate_ca, issue_node_cert};
use aula_signaling::Config;
use aula_signaling::cluster::Directory;
use aula_signaling::config::{ClusterConfig, RelayConfig};
use aula_signaling::token::{AccessClaims, ApiKeys, mint};
use common::*;
use redis_server::RedisServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TONE: ToneConfig = ToneConfig {
    frequency_hz: ToneConfig::DISTINCT_FRAMES_HZ,
    amplitude: 0.5,
};

/// A free UDP port on loopback (for a node's relay link, which the directory must name).
fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// Writes the cluster CA and the certificates of `nodes` into `dir`.
fn make_certs(dir: &Path, nodes: &[&str]) {
    let ca = generate_ca().expect("CA");
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    for node in nodes {
        let cert = issue_node_cert(&ca, node).expect("node certificate");
        std::fs::write(dir.join(format!("{node}.pem")), &cert.cert).unwrap();
        std::fs::write(dir.join(format!("{node}.key")), &cert.key).unwrap();
    }
}

fn node_config(redis: &str, certs: &Path, node: &str, region: &str) -> Config {
    let port = free_udp_port();
    Config {
        cluster: Some(ClusterConfig {
            redis_url: redis.to_owned(),
            node_id: node.to_owned(),
            region: region.to_owned(),
            public_addrs: Vec::new(),
            node_ttl_secs: 3,
            refresh_secs: 1,
            lease_ttl_secs: 3,
            relay: Some(RelayConfig {
                bind: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                addr: format!("127.0.0.1:{port}"),
                ca_cert: certs.join("ca.pem"),
                node_cert: certs.join(format!("{node}.pem")),
                node_key: certs.join(format!("{node}.key")),
            }),
        }),
        ..Config::loopback_ephemeral()
    }
}

/// A student of `region` joining through the origin.
async fn join_from(origin: &TestServer, room: &str, identity: &str, region: &str) -> Client {
    let mut claims = AccessClaims::new(room, identity, Role::Student, Duration::from_secs(600));
    claims.region = Some(region.to_owned());
    let token = mint(&ApiKeys::dev(), &claims).expect("token");
    tokio::time::timeout(STEP, Client::connect(&origin.ws_url(), &token))
        .await
        .expect("join in time")
        .expect("join")
}

/// The sum of a counter's samples in a server's `/metrics` whose labels contain `labels`.
async fn metric(server: &TestServer, name: &str, labels: &str) -> f64 {
    let mut stream = tokio::net::TcpStream::connect(server.server.http_addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|line| line.starts_with(name) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Redis, the cluster CA and two nodes: the origin `eu-1` (region eu) and the relay `asia-1`
/// (region asia), both in the directory and in each other's copy of it.
struct TwoNodes {
    redis: RedisServer,
    certs: std::path::PathBuf,
    origin: TestServer,
    relay: TestServer,
}

impl TwoNodes {
    /// `None` where `redis-server` is not installed (said so by [`RedisServer::start`]).
    async fn start(tag: &str) -> Option<Self> {
        let redis = RedisServer::start().await?;
        let certs =
            std::env::temp_dir().join(format!("aula-relay-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&certs).unwrap();
        make_certs(&certs, &["eu-1", "asia-1"]);
        let origin = TestServer::start_with(node_config(&redis.url(), &certs, "eu-1", "eu")).await;
        let relay =
            TestServer::start_with(node_config(&redis.url(), &certs, "asia-1", "asia")).await;
        let directory = Directory::open(&redis.url(), Duration::from_secs(3)).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..100 {
            nodes = directory.nodes().await.unwrap_or_default();
            if nodes.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(nodes.len(), 2, "both nodes registered: {nodes:?}");
        // One more refresh (1 s), so that the origin's copy of the directory has the relay.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Some(Self {
            redis,
            certs,
            origin,
            relay,
        })
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs);
    }
}

/// The teacher's first track, from the student's room snapshot or its next `TrackPublished`.
async fn teacher_track(student: &mut Client, teacher_sid: &str) -> String {
    let known = student
        .room()
        .participants
        .iter()
        .find(|p| p.sid == teacher_sid)
        .and_then(|p| p.tracks.first())
        .map(|t| t.sid.clone());
    match known {
        Some(sid) => sid,
        None => {
            wait_for(student, |event| match event {
                ClientEvent::TrackPublished(track) if track.participant_sid == teacher_sid => {
                    Some(track.sid)
                }
                _ => None,
            })
            .await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_on_a_relay_hear_the_teacher_through_one_copy_over_the_link() {
    let Some(nodes) = TwoNodes::start("copy").await else {
        return;
    };
    let (origin, relay) = (&nodes.origin, &nodes.relay);
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "overseas";
        let teacher = origin.join(room, "teacher", Role::Teacher).await;
        let teacher_sid = teacher.participant().sid.clone();
        let _audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("publish");

        let mut students = Vec::new();
        for i in 1..=3 {
            students.push(join_from(origin, room, &format!("learner-{i}"), "asia").await);
        }
        let expected = expected_tone(TONE, 50 * 60);
        for (i, student) in students.iter_mut().enumerate() {
            let track = teacher_track(student, &teacher_sid).await;
            let packets = packets_of(student, &track, 100).await;
            let who = format!("learner {}", i + 1);
            assert_consecutive(&who, &packets);
            align(&who, &expected, &packets);
        }

        // The students' media came from the relay's SFU, not the origin's.
        let relay_egress = metric(relay, "aula_udp_bytes_sent_total", "").await;
        assert!(relay_egress > 3.0 * 100.0 * 60.0, "relay sent {relay_egress} bytes");

        // Over the link, one copy: what the origin sent to the relay is about what one student
        // received, not three times that.
        let link_bytes = metric(origin, "aula_relay_bytes_sent_total", "peer=\"asia-1\"").await;
        let received = metric(relay, "aula_relay_bytes_received_total", "peer=\"eu-1\"").await;
        let one_student = relay_egress / 3.0;
        eprintln!("link: origin sent {link_bytes} B, relay received {received} B; one student's share {one_student} B");
        assert!(link_bytes > 0.0 && received > 0.0, "nothing crossed the link");
        assert!(
            (link_bytes - received).abs() < 0.1 * one_student,
            "the link's two ends disagree: sent {link_bytes}, received {received}"
        );
        assert!(
            link_bytes < 2.0 * one_student,
            "the link carried {link_bytes} B, more than one copy ({one_student} B per student)"
        );
        let carried = metric(origin, "aula_relay_tracks", "peer=\"asia-1\"").await;
        assert_eq!(carried, 1.0, "one track carried to the relay");
    })
    .await
    .expect("the relayed class works in time");
}

/// The directory is only needed to place newcomers: with Redis gone (past the leases' and the
/// nodes' time to live), a class already running goes on over the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_goes_on_through_the_relay_while_redis_is_down() {
    let Some(mut nodes) = TwoNodes::start("redis-down").await else {
        return;
    };
    let (origin, relay, redis) = (&nodes.origin, &nodes.relay, &mut nodes.redis);
    tokio::time::timeout(Duration::from_secs(90), async {
        let room = "outage";
        let teacher = origin.join(room, "teacher", Role::Teacher).await;
        let teacher_sid = teacher.participant().sid.clone();
        let _audio = teacher
            .publish_audio(AudioSource::Tone(TONE))
            .await
            .expect("publish");
        let mut student = join_from(origin, room, "learner", "asia").await;
        let track = teacher_track(&mut student, &teacher_sid).await;
        packets_of(&mut student, &track, 50).await;

        redis.kill();
        // Longer than the leases' and the entries' 3 s time to live.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(metric(origin, "aula_cluster_redis_up", "").await, 0.0);
        // Still flowing now: over the link, and from the relay to the student.
        let link_before = metric(relay, "aula_relay_bytes_received_total", "").await;
        let egress_before = metric(relay, "aula_udp_bytes_sent_total", "").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let link_after = metric(relay, "aula_relay_bytes_received_total", "").await;
        let egress_after = metric(relay, "aula_udp_bytes_sent_total", "").await;
        // 1.5 s of the tone is 75 packets of about 100 bytes.
        assert!(
            link_after - link_before > 4000.0,
            "the link carried {} B in 1.5 s while Redis was down",
            link_after - link_before
        );
        assert!(
            egress_after - egress_before > 4000.0,
            "the relay sent the student {} B in 1.5 s while Redis was down",
            egress_after - egress_before
        );
        let packets = packets_of(&mut student, &track, 100).await;
        assert_consecutive("learner during the outage", &packets);
    })
    .await
    .expect("the class goes on in time");
}
