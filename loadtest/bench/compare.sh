#!/usr/bin/env bash
# Aula vs Janus (Debian's janus 1.1.2, videoroom plugin) on the same scenario, same load
# generator, same machine: prints both reports and the ratios.
#
# Usage (as root: it creates a network namespace):
#   loadtest/bench/compare.sh [SUBSCRIBERS] [DURATION] [--find-max LOW HIGH]
#   defaults: 50 subscribers, 20 s, class scenario (SCENARIO=meeting|support also works:
#   SUBSCRIBERS is then --participants / --pairs). WORKERS=n runs Aula with `[rtc] workers = n`
#   (default: its own, one router shard per core).
#
# Why a namespace: Janus offers no loopback ICE candidates, so it runs in its own network
# namespace on a veth pair — vsfu (10.98.0.1, inside, what its config binds and enforces for
# ICE) <-> vsfu-host (10.98.0.2, here) — and the load generator binds its peers to 10.98.0.2
# (--local-ip). Aula runs on loopback (--spawn-server). Traffic goes only to loopback and to
# the namespace created here (--allow-netns-target). Janus is a process on this host, so its
# CPU and memory come from its pid's /proc like Aula's.
#
# Bounded: every load-test run is capped by `timeout`, startup waits are counted loops, the
# optional bisection makes at most MAX_PROBES probes per server. Everything this script
# started (Janus, the namespace and its veth pair, temp files) goes on exit, however it exits.
set -euo pipefail
cd "$(dirname "$0")/../.."

subscribers=${1:-50}
duration=${2:-20}
find_max=0
if [[ ${3:-} == --find-max ]]; then
    find_max=1
    fm_low=${4:-10}
    fm_high=${5:-200}
fi
scenario=${SCENARIO:-class}
MAX_PROBES=${MAX_PROBES:-6}
PROBE_DURATION=${PROBE_DURATION:-10}
NS=aula-bench-janus
HOST_IF=vsfu-host
JANUS_IP=10.98.0.1
HOST_IP=10.98.0.2
JANUS_WS_PORT=8188
out=${OUT_DIR:-target/bench-compare}
bin=target/release/aula-loadtest

[[ $(id -u) == 0 ]] || { echo "compare.sh: run as root (network namespace, apt-get)" >&2; exit 1; }
if ip netns list | grep -qw "$NS"; then
    echo "compare.sh: namespace $NS exists: another comparison is running (or delete it: ip netns del $NS)" >&2
    exit 1
fi

case $scenario in
class) size_flag=--subscribers ;;
meeting) size_flag=--participants ;;
support) size_flag=--pairs ;;
*) echo "SCENARIO must be class, meeting or support" >&2; exit 1 ;;
esac

# --- prerequisites --------------------------------------------------------------------------
if ! command -v janus >/dev/null; then
    echo "installing Debian's janus ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y janus >/dev/null
fi
# Debian enables a janus.service with its own config; it must not hold the ports or the CPU.
if systemctl is-active --quiet janus 2>/dev/null; then
    echo "note: the system janus.service is running; stop it for clean numbers" >&2
fi
if [[ ! -x $bin || ! -x target/release/aula ]]; then
    echo "building release binaries ..." >&2
    cargo build --release --bin aula --bin aula-loadtest >&2
fi
mkdir -p "$out"

# --- Janus in its namespace -----------------------------------------------------------------
conf=$(mktemp -d /tmp/aula-bench-janus.XXXXXX)
janus_pid=
cleanup() {
    set +e
    if [[ -n $janus_pid ]] && kill -0 "$janus_pid" 2>/dev/null; then
        kill "$janus_pid"
        for _ in $(seq 50); do kill -0 "$janus_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$janus_pid" 2>/dev/null
    fi
    # Deleting the namespace destroys vsfu and with it its peer vsfu-host.
    ip netns del "$NS" 2>/dev/null
    ip link del "$HOST_IF" 2>/dev/null
    [[ -f $conf/janus.log ]] && cp "$conf/janus.log" "$out/janus.log"
    rm -rf "$conf"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name vsfu netns "$NS"
ip addr add "$HOST_IP/24" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NS" addr add "$JANUS_IP/24" dev vsfu
ip -n "$NS" link set vsfu up
ip -n "$NS" link set lo up

cp loadtest/bench/janus-conf/*.jcfg "$conf/"
sed -i "s|CONFIG_DIR|$conf|" "$conf/janus.jcfg"
# Warnings only: Janus's info log writes lines per handle, which is CPU on the clock.
sed -i 's|debug_level = 4|debug_level = 3|' "$conf/janus.jcfg"
# `ip netns exec` execs janus, so $! is Janus's own pid (for /proc CPU readings).
ip netns exec "$NS" janus -C "$conf/janus.jcfg" -F "$conf" -L "$conf/janus.log" -N -o &
janus_pid=$!
ready=0
for _ in $(seq 100); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/$JANUS_IP/$JANUS_WS_PORT" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$janus_pid" 2>/dev/null || break
    sleep 0.1
done
if ((!ready)); then
    echo "Janus did not open ws://$JANUS_IP:$JANUS_WS_PORT; its log:" >&2
    tail -30 "$conf/janus.log" >&2 || true
    exit 1
fi
echo "Janus $(dpkg-query -W -f '${Version}' janus 2>/dev/null) pid $janus_pid in netns $NS at $JANUS_IP; Aula on loopback" >&2

# --- runs -----------------------------------------------------------------------------------
# One run against `$1` (aula|janus) with size $2 for $3 seconds; JSON on stdout.
run() {
    local target=$1 size=$2 seconds=$3
    local common=(--scenario "$scenario" "$size_flag" "$size" --duration "$seconds" --json)
    local limit=$((seconds + 120))
    if [[ $target == aula ]]; then
        timeout "$limit" "$bin" --spawn-server ${WORKERS:+--server-workers "$WORKERS"} "${common[@]}"
    else
        timeout "$limit" "$bin" --target janus --url "http://$JANUS_IP:$JANUS_WS_PORT" \
            --allow-netns-target --local-ip "$HOST_IP" --server-pid "$janus_pid" "${common[@]}"
    fi
}

echo "machine load before the runs: $(uptime)" >&2
for target in aula janus; do
    echo "running $scenario $size_flag $subscribers for ${duration}s against $target ..." >&2
    if ! run "$target" "$subscribers" "$duration" >"$out/$target.json" 2>"$out/$target.log"; then
        echo "the $target run failed; see $out/$target.log:" >&2
        tail -20 "$out/$target.log" >&2
        exit 1
    fi
done

python3 - "$out/aula.json" "$out/janus.json" <<'PY'
import json, sys
a, j = (json.load(open(p)) for p in sys.argv[1:3])

def received_per_cpu(r):
    # Same definition for both servers: packets the subscribers received in the window per
    # server CPU-second (Janus has no forwarded-packet counter; Aula's would count slightly
    # differently).
    s = r.get("server") or {}
    return r["loss"]["received"] / s["cpu_seconds"] if s.get("cpu_seconds") else None

rows = [
    ("subscribers with media", lambda r: f'{r["join"]["with_media"]}/{r["join"]["subscribers"]}', None),
    ("join p50 / p99 ms", lambda r: f'{r["join"]["time_ms"]["p50"]:.0f} / {r["join"]["time_ms"]["p99"]:.0f}', None),
    ("latency p50 ms", lambda r: f'{r["latency_ms"]["p50"]:.2f}', lambda r: r["latency_ms"]["p50"]),
    ("latency p99 ms", lambda r: f'{r["latency_ms"]["p99"]:.2f}', lambda r: r["latency_ms"]["p99"]),
    ("loss %", lambda r: f'{r["loss"]["percent"]:.3f}', lambda r: r["loss"]["percent"]),
    ("bitrate/subscriber kbps", lambda r: f'{r["bitrate_kbps"]["mean"]:.0f}', lambda r: r["bitrate_kbps"]["mean"]),
    ("server CPU % of a core", lambda r: f'{r["server"]["cpu_percent"]:.1f}', lambda r: r["server"]["cpu_percent"]),
    ("server RSS MB", lambda r: f'{r["server"]["rss_mb"]:.1f}', lambda r: r["server"]["rss_mb"]),
    ("server UDP drops", lambda r: f'{r["server"]["udp_receive_drops"]}', None),
    ("received pkts/CPU-s", lambda r: f'{received_per_cpu(r) or 0:.0f}', received_per_cpu),
    ("forwarded/CPU-s (report)", lambda r: f'{r["forwarded"]["per_cpu_second"] or 0:.0f} ({r["forwarded"]["source"]})', None),
    ("load generator CPU %", lambda r: f'{r["client"]["cpu_percent"]:.0f}', None),
    ("other processes, cores", lambda r: f'{(r.get("machine") or {}).get("other_processes_cores") or 0:.2f}', None),
]
print(f'\n{a["scenario"]}, {a["participants"]} participants, {a["window_seconds"]:.0f} s window, {a["cpus"]} CPUs')
print(f'{"":26} {"aula":>16} {"janus":>16} {"aula/janus":>11}')
for name, show, value in rows:
    try:
        sa, sj = show(a), show(j)
    except (KeyError, TypeError):
        sa = sj = "n/a"
    ratio = ""
    if value:
        try:
            va, vj = value(a), value(j)
            ratio = f"{va / vj:.2f}x" if vj else "inf" if va else "-"
        except (KeyError, TypeError, ZeroDivisionError):
            ratio = "n/a"
    print(f"{name:26} {sa:>16} {sj:>16} {ratio:>11}")
PY
echo "reports: $out/aula.json $out/janus.json (logs next to them)" >&2
echo "machine load after the runs: $(uptime)" >&2

# --- optional: largest class served, by bisection ------------------------------------------
# A size is served when every subscriber got media, loss < 1 % and latency p99 < MAX_P99_MS
# (default 100 ms): see verdict.py. Each probe's report is kept in $out.
# One probe against $target: $1 subscribers, report in $2.
probe() {
    run "$target" "$1" "$PROBE_DURATION" >"$2" 2>"${2%.json}.log" || true
}
if ((find_max)); then
    # shellcheck source=loadtest/bench/bisect.sh
    source loadtest/bench/bisect.sh
    for target in aula janus; do
        bisect "$fm_low" "$fm_high" 2 "$MAX_PROBES" "$out" "$target-probe" probe
        echo "$target: max $size_flag at < 1% loss, p99 < ${MAX_P99_MS:-100} ms, all with media: $best (searched $fm_low..$fm_high, ${PROBE_DURATION}s probes, last bracket $low..$high; reports in $out)"
    done
fi
