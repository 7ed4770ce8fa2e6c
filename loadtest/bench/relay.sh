#!/usr/bin/env bash
# A class through a relay node against the same class straight to the origin (issue 14): a
# teacher on the origin node, N students either on a relay node (20 ms from them) whose link
# to the origin has a 150 ms round trip, or straight on the origin over a 170 ms path; the
# long path loses 0, 1 and 5 % of the packets each way. Prints one table: time to first video
# frame, audio lost (the light clients have no RED, so every lost audio packet is concealed),
# video frozen (WebRTC's freeze definition, see loadtest/src/stats/frames.rs), and what the
# origin sent in the window (to participants + on relay links).
#
# Usage: loadtest/bench/relay.sh [DURATION]          (default 20 s per run)
#   SIZES="1 5 20" LOSSES="0 0.01 0.05" LINK_DELAY_MS=75 ACCESS_DELAY_MS=20 DIRECT_DELAY_MS=170
#   BIN_DIR=target/release (where aula and aula-loadtest are), OUT_DIR=target/bench-relay
# Needs redis-server and `cargo build --release -p aula-signaling -p aula-loadtest`.
#
# What is impaired where (the kernel here has no netem; both are the server's test-only
# switches, `[dev] test_impairment = true`):
# - the link: `[cluster.relay] impairment = { delay_ms = 75, loss = L }` on both nodes, under
#   the QUIC socket (aula_sfu::relay::impaired_socket): each node delays and loses what it
#   sends, so 150 ms round trip and L each way;
# - a student's own path: POST /test/impairment on the node serving its media (aula-loadtest
#   --student-delay-ms / --student-loss), which delays what that SFU sends the student and
#   loses L both ways. Relay students: 20 ms, no loss. Direct students: 170 ms and L, the round
#   trip a relayed student has to the origin (75 + 75 + 20). The SFU's impairment delays only
#   what it sends, so the direct students' media arrives 170 ms late against the relayed
#   students' 95 ms: compare round trips (repair), not latency.
# Signaling (WebSocket to the origin) is on loopback, unimpaired, in both cases.
#
# Everything listens on 127.0.0.1 only; every run is bounded by `timeout`; what this script
# started (Redis, nodes, temporary files) goes on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-20}
sizes=${SIZES:-"1 5 20"}
losses=${LOSSES:-"0 0.01 0.05"}
link_delay=${LINK_DELAY_MS:-75}
access_delay=${ACCESS_DELAY_MS:-20}
direct_delay=${DIRECT_DELAY_MS:-170}
bin=${BIN_DIR:-target/release}
out=${OUT_DIR:-target/bench-relay}
[[ -x $bin/aula && -x $bin/aula-loadtest ]] || {
    echo "build first: nice cargo build --release -p aula-signaling -p aula-loadtest" >&2
    exit 1
}
command -v redis-server >/dev/null || { echo "redis-server not found (scripts/setup.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log
work=$(mktemp -d /tmp/aula-relay-bench.XXXXXX)
redis_pid= origin_pid= relay_pid=
stop_nodes() {
    for pid in $origin_pid $relay_pid; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    done
    origin_pid= relay_pid=
}
cleanup() {
    stop_nodes
    [[ -n $redis_pid ]] && { kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for() { # wait_for SECONDS COMMAND...: polls the command every 0.2 s
    local tries=$(($1 * 5)); shift
    for ((i = 0; i < tries; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}
metric() { # metric HTTP_PORT NAME: the sum of a metric's series on a node
    curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { print s + 0 }'
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
wait_for 10 redis-cli -p "$redis_port" ping || { echo "redis did not start" >&2; exit 1; }

# The cluster CA and the nodes' certificates.
$bin/aula cluster ca --out "$work/ca" >/dev/null
for node in eu-1 asia-1; do
    $bin/aula cluster cert --node "$node" --ca "$work/ca" --out "$work/$node" >/dev/null
done

# start_node NODE REGION LOSS: writes its config and starts it; sets node_http, node_pid.
start_node() {
    local node=$1 region=$2 loss=$3 http udp link
    http=$(free_port) udp=$(free_port) link=$(free_port)
    cat >"$work/$node.toml" <<TOML
log_level = "warn"
[http]
bind = "127.0.0.1:$http"
[rtc]
udp_bind = "127.0.0.1:$udp"
advertised_ips = ["127.0.0.1"]
[dev]
test_impairment = true
[cluster]
redis_url = "redis://127.0.0.1:$redis_port"
region = "$region"
node_id = "$node"
[cluster.relay]
bind = "127.0.0.1:$link"
addr = "127.0.0.1:$link"
ca_cert = "$work/ca/ca.pem"
node_cert = "$work/$node/node.pem"
node_key = "$work/$node/node.key"
impairment = { delay_ms = $link_delay, loss = $loss }
TOML
    $bin/aula serve --config "$work/$node.toml" >"$out/$node-loss$loss.log" 2>&1 &
    node_pid=$!
    node_http=$http
    wait_for 15 curl -sf "http://127.0.0.1:$http/healthz" || { echo "$node did not start; see $out/$node-loss$loss.log" >&2; exit 1; }
}

# Each node's directory knows both.
both_registered() {
    [[ $(metric "$origin_http" aula_cluster_nodes) == 2 && $(metric "$relay_http" aula_cluster_nodes) == 2 ]]
}

run() { # run NAME ARGS...: one bounded load-test run, its JSON report in $out/NAME.json
    local name=$1; shift
    echo "  $name" >&2
    if ! timeout $((duration + 120)) $bin/aula-loadtest --url "http://127.0.0.1:$origin_http" \
        --relay-url "http://127.0.0.1:$relay_http" --server-pid "$origin_pid" \
        --duration "$duration" --join-timeout 30 --json "$@" >"$out/$name.json" 2>"$out/$name.log"; then
        echo "    failed: see $out/$name.log" >&2
        rm -f "$out/$name.json"
    fi
}

{
    echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r)"
    echo "build: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sfu signaling loadtest || echo ' + uncommitted changes'), binaries of $(date -u -r $bin/aula '+%F %H:%M UTC')"
    echo "started $(date -u '+%F %H:%M:%S UTC'); uptime: $(uptime)"
} | tee "$out/machine.txt"

for loss in $losses; do
    echo "link loss $loss: starting nodes" >&2
    start_node eu-1 eu "$loss"; origin_pid=$node_pid origin_http=$node_http
    start_node asia-1 asia "$loss"; relay_pid=$node_pid relay_http=$node_http
    wait_for 20 both_registered || { echo "the nodes did not see each other in the directory" >&2; exit 1; }
    # One more refresh, so that the origin's copy of the directory has the relay's link address.
    sleep 4
    for n in $sizes; do
        run "relay-loss$loss-n$n" --scenario relay --relay-region asia --subscribers "$n" \
            --student-delay-ms "$access_delay"
        if ((n > 1)); then
            # The same, students joining one a second (the first one's link is up before the
            # next is placed): see the README on links opened concurrently.
            run "relay1s-loss$loss-n$n" --scenario relay --relay-region asia --subscribers "$n" \
                --student-delay-ms "$access_delay" --join-rate 1
        fi
        run "direct-loss$loss-n$n" --scenario class --subscribers "$n" \
            --student-delay-ms "$direct_delay" --student-loss "$loss"
    done
    # The link counters (datagrams sent, received, dropped; RTT) for the record.
    curl -sf "http://127.0.0.1:$origin_http/metrics" | grep '^aula_relay' >"$out/origin-metrics-loss$loss.txt" || true
    curl -sf "http://127.0.0.1:$relay_http/metrics" | grep '^aula_relay' >"$out/relay-metrics-loss$loss.txt" || true
    stop_nodes
done
echo "finished $(date -u '+%F %H:%M:%S UTC'); uptime: $(uptime)" | tee -a "$out/machine.txt"

python3 - "$out" "$duration" "$sizes" "$losses" <<'PY'
import json, os, sys
out, duration, sizes, losses = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
print(f"\n{duration} s window per run; link RTT 150 ms; relay students 20 ms from the relay, direct students 170 ms from the origin\n")
print("| long path loss | students | path | with media | first frame p50 / max | audio lost | video frozen mean / worst | video lost | origin egress | of which link | relay received |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
def first_frame(v, students):
    ff = v["first_frame_ms"]
    if ff["count"] == 0:
        return "none"
    some = "" if ff["count"] == students else f" ({ff['count']} with frames)"
    return f"{ff['p50']:.0f} / {ff['max']:.0f} ms{some}"

for loss in losses:
    for n in sizes:
        for path, label in (("relay", "relay"), ("relay1s", "relay, joins 1/s"), ("direct", "direct")):
            name = f"{path}-loss{loss}-n{n}"
            if path == "relay1s" and int(n) <= 1:
                continue
            try:
                r = json.load(open(os.path.join(out, name + ".json")))
            except (OSError, ValueError):
                print(f"| {float(loss)*100:g} % | {n} | {label} | run failed | | | | | | | |")
                continue
            v, t = r["video"], r.get("traffic") or {}
            origin = t.get("origin") or {}
            relay = t.get("relay") or {}
            mb = lambda b: f"{b / 1e6:.1f} MB"
            print(f"| {float(loss)*100:g} % | {n} | {label} | {r['join']['with_media']}/{r['join']['subscribers']}"
                  f" | {first_frame(v, r['join']['subscribers'])}"
                  f" | {r['audio_loss_percent']:.2f} %"
                  f" | {v['frozen_percent']['mean']:.1f} / {v['frozen_percent']['max']:.1f} %"
                  f" | {r['video_loss_percent']:.2f} %"
                  f" | {mb(t.get('origin_egress_bytes') or 0)}"
                  f" | {mb(origin.get('relay_sent', 0))}"
                  f" | {mb(relay.get('relay_received', 0))} |")
PY
