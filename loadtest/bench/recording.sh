#!/usr/bin/env bash
# What recording costs: a class measured side by side in one run without and with recording
# (the same release binary, `[recording] auto = ["class"]` in the second config), and, with
# --pairs LOW HIGH, the most rooms of two (both sides publishing audio and video, as in a
# support session) one machine serves while every room is recorded, by bisection judged by
# verdict.py (every participant got media, loss < 1 %, latency p99 < MAX_P99_MS, default 100).
#
# Usage: loadtest/bench/recording.sh [STUDENTS] [DURATION] [--pairs LOW HIGH]
#   defaults: 100 students, 20 s. Needs `cargo build --release --bin aula --bin aula-loadtest`.
# Servers listen on 127.0.0.1 only; recordings go to a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
students=${1:-100}
duration=${2:-20}
bin=target/release
[[ -x $bin/aula && -x $bin/aula-loadtest ]] || {
    echo "build first: cargo build --release --bin aula --bin aula-loadtest" >&2
    exit 1
}
work=$(mktemp -d /tmp/aula-recording-bench.XXXXXX)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a server with ([recording] on) or without recording; sets server_pid and url.
start_server() {
    local recording=$1 port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$work/aula.toml" <<TOML
[http]
bind = "127.0.0.1:$port"
[rtc]
udp_bind = "127.0.0.1:$((port + 1))"
advertised_ips = ["127.0.0.1"]
[recording]
dir = "$work/recordings"
auto = [$([[ $recording == on ]] && echo '"class"')]
TOML
    "$bin/aula" serve --config "$work/aula.toml" >"$work/server-$recording.log" 2>&1 &
    server_pid=$!
    url="http://127.0.0.1:$port"
    for _ in $(seq 100); do
        curl -sf "$url/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "the server did not start; its log:" >&2
    tail -20 "$work/server-$recording.log" >&2
    exit 1
}

stop_server() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# One load-test run against the server; JSON report on stdout.
run() {
    timeout $((duration + 180)) "$bin/aula-loadtest" --url "$url" --server-pid "$server_pid" \
        --duration "$duration" --json "$@"
}

echo "machine load before: $(uptime)" >&2
for recording in off on; do
    start_server "$recording"
    echo "class of $students, recording $recording ..." >&2
    run --scenario class --subscribers "$students" >"$work/class-$recording.json"
    stop_server
done
echo "recorded: $(du -sh "$work/recordings" 2>/dev/null | cut -f1)" >&2
python3 - "$work/class-off.json" "$work/class-on.json" <<'PY'
import json, sys
off, on = (json.load(open(p)) for p in sys.argv[1:3])
def per_cpu(r):
    return r["forwarded"]["per_cpu_second"]
print(f'class of {off["participants"] - 1}, {off["window_seconds"]:.0f} s window:')
for name, r in (("without recording", off), ("with recording", on)):
    s = r["server"]
    print(f'  {name:18} forwarded/CPU-s {per_cpu(r):8.0f}  server CPU {s["cpu_percent"]:5.1f} %  '
          f'RSS {s["rss_mb"]:6.1f} MB  loss {r["loss"]["percent"]:.3f} %  p99 {r["latency_ms"]["p99"]:.1f} ms  '
          f'other processes {(r.get("machine") or {}).get("other_processes_cores") or 0:.2f} cores')
print(f'  CPU per forwarded packet with recording: {per_cpu(off) / per_cpu(on):.3f}x without')
PY

# One probe: $1 rooms of two, all recorded, on a fresh server (so that recordings of earlier
# probes cost nothing); its report in $2.
probe() {
    start_server on
    run --scenario support --pairs "$1" >"$2" || true
    stop_server
}
if [[ ${3:-} == --pairs ]]; then
    # shellcheck source=loadtest/bench/bisect.sh
    source loadtest/bench/bisect.sh
    bisect "${4:-5}" "${5:-100}" 2 6 "$work" pairs-recorded probe
    echo "most recorded rooms of two served (every participant with media, loss < 1 %, p99 < ${MAX_P99_MS:-100} ms): $best (last bracket $low..$high)"
fi
echo "machine load after: $(uptime)" >&2
