#!/bin/bash
# usage: fanout-stat.sh VARIANT CODEC RUN [extra gitmind-load args]
# As fanout.sh, with instructions counted by `perf stat` on the server (user and kernel) over the whole load run, and on the generator.
V=$1; C=$2; I=$3; shift 3
. "$(dirname "$0")/lib.sh"
start_server $V
cd /work/wt-perf
OUT=perf-reports/perf-19/stat-$V-$C-$I
echo "== $V $C $I $(date -u +%H:%M:%S) load: $(cut -d' ' -f1-3 /proc/loadavg)"
perf stat -x, -e instructions:u,instructions:k,task-clock -p $SP -o $OUT.server-perf.csv &
PP=$!
perf stat -x, -e instructions:u,instructions:k,task-clock -o $OUT.generator-perf.csv \
 /work/target-perf/release/gitmind-load fanout --codec $C --subscribers 1000 --writers 10 --rate 100 --duration 20 \
  --server ws://127.0.0.1:$PORT --server-pid $SP --report perf-19/stat-$V-$C-$I --json $OUT.json "$@" > $D/load.log 2>&1
kill -INT $PP; wait $PP
grep -E "write -> delivery|lost|deliveries expected|server CPU|generator CPU" $OUT.md
grep instructions $OUT.server-perf.csv | sed 's/^/server /'; grep instructions $OUT.generator-perf.csv | sed 's/^/generator /'
kill $SP; wait $SP 2>/dev/null; rm -rf $D
