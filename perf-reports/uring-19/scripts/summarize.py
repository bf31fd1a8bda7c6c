#!/usr/bin/env python3
"""Medians of the uring-19 runs, per scenario and backend, from their JSON reports."""
import glob, json, os, re, statistics

here = os.path.join(os.path.dirname(__file__), "..")
rows = {}
for path in sorted(glob.glob(os.path.join(here, "*.json"))):
    m = re.match(r"(\w+)-(epoll|uring)-(\d)\.json", os.path.basename(path))
    if not m:
        continue
    scenario, io, run = m.groups()
    d = json.load(open(path))
    rows.setdefault((scenario, io), []).append((run, d))

def med(xs):
    return statistics.median(xs) if xs else float("nan")

for (scenario, io), runs in sorted(rows.items()):
    runs.sort()
    if scenario.startswith("fanout"):
        p50 = [d["latency_us"]["p50"] / 1000 for _, d in runs]
        p99 = [d["latency_us"]["p99"] / 1000 for _, d in runs]
        cpu = [d["server"]["cpu_percent"] for _, d in runs]
        lost = [d["lost"] for _, d in runs]
        print(f"{scenario} {io}: p50 ms {med(p50):.1f} {p50} p99 ms {med(p99):.1f} {p99} server CPU % {med(cpu):.1f} {[round(c,1) for c in cpu]} lost {lost}")
    else:
        print(f"{scenario} {io}: " + "; ".join(json.dumps({k: v for k, v in d.items() if k not in ("details", "steps")})[:400] for _, d in runs))
