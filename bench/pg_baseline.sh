#!/usr/bin/env bash
# PostgreSQL groundwork for issue 15, measured before any Rust: on a
# throw-away cluster with the test settings (fsync=on, synchronous_commit=on,
# pg_stat_statements) and the proposed schema (bench/pg/schema.sql), pgbench
# runs side by side
#   (a) the baseline: one INSERT of a webhook-sized request row per transaction;
#   (b) the batched write: one INSERT ... SELECT FROM unnest(...) of 64 rows
#       per transaction (b1 requests only; b2 requests + deliveries + the
#       node's depth counter in one statement), reported as rows/s;
#   (c) the claim: a CTE taking 16 due deliveries FOR UPDATE SKIP LOCKED and
#       leasing them with a new lease generation, on 1M pending + 1M done,
#       latency p50/p99 from pgbench's per-transaction log.
# Writes a markdown report to bench/results/pg-<time>.md and prints it.
# Knobs: RUNS (3), SECS (10), CLIENTS ("64 256"), CLAIM_CLIENTS ("16 64"),
# WRITES ("a b1 b2"), CLAIM (1; 0 skips the claim).
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-3}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-"64 256"}
CLAIM_CLIENTS=${CLAIM_CLIENTS:-"16 64"}
WRITES=${WRITES:-"a b1 b2"}
CLAIM=${CLAIM:-1}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
USER_=hookd-test
id "$USER_" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$USER_"

W=$(mktemp -d /tmp/hookd-pgbench.XXXXXX)
chown "$USER_" "$W"
PORT=$((20000 + RANDOM % 10000))
as_pg() { runuser -u "$USER_" -- "$@"; }
cleanup() { as_pg "$BIN/pg_ctl" -D "$W/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$W"; }
trap cleanup EXIT

t0=$(date +%s.%N)
as_pg "$BIN/initdb" -D "$W/data" -U hookd --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
cat >>"$W/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$W'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_preload_libraries = 'pg_stat_statements'
max_connections = 300
shared_buffers = 256MB
max_wal_size = 4GB
CONF
as_pg "$BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w -t 30 start >/dev/null
t1=$(date +%s.%N)
PSQL=("$BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$W" -p "$PORT" -U hookd -d postgres)
"${PSQL[@]}" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
"${PSQL[@]}" -f pg/schema.sql >/dev/null
startup=$(echo "$t1 - $t0" | bc)

# A 1 KiB body and ~300 bytes of headers, sent by the client as parameters.
BODY=$(head -c 768 /dev/urandom | base64 -w0)
HEADERS=$(head -c 225 /dev/urandom | base64 -w0)
BODIES="{$(for _ in $(seq 64); do printf '%s,' "$BODY"; done | sed 's/,$//')}"

cat >"$W/a.sql" <<'SQL'
\set id random(1, 4611686018427387903)
INSERT INTO requests (id, hook, headers, body, dedup_id, replay_key)
VALUES (:id, 'gh', convert_to(:headers, 'UTF8'), convert_to(:body, 'UTF8'),
        md5(:id::text), sha256(convert_to(:id::text, 'UTF8')));
SQL
cat >"$W/b1.sql" <<'SQL'
\set base random(1, 72057594037927935)
INSERT INTO requests (id, hook, headers, body, dedup_id, replay_key)
SELECT :base::bigint * 64 + i, 'gh', convert_to(:headers, 'UTF8'), convert_to(b, 'UTF8'),
       md5((:base::bigint * 64 + i)::text), sha256(convert_to((:base::bigint * 64 + i)::text, 'UTF8'))
FROM unnest(:bodies::text[]) WITH ORDINALITY AS u(b, i);
SQL
cat >"$W/b2.sql" <<'SQL'
\set base random(1, 72057594037927935)
WITH r AS (
  INSERT INTO requests (id, hook, headers, body, dedup_id, replay_key)
  SELECT :base::bigint * 64 + i, 'gh', convert_to(:headers, 'UTF8'), convert_to(b, 'UTF8'),
         md5((:base::bigint * 64 + i)::text), sha256(convert_to((:base::bigint * 64 + i)::text, 'UTF8'))
  FROM unnest(:bodies::text[]) WITH ORDINALITY AS u(b, i)
  RETURNING id, hook
), d AS (
  INSERT INTO deliveries (request_id, route, hook)
  SELECT id, 'app', hook FROM r
  RETURNING 1
)
INSERT INTO depth_counts (node, hook, route, state, n)
SELECT 'node-' || :client_id, 'gh', 'app', 'pending', count(*) FROM d
ON CONFLICT (node, hook, route, state) DO UPDATE SET n = depth_counts.n + excluded.n;
SQL
cat >"$W/c.sql" <<'SQL'
WITH due AS (
  SELECT request_id, route FROM deliveries
  WHERE state = 'pending' AND seq IS NULL AND next_attempt <= now()
  ORDER BY next_attempt
  LIMIT 16
  FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET state = 'leased', lease_owner = 'node-' || :client_id, lease_gen = d.lease_gen + 1,
    lease_expiry = now() + interval '60 seconds', attempts = d.attempts + 1
FROM due
WHERE d.request_id = due.request_id AND d.route = due.route
RETURNING d.request_id, d.lease_gen;
SQL

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# pgbench in prepared mode: the body travels as a parameter each time.
bench() { # script clients -> "tps p99_ms statements_per_tx" of one run
  local script=$1 c=$2 log="$W/log"
  rm -rf "$log"; mkdir -p "$log"; chown "$USER_" "$log"
  "${PSQL[@]}" -c "SELECT pg_stat_statements_reset()" >/dev/null
  local out tps p99 stmts txs
  out=$("$BIN/pgbench" -n -M prepared -h "$W" -p "$PORT" -U hookd -c "$c" -j 2 -T "$SECS" \
    -D "body=$BODY" -D "headers=$HEADERS" -D "bodies=$BODIES" \
    -l --log-prefix="$log/tx" -f "$W/$script.sql" postgres 2>&1)
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  txs=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  p99=$(cat "$log"/tx* | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {printf "%.1f", v[int(NR*0.99)]/1000}')
  p50=$(cat "$log"/tx* | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {printf "%.1f", v[int(NR*0.5)]/1000}')
  stmts=$("${PSQL[@]}" -c "SELECT sum(calls) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'")
  echo "$tps $p50 $p99 $(echo "scale=2; $stmts / $txs" | bc)"
}

REPORT=results/pg-$(date -u +%Y-%m-%dT%H%M%SZ).md
{
  echo "# PostgreSQL baseline and proposed schema ($(date -u +%FT%TZ))"
  echo
  echo "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}'), fsync=on, synchronous_commit=on;"
  echo "cluster start (initdb --no-sync + pg_ctl start -w): ${startup} s; ${RUNS} runs of ${SECS} s, medians."
  echo
  echo "| write | clients | tx/s | rows/s | p50 ms | p99 ms | statements per tx (pg_stat_statements) |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
} >"$REPORT"
for c in $CLIENTS; do
  for s in $WRITES; do
    rows=1; [ "$s" = a ] || rows=64
    : >"$W/runs"
    for _ in $(seq "$RUNS"); do bench "$s" "$c" >>"$W/runs"; done
    tps=$(awk '{print $1}' "$W/runs" | median)
    p50=$(awk '{print $2}' "$W/runs" | median)
    p99=$(awk '{print $3}' "$W/runs" | median)
    st=$(awk '{print $4}' "$W/runs" | median)
    echo "| $s | $c | $tps | $(echo "$tps * $rows" | bc) | $p50 | $p99 | $st |" >>"$REPORT"
  done
done

[ "$CLAIM" = 1 ] || { cat "$REPORT"; exit 0; }
# (c): 1M pending (due over the last hour) + 1M done deliveries.
"${PSQL[@]}" -c "TRUNCATE deliveries, depth_counts" >/dev/null
"${PSQL[@]}" -c "INSERT INTO deliveries (request_id, route, hook, state, next_attempt, finished_at)
  SELECT g, 'app', 'gh', CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'done' END,
         now() - interval '1 hour' + (g % 3600) * interval '1 second',
         CASE WHEN g % 2 = 1 THEN now() END
  FROM generate_series(1, 2000000) g" >/dev/null
"${PSQL[@]}" -c "VACUUM ANALYZE deliveries" >/dev/null
{
  echo
  echo "Claim (c), 16 rows per claim, on $("${PSQL[@]}" -c "SELECT count(*) FILTER (WHERE state='pending') || ' pending + ' || count(*) FILTER (WHERE state='done') || ' done' FROM deliveries"); each run starts there (leases undone, VACUUM)."
  echo
  echo "| clients | claims/s | rows/s | p50 ms | p99 ms | statements per claim |"
  echo "| --- | --- | --- | --- | --- | --- |"
} >>"$REPORT"
for c in $CLAIM_CLIENTS; do
  : >"$W/runs"
  for _ in $(seq "$RUNS"); do
    bench c "$c" >>"$W/runs"
    "${PSQL[@]}" -c "UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_expiry = NULL WHERE state = 'leased'" >/dev/null
    "${PSQL[@]}" -c "VACUUM deliveries" >/dev/null
  done
  tps=$(awk '{print $1}' "$W/runs" | median)
  echo "| $c | $tps | $(echo "$tps * 16" | bc) | $(awk '{print $2}' "$W/runs" | median) | $(awk '{print $3}' "$W/runs" | median) | $(awk '{print $4}' "$W/runs" | median) |" >>"$REPORT"
done
cat "$REPORT"
