#!/usr/bin/env bash
# Largest class size Aula serves with < 1% loss on this machine, by bisection.
#
# Usage: loadtest/bench/find-max.sh [LOW] [HIGH] [DURATION]   (defaults 25 400 15)
# Needs `cargo build --release --bin aula --bin aula-loadtest` first; each probe starts a
# fresh server on free loopback ports (--spawn-server), so probes do not disturb each other.
# At most 8 probes: the bisection is bounded in count, each probe by its duration + joins.
set -euo pipefail
cd "$(dirname "$0")/../.."
low=${1:-25}
high=${2:-400}
duration=${3:-15}
bin=target/release/aula-loadtest
[[ -x $bin && -x target/release/aula ]] || {
    echo "build first: cargo build --release --bin aula --bin aula-loadtest" >&2
    exit 1
}

# Loss percent of one probe (100 when the run failed: that size is not served).
probe() {
    local json
    if json=$("$bin" --spawn-server --scenario class --subscribers "$1" --duration "$duration" --json 2>/dev/null); then
        python3 -c 'import json,sys; r=json.load(sys.stdin); f=r["join"]["failed"]; print(100.0 if f else r["loss"]["percent"])' <<<"$json"
    else
        echo 100
    fi
}

best=0
for _ in 1 2 3 4 5 6 7 8; do
    ((high - low > 5)) || break
    mid=$(((low + high) / 2))
    loss=$(probe "$mid")
    echo "class --subscribers $mid: loss $loss%" >&2
    if python3 -c "import sys; sys.exit(0 if $loss < 1.0 else 1)"; then
        best=$mid
        low=$mid
    else
        high=$mid
    fi
done
echo "max subscribers at < 1% loss: $best (searched up to $high)"
