#!/usr/bin/env bash
# Largest class size Aula serves on this machine, by bisection. A size is served when every
# student got media, loss is under 1 % and the latency p99 is under MAX_P99_MS (default 100 ms):
# see verdict.py for why loss alone is not enough.
#
# Usage: loadtest/bench/find-max.sh [LOW] [HIGH] [DURATION]   (defaults 25 400 15)
#   MAX_P99_MS=... changes the latency limit; REPORTS=dir keeps the probes' JSON reports there
#   (default: a new directory under /tmp, printed at the end); WORKERS=n runs the server with
#   `[rtc] workers = n` router shards (default: its own, one per core).
# Needs `cargo build --release --bin aula --bin aula-loadtest` first; each probe starts a
# fresh server on free loopback ports (--spawn-server), so probes do not disturb each other.
# At most 8 probes: the bisection is bounded in count, each probe by its duration + joins.
set -euo pipefail
cd "$(dirname "$0")/../.."
low=${1:-25}
high=${2:-400}
duration=${3:-15}
reports=${REPORTS:-$(mktemp -d /tmp/aula-find-max.XXXXXX)}
mkdir -p "$reports"
bin=target/release/aula-loadtest
[[ -x $bin && -x target/release/aula ]] || {
    echo "build first: cargo build --release --bin aula --bin aula-loadtest" >&2
    exit 1
}

# One probe: a class of $1 students on a fresh server, its report in $2.
probe() {
    timeout $((duration + 120)) "$bin" --spawn-server --scenario class --subscribers "$1" \
        --duration "$duration" ${WORKERS:+--server-workers "$WORKERS"} --json \
        >"$2" 2>"${2%.json}.log" || true
}

# shellcheck source=loadtest/bench/bisect.sh
source loadtest/bench/bisect.sh
echo "machine load before: $(uptime)" >&2
bisect "$low" "$high" 5 8 "$reports" class probe
echo "machine load after: $(uptime)" >&2
echo "max subscribers at < 1% loss, p99 < ${MAX_P99_MS:-100} ms, all with media: $best (searched up to $high); reports in $reports"
