#!/bin/bash
# callgrind.sh VARIANT BIN: instructions and allocation calls per update in
# the owner's code, for `submit` (a commit every 1,000) and `whole` (every
# 100), from runs of N = 50,000 and 100,000 updates (difference / 50,000).
# Collected: `Owner::submit`, and the bench's `commit` (take_group,
# committed, and dropping the releases, as the hub does). Toggles must not
# nest, so `committed` is counted inside `commit`.
set -e
V=$1; BIN=$2; OUT=${OUT:-/work/owner2-bin}
HERE=$(cd "$(dirname "$0")" && pwd)
for mode in submit whole; do
  for n in 50000 100000; do
    nice -n 10 valgrind --tool=callgrind --callgrind-out-file=$OUT/cg-$V-$mode-$n.out \
      '--toggle-collect=*Owner>::submit' '--toggle-collect=*owner_work::commit' \
      "$BIN" $mode $n 2> $OUT/cg-$V-$mode-$n.log
  done
  echo "== $V $mode"
  python3 "$HERE/../callgrind_per_update.py" $OUT/cg-$V-$mode-50000.out $OUT/cg-$V-$mode-100000.out 50000
done
