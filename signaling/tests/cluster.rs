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
    let Some(redis) = RedisServer::start().await else {
        return;
    };
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
    let Some(redis) = RedisServer::start().await else {
        return;
    };
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
    let Some(redis) = RedisServer::start().await else {
        return;
    };
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
