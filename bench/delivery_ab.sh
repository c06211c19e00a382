#!/usr/bin/env bash
# Delivery throughput of one or more hookd binaries on the same backlog:
# fills a spool once with real signed POSTs (delivery parked on an upstream
# that never answers), then for each binary copies it, starts hookd with a
# forward to bare_hyper (answers 204 at once) and times until nothing is
# pending or leased. Prints items/s and group-commit counts.
#
# Usage: bench/delivery_ab.sh HOOKD_BIN [HOOKD_BIN...]
#   CONC=16 (hook concurrency) FILL_SECONDS=3 DIR=/var/tmp/hookd-delivery-ab
#   PROBE=1: a light ingest load during each drain (bench/probe.py, one POST
#   every 5 ms; the probe's items count as open, so the drain ends with them)
#   BARE=path to bare_hyper (default: ${CARGO_TARGET_DIR:-target}/release/examples/bare_hyper)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(( $# >= 1 )) || { echo "usage: $0 HOOKD_BIN [HOOKD_BIN...]" >&2; exit 2; }
DIR=${DIR:-/var/tmp/hookd-delivery-ab}
CONC=${CONC:-16}
FILL_SECONDS=${FILL_SECONDS:-3}
BARE=${BARE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bare_hyper}
PORT=9120 BLACKHOLE=9123 UPSTREAM=9124
SECRET=bench-secret-not-for-production

rm -rf "$DIR"
mkdir -p "$DIR"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
cleanup() {
  stop_all
  rm -rf "$DIR"
}
trap cleanup EXIT

printf '%s' "$SECRET" >"$DIR/secret"
chmod 600 "$DIR/secret"

export BENCH_BODY="$ROOT/bench/body.json"
BENCH_SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r <"$BENCH_BODY" | cut -d' ' -f1)"
export BENCH_SIG
hookd_config "$DIR" "$PORT" "$DIR/fill.db" "$BLACKHOLE" "$CONC" 30s >"$DIR/fill.toml"
python3 "$ROOT/bench/blackhole.py" $BLACKHOLE & BH=$!; PIDS+=("$BH")
"$1" serve --config "$DIR/fill.toml" >"$DIR/fill.log" 2>&1 & FP=$!; PIDS+=("$FP")
wait_port $PORT
wrk -t2 -c64 -d"${FILL_SECONDS}s" -s "$ROOT/bench/post.lua" "http://127.0.0.1:$PORT/hooks/gh" | grep '^BENCH'
stop_pid "$FP"
stop_pid "$BH"
"$BARE" 127.0.0.1:$UPSTREAM >"$DIR/upstream.log" & PIDS+=("$!")
wait_port $UPSTREAM
hookd_config "$DIR" "$PORT" "$DIR/deliver.db" "$UPSTREAM" "$CONC" 30s >"$DIR/deliver.toml"
for bin in "$@"; do
  rm -f "$DIR"/deliver.db*
  cp "$DIR/fill.db" "$DIR/deliver.db"
  [[ -f $DIR/fill.db-wal ]] && cp "$DIR/fill.db-wal" "$DIR/deliver.db-wal"
  n=$(open_items "$bin" "$DIR/deliver.toml")
  t0=$(date +%s.%N)
  "$bin" serve --config "$DIR/deliver.toml" >"$DIR/deliver.log" 2>&1 & DP=$!; PIDS+=("$DP")
  if [[ -n ${PROBE:-} ]]; then
    wait_port $PORT
    python3 "$ROOT/bench/probe.py" --port $PORT --body "$BENCH_BODY" --sig "$BENCH_SIG" >"$DIR/probe.txt" & PROBE_PID=$!
  fi
  left=$n
  busy0=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
  for _ in $(seq 1200); do
    sleep 0.05
    if v=$(open_items_http "$DIR" $PORT); then left=$v; fi
    [[ $left == 0 ]] && break
  done
  t=$(echo "$(date +%s.%N) - $t0" | bc)
  if [[ -n ${PROBE:-} ]]; then kill -TERM "$PROBE_PID"; wait "$PROBE_PID" || true; fi
  busy=$(awk -v b0="$busy0" '$1 == "cpu" { split(b0, a, " "); b = $2 + $3 + $4 + $7 + $8 - a[1]; i = $5 + $6 - a[2]; printf "%.0f", 100 * b / (b + i) }' /proc/stat)
  left=$(open_items "$bin" "$DIR/deliver.toml")
  commits=$(metrics_text "$DIR" "$PORT" | awk '$1 == "hookd_commit_batch_size_count" { n = $2 }
    $1 == "hookd_commit_latency_seconds_sum" { s = $2 } END { printf "%d group commits, %.2f s inside them", n, s }')
  stop_pid "$DP"
  awk -v b="$bin" -v n="$n" -v t="$t" -v c="$commits" -v l="$left" -v k="$CONC" \
    -v u="$busy" 'BEGIN { printf "%s: %d items in %.2f s = %.0f/s (concurrency %d, %s, %d left, both cores %d%% busy)\n", b, n - l, t, (n - l) / t, k, c, l, u }'
  if [[ -n ${PROBE:-} ]]; then echo "  $(cat "$DIR/probe.txt")"; fi
done
