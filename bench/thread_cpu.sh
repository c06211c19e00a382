#!/usr/bin/env bash
# Where hookd's ingest time goes: runs one wrk load against a fresh hookd and
# prints the CPU each hookd thread used (from /proc/PID/task/*/stat), the
# group-commit count, mean batch size and time inside commits (from /metrics).
# Writer busy time minus writer CPU is, to a good approximation, fsync wait.
#
# Usage: bench/thread_cpu.sh [SPOOL_DIR] [CONNS] [SECONDS]
#   SPOOL_DIR defaults to /var/tmp/hookd-threads (a disk); give a tmpfs such as
#   /dev/shm/hookd-threads to see the ingest path with fsync almost free.
#   HOOKD=path overrides the binary (default: ${CARGO_TARGET_DIR:-target}/release/hookd).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-/var/tmp/hookd-threads}
CONNS=${2:-64}
SECONDS_=${3:-10}
HOOKD=${HOOKD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/hookd}
PORT=9110 UPSTREAM=9113
SECRET=bench-secret-not-for-production

mkdir -p "$DIR"
rm -f "$DIR"/spool.db*
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
cleanup() {
  stop_all
  [[ -n "${KEEP:-}" ]] || rm -rf "$DIR"
}
trap cleanup EXIT

printf '%s' "$SECRET" >"$DIR/secret"
chmod 600 "$DIR/secret"
hookd_config "$DIR" "$PORT" "$DIR/spool.db" "$UPSTREAM" 1 10m >"$DIR/hookd.toml"
python3 "$ROOT/bench/blackhole.py" $UPSTREAM & PIDS+=("$!")
"$HOOKD" serve --config "$DIR/hookd.toml" >"$DIR/hookd.log" 2>&1 & HP=$!; PIDS+=("$HP")
wait_port $PORT

export BENCH_BODY="$ROOT/bench/body.json"
BENCH_SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r <"$BENCH_BODY" | cut -d' ' -f1)"
export BENCH_SIG
ticks() { for t in /proc/"$HP"/task/*; do echo "$(cat "$t/comm") $(awk '{ print $14 + $15 }' "$t/stat")"; done; }
ticks >"$DIR/before"
wrk -t2 -c"$CONNS" -d"${SECONDS_}s" --latency -s "$ROOT/bench/post.lua" "http://127.0.0.1:$PORT/hooks/gh" | grep '^BENCH'
ticks >"$DIR/after"
hz=$(getconf CLK_TCK)
echo "spool on $(df -T "$DIR" | awk 'NR == 2 { print $2 }'); CPU seconds per hookd thread during the run:"
paste "$DIR/before" "$DIR/after" | awk -v hz="$hz" '{ printf "  %-16s %.2f s\n", $1, ($4 - $2) / hz }'
metrics_text "$DIR" "$PORT" | awk '
  $1 == "hookd_commit_batch_size_sum" { items = $2 } $1 == "hookd_commit_batch_size_count" { n = $2 }
  $1 == "hookd_commit_latency_seconds_sum" { busy = $2 }
  END { printf "commits %d, mean batch %.1f, time inside commits %.2f s (%.2f ms each)\n", n, items / n, busy, 1000 * busy / n }'
