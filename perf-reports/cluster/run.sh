#!/usr/bin/env bash
# The runs behind perf-reports/cluster.md: fan-out and confirmation latency
# of one server alone against three nodes of a cluster (docs/scale-out.md),
# the same load, in alternation, on loopback. Release builds:
#   cargo build --release -p gitmind-server -p gitmind-bench
# Usage: perf-reports/cluster/run.sh [ROUNDS]   (env: SUBS WRITERS RATE DUR)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${CARGO_TARGET_DIR:-target}/release
rounds=${1:-3}
subs=${SUBS:-300} writers=${WRITERS:-6} rate=${RATE:-10} dur=${DUR:-20}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A gitmind-server in the background; its address in $work/$1.addr, its pid in $work/$1.pid.
start_server() {
  local name=$1; shift
  "$bin/gitmind-server" --port 0 --print-addr "$@" >"$work/$name.addr" 2>"$work/$name.log" &
  pids+=($!)
  echo $! >"$work/$name.pid"
  for _ in $(seq 1 300); do
    [ -s "$work/$name.addr" ] && return 0
    sleep 0.1
  done
  echo "$name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}
addr() { echo "ws://$(head -1 "$work/$1.addr")"; }
# CPU seconds (user + system) each server and nats-server used so far,
# appended to $out/cpu.txt under the run's name.
cpu_of() {
  local run=$1 total=0 line="" tick; tick=$(getconf CLK_TCK)
  for p in "${pids[@]}"; do
    local t; t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    line+=" $(ps -o comm= -p "$p" 2>/dev/null)=$(echo "scale=2; $t / $tick" | bc)s"
    total=$((total + t))
  done
  echo "$run:$line total=$(echo "scale=2; $total / $tick" | bc)s" >>perf-reports/cluster/cpu.txt
}
stop_servers() {
  for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
  pids=("${pids[0]}")
}

nats_port=$(free_port)
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  sleep 0.1
done

load() {
  local report=$1; shift
  "$bin/gitmind-load" fanout --subscribers "$subs" --writers "$writers" --rate "$rate" \
    --duration "$dur" --report "cluster/$report" --json "perf-reports/cluster/$report.json" "$@" >/dev/null
}

{
  echo "# CPU seconds per process from its start to the end of the run (nats-server from the first run's start)"
  echo "# commit $(git rev-parse --short=12 HEAD), $(nproc) cores, $(uname -srm), load average $(cut -d' ' -f1-3 /proc/loadavg)"
} >perf-reports/cluster/cpu.txt
for round in $(seq 1 "$rounds"); do
  start_server alone --data-dir "$work/alone-$round"
  load "alone-$round" --server "$(addr alone)" --server-pid "$(cat "$work/alone.pid")"
  cpu_of "alone-$round"
  stop_servers
  for n in 0 1 2; do
    start_server "n$n" --data-dir "$work/cluster-$round" --cluster "nats://127.0.0.1:$nats_port" --node "r$round-n$n"
  done
  # Subscriber 0 joins n0 first: n0 owns the graph, n1 and n2 follow.
  load "three-$round" --server "$(addr n0)" --server-pid "$(cat "$work/n0.pid")" \
    --also-server "$(addr n1)" --also-server "$(addr n2)"
  cpu_of "three-$round"
  stop_servers
done
