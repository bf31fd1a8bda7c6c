#!/bin/bash
# criterion.sh ROUNDS VARIANT=BIN...: the owner's CPU-time benches,
# each variant once per round, alternating; the load average before each.
OUT=${OUT:-/work/owner2-bin}
ROUNDS=$1; shift
for r in $(seq 1 $ROUNDS); do
  for vb in "$@"; do
    V=${vb%%=*}; BIN=${vb#*=}
    echo "== round $r $V load $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd $OUT && nice -n 10 "$BIN" --bench --noplot --measurement-time 5 '^field_update_cpu/') 2>&1 \
      | grep -E "^field_update|time:" 
  done
done
