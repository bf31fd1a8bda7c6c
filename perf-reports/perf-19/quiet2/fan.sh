#!/bin/bash
# fan.sh VARIANT CODEC N: 1,000 subscribers x 10 writers x 100/s for 20 s against server-VARIANT
cd /tmp/fan19
V=$1; C=$2; N=$3; PORT=$((47900 + RANDOM % 90))
rm -rf data-$V-$C-$N
./server-$V --port $PORT --data-dir data-$V-$C-$N > server-$V-$C-$N.log 2>&1 &
PID=$!
sleep 2
echo "fanout-$V-$C-$N load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >> loads.txt
./gitmind-load --server ws://127.0.0.1:$PORT --server-pid $PID --codec $C --duration 20 --report fanout-$V-$C-$N fanout --subscribers 1000 --writers 10 --rate 100 > fanout-$V-$C-$N.out 2>&1
kill -INT $PID; wait $PID
rm -rf data-$V-$C-$N
grep -E "p99|lost|saturated" perf-reports/fanout-$V-$C-$N.md | head -6
