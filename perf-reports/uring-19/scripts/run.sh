#!/bin/bash
# usage: run.sh IO SCENARIO RUN
# Starts /work/perf-bins-uring/gitmind-server (a release build with the
# `uring` feature) with `--io IO` (epoll or uring) on a random 127.0.0.1
# port in a fresh data directory, runs one gitmind-load scenario against it
# (idle, fanout100, fanout1000, ramp), and stops it. Reports land in
# perf-reports/uring-19/SCENARIO-IO-RUN.{md,json}.
IO=$1; S=$2; I=$3
BIN=/work/perf-bins-uring
D=$(mktemp -d /tmp/uring19-XXXX)
PORT=$((40000 + RANDOM % 20000))
$BIN/gitmind-server --io $IO --port $PORT --data-dir $D/data > $D/server.log 2>&1 &
SP=$!
for i in $(seq 100); do grep -q serving $D/server.log && break; sleep 0.1; done
cd "$(dirname "$0")/../../.."
OUT=uring-19/$S-$IO-$I
echo "== $IO $S $I $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)"
COMMON=(--server ws://127.0.0.1:$PORT --server-pid $SP --report $OUT --json perf-reports/$OUT.json)
case $S in
  idle) $BIN/gitmind-load idle --connections 10000 --duration 30 "${COMMON[@]}" ;;
  fanout100) $BIN/gitmind-load fanout --subscribers 1000 --writers 10 --rate 10 --duration 20 "${COMMON[@]}" ;;
  fanout1000) $BIN/gitmind-load fanout --subscribers 1000 --writers 10 --rate 100 --duration 20 "${COMMON[@]}" ;;
  ramp) $BIN/gitmind-load ramp --subscribers 100 --writers 10 --start 500 --step 5 --duration 90 "${COMMON[@]}" ;;
esac > $D/load.log 2>&1
echo "exit $? load after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -E "per connection|server RSS|CPU while|connections held|write -> delivery|lost|server CPU|generator CPU|highest rate" perf-reports/$OUT.md
kill -INT $SP; wait $SP 2>/dev/null; rm -rf $D
