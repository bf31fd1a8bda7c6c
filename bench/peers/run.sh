#!/bin/sh
# Starts one peer on 127.0.0.1 for SECONDS (default 120) and stops it, then
# prints the CPU time it used (user + system, from /proc), for
# perf-reports/peers.md. Run by hand, never in CI:
#
#   npm ci                      # once, from package-lock.json
#   ./run.sh y-websocket 1234 120
#   ./run.sh hocuspocus  1235 120
#   ./run.sh relay       1236 120
set -eu
cd "$(dirname "$0")"
peer=${1:?usage: run.sh y-websocket|hocuspocus|relay PORT [SECONDS]}
port=${2:?port}
seconds=${3:-120}
case "$peer" in
  y-websocket) set -- node node_modules/y-websocket/bin/server.js ;;
  hocuspocus) set -- node hocuspocus.js ;;
  relay) set -- node relay.js ;;
  *) echo "unknown peer $peer" >&2; exit 2 ;;
esac
HOST=127.0.0.1 PORT=$port "$@" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT INT TERM
sleep "$seconds"
ticks=$(getconf CLK_TCK)
# Fields 14 and 15 of /proc/PID/stat: user and system time, in ticks.
awk -v t="$ticks" -v p="$peer" '{ printf "%s cpu_seconds %.2f\n", p, ($14 + $15) / t }' "/proc/$pid/stat"
