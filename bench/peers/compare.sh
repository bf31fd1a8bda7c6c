#!/bin/bash
# The whole comparison of perf-reports/peers.md, run by hand, never in CI:
# the same fan-out (1,000 subscribers, 10 writers, 20 s) against Gitmind
# live and each peer, at each total rate, the servers alternating within
# each round so that a noisy spell on the shared machine falls on all of
# them alike. Every run writes perf-reports/peers/NAME.{md,json,svg}, and
# runs.tsv the load average before and after it. Then summarize.py makes
# the table.
#
#   cargo build --release -p gitmind-server -p gitmind-bench
#   (cd bench/peers && npm ci)
#   bench/peers/compare.sh                       # 3 rounds, 100 and 1,000/s
#   ROUNDS=1 RATES=100 SERVERS="gitmind-bin relay" bench/peers/compare.sh
#   python3 bench/peers/summarize.py
#
# FIRST_ROUND numbers the rounds from another start (to add rounds later).
# RATES are totals over the 10 writers; SERVERS any of gitmind-bin,
# gitmind-json, gitmind-nofsync (binary, commits without fsync),
# y-websocket, hocuspocus, relay. The binaries come from
# $CARGO_TARGET_DIR (or target/)/release.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=${CARGO_TARGET_DIR:-$root/target}/release
load=$bin/gitmind-load
[ -x "$load" ] && [ -x "$bin/gitmind-server" ] || {
  echo "build first: cargo build --release -p gitmind-server -p gitmind-bench" >&2
  exit 2
}
[ -d bench/peers/node_modules ] || {
  echo "install the peers first: (cd bench/peers && npm ci)" >&2
  exit 2
}
rounds=${ROUNDS:-3}
first_round=${FIRST_ROUND:-1}
rates=${RATES:-"100 1000"}
servers=${SERVERS:-"gitmind-bin y-websocket hocuspocus relay"}
subscribers=${SUBSCRIBERS:-1000}
writers=${WRITERS:-10}
seconds=${SECONDS_PER_RUN:-20}
port=${PORT:-1234}
out=perf-reports/peers
mkdir -p "$out"
[ -f "$out/runs.tsv" ] ||
  printf 'report\tserver\trate\tround\tload before\tload after\n' >"$out/runs.tsv"

peer_pid=
stop_peer() {
  if [ -n "$peer_pid" ]; then
    kill "$peer_pid" 2>/dev/null || true
    wait "$peer_pid" 2>/dev/null || true
    peer_pid=
  fi
}
trap stop_peer EXIT
trap 'exit 130' INT TERM

# Starts a peer on $port and waits (30 s at most) until it accepts.
start_peer() {
  local script
  case "$1" in
    y-websocket) script=node_modules/y-websocket/bin/server.js ;;
    hocuspocus) script=hocuspocus.js ;;
    relay) script=relay.js ;;
  esac
  (cd bench/peers && HOST=127.0.0.1 PORT=$port exec node "$script") >/dev/null &
  peer_pid=$!
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not listen on $port within 30 s" >&2
  exit 1
}

for round in $(seq "$first_round" "$((first_round + rounds - 1))"); do
  for rate in $rates; do
    per_writer=$((rate / writers))
    for server in $servers; do
      name=$server-$rate-$round
      before=$(cut -d' ' -f1-3 /proc/loadavg)
      common=(--duration "$seconds" --report "peers/$name")
      case "$server" in
        gitmind-nofsync)
          "$load" "${common[@]}" --codec bin --server-args --no-fsync fanout \
            --subscribers "$subscribers" --writers "$writers" --rate "$per_writer" >/dev/null ||
            echo "$name failed" >&2
          ;;
        gitmind-bin | gitmind-json)
          "$load" "${common[@]}" --codec "${server#gitmind-}" fanout \
            --subscribers "$subscribers" --writers "$writers" --rate "$per_writer" >/dev/null ||
            echo "$name failed" >&2
          ;;
        *)
          start_peer "$server"
          "$load" "${common[@]}" --server "ws://127.0.0.1:$port" --server-pid "$peer_pid" \
            peers --protocol "$server" \
            --subscribers "$subscribers" --writers "$writers" --rate "$per_writer" >/dev/null ||
            echo "$name failed" >&2
          stop_peer
          ;;
      esac
      after=$(cut -d' ' -f1-3 /proc/loadavg)
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$server" "$rate" "$round" "$before" "$after" >>"$out/runs.tsv"
      echo "$name: load $before -> $after"
    done
  done
done
