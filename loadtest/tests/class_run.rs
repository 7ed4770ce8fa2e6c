//! A short real run: the `class` scenario against an in-process Aula on loopback.

use std::process::Command;

use aula_signaling::Config;
use serde_json::Value;

fn loadtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aula-loadtest"))
}

/// A class of `students` against the server at `http` (in this test process) for `seconds`:
/// the load generator's JSON report.
async fn class_report(http: std::net::SocketAddr, students: usize, seconds: u64) -> Value {
    let output = tokio::task::spawn_blocking(move || {
        loadtest()
            .args(["--url", &format!("http://{http}"), "--scenario", "class"])
            .args(["--subscribers", &students.to_string()])
            .args(["--duration", &seconds.to_string(), "--join-timeout", "15"])
            .args(["--json", "--server-pid", &std::process::id().to_string()])
            .output()
            .expect("run aula-loadtest")
    })
    .await
    .expect("join");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_run_delivers_to_every_subscriber_without_loss() {
    let server = aula_signaling::start(Config::loopback_ephemeral())
        .await
        .expect("start server");
    let report = class_report(server.http_addr(), 5, 3).await;

    assert_eq!(report["scenario"], "class");
    assert_eq!(report["join"]["subscribers"], 5);
    assert_eq!(report["join"]["with_media"], 5, "{report:#}");
    assert!(report["join"]["time_ms"]["p99"].as_f64().unwrap() > 0.0);
    let expected = report["loss"]["expected"].as_u64().unwrap();
    // 5 subscribers x 3 s x (50 audio + ~180 video packets/s), with a wide margin.
    assert!(expected > 5 * 3 * 100, "{report:#}");
    assert_eq!(
        report["loss"]["lost"], 0,
        "loopback loses nothing: {report:#}"
    );
    assert!(report["latency_ms"]["count"].as_u64().unwrap() > 1000);
    assert!(report["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // Every subscriber gets at least the middle layer (~500 kbit/s) plus audio: a new
    // subscriber starts at a 1 Mbit/s estimate and climbs to the top layer (~1.5 Mbit/s)
    // over the next seconds, longer than this short run.
    assert!(
        report["bitrate_kbps"]["min"].as_f64().unwrap() > 400.0,
        "{report:#}"
    );
    assert!(report["forwarded"]["packets"].as_f64().unwrap() > 0.0);
    assert!(report["forwarded"]["per_cpu_second"].as_f64().unwrap() > 0.0);
    assert!(report["server"]["rss_mb"].as_f64().unwrap() > 0.0);
    // The video as the students would have shown it: every one rendered frames, and on
    // loopback the picture kept moving.
    assert_eq!(report["video"]["subscribers_with_frames"], 5, "{report:#}");
    assert!(report["video"]["first_frame_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(
        report["video"]["fps"]["mean"].as_f64().unwrap() > 5.0,
        "{report:#}"
    );
    assert_eq!(report["audio_loss_percent"], 0.0, "{report:#}");
    // What the server sent in the window, from its /metrics (no relay links: none on them).
    assert!(report["traffic"]["origin"]["udp_sent"].as_f64().unwrap() > 0.0);
    assert_eq!(report["traffic"]["origin"]["relay_sent"], 0.0);
    for field in ["jitter_ms", "client", "window_seconds", "cpus"] {
        assert!(!report[field].is_null(), "missing {field}");
    }
    server.shutdown().await;
}

/// A class of 60 on a server with two router shards: the room outgrows its home shard, so
/// the students beyond it are placed on the other shard and get the teacher through a pipe
/// (see `aula_sfu::shard`). Every one of them gets everything, as on one shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_spread_over_two_shards_delivers_to_every_subscriber_without_loss() {
    let mut config = Config::loopback_ephemeral();
    config.rtc.workers = 2;
    let server = aula_signaling::start(config).await.expect("start server");
    let http = server.http_addr();
    let report = class_report(http, 60, 4).await;
    assert_eq!(report["join"]["with_media"], 60, "{report:#}");
    assert_eq!(report["loss"]["lost"], 0, "{report:#}");
    assert_eq!(report["video"]["subscribers_with_frames"], 60, "{report:#}");
    assert_eq!(report["audio_loss_percent"], 0.0, "{report:#}");

    let metrics = tokio::task::spawn_blocking(move || get_metrics(http))
        .await
        .expect("join");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{metrics}"))
    };
    // The teacher's media crossed to the other shard: ~230 packets a second for 4 s at least.
    let piped = value("aula_pipe_packets_total");
    assert!(piped > 500.0, "piped {piped}");
    assert!(value("aula_shard_busy_seconds_total{shard=\"1\"}") > 0.0);
    assert_eq!(
        value("aula_relay_packets_nacked_total"),
        0.0,
        "nothing was lost in the pipe"
    );
    server.shutdown().await;
}

/// The server's `/metrics` text.
fn get_metrics(http: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[test]
fn refuses_targets_off_this_machine() {
    let output = loadtest()
        .args(["--url", "http://192.0.2.1:7880", "--duration", "1"])
        .output()
        .expect("run aula-loadtest");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only loopback"), "{stderr}");
}

#[test]
fn the_relay_scenario_needs_two_running_nodes() {
    for args in [
        &["--scenario", "relay", "--spawn-server"][..],
        &["--scenario", "relay", "--relay-url", "http://127.0.0.1:1"][..],
    ] {
        let output = loadtest()
            .args(args)
            .args(["--duration", "1"])
            .output()
            .expect("run aula-loadtest");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--relay-"), "{args:?}: {stderr}");
    }
    let output = loadtest()
        .args([
            "--scenario",
            "relay",
            "--relay-url",
            "http://192.0.2.1:7880",
        ])
        .args(["--relay-region", "asia", "--duration", "1"])
        .output()
        .expect("run aula-loadtest");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only loopback"));
}
