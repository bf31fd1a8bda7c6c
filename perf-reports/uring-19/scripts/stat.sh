#!/bin/bash
# usage: stat.sh IO RUN : the 1,000 x 1,000 fan-out (fixed work: 20,000,000
# deliveries) against `--io IO`, under `perf stat -p` on the server for the
# whole run: its CPU time (task-clock), context switches and system calls.
# Those count the server's work whatever the machine's load, where latency
# does not. Output: perf-reports/uring-19/stat-IO-RUN.{md,json,perf.csv}.
IO=$1; I=$2
BIN=/work/perf-bins-uring
D=$(mktemp -d /tmp/uring19-XXXX)
PORT=$((40000 + RANDOM % 20000))
$BIN/gitmind-server --io $IO --port $PORT --data-dir $D/data > $D/server.log 2>&1 &
SP=$!
for i in $(seq 100); do grep -q serving $D/server.log && break; sleep 0.1; done
cd "$(dirname "$0")/../../.."
OUT=uring-19/stat-$IO-$I
echo "== $IO stat $I $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)"
perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p $SP -o perf-reports/$OUT.perf.csv &
PP=$!
$BIN/gitmind-load fanout --subscribers 1000 --writers 10 --rate 100 --duration 20 \
  --server ws://127.0.0.1:$PORT --server-pid $SP --report $OUT --json perf-reports/$OUT.json > $D/load.log 2>&1
kill -INT $PP; wait $PP
grep -E "write -> delivery|lost" perf-reports/$OUT.md
grep -v "^#" perf-reports/$OUT.perf.csv | grep .
kill -INT $SP; wait $SP 2>/dev/null; rm -rf $D
