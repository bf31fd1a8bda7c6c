#!/usr/bin/env python3
"""The table of perf-reports/peers.md from the runs of compare.sh.

Reads perf-reports/peers/runs.tsv and each run's JSON beside it, and
prints, for each total rate and server, the medians over its runs of
delivery p50 and p99, server CPU and server CPU per delivery, the sums of
lost and duplicated deliveries, and the load averages the runs saw; then
each peer's ratio to Gitmind live (binary) at the same rate.

    python3 bench/peers/summarize.py [perf-reports/peers]
"""
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ORDER = [
    "gitmind-bin",
    "gitmind-nofsync",
    "gitmind-json",
    "y-websocket",
    "hocuspocus",
    "relay",
]


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "perf-reports/peers")
    cells = defaultdict(list)
    with open(folder / "runs.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            path = folder / (row["report"] + ".json")
            if not path.exists():
                print(f"missing: {path}", file=sys.stderr)
                continue
            result = json.loads(path.read_text())
            cells[(int(row["rate"]), row["server"])].append((row, result))
    medians = {}
    print(
        "| rate/s | server | runs | p50 ms | p99 ms | lost | dup | server CPU % "
        "| CPU µs per delivery | generator saturated | load (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rate, server in sorted(cells, key=lambda k: (k[0], ORDER.index(k[1]))):
        runs = cells[(rate, server)]
        med = lambda f: statistics.median(f(r) for _, r in runs)
        p50 = med(lambda r: r["latency_us"]["p50"]) / 1e3
        p99 = med(lambda r: r["latency_us"]["p99"]) / 1e3
        cpu = med(lambda r: r["server"]["cpu_percent"])
        per = med(lambda r: r["details"]["server_cpu_us_per_delivery"])
        lost = sum(r["lost"] for _, r in runs)
        dup = sum(r["duplicates"] for _, r in runs)
        saturated = sum(1 for _, r in runs if r["generator_saturated"])
        loads = [float(row["load before"].split()[0]) for row, _ in runs]
        medians[(rate, server)] = (p50, p99, per)
        p99s = ", ".join(f"{r['latency_us']['p99'] / 1e3:.1f}" for _, r in runs)
        print(
            f"| {rate:,} | {server} | {len(runs)} | {p50:.2f} | {p99:.1f} ({p99s}) | {lost:,} "
            f"| {dup:,} | {cpu:.1f} | {per:.2f} | {saturated} of {len(runs)} "
            f"| {min(loads):.1f} to {max(loads):.1f} |"
        )
    print()
    print("| rate/s | peer | p50 gitmind : peer | p99 gitmind : peer | CPU per delivery gitmind : peer |")
    print("|---|---|---|---|---|")
    for rate, server in sorted(medians, key=lambda k: (k[0], ORDER.index(k[1]))):
        base = medians.get((rate, "gitmind-bin"))
        if server.startswith("gitmind") or base is None:
            continue
        p50, p99, per = medians[(rate, server)]
        print(
            f"| {rate:,} | {server} | {base[0] / p50:.2f} | {base[1] / p99:.2f} "
            f"| {base[2] / per:.2f} |"
        )


if __name__ == "__main__":
    main()
