#!/bin/bash
# usage: fanout-cg.sh VARIANT CODEC RUN SUBSCRIBERS RATE DURATION
# The server under callgrind (instructions counted, whatever the machine's load), a fan-out run against it, then SIGTERM (callgrind writes on exit).
V=$1; C=$2; I=$3; S=$4; R=$5; T=$6
D=$(mktemp -d /tmp/perf19-XXXX)
PORT=$((40000 + RANDOM % 20000))
OUT=/work/wt-perf/perf-reports/perf-19/cg-$V-$C-$S-$R-$I
valgrind --tool=callgrind --callgrind-out-file=$OUT.callgrind /work/perf-bins/server-$V --port $PORT --data-dir $D/data > $D/server.log 2>&1 &
SP=$!
for i in $(seq 600); do grep -q serving $D/server.log && break; sleep 0.2; done
cd /work/wt-perf
echo "== $V $C $I $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)"
/work/target-perf/release/gitmind-load fanout --codec $C --subscribers $S --writers 10 --rate $R --duration $T \
  --server ws://127.0.0.1:$PORT --server-pid $SP --report perf-19/cg-$V-$C-$S-$R-$I --json $OUT.json > $D/load.log 2>&1
grep -E "write -> delivery|lost|deliveries expected" $OUT.md
kill -TERM $SP; wait $SP 2>/dev/null
callgrind_annotate $OUT.callgrind 2>/dev/null | grep -m1 "PROGRAM TOTALS"
rm -rf $D
