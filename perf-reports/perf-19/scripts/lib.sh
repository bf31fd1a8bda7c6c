# Sourced by the scripts here: start_server VARIANT starts /work/perf-bins/server-VARIANT
# on a random 127.0.0.1 port in a fresh data directory and waits until it serves.
# Sets D (scratch directory), PORT and SP (the server's pid).
start_server() {
  D=$(mktemp -d /tmp/perf19-XXXX)
  PORT=$((40000 + RANDOM % 20000))
  /work/perf-bins/server-$1 --port $PORT --data-dir $D/data > $D/server.log 2>&1 &
  SP=$!
  for i in $(seq 100); do grep -q serving $D/server.log && break; sleep 0.1; done
}
