//! The cluster directory against a real Redis: each test starts its own `redis-server` on a
//! free loopback port (skipped, saying so, where none is installed: `scripts/setup.sh`
//! installs it).

mod common;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use aula_signaling::cluster::{Claim, Directory, Lease, Load, NodeInfo};
use aula_signaling::config::ClusterConfig;
use aula_signaling::token::ApiKeys;
use aula_signaling::{Config, Server, start};
use base64::Engine as _;
use common::{HttpResponse, http_with};
use redis_server::{RedisServer, WAIT};
use tokio::time::{Instant, sleep};

/// Polls `check` every 50 ms until it holds, for at most [`WAIT`].
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

fn node(id: &str, region: &str) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        region: region.to_owned(),
        public_addrs: vec![format!("{id}.school.example:7880")],
        relay_addr: None,
        load: Load {
            cpu: 0.25,
            participants: 3,
            egress_bps: 1_500_000,
        },
        updated_ms: 1,
    }
}

async fn ids(directory: &Directory) -> Vec<String> {
    let nodes = directory.nodes().await.expect("nodes listed");
    nodes.into_iter().map(|n| n.id).collect()
}

#[tokio::test]
async fn nodes_see_each_other_and_a_silent_node_expires() {
    let redis = RedisServer::start().await;
    let a = Directory::open(&redis.url(), Duration::from_secs(5)).expect("opens");
    let b = Directory::open(&redis.url(), Duration::from_secs(5)).expect("opens");
    a.register(&node("eu-1", "eu"), Duration::from_secs(30))
        .await
        .expect("registers");
    b.register(&node("ap-1", "ap"), Duration::from_secs(1))
        .await
        .expect("registers");

    let seen_by_a = a.nodes().await.expect("nodes");
    assert_eq!(seen_by_a, vec![node("ap-1", "ap"), node("eu-1", "eu")]);
    assert_eq!(b.nodes().await.expect("nodes"), seen_by_a);

    // ap-1 stops refreshing: gone after its 1 s TTL, eu-1 stays.
    let silent_since = Instant::now();
    until("the silent node to expire", || async {
        ids(&a).await == ["eu-1"]
    })
    .await;
    assert!(
        silent_since.elapsed() >= Duration::from_millis(800),
        "expired before its TTL: {:?}",
        silent_since.elapsed()
    );

    // A clean stop removes the entry at once.
    a.deregister("eu-1").await.expect("deregisters");
    assert!(ids(&b).await.is_empty());
}

#[tokio::test]
async fn an_origin_lease_passes_on_with_a_higher_epoch_after_it_expires() {
    let redis = RedisServer::start().await;
    let ttl = Duration::from_millis(1000);
    let a = Directory::open(&redis.url(), ttl).expect("opens");
    let b = Directory::open(&redis.url(), ttl).expect("opens");

    assert_eq!(a.origin_of("math").await.expect("reads"), None);
    let first = match a.claim_origin("math", "eu-1").await.expect("claims") {
        Claim::Won(lease) => lease,
        held => panic!("a free room must be won: {held:?}"),
    };
    assert_eq!(first.node, "eu-1");
    assert_eq!(
        b.origin_of("math").await.expect("reads"),
        Some(first.clone())
    );

    // The other node cannot take it, nor renew or release it.
    assert_eq!(
        b.claim_origin("math", "ap-1").await.expect("answers"),
        Claim::Held(first.clone())
    );
    let forged = Lease {
        node: "ap-1".into(),
        epoch: first.epoch,
    };
    assert!(!b.renew("math", &forged).await.expect("answers"));
    assert!(!b.release("math", &forged).await.expect("answers"));

    // Renewing keeps it past its first TTL.
    sleep(ttl / 2).await;
    assert!(a.renew("math", &first).await.expect("renews"));
    sleep(ttl * 3 / 4).await;
    assert_eq!(
        b.origin_of("math").await.expect("reads"),
        Some(first.clone())
    );

    // Not renewed: it lapses, the other node claims it with the next epoch, and the former
    // holder's renew fails.
    let second = tokio::time::timeout(WAIT, async {
        loop {
            match b.claim_origin("math", "ap-1").await.expect("answers") {
                Claim::Won(lease) => break lease,
                Claim::Held(_) => sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the lapsed lease is claimed in time");
    assert_eq!(
        second,
        Lease {
            node: "ap-1".into(),
            epoch: first.epoch + 1
        }
    );
    assert!(!a.renew("math", &first).await.expect("answers"));
    assert!(!a.release("math", &first).await.expect("answers"));
    assert_eq!(
        a.origin_of("math").await.expect("reads"),
        Some(second.clone())
    );

    // Released: free at once, and epochs keep rising.
    assert!(b.release("math", &second).await.expect("releases"));
    assert_eq!(a.origin_of("math").await.expect("reads"), None);
    let third = a.claim_origin("math", "eu-1").await.expect("claims");
    assert_eq!(
        third,
        Claim::Won(Lease {
            node: "eu-1".into(),
            epoch: first.epoch + 2
        })
    );
    // Other rooms are independent.
    assert!(matches!(
        b.claim_origin("physics", "ap-1").await.expect("claims"),
        Claim::Won(Lease { epoch: 1, .. })
    ));
}

fn cluster_config(redis: &str, node_id: &str, region: &str) -> Config {
    Config {
        cluster: Some(ClusterConfig {
            redis_url: redis.to_owned(),
            node_id: node_id.to_owned(),
            region: region.to_owned(),
            public_addrs: vec![format!("{node_id}.school.example:7880")],
            node_ttl_secs: 3,
            refresh_secs: 1,
            lease_ttl_secs: 3,
            relay: None,
        }),
        ..Config::loopback_ephemeral()
    }
}

async fn admin_get(server: &Server, path: &str) -> HttpResponse {
    let keys = ApiKeys::dev();
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", keys.key, keys.secret));
    let auth = format!("Basic {basic}");
    http_with(
        server.http_addr(),
        "GET",
        path,
        &[("Authorization", &auth)],
        "",
    )
    .await
}

/// The node ids `GET /api/admin/nodes` lists.
async fn listed(server: &Server) -> Vec<String> {
    let response = admin_get(server, "/api/admin/nodes").await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect()
}

/// A metric's value on `/metrics`, if it is there.
async fn metric(server: &Server, name: &str) -> Option<f64> {
    let response = http_with(server.http_addr(), "GET", "/metrics", &[], "").await;
    response.body.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.parse().expect("a number"))
    })
}

#[tokio::test]
async fn servers_list_the_cluster_and_survive_a_redis_outage() {
    let redis = RedisServer::start().await;
    let eu = start(cluster_config(&redis.url(), "eu-1", "eu"))
        .await
        .expect("starts");
    let ap = start(cluster_config(&redis.url(), "ap-1", "ap"))
        .await
        .expect("starts");

    until("both nodes to see each other", || async {
        listed(&eu).await == ["ap-1", "eu-1"] && listed(&ap).await == ["ap-1", "eu-1"]
    })
    .await;
    let body = admin_get(&eu, "/api/admin/nodes").await.json();
    assert_eq!(body["mode"], "cluster");
    assert_eq!(body["node_id"], "eu-1");
    assert_eq!(body["redis"]["up"], true);
    let ap_entry = &body["nodes"][0];
    assert_eq!(ap_entry["region"], "ap");
    assert_eq!(ap_entry["public_addrs"][0], "ap-1.school.example:7880");
    assert_eq!(ap_entry["load"]["participants"], 0);
    assert!(ap_entry["load"]["cpu"].is_number() && ap_entry["load"]["egress_bps"].is_number());
    assert_eq!(metric(&eu, "aula_cluster_redis_up").await, Some(1.0));
    assert_eq!(metric(&eu, "aula_cluster_nodes").await, Some(2.0));
    assert_eq!(
        metric(&eu, "aula_cluster_redis_errors_total").await,
        Some(0.0)
    );

    // Same auth and JSON errors as the other admin routes.
    let anonymous = http_with(eu.http_addr(), "GET", "/api/admin/nodes", &[], "").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"]["code"], "unauthorized");

    // Redis goes away: the last directory stays, and the outage is reported.
    let port = redis.stop();
    until("the outage on /metrics", || async {
        metric(&eu, "aula_cluster_redis_up").await == Some(0.0)
    })
    .await;
    assert!(metric(&eu, "aula_cluster_redis_errors_total").await >= Some(1.0));
    assert_eq!(metric(&eu, "aula_cluster_nodes").await, Some(2.0));
    let body = admin_get(&eu, "/api/admin/nodes").await.json();
    assert_eq!(body["redis"]["up"], false);
    assert!(body["redis"]["down_since"].as_u64().is_some(), "{body}");
    assert_eq!(
        listed(&eu).await,
        ["ap-1", "eu-1"],
        "the cached directory is kept"
    );

    // A new, empty Redis on the same port: both nodes re-register by themselves.
    let _redis = RedisServer::start_on(port).await;
    until("Redis back on /metrics", || async {
        metric(&eu, "aula_cluster_redis_up").await == Some(1.0)
    })
    .await;
    until("both nodes listed from the new Redis", || async {
        listed(&ap).await == ["ap-1", "eu-1"] && listed(&eu).await == ["ap-1", "eu-1"]
    })
    .await;
    let body = admin_get(&eu, "/api/admin/nodes").await.json();
    assert_eq!(
        body["redis"],
        serde_json::json!({ "up": true, "down_since": null })
    );

    // A node shutting down leaves the directory at once, not after its TTL.
    ap.shutdown().await;
    let directory = Directory::open(&format!("redis://127.0.0.1:{port}"), Duration::from_secs(3))
        .expect("opens");
    assert_eq!(ids(&directory).await, ["eu-1"]);
    eu.shutdown().await;
}

#[tokio::test]
async fn a_single_node_lists_itself_and_touches_no_redis() {
    let server = start(Config::loopback_ephemeral()).await.expect("starts");
    let body = admin_get(&server, "/api/admin/nodes").await.json();
    assert_eq!(body["mode"], "single");
    assert_eq!(body["nodes"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["nodes"][0]["id"], "local");
    assert_eq!(body["nodes"][0]["load"]["participants"], 0);
    assert_eq!(metric(&server, "aula_cluster_redis_up").await, None);
    server.shutdown().await;
}

/// A node with relay links, certificates in `certs`. Its HTTP and relay ports are the OS's
/// choice (port 0), and the node publishes the ports it bound.
fn relay_node_config(redis: &str, certs: &std::path::Path, node_id: &str, region: &str) -> Config {
    let mut config = cluster_config(redis, node_id, region);
    let cluster = config.cluster.as_mut().expect("cluster");
    cluster.public_addrs = vec!["127.0.0.1:0".into()];
    // From TOML, as an operator writes it.
    let relay = format!(
        "bind = \"127.0.0.1:0\"\naddr = \"127.0.0.1:0\"\n\
         ca_cert = {:?}\nnode_cert = {:?}\nnode_key = {:?}\n",
        certs.join("ca.pem"),
        certs.join(format!("{node_id}.pem")),
        certs.join(format!("{node_id}.key")),
    );
    cluster.relay = Some(toml::from_str(&relay).expect("a relay config"));
    config
}

/// The cluster CA and node certificates for `nodes`, in a new directory; the CA for more.
fn cluster_certs(tag: &str, nodes: &[&str]) -> (std::path::PathBuf, aula_sfu::relay::tls::PemCert) {
    use aula_sfu::relay::tls::{generate_ca, issue_node_cert};
    let dir = std::env::temp_dir().join(format!("aula-cluster-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = generate_ca().expect("CA");
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    for node in nodes {
        let cert = issue_node_cert(&ca, node).expect("node certificate");
        std::fs::write(dir.join(format!("{node}.pem")), &cert.cert).unwrap();
        std::fs::write(dir.join(format!("{node}.key")), &cert.key).unwrap();
    }
    (dir, ca)
}

/// The identities in a `Joined` message's room.
fn identities(joined: &aula_protocol::ServerMessage) -> Vec<String> {
    let aula_protocol::ServerMessage::Joined { room, .. } = joined else {
        panic!("expected Joined, got {joined:?}");
    };
    let mut ids: Vec<String> = room
        .participants
        .iter()
        .map(|p| p.identity.clone())
        .collect();
    ids.sort();
    ids
}

/// A learner who reaches the node of its region, not the room's origin, is in the same room as
/// everyone else: that node carries its signaling to the origin (and a resume through it too).
#[tokio::test]
async fn a_participant_who_reaches_another_node_joins_the_room_on_its_origin() {
    let redis = RedisServer::start().await;
    let (certs, _) = cluster_certs("proxy", &["eu-1", "asia-1"]);
    let mut eu_config = relay_node_config(&redis.url(), &certs, "eu-1", "eu");
    // Participants are kept for a resume (the test default is not to).
    eu_config.room.reconnect_timeout_secs = 15;
    let eu = start(eu_config).await.expect("starts");
    let asia = start(relay_node_config(&redis.url(), &certs, "asia-1", "asia"))
        .await
        .expect("starts");
    until("both nodes to see each other", || async {
        listed(&eu).await.len() == 2 && listed(&asia).await.len() == 2
    })
    .await;

    let (mut teacher, _) = common::Client::join(
        eu.http_addr(),
        "geo",
        "teacher",
        aula_protocol::Role::Teacher,
    )
    .await;
    let (student, joined) = common::Client::join(
        asia.http_addr(),
        "geo",
        "learner",
        aula_protocol::Role::Student,
    )
    .await;
    assert_eq!(identities(&joined), ["teacher"], "the origin's room");
    teacher
        .recv_until(|m| matches!(m, aula_protocol::ServerMessage::ParticipantJoined { .. }))
        .await;
    assert_eq!((eu.participant_count(), asia.participant_count()), (2, 0));

    // The learner's connection drops; it resumes through the same node.
    let aula_protocol::ServerMessage::Joined { resume_token, .. } = joined else {
        unreachable!()
    };
    let resume_token = resume_token.expect("a resume token");
    student.close().await;
    let mut again = common::Client::connect(asia.http_addr()).await;
    again
        .send(&aula_protocol::ClientMessage::Resume {
            version: aula_protocol::PROTOCOL_VERSION,
            resume_token,
        })
        .await;
    again
        .event_until(|e| matches!(e, aula_protocol::ServerEvent::Resumed { .. }))
        .await;
    assert_eq!(eu.participant_count(), 2);
    asia.shutdown().await;
    eu.shutdown().await;
    let _ = std::fs::remove_dir_all(&certs);
}

/// The origin dies: a learner joining again through its region's node gets the room there once
/// the dead origin's lease lapses (a new epoch), and that node then refuses a link hello under
/// the old epoch.
#[tokio::test]
async fn a_room_whose_origin_died_moves_to_the_next_node_with_a_new_epoch() {
    let redis = RedisServer::start().await;
    let (certs, ca) = cluster_certs("failover", &["eu-1", "asia-1"]);
    let eu = start(relay_node_config(&redis.url(), &certs, "eu-1", "eu"))
        .await
        .expect("starts");
    let asia = start(relay_node_config(&redis.url(), &certs, "asia-1", "asia"))
        .await
        .expect("starts");
    until("both nodes to see each other", || async {
        listed(&eu).await.len() == 2 && listed(&asia).await.len() == 2
    })
    .await;
    let asia_relay: std::net::SocketAddr =
        admin_get(&asia, "/api/admin/nodes").await.json()["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["id"] == "asia-1")
            .and_then(|n| n["relay_addr"].as_str()?.parse().ok())
            .expect("asia-1 publishes the relay address it bound");
    let directory = Directory::open(&redis.url(), Duration::from_secs(3)).expect("opens");

    let (_teacher, _) = common::Client::join(
        eu.http_addr(),
        "moving",
        "teacher",
        aula_protocol::Role::Teacher,
    )
    .await;
    let (mut student, _) = common::Client::join(
        asia.http_addr(),
        "moving",
        "learner",
        aula_protocol::Role::Student,
    )
    .await;
    let first = directory
        .origin_of("moving")
        .await
        .unwrap()
        .expect("a lease");
    assert_eq!(first.node, "eu-1");

    eu.shutdown().await;
    student.expect_closed_frames().await;
    // Joining again (as the SDK does by itself) is refused with `unavailable` until the dead
    // origin's lease lapses, then served by the node reached.
    let deadline = Instant::now() + WAIT + Duration::from_secs(5);
    let joined = loop {
        let mut client = common::Client::connect(asia.http_addr()).await;
        client
            .send(&aula_protocol::ClientMessage::Join {
                version: aula_protocol::PROTOCOL_VERSION,
                token: common::dev_token("moving", "learner", aula_protocol::Role::Student),
            })
            .await;
        match client.try_recv().await {
            Ok(joined @ aula_protocol::ServerMessage::Joined { .. }) => break joined,
            other => {
                assert!(Instant::now() < deadline, "never joined again: {other:?}");
                sleep(Duration::from_millis(300)).await;
            }
        }
    };
    assert_eq!(
        identities(&joined),
        Vec::<String>::new(),
        "a new room: nobody else"
    );
    assert_eq!(asia.participant_count(), 1);
    let second = directory
        .origin_of("moving")
        .await
        .unwrap()
        .expect("a lease");
    assert_eq!(second.node, "asia-1");
    assert!(second.epoch > first.epoch, "{second:?} after {first:?}");

    // The former origin's epoch is refused by the new origin's node.
    let former = aula_sfu::relay::tls::issue_node_cert(&ca, "eu-1").unwrap();
    let tls = aula_sfu::relay::tls::NodeTls::new(&ca.cert, &former).unwrap();
    let registry = prometheus::Registry::new();
    let endpoint = aula_sfu::relay::link::RelayEndpoint::bind(
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        "eu-1",
        "eu",
        &tls,
        &aula_sfu::relay::link::LinkConfig::default(),
        aula_sfu::relay::link::RelayMetrics::register(&registry).unwrap(),
    )
    .unwrap();
    until("the stale epoch to be refused", || async {
        let result = endpoint
            .connect(asia_relay, "asia-1", "moving", first.epoch)
            .await;
        matches!(result, Err(aula_sfu::relay::link::LinkError::Refused(_)))
    })
    .await;
    asia.shutdown().await;
    let _ = std::fs::remove_dir_all(&certs);
}

/// The saved state of a room is fenced by the lease epoch in Redis: only a save under the
/// room's newest epoch is taken, so a former origin (a zombie still running after its lease
/// lapsed) cannot overwrite what the new origin restored, or will save.
#[tokio::test]
async fn a_room_state_saved_under_a_stale_epoch_is_refused() {
    use aula_signaling::cluster::{RoomState, Saved};
    let redis = RedisServer::start().await;
    let ttl = Duration::from_millis(1000);
    let a = Directory::open(&redis.url(), ttl).expect("opens");
    let b = Directory::open(&redis.url(), ttl).expect("opens");
    let locked = RoomState {
        locked: true,
        hands_raised: 3,
        participants: Vec::new(),
    };
    let first = a
        .claim_origin("math", "eu-1")
        .await
        .expect("claims")
        .lease()
        .clone();
    assert!(
        a.save_room_state("math", first.epoch, &locked)
            .await
            .expect("answers")
    );
    assert!(
        !a.save_room_state("math", first.epoch + 1, &RoomState::default())
            .await
            .expect("answers"),
        "an epoch nobody claimed"
    );
    assert_eq!(
        b.room_state("math").await.expect("reads"),
        Some(Saved {
            epoch: first.epoch,
            state: locked.clone()
        })
    );
    // The saved state outlives the lease by far.
    let mut conn = redis::Client::open(redis.url())
        .expect("a client")
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let pttl: i64 = redis::cmd("PTTL")
        .arg("aula:cluster:state:math")
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(pttl > 60_000, "kept {pttl} ms");

    // The lease lapses and another node claims the room: the former origin's save is refused
    // at once, before the new origin saved anything, and the new origin reads the old state.
    let second = tokio::time::timeout(WAIT, async {
        loop {
            match b.claim_origin("math", "ap-1").await.expect("answers") {
                Claim::Won(lease) => break lease,
                Claim::Held(_) => sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the lapsed lease is claimed in time");
    assert_eq!(second.epoch, first.epoch + 1);
    assert!(
        !a.save_room_state("math", first.epoch, &RoomState::default())
            .await
            .expect("answers"),
        "the zombie origin's save"
    );
    assert_eq!(
        b.room_state("math").await.expect("reads"),
        Some(Saved {
            epoch: first.epoch,
            state: locked.clone()
        })
    );
    let unlocked = RoomState::default();
    assert!(
        b.save_room_state("math", second.epoch, &unlocked)
            .await
            .expect("answers")
    );
    assert!(
        !a.save_room_state("math", first.epoch, &locked)
            .await
            .expect("answers")
    );
    assert_eq!(
        a.room_state("math").await.expect("reads"),
        Some(Saved {
            epoch: second.epoch,
            state: unlocked.clone()
        })
    );

    // A release keeps the state (the room may be served elsewhere next); the release of a room
    // that ended forgets it.
    assert!(b.release("math", &second).await.expect("releases"));
    assert!(b.room_state("math").await.expect("reads").is_some());
    let third = a
        .claim_origin("math", "eu-1")
        .await
        .expect("claims")
        .lease()
        .clone();
    assert!(a.release_ended("math", &third).await.expect("releases"));
    assert_eq!(a.room_state("math").await.expect("reads"), None);
}

/// Who sits where after a join: its identity, whether its hand is up, whether it may publish,
/// and whether the room is locked.
fn standing(joined: &aula_protocol::ServerMessage) -> (String, bool, bool, bool) {
    let aula_protocol::ServerMessage::Joined {
        participant,
        room,
        permissions,
        ..
    } = joined
    else {
        panic!("expected Joined, got {joined:?}");
    };
    let can_publish = permissions.as_ref().expect("permissions").can_publish;
    (
        participant.identity.clone(),
        participant.hand_raised,
        can_publish,
        room.locked,
    )
}

/// Joins `identity` through `addr` until it is in (a node answers `unavailable` while the dead
/// origin's lease has not lapsed yet), as the SDKs do by themselves.
async fn join_again(
    addr: std::net::SocketAddr,
    room: &str,
    identity: &str,
    role: aula_protocol::Role,
) -> (common::Client, aula_protocol::ServerMessage) {
    let deadline = Instant::now() + WAIT + Duration::from_secs(5);
    loop {
        let mut client = common::Client::connect(addr).await;
        client
            .send(&aula_protocol::ClientMessage::Join {
                version: aula_protocol::PROTOCOL_VERSION,
                token: common::dev_token(room, identity, role),
            })
            .await;
        match client.try_recv().await {
            Ok(joined @ aula_protocol::ServerMessage::Joined { .. }) => return (client, joined),
            other => {
                assert!(
                    Instant::now() < deadline,
                    "{identity} never joined again: {other:?}"
                );
                sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// The origin of a class dies: the node that takes the room over restores what the origin
/// saved, so the class rejoining there finds the room still locked, its hands in the same
/// order and its student still on stage; a newcomer is still kept out.
#[tokio::test]
async fn a_class_keeps_its_lock_hands_and_stage_when_its_origin_dies() {
    use aula_protocol::{ClientMessage, ErrorCode, Role, ServerEvent, ServerMessage};
    let redis = RedisServer::start().await;
    let (certs, _) = cluster_certs("carry", &["eu-1", "asia-1"]);
    let eu = start(relay_node_config(&redis.url(), &certs, "eu-1", "eu"))
        .await
        .expect("starts");
    let asia = start(relay_node_config(&redis.url(), &certs, "asia-1", "asia"))
        .await
        .expect("starts");
    until("both nodes to see each other", || async {
        listed(&eu).await.len() == 2 && listed(&asia).await.len() == 2
    })
    .await;
    let directory = Directory::open(&redis.url(), Duration::from_secs(3)).expect("opens");
    let room = "carried";

    // The class on eu-1: ana on stage, bo's hand up then cy's, the room locked. bo reaches
    // the class through asia-1, which carries its signaling to the origin.
    let (mut teacher, _) =
        common::Client::join(eu.http_addr(), room, "teacher", Role::Teacher).await;
    let (_ana, ana) = common::Client::join(eu.http_addr(), room, "ana", Role::Student).await;
    let (mut bo, _) = common::Client::join(asia.http_addr(), room, "bo", Role::Student).await;
    let (mut cy, _) = common::Client::join(eu.http_addr(), room, "cy", Role::Student).await;
    let ServerMessage::Joined { participant, .. } = &ana else {
        unreachable!()
    };
    teacher
        .send(&ClientMessage::InviteToStage {
            participant_sid: participant.sid.clone(),
        })
        .await;
    bo.raise_hand_and_sync().await;
    cy.raise_hand_and_sync().await;
    teacher
        .send(&ClientMessage::LockRoom { locked: true })
        .await;
    teacher
        .event_until(|e| matches!(e, ServerEvent::RoomLocked { locked: true }))
        .await;
    assert_eq!((eu.participant_count(), asia.participant_count()), (4, 0));
    let first = directory.origin_of(room).await.unwrap().expect("a lease");
    assert_eq!(first.node, "eu-1");

    // Saved in Redis within a moment, under the origin's epoch.
    until("the class saved in Redis", || async {
        let Some(saved) = directory.room_state(room).await.expect("reads") else {
            return false;
        };
        let hands: Vec<&str> = {
            let mut raised: Vec<_> = saved
                .state
                .participants
                .iter()
                .filter_map(|p| Some((p.hand?, p.identity.as_str())))
                .collect();
            raised.sort();
            raised.into_iter().map(|(_, id)| id).collect()
        };
        saved.epoch == first.epoch && saved.state.locked && hands == ["bo", "cy"]
    })
    .await;

    // eu-1 goes away; after its lease lapses, the class joins again through asia-1 (cy first,
    // whose hand went up after bo's).
    eu.shutdown().await;
    bo.expect_closed_frames().await;
    let (mut cy, cy_back) = join_again(asia.http_addr(), room, "cy", Role::Student).await;
    assert_eq!(standing(&cy_back), ("cy".into(), true, false, true));
    let second = directory.origin_of(room).await.unwrap().expect("a lease");
    assert_eq!(second.node, "asia-1");
    assert!(second.epoch > first.epoch, "{second:?} after {first:?}");

    let (_bo, bo_back) = join_again(asia.http_addr(), room, "bo", Role::Student).await;
    assert_eq!(standing(&bo_back), ("bo".into(), true, false, true));
    let (_ana, ana_back) = join_again(asia.http_addr(), room, "ana", Role::Student).await;
    assert_eq!(
        standing(&ana_back),
        ("ana".into(), false, true, true),
        "back on stage"
    );
    let (mut teacher, teacher_back) =
        join_again(asia.http_addr(), room, "teacher", Role::Teacher).await;
    assert_eq!(
        identities(&teacher_back),
        ["ana", "bo", "cy"],
        "the class is together on the new origin"
    );
    let sid_of = |joined: &ServerMessage| match joined {
        ServerMessage::Joined { participant, .. } => participant.sid.clone(),
        _ => unreachable!(),
    };
    let queue = teacher
        .event_until(|e| matches!(e, ServerEvent::HandQueue { .. }))
        .await;
    assert_eq!(
        queue,
        ServerEvent::HandQueue {
            participant_sids: vec![sid_of(&bo_back), sid_of(&cy_back)]
        },
        "bo's hand still before cy's"
    );

    // Still locked to newcomers.
    let mut stranger = common::Client::connect(asia.http_addr()).await;
    stranger
        .send(&ClientMessage::Join {
            version: aula_protocol::PROTOCOL_VERSION,
            token: common::dev_token(room, "stranger", Role::Student),
        })
        .await;
    assert_eq!(stranger.expect_error().await, ErrorCode::RoomLocked);

    // The new origin saves the room under its own epoch from now on.
    until("the state saved under the new epoch", || async {
        directory
            .room_state(room)
            .await
            .expect("reads")
            .is_some_and(|saved| saved.epoch == second.epoch && saved.state.locked)
    })
    .await;
    assert_eq!(
        metric(&asia, "aula_cluster_room_state_restores_total").await,
        Some(1.0)
    );

    // Redis goes away: the class goes on (cy lowers its hand, the teacher sees it), and the
    // saves that fail are counted.
    redis.stop();
    cy.send(&ClientMessage::LowerHand {
        participant_sid: None,
    })
    .await;
    let queue = teacher
        .event_until(|e| matches!(e, ServerEvent::HandQueue { participant_sids } if participant_sids.len() == 1))
        .await;
    assert_eq!(
        queue,
        ServerEvent::HandQueue {
            participant_sids: vec![sid_of(&bo_back)]
        }
    );
    until("the failed save counted", || async {
        metric(&asia, "aula_cluster_room_state_errors_total").await >= Some(1.0)
    })
    .await;
    teacher.assert_alive().await;
    asia.shutdown().await;
    let _ = std::fs::remove_dir_all(&certs);
}
