#!/usr/bin/env bash
# A snapshot held for 3 minutes on the PostgreSQL spool (issue 15): runs
# tests/pg_faults.rs' a_snapshot_held_three_minutes_slows_nothing_acked_and_recovers
# (real hookd node, throw-away cluster, a REPEATABLE READ session holding
# its snapshot while paced load runs) and keeps its table: acked and
# delivered per second, 503s and p99 per 30 s, n_dead_tup of requests,
# deliveries, instances and depth_counts over time, and after release +
# VACUUM. Writes bench/results/pg-snapshot-<time>.md and prints it.
# CARGO_TARGET_DIR is honoured as cargo does.
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench/results/pg-snapshot-$(date -u +%Y-%m-%dT%H%M%SZ).md"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
HOOKD_PG_SNAPSHOT=1 HOOKD_PG_SNAPSHOT_REPORT="$tmp" \
  cargo test --test pg_faults a_snapshot_held_three_minutes -- --nocapture --test-threads 1
{
  echo "# PostgreSQL spool: a snapshot held 3 minutes ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, git $(git rev-parse --short HEAD))"
  echo
  cat "$tmp"
} >"$out"
cat "$out"
