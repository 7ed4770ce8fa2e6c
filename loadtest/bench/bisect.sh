# The capacity search shared by find-max.sh, compare.sh --find-max and recording.sh --pairs;
# sourced, not run.
#
# bisect LOW HIGH GAP PROBES DIR NAME PROBE
#   The largest size served, by bisection between LOW and HIGH, until they are GAP or less apart
#   or PROBES probes were made. `PROBE SIZE REPORT` runs one load test of SIZE and writes its
#   JSON report to REPORT (DIR/NAME-SIZE.json, kept); verdict.py judges it: every participant got
#   media, loss under 1 % and latency p99 under MAX_P99_MS (default 100). Logs each probe's
#   verdict on stderr and sets `best` (0 when no size passed), `low` and `high`.
bisect() {
    local gap=$3 probes=$4 dir=$5 name=$6 probe=$7 mid report verdict
    low=$1 high=$2 best=0
    for _ in $(seq "$probes"); do
        ((high - low > gap)) || break
        mid=$(((low + high) / 2))
        report="$dir/$name-$mid.json"
        "$probe" "$mid" "$report"
        if verdict=$(loadtest/bench/verdict.py "$report" 1.0 "${MAX_P99_MS:-100}"); then
            best=$mid low=$mid
        else
            high=$mid
        fi
        echo "  $name $mid: $verdict" | tr '\n' ' ' >&2
        echo >&2
    done
}
