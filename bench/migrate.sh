#!/usr/bin/env bash
# bench/migrate.sh: how long an upgrade's schema migration holds the spool's
# write lock, and what the old binary's senders see meanwhile.
#
# In a hand-off the successor migrates the spool while the old process still
# commits webhooks; a migration that rebuilds a table holds the write lock for
# the whole rebuild, and the old process's commits wait on it (busy timeout
# 10 s, then the commit fails: 503). Per size N: the old binary (of OLD_COMMIT)
# creates a spool and takes one real signed webhook; its row is copied to N
# items in state done (1 KiB bodies, made inside SQLite in one transaction);
# then for each run a copy of that spool is served by the old binary under a
# paced signed load, the new binary is renamed over the old one's path and
# `hookd reload` hands off to it (bench/migrate.py). Recorded per run: the
# migration time (reload to the successor's READY=1), the latency p99/max and
# the non-2xx/errors of the requests in flight during it; then the schema
# version after, and that the spool holds N + every acknowledged webhook.
# Not part of CI. Uses only 127.0.0.1; every process it starts is stopped.
#
# Usage: bench/migrate.sh [OLD_COMMIT]   (default d38c895: schema v2, so the
#        migration measured is v2 -> today's, with v4's rebuild of items)
# Knobs (environment): SIZES="100000 1000000" RUNS=3 RATE=200 CONNS=8
#   BENCH_DIR=/var/tmp/hookd-migrate.PID KEEP=1 SKIP_BUILD=1 OUT=path.md
# The old binary is built once in $CARGO_TARGET_DIR/tmp/old-<12 hex>/ by
# tests/build-old.sh (the place tests/upgrade.rs uses).
# Needs: python3, sqlite3, openssl, curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
OLD_REF=${1:-d38c895}
SIZES=${SIZES:-"100000 1000000"}
RUNS=${RUNS:-3}
RATE=${RATE:-200}
CONNS=${CONNS:-8}
WORK=${BENCH_DIR:-/var/tmp/hookd-migrate.$$}
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-$BENCH/results/migrate-$STAMP.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
P_HOOKD=9150 P_BLACKHOLE=9151
SECRET=bench-secret-not-for-production

for tool in python3 sqlite3 openssl curl; do
  command -v "$tool" >/dev/null || { echo "migrate.sh: needs $tool" >&2; exit 2; }
done

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
cleanup() {
  stop_all
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for p in $P_HOOKD $P_BLACKHOLE; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "migrate.sh: 127.0.0.1:$p is already in use" >&2; exit 2; fi
done

# ---- binaries ----------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building the new release binary"
  (cd "$ROOT" && cargo build --release --locked --bin hookd)
fi
OLD_BASE=$(bash "$ROOT/tests/build-old.sh" "$TARGET_DIR/tmp" "$OLD_REF")
OLD_COMMIT=$(git -C "$OLD_BASE/src" rev-parse --short=12 HEAD)
NEW_COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD)
# Copies, so that a rebuild in the target dir during the run changes nothing.
mkdir -p "$WORK/bin" "$(dirname "$OUT")"
cp "$OLD_BASE/target/release/hookd" "$WORK/bin/hookd-old"
cp "$TARGET_DIR/release/hookd" "$WORK/bin/hookd-new"
OLD=$WORK/bin/hookd-old NEW=$WORK/bin/hookd-new

# ---- setup -------------------------------------------------------------------
umask 077
printf '%s' "$SECRET" >"$WORK/secret"
BODY="$BENCH/body.json"
SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r <"$BODY" | cut -d' ' -f1)"
# Delivery parks one item on an upstream that never answers: the spool's only
# writer besides the migration is the old process's ingest.
hookd_config "$WORK" $P_HOOKD "$WORK/spool.db" $P_BLACKHOLE 1 10m >"$WORK/hookd.toml"
python3 "$BENCH/blackhole.py" $P_BLACKHOLE & PIDS+=($!)
RAW=$WORK/raw.txt
: >"$RAW"
FS_TYPE=$(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')
MACHINE="nproc $(nproc), $(uname -sr), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); spool in $WORK ($FS_TYPE)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "old $OLD_COMMIT, new $NEW_COMMIT; $MACHINE; load average $LOAD_BEFORE"

# make_template N: $WORK/template-N.db, the old binary's schema with N items.
make_template() {
  local n=$1 t=$WORK/template-$1.db pid code
  rm -f "$WORK"/spool.db*
  "$OLD" serve --config "$WORK/hookd.toml" >>"$WORK/hookd-template.log" 2>&1 &
  pid=$!
  wait_port $P_HOOKD
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "http://127.0.0.1:$P_HOOKD/hooks/gh" \
    -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' -H "X-Hub-Signature-256: $SIG" \
    --data-binary "@$BODY")
  stop_pid "$pid"
  [ "$code" = 202 ] || { echo "migrate.sh: the old binary answered $code to the first webhook (log: $WORK/hookd-template.log)" >&2; exit 1; }
  # The real row's headers and body, copied; the others done (a delivered
  # item kept for retention), so no one delivers them during the run.
  sqlite3 "$WORK/spool.db" >/dev/null <<EOF
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE k(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM k WHERE i < $n)
INSERT INTO items (hook, dedup_id, received_at, headers, body, state, attempts, next_attempt, updated_at)
SELECT r.hook, NULL, r.received_at, r.headers, r.body, 'done', 1, 0, r.received_at
  FROM k, (SELECT * FROM items ORDER BY id LIMIT 1) AS r;
INSERT INTO item_counts (hook, state, n) VALUES ('gh', 'done', $n - 1)
  ON CONFLICT (hook, state) DO UPDATE SET n = n + excluded.n;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
EOF
  mv "$WORK/spool.db" "$t"
  rm -f "$WORK"/spool.db-*
}

for n in $SIZES; do
  t0=$(date +%s.%N)
  make_template "$n"
  log "$n items: made in $(echo "scale=1; ($(date +%s.%N) - $t0) / 1" | bc)s, $(du -sh "$WORK/template-$n.db" | cut -f1), schema v$(sqlite3 "$WORK/template-$n.db" 'PRAGMA user_version')"
  for run in $(seq "$RUNS"); do
    rm -f "$WORK"/spool.db*
    cp "$WORK/template-$n.db" "$WORK/spool.db"
    line=$(python3 "$BENCH/migrate.py" --old "$OLD" --new "$NEW" --bin "$WORK/bin/hookd" \
      --config "$WORK/hookd.toml" --port $P_HOOKD --body "$BODY" --sig "$SIG" \
      --rate "$RATE" --conns "$CONNS" --log "$WORK/hookd-$n-$run.log" | tee -a "$WORK/migrate-$n-$run.txt" | grep '^MIGRATE')
    acked=$(sed -n 's/.* acked=\([0-9]*\).*/\1/p' <<<"$line")
    # Read after the successor stopped: the spool must hold every item and every ack.
    items=$(sqlite3 "$WORK/spool.db" 'SELECT count(*) FROM items')
    schema=$(sqlite3 "$WORK/spool.db" 'PRAGMA user_version')
    # Negative: committed, but the client had given up before the answer.
    lost=$(( n + acked - items ))
    echo "size=$n run=$run ${line#MIGRATE } items_after=$items schema_after=$schema lost=$lost" | tee -a "$RAW" >&2
  done
done
stop_all
PIDS=()

# ---- report ------------------------------------------------------------------
# med N KEY: the median of KEY= over the runs of size N, and every run in brackets.
med() {
  python3 - "$RAW" "$1" "$2" <<'EOF'
import statistics, sys
raw, n, key = sys.argv[1:]
vals = []
for line in open(raw):
    kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
    if kv.get("size") == n and key in kv:
        vals.append(kv[key])
nums = []
for v in vals:
    try:
        nums.append(float(v))
    except ValueError:
        pass
m = statistics.median(nums) if len(nums) == len(vals) and nums else "?"
m = f"{m:g}" if isinstance(m, float) else m
print(f"{m} [{', '.join(vals)}]")
EOF
}
{
  echo "## Migration lock ($STAMP)"
  echo
  echo "\`bench/migrate.sh $OLD_REF\` (SIZES=\"$SIZES\" RUNS=$RUNS RATE=$RATE CONNS=$CONNS): old $OLD_COMMIT"
  echo "(schema v$(sqlite3 "$WORK/template-${SIZES%% *}.db" 'PRAGMA user_version')) hands off to new $NEW_COMMIT under a paced signed load of $RATE req/s over $CONNS"
  echo "connections. $MACHINE; load average before $LOAD_BEFORE. Medians of $RUNS runs, every run in brackets."
  echo
  echo "| items | migration ms (reload to READY) | no ack for (ms) | requests during it | p99 ms | max ms | non-2xx | errors | reload rc | lost | schema after |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for n in $SIZES; do
    echo "| $n | $(med "$n" migration_ms) | $(med "$n" during_no_ack_ms) | $(med "$n" during_requests) | $(med "$n" during_p99_ms) | $(med "$n" during_max_ms) | $(med "$n" during_non2xx) | $(med "$n" during_errors) | $(med "$n" reload_rc) | $(med "$n" lost) | $(med "$n" schema_after) |"
  done
  echo
  echo "Raw lines:"
  echo
  echo '```'
  cat "$RAW"
  echo '```'
} >"$OUT"
cat "$OUT"
echo "report: $OUT" >&2
