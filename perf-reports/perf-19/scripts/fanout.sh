#!/bin/bash
# usage: fanout.sh VARIANT CODEC RUN [extra gitmind-load args]
# Starts /work/perf-bins/server-VARIANT on 127.0.0.1, runs the 1,000 x 1,000 fan-out against it, stops it.
V=$1; C=$2; I=$3; shift 3
. "$(dirname "$0")/lib.sh"
start_server $V
cd /work/wt-perf
echo "== $V $C $I $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)"
/work/target-perf/release/gitmind-load fanout --codec $C --subscribers 1000 --writers 10 --rate 100 --duration 20 \
  --server ws://127.0.0.1:$PORT --server-pid $SP --report perf-19/fanout-$V-$C-$I --json perf-reports/perf-19/fanout-$V-$C-$I.json "$@" > $D/load.log 2>&1
grep -E "write -> delivery|lost|server CPU|generator CPU" perf-reports/perf-19/fanout-$V-$C-$I.md
kill $SP; wait $SP 2>/dev/null; rm -rf $D
