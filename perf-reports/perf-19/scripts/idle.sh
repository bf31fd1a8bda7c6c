#!/bin/bash
# usage: idle.sh VARIANT RUN : /work/perf-bins/server-VARIANT on 127.0.0.1, `gitmind-load idle` (10,000 connections, 30 s) against it.
V=$1; I=$2
. "$(dirname "$0")/lib.sh"
start_server $V
cd /work/wt-perf
echo "== $V $I $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)"
/work/target-perf/release/gitmind-load idle --connections 10000 --duration 30 \
  --server ws://127.0.0.1:$PORT --server-pid $SP --report perf-19/idle-$V-$I --json perf-reports/perf-19/idle-$V-$I.json > $D/load.log 2>&1
grep -E "per connection|server RSS|CPU while|connections held" perf-reports/perf-19/idle-$V-$I.md
kill $SP; wait $SP 2>/dev/null; rm -rf $D
