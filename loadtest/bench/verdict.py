#!/usr/bin/env python3
"""Whether one load-test report (aula-loadtest --json) counts as a class size served.

Usage: verdict.py REPORT.json [MAX_LOSS_PERCENT] [MAX_P99_MS]   (defaults 1.0 and 100)

Prints "pass" or "fail: <reasons>" and one line of the figures, and exits 0 on pass, 1 on
fail. A size is served only when every subscriber got media, loss stayed under the limit
*and* the latency p99 stayed under its limit: judging loss alone passed sizes at which the
server was saturated (500 students: 8.6 % loss but 859 ms median latency was seen to pass a
neighbouring probe at 494 with loss just under 1 %).
"""
import json
import sys


def main() -> int:
    path = sys.argv[1]
    max_loss = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    max_p99 = float(sys.argv[3]) if len(sys.argv) > 3 else 100.0
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"fail: no report ({e})")
        return 1
    join = report["join"]
    loss = report["loss"]["percent"]
    p99 = report["latency_ms"]["p99"]
    reasons = []
    if join["failed"] or join["with_media"] < join["subscribers"]:
        reasons.append(f'{join["with_media"]}/{join["subscribers"]} subscribers got media')
    if loss >= max_loss:
        reasons.append(f"loss {loss:.3f}% >= {max_loss}%")
    if p99 >= max_p99:
        reasons.append(f"latency p99 {p99:.1f} ms >= {max_p99} ms")
    print("pass" if not reasons else "fail: " + "; ".join(reasons))
    server = report.get("server") or {}
    print(
        f'  loss {loss:.3f}%, latency p50 {report["latency_ms"]["p50"]:.1f} / p99 {p99:.1f} ms, '
        f'media {join["with_media"]}/{join["subscribers"]}, server CPU '
        f'{server.get("cpu_percent", float("nan")):.0f}%, RSS {server.get("rss_mb", float("nan")):.0f} MB'
    )
    return 0 if not reasons else 1


if __name__ == "__main__":
    sys.exit(main())
