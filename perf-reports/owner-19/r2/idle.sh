#!/bin/bash
# idle.sh VARIANT N: gitmind-load idle (10,000 connections, 100 per graph)
# against server-VARIANT; a copy of the lead's /tmp/mem/run.sh (perf-19.md
# section 3) with this round's directory.
set -e
cd /work/owner2-bin/mem
V=$1; N=$2; PORT=$((47900 + RANDOM % 400))
rm -rf data-$V-$N
./server-$V --port $PORT --data-dir data-$V-$N > server-$V-$N.log 2>&1 &
PID=$!
sleep 2
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)" > idle-$V-$N.load
./gitmind-load --server ws://127.0.0.1:$PORT --server-pid $PID --duration 20 --report idle-$V-$N idle --connections 10000 > idle-$V-$N.out 2>&1 || true
kill -INT $PID; wait $PID || true
grep -E "per connection" perf-reports/idle-$V-$N.md
