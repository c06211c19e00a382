#!/usr/bin/env bash
# Soak: the fault campaign (tests/fault_campaign.rs) N times, each run with a
# fresh seed, and per-scenario totals appended to bench/results/soak.md
# (RELIABILITY.md points there). Not part of CI.
#
# Usage: bench/soak.sh N          (from anywhere in the repository; root for
#                                  the loop-mount scenarios)
# Knobs (environment): SOAK_FILTER=<test name filter> (default: all),
#   HOOKD_FAULT_KILLS, HOOKD_FAULT_CUTS (passed through), OUT=path.md,
#   KEEP_LOGS=dir (keep each run's output there)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${1:?usage: bench/soak.sh N}
case $N in '' | *[!0-9]*) echo "soak.sh: N must be a count, got '$N'" >&2; exit 2 ;; esac
OUT=${OUT:-$ROOT/bench/results/soak.md}
FILTER=${SOAK_FILTER:-}
LOGS=${KEEP_LOGS:-$(mktemp -d /tmp/hookd-soak.XXXXXX)}
mkdir -p "$LOGS"
cd "$ROOT"

cargo test --release --test fault_campaign --no-run >/dev/null 2>&1 ||
  { echo "soak.sh: the campaign does not build" >&2; cargo test --release --test fault_campaign --no-run; exit 1; }

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)
seeds=()
for i in $(seq "$N"); do
  seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
  seeds+=("$seed")
  log="$LOGS/run-$i.log"
  echo "soak: run $i/$N, HOOKD_TEST_SEED=$seed"
  # A failing run is counted, not fatal: the totals say how many.
  HOOKD_TEST_SEED=$seed cargo test --release --test fault_campaign -- --nocapture $FILTER \
    >"$log" 2>&1 || true
  grep -E '^test result:' "$log" || echo "  (no test result line: see $log)"
done
secs=$(( $(date +%s) - t0 ))

# Per scenario over every run: runs seen, acked, lost, corrupt, duplicates,
# and the worst recovery. Rows are the checker's table lines
# "| scenario | fault | load | acked | lost | corrupt | dup/1k | recovery |";
# duplicates come from its detail line "[scenario] seed …, duplicates N, …".
{
  echo
  echo "## Soak $started: $N runs, ${secs} s"
  echo
  echo "\`bench/soak.sh $N\`${FILTER:+ (SOAK_FILTER=$FILTER)}, seeds: ${seeds[*]}"
  echo
  echo "| scenario | runs | acked | lost | corrupt | duplicates per 1k | worst recovery |"
  echo "|---|---|---|---|---|---|---|"
  cat "$LOGS"/run-*.log | awk -F'|' '
    /^\| / && NF >= 10 && $5 ~ /^ *[0-9]+ *$/ {
      s = $2; gsub(/^ +| +$/, "", s)
      if (!(s in runs)) order[++n] = s
      runs[s]++; acked[s] += $5; lost[s] += $6; corrupt[s] += $7
      r = $9; gsub(/[^0-9]/, "", r)
      if (r != "" && r + 0 > worst[s]) worst[s] = r + 0
    }
    /^  \[.*\] seed [0-9]+: / {
      s = $0; sub(/^  \[/, "", s); sub(/\] seed.*/, "", s)
      if (match($0, /duplicates [0-9]+/)) dups[s] += substr($0, RSTART + 11, RLENGTH - 11)
    }
    END {
      for (i = 1; i <= n; i++) {
        s = order[i]
        d = acked[s] ? dups[s] * 1000 / acked[s] : 0
        printf "| %s | %d | %d | %d | %d | %.1f | %s |\n", s, runs[s], acked[s], lost[s], corrupt[s], d, \
          (s in worst) ? worst[s] " ms" : "-"
      }
    }'
  echo
  echo "Test results per run:"
  echo
  for i in $(seq "$N"); do
    echo "- run $i (HOOKD_TEST_SEED=${seeds[$((i - 1))]}): $(grep -E '^test result:' "$LOGS/run-$i.log" | tail -n1 || echo 'no result line')"
    grep -E '^test .* FAILED$' "$LOGS/run-$i.log" | sed 's/^/  - /' || true
  done
} >>"$OUT"
echo "soak: totals appended to $OUT (logs in $LOGS)"
tail -n $((N + 20)) "$OUT"
