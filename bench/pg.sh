#!/usr/bin/env bash
# hookd on PostgreSQL (issue 15), measured side by side in one run on a
# throw-away cluster with the test harness's durability settings
# (tests/common/pg.rs: fsync=on, synchronous_commit=on, full_page_writes=on,
# pg_stat_statements):
#   - ingest req/s and p99 at CONNS connections (wrk, bench/post.lua):
#     hookd-pg (one node), hookd-sqlite (the same config with [spool] path)
#     and the baseline, pgbench with one INSERT of a webhook-sized request row
#     per transaction; interleaved round by round;
#   - statements per webhook (pg_stat_statements, sum of calls / webhooks
#     spooled) during each hookd-pg ingest run; CPU of hookd and of
#     PostgreSQL, and PostgreSQL's WAL fsyncs (pg_stat_wal), per run;
#   - delivery drain at DELIVER_CONCS (hook `concurrency`) of a backlog filled
#     by real POSTs, to bare_hyper (answers 204 at once);
#   - the claim on CLAIM_PENDING pending + as many done deliveries (rows made
#     with generate_series): pgbench running hookd's own CLAIM statement
#     (src/spool/pg/sql.rs) at CLAIM_CLIENTS claimers (p50/p99 from its
#     per-transaction log), then hookd draining that database, with the
#     claim statement's mean/max from pg_stat_statements and the commit
#     latency from /metrics;
#   - 2 nodes against 1 on one database (two wrk, half the connections each);
#   - start to READY=1 on PostgreSQL (bench/notify_start.py).
# Writes bench/results/pg-hookd-<time>.md (OUT overrides) and prints it.
# Uses only 127.0.0.1; every process and the cluster are stopped on exit.
#
# Usage: bench/pg.sh        (from anywhere in the repository)
# Knobs: RUNS=3 SECS=10 CONNS="64 256" THREADS=2 DELIVER_CONCS="16 64"
#   FILL_SECONDS=3 DELIVER_MAX=60 CLAIM_PENDING=1000000 CLAIM_MAX=16
#   CLAIM_CLIENTS="1 2" NODE_CONNS=64 STARTS=5 PORT_BASE=9210
#   PARTS="ready ingest nodes deliver claim" (a subset runs only those parts)
#   SKIP_BUILD=1 KEEP=1 (keep the work dir) BENCH_DIR=/var/tmp/hookd-pgbench.PID
# Needs: wrk, python3, curl, openssl, bc, PostgreSQL 15+ server binaries.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
RUNS=${RUNS:-3}
SECS=${SECS:-10}
CONNS=${CONNS:-"64 256"}
THREADS=${THREADS:-2}
DELIVER_CONCS=${DELIVER_CONCS:-"16 64"}
FILL_SECONDS=${FILL_SECONDS:-3}
DELIVER_MAX=${DELIVER_MAX:-60}
CLAIM_PENDING=${CLAIM_PENDING:-1000000}
CLAIM_MAX=${CLAIM_MAX:-16}
CLAIM_CLIENTS=${CLAIM_CLIENTS:-"1 2"}
NODE_CONNS=${NODE_CONNS:-64}
STARTS=${STARTS:-5}
PARTS=${PARTS:-"ready ingest nodes deliver claim"}
PORT_BASE=${PORT_BASE:-9210}
WORK=${BENCH_DIR:-/var/tmp/hookd-pgbench.$$}
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-$BENCH/results/pg-hookd-$STAMP.md}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
SECRET=bench-secret-not-for-production
PG_USER=hookd-test

P_PG=$PORT_BASE P_HPG=$((PORT_BASE + 1)) P_HSQ=$((PORT_BASE + 2)) P_BLACKHOLE=$((PORT_BASE + 3))
P_UPSTREAM=$((PORT_BASE + 4)) P_DELIVER=$((PORT_BASE + 5)) P_NODE_A=$((PORT_BASE + 6)) P_NODE_B=$((PORT_BASE + 7))
P_READY=$((PORT_BASE + 8))

for tool in wrk python3 curl openssl bc runuser; do
  command -v "$tool" >/dev/null || { echo "pg.sh: needs $tool (apt-get install -y wrk postgresql bc ...)" >&2; exit 2; }
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[[ -n $PGBIN && -x $PGBIN/initdb && -x $PGBIN/pgbench ]] || { echo "pg.sh: needs PostgreSQL's server binaries (apt-get install -y postgresql)" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
as_pg() { runuser -u "$PG_USER" -- "$@"; }
PG_STARTED=0
cleanup() {
  stop_all
  if [[ $PG_STARTED == 1 ]]; then as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true; fi
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "pg.sh: 127.0.0.1:$1 is already in use (PORT_BASE=... picks others)" >&2
    exit 2
  fi
}
for p in $P_PG $P_HPG $P_HSQ $P_BLACKHOLE $P_UPSTREAM $P_DELIVER $P_NODE_A $P_NODE_B $P_READY; do port_free "$p"; done
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
verdict() { if (( $(echo "$1" | bc) )); then echo met; else echo "NOT met"; fi; }
now() { date +%s.%N; }
# Forgets a pid the script stopped itself.
unpid() { local keep=() p; for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
part() { [[ " $PARTS " == *" $1 "* ]]; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

# ---- build -----------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --bins --examples)
fi
mkdir -p "$WORK/bin" "$(dirname "$OUT")"
chmod 755 "$WORK"
for b in "${HOOKD_BIN:-$TARGET/hookd}" "$TARGET/examples/bare_hyper"; do
  [[ -x $b ]] || { echo "pg.sh: missing $b" >&2; exit 2; }
  cp "$b" "$WORK/bin/"
done
HOOKD=$WORK/bin/$(basename "${HOOKD_BIN:-hookd}")
BARE=$WORK/bin/bare_hyper

# ---- the cluster -------------------------------------------------------------------
id "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
mkdir -p "$WORK/pg"
chown "$PG_USER" "$WORK/pg"
t0=$(now)
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U hookd --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
cat >>"$WORK/pg/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $P_PG
unix_socket_directories = '$WORK/pg'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_preload_libraries = 'pg_stat_statements'
max_connections = 300
shared_buffers = 256MB
max_wal_size = 4GB
track_wal_io_timing = on
logging_collector = off
log_min_messages = warning
CONF
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 start >/dev/null
PG_STARTED=1
CLUSTER_START=$(echo "scale=2; ($(now) - $t0) / 1" | bc)
PG_VERSION=$("$PGBIN/postgres" --version | awk '{ print $3 }')
POSTMASTER=$(head -n1 "$WORK/pg/data/postmaster.pid")
psql_() { local db=$1; shift; PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$WORK/pg" -p "$P_PG" -U hookd -d "$db" "$@"; }
psql_ postgres -c "CREATE EXTENSION pg_stat_statements" >/dev/null
newdb() { psql_ postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1 ${2:+TEMPLATE $2}" >/dev/null; psql_ "$1" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null; }
pg_url() { echo "postgres://hookd@127.0.0.1:$P_PG/$1?sslmode=disable"; }
log "PostgreSQL $PG_VERSION on 127.0.0.1:$P_PG, started in ${CLUSTER_START}s"

# ---- configs ----------------------------------------------------------------------
umask 077
printf '%s' "$SECRET" >"$WORK/secret"
chmod 600 "$WORK/secret"
export BENCH_BODY="$BENCH/body.json"
BENCH_SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r <"$BENCH_BODY" | cut -d' ' -f1)"
export BENCH_SIG

# A hookd config on stdout: $1 listen port, $2 the [spool] lines, $3 upstream
# port, $4 hook concurrency, $5 action timeout. One GitHub-signed hook "gh".
config() {
  cat <<EOF
[server]
listen = ["127.0.0.1:$1"]
metrics_listen = ["unix:$WORK/metrics-$1.sock"]
control_socket = "$WORK/control-$1.sock"

[spool]
$2

[shutdown]
grace = "1s"

[log]
format = "plain"
level = "${HOOKD_LOG_LEVEL:-info}"

[[hook]]
name = "gh"
verify = { scheme = "github", secret_file = "$WORK/secret" }
action = { forward = "http://127.0.0.1:$3/", timeout = "$5" }
concurrency = $4
retry = { max_attempts = 10, backoff = "1s", max_backoff = "1m" }
EOF
}
pg_spool() { printf 'url = "%s"\nnode = "%s"' "$(pg_url "$1")" "$2"; }

FS_TYPE=$(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')
MACHINE="nproc $(nproc), $(uname -sr), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo); cluster, SQLite spool and logs in $WORK ($FS_TYPE)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $MACHINE; load average $LOAD_BEFORE"
RAW=$WORK/raw.txt
: >"$RAW"

# ---- CPU and WAL accounting ----------------------------------------------------------
CLK=$(getconf CLK_TCK)
# CPU seconds PostgreSQL used so far: the postmaster, its reaped children
# (pgbench's backends end with their connections) and the live ones.
cpu_pg() {
  local pids
  pids=$(cat /proc/"$POSTMASTER"/task/*/children 2>/dev/null)
  {
    awk '{ print $14 + $15 + $16 + $17 }' "/proc/$POSTMASTER/stat"
    for p in $pids; do awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || true; done
  } | awk -v k="$CLK" '{ s += $1 } END { printf "%.2f", s / k }'
}
cpu_pid() { awk -v k="$CLK" '{ printf "%.2f", ($14 + $15) / k }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Busy CPU seconds of the whole machine (every process, other work included).
cpu_all() { awk -v k="$CLK" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $7 + $8) / k }' /proc/stat; }
# "syncs sync_ms" of the cluster's WAL so far (pg_stat_wal, track_wal_io_timing).
wal_sync() { psql_ postgres -F' ' -c "SELECT wal_sync, round(wal_sync_time::numeric, 1) FROM pg_stat_wal"; }
# Sum and count of a /metrics histogram: hist NAME FILE
hist() { awk -v n="$1" '$1 == n"_sum" { s = $2 } $1 == n"_count" { c = $2 } END { printf "%s %s", s + 0, c + 0 }' "$2"; }
# Smallest bucket bound holding 99% of the observations between two
# /metrics snapshots: hist_p99 NAME BEFORE AFTER
hist_p99() {
  awk -v n="$1" '
    FNR == 1 { f++ }
    index($1, n "_bucket{le=\"") == 1 { split($1, a, "\""); b = a[2]; if (f == 1) before[b] = $2; else { after[b] = $2; order[++k] = b } }
    index($1, n "_count") == 1 { if (f == 1) c0 = $2; else c1 = $2 }
    END { c = c1 - c0; if (c <= 0) { print "n/a"; exit } for (i = 1; i <= k; i++) { b = order[i]; if (after[b] - before[b] >= 0.99 * c) { printf "%s", b * 1000; exit } } print ">" order[k] * 1000 }' "$2" "$3"
}
open_pg() { psql_ "$1" -c "SELECT coalesce(sum(n), 0) FROM depth_counts WHERE hook = 'gh' AND state IN ('pending', 'leased')"; }
spooled_pg() { psql_ "$1" -c "SELECT coalesce(sum(n), 0) FROM depth_counts WHERE hook = 'gh'"; }
# Statements PostgreSQL ran in database $1 since the last reset, but those
# about pg_stat_statements itself and the bench's own depth reads.
# Prints "all without_begin_commit".
statements() {
  psql_ "$1" -F' ' -c "SELECT coalesce(sum(calls), 0), coalesce(sum(calls) FILTER (WHERE upper(query) NOT IN ('BEGIN', 'COMMIT', 'ROLLBACK')), 0)
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
    WHERE d.datname = '$1' AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%coalesce(sum(n)%'"
}
stats_reset() { psql_ "$1" -c "SELECT pg_stat_statements_reset()" >/dev/null; }

# ---- the baseline's database and script ------------------------------------------------
newdb baseline
psql_ baseline -f "$ROOT/src/spool/pg/schema.sql" >/dev/null
BODY=$(head -c 768 /dev/urandom | base64 -w0)
HEADERS=$(head -c 225 /dev/urandom | base64 -w0)
cat >"$WORK/baseline.sql" <<'SQL'
\set id random(1, 4611686018427387903)
INSERT INTO requests (id, hook, received_at, headers, body)
VALUES (:id, 'gh', now(), convert_to(:headers, 'UTF8'), convert_to(:body, 'UTF8'));
SQL
chmod 644 "$WORK/baseline.sql" "$WORK/secret" 2>/dev/null || true
chmod 600 "$WORK/secret"
# pgbench once: "tps p50_ms p99_ms" ($1 database, $2 script, $3 clients, extra -D args after)
pgbench_run() {
  local db=$1 script=$2 c=$3 logd="$WORK/pgbench-log"
  shift 3
  rm -rf "$logd"; mkdir -p "$logd"
  local out
  out=$(cd "$logd" && "$PGBIN/pgbench" -n -M prepared -h "$WORK/pg" -p "$P_PG" -U hookd -c "$c" -j "$THREADS" -T "$SECS" \
    "$@" -l --log-prefix="$logd/tx" -f "$script" "$db" 2>&1) || { echo "pg.sh: pgbench failed: $out" >&2; return 1; }
  local tps
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
  cat "$logd"/tx* | awk '{ print $3 }' | sort -n | awk -v tps="$tps" '{ v[NR] = $1 } END { i = int(NR * 0.5); if (i < 1) i = 1; j = int(NR * 0.99); if (j < 1) j = 1; printf "%.1f %.2f %.2f\n", tps, v[i] / 1000, v[j] / 1000 }'
}

# ---- READY on PostgreSQL --------------------------------------------------------------
if part ready; then
newdb ready
config $P_READY "$(pg_spool ready a)" $P_BLACKHOLE 1 10m >"$WORK/ready.toml"
log "start to READY=1 on PostgreSQL: the first start (creates the schema), then $STARTS starts"
python3 "$BENCH/notify_start.py" --hookd "$HOOKD" --config "$WORK/ready.toml" --runs 1 \
  --log "$WORK/hookd-ready.log" | tee -a "$RAW" >"$WORK/ready-first.txt"
READY_FIRST=$(sed -n 's/^STARTUP median_ms=\([0-9.]*\).*/\1/p' "$WORK/ready-first.txt")
python3 "$BENCH/notify_start.py" --hookd "$HOOKD" --config "$WORK/ready.toml" --runs "$STARTS" \
  --log "$WORK/hookd-ready.log" | tee -a "$RAW" >"$WORK/ready.txt"
READY=$(sed -n 's/^STARTUP median_ms=\([0-9.]*\).*/\1/p' "$WORK/ready.txt")
READY_RUNS=$(sed -n 's/^STARTUP .*runs_ms=\([0-9.,]*\).*/\1/p' "$WORK/ready.txt")
READY_RSS=$(sed -n 's/^STARTUP .*median_rss_kib=\([0-9]*\).*/\1/p' "$WORK/ready.txt")
log "READY: first ${READY_FIRST} ms, then median ${READY} ms [$READY_RUNS]"
# The same on SQLite (fresh file each start), for comparison.
config $P_READY "path = \"$WORK/ready.db\"" $P_BLACKHOLE 1 10m >"$WORK/ready-sqlite.toml"
python3 "$BENCH/notify_start.py" --hookd "$HOOKD" --config "$WORK/ready-sqlite.toml" --runs "$STARTS" \
  --fresh "$WORK/ready.db" --log "$WORK/hookd-ready.log" | tee -a "$RAW" >"$WORK/ready-sqlite.txt"
READY_SQ=$(sed -n 's/^STARTUP median_ms=\([0-9.]*\).*/\1/p' "$WORK/ready-sqlite.txt")
fi

# ---- ingest, round by round ---------------------------------------------------------------
python3 "$BENCH/blackhole.py" $P_BLACKHOLE & PIDS+=($!)
wait_port $P_BLACKHOLE
# wrk once against $2 (url); prints "rps p50 p99 errors requests".
wrk_run() {
  local conns=$1 url=$2 threads=${3:-$THREADS} secs=${4:-$SECS} line
  line=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency -s "$BENCH/post.lua" "$url" \
    | tee -a "$WORK/wrk-full.txt" | grep '^BENCH ') || { echo "pg.sh: wrk failed on $url" >&2; return 1; }
  sed -E 's/.*requests=([0-9]+).*rps=([0-9.]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+) max_ms=([0-9.]+) errors=([0-9]+).*/\2 \3 \4 \6 \1/' <<<"$line"
}

: >"$WORK/ingest.tsv"
if part ingest; then
newdb ingest
config $P_HPG "$(pg_spool ingest a)" $P_BLACKHOLE 1 10m >"$WORK/ingest-pg.toml"
config $P_HSQ "path = \"$WORK/ingest.db\"" $P_BLACKHOLE 1 10m >"$WORK/ingest-sqlite.toml"
"$HOOKD" serve --config "$WORK/ingest-pg.toml" >"$WORK/hookd-ingest-pg.log" 2>&1 & HPG=$!; PIDS+=("$HPG")
"$HOOKD" serve --config "$WORK/ingest-sqlite.toml" >"$WORK/hookd-ingest-sqlite.log" 2>&1 & HSQ=$!; PIDS+=("$HSQ")
for p in $P_HPG $P_HSQ; do wait_port "$p"; done
for port in $P_HPG $P_HSQ; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -H "X-Hub-Signature-256: $BENCH_SIG" --data-binary @"$BENCH_BODY" "http://127.0.0.1:$port/hooks/gh")
  [[ $code == 202 ]] || { echo "pg.sh: hookd on $port answered $code to a signed POST" >&2; exit 1; }
done

# One measured run of $1 (pg | sqlite | baseline) at $2 connections, round $3;
# appends "server conns run rps p50 p99 errors stmts_per_webhook batch commit_ms hookd_cpu pg_cpu all_cpu wall syncs sync_ms" to ingest.tsv.
ingest_run() {
  local server=$1 conns=$2 run=$3 res rps p50 p99 errs n0 n1 st=- batch=- cms=- hc0 hc1 pc0 pc1 ac0 ac1 t0 t1 w0 w1 pid=""
  local m0="$WORK/m0.txt" m1="$WORK/m1.txt"
  [[ $server == pg ]] && pid=$HPG
  [[ $server == sqlite ]] && pid=$HSQ
  if [[ $server == pg ]]; then n0=$(spooled_pg ingest); stats_reset ingest; fi
  if [[ $server == baseline ]]; then stats_reset baseline; fi
  if [[ -n $pid ]]; then metrics_text "$WORK" "$([[ $server == pg ]] && echo $P_HPG || echo $P_HSQ)" >"$m0"; fi
  w0=$(wal_sync); hc0=$([[ -n $pid ]] && cpu_pid "$pid" || echo 0); pc0=$(cpu_pg); ac0=$(cpu_all); t0=$(now)
  case $server in
    pg) res=$(wrk_run "$conns" "http://127.0.0.1:$P_HPG/hooks/gh") ;;
    sqlite) res=$(wrk_run "$conns" "http://127.0.0.1:$P_HSQ/hooks/gh") ;;
    baseline) res=$(pgbench_run baseline "$WORK/baseline.sql" "$conns" -D "body=$BODY" -D "headers=$HEADERS"); res="$res 0 0" ;;
  esac
  t1=$(now); ac1=$(cpu_all); pc1=$(cpu_pg); hc1=$([[ -n $pid ]] && cpu_pid "$pid" || echo 0); w1=$(wal_sync)
  read -r rps p50 p99 errs _ <<<"$res"
  if [[ -n $pid ]]; then
    metrics_text "$WORK" "$([[ $server == pg ]] && echo $P_HPG || echo $P_HSQ)" >"$m1"
    read -r s0 c0 <<<"$(hist hookd_commit_latency_seconds "$m0")"; read -r s1 c1 <<<"$(hist hookd_commit_latency_seconds "$m1")"
    read -r b0 bc0 <<<"$(hist hookd_commit_batch_size "$m0")"; read -r b1 bc1 <<<"$(hist hookd_commit_batch_size "$m1")"
    cms=$(awk -v a="$s0" -v b="$s1" -v x="$c0" -v y="$c1" 'BEGIN { if (y > x) printf "%.2f", 1000 * (b - a) / (y - x); else print "-" }')
    batch=$(awk -v a="$b0" -v b="$b1" -v x="$bc0" -v y="$bc1" 'BEGIN { if (y > x) printf "%.1f", (b - a) / (y - x); else print "-" }')
  fi
  local st2=-
  if [[ $server == pg ]]; then
    local stmts stmts2
    read -r stmts stmts2 <<<"$(statements ingest)"
    n1=$(spooled_pg ingest)
    st=$(awk -v s="$stmts" -v n="$((n1 - n0))" 'BEGIN { if (n > 0) printf "%.4f", s / n; else print "-" }')
    st2=$(awk -v s="$stmts2" -v n="$((n1 - n0))" 'BEGIN { if (n > 0) printf "%.4f", s / n; else print "-" }')
    echo "ingest pg c=$conns run=$run statements=$stmts without_begin_commit=$stmts2 webhooks=$((n1 - n0))" >>"$RAW"
  fi
  if [[ $server == baseline ]]; then
    local stmts stmts2
    read -r stmts stmts2 <<<"$(statements baseline)"
    st=$(awk -v s="$stmts" -v t="$rps" -v d="$SECS" 'BEGIN { if (t > 0) printf "%.2f", s / (t * d); else print "-" }')
    st2=$st
  fi
  read -r sy0 sm0 <<<"$w0"; read -r sy1 sm1 <<<"$w1"
  local line
  line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$server" "$conns" "$run" "$rps" "$p50" "$p99" "$errs" "$st" "$batch" "$cms" \
    "$(sub "$hc1" "$hc0")" "$(sub "$pc1" "$pc0")" "$(sub "$ac1" "$ac0")" "$(sub "$t1" "$t0")" \
    "$((sy1 - sy0))" "$(sub "$sm1" "$sm0")" "$st2")
  echo "$line" >>"$WORK/ingest.tsv"
  echo "ingest $line" | tr '\t' ' ' >>"$RAW"
  log "$server c=$conns run $run: $rps/s p50 $p50 ms p99 $p99 ms errors $errs stmts/webhook $st batch $batch commit ${cms} ms"
}

for run in $(seq "$RUNS"); do
  log "ingest round $run/$RUNS"
  for conns in $CONNS; do
    for server in baseline pg sqlite; do ingest_run "$server" "$conns" "$run"; done
  done
done
INGEST_PG_ROWS=$(spooled_pg ingest)
INGEST_PG_RSS=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$HPG/status")
stop_pid "$HPG"; stop_pid "$HSQ"; unpid "$HPG"; unpid "$HSQ"
psql_ postgres -c "DROP DATABASE ingest" >/dev/null
rm -f "$WORK"/ingest.db*
fi

# ---- 2 nodes against 1 ----------------------------------------------------------------------
: >"$WORK/nodes.tsv"
half=$((NODE_CONNS / 2))
if part nodes; then
newdb nodes
config $P_NODE_A "$(pg_spool nodes a)" $P_BLACKHOLE 1 10m >"$WORK/node-a.toml"
config $P_NODE_B "$(pg_spool nodes b)" $P_BLACKHOLE 1 10m >"$WORK/node-b.toml"
"$HOOKD" serve --config "$WORK/node-a.toml" >"$WORK/hookd-node-a.log" 2>&1 & NA=$!; PIDS+=("$NA")
wait_port $P_NODE_A
"$HOOKD" serve --config "$WORK/node-b.toml" >"$WORK/hookd-node-b.log" 2>&1 & NB=$!; PIDS+=("$NB")
wait_port $P_NODE_B
by_node() { psql_ nodes -F' ' -c "SELECT coalesce(sum(n) FILTER (WHERE node = 'a'), 0), coalesce(sum(n) FILTER (WHERE node = 'b'), 0) FROM depth_counts WHERE hook = 'gh' AND state IN ('pending', 'leased', 'done', 'dead')"; }
for run in $(seq "$RUNS"); do
  log "nodes round $run/$RUNS: one node, $NODE_CONNS connections"
  read -r a0 b0 <<<"$(by_node)"
  read -r rps1 _ p99_1 _ <<<"$(wrk_run "$NODE_CONNS" "http://127.0.0.1:$P_NODE_A/hooks/gh")"
  read -r a1 b1 <<<"$(by_node)"
  log "one node: $rps1/s (a +$((a1 - a0)), b +$((b1 - b0)))"
  log "nodes round $run/$RUNS: two nodes, $half connections each"
  wrk_run "$half" "http://127.0.0.1:$P_NODE_A/hooks/gh" 1 >"$WORK/wrk-a.txt" & WA=$!
  wrk_run "$half" "http://127.0.0.1:$P_NODE_B/hooks/gh" 1 >"$WORK/wrk-b.txt" & WB=$!
  wait "$WA" "$WB"
  read -r rpsa _ p99a _ <"$WORK/wrk-a.txt"; read -r rpsb _ p99b _ <"$WORK/wrk-b.txt"
  read -r a2 b2 <<<"$(by_node)"
  two=$(echo "$rpsa + $rpsb" | bc)
  log "two nodes: $two/s (a $rpsa, b $rpsb; spooled a +$((a2 - a1)), b +$((b2 - b1)))"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$rps1" "$p99_1" "$two" "$rpsa" "$rpsb" "$p99a" "$p99b" "$(ratio "$((a2 - a1))" "$((a2 - a1 + b2 - b1))")" >>"$WORK/nodes.tsv"
  echo "nodes run=$run one=$rps1 p99=$p99_1 two=$two a=$rpsa b=$rpsb p99a=$p99a p99b=$p99b spooled_a=$((a2 - a1)) spooled_b=$((b2 - b1))" >>"$RAW"
done
stop_pid "$NA"; stop_pid "$NB"; unpid "$NA"; unpid "$NB"
psql_ postgres -c "DROP DATABASE nodes" >/dev/null
fi

# ---- delivery drain ------------------------------------------------------------------------
"$BARE" 127.0.0.1:$P_UPSTREAM >"$WORK/upstream.log" 2>&1 & UP=$!; PIDS+=("$UP")
wait_port $P_UPSTREAM
: >"$WORK/deliver.tsv"
BACKLOG=0
if part deliver; then
newdb filled
config $P_DELIVER "$(pg_spool filled a)" $P_BLACKHOLE 1 10m >"$WORK/fill.toml"
log "delivery: filling a backlog for ${FILL_SECONDS}s"
"$HOOKD" serve --config "$WORK/fill.toml" >"$WORK/hookd-fill.log" 2>&1 & FP=$!; PIDS+=("$FP")
wait_port $P_DELIVER
wrk -t"$THREADS" -c64 -d"${FILL_SECONDS}s" -s "$BENCH/post.lua" "http://127.0.0.1:$P_DELIVER/hooks/gh" >/dev/null
stop_pid "$FP"; unpid "$FP"
BACKLOG=$(open_pg filled)
psql_ filled -c "VACUUM ANALYZE" >/dev/null
# One drain of the backlog at concurrency $1 on a copy of `filled`: "rate seconds delivered".
drain() {
  local conc=$1 run=$2 left t0 t1 deadline dp m0="$WORK/dm0.txt" m1="$WORK/dm1.txt"
  newdb deliver filled
  config $P_DELIVER "$(pg_spool deliver a)" $P_UPSTREAM "$conc" 30s >"$WORK/deliver.toml"
  stats_reset deliver
  local w0 pc0 ac0 hc1 pc1 ac1 w1
  w0=$(wal_sync); pc0=$(cpu_pg); ac0=$(cpu_all)
  t0=$(now)
  "$HOOKD" serve --config "$WORK/deliver.toml" >>"$WORK/hookd-deliver.log" 2>&1 & dp=$!; PIDS+=("$dp")
  wait_port $P_DELIVER
  left=$BACKLOG
  deadline=$(( $(date +%s) + DELIVER_MAX ))
  while (( left > 0 )) && (( $(date +%s) < deadline )); do
    sleep 0.2
    if v=$(open_pg deliver); then left=$v; fi
  done
  t1=$(now); hc1=$(cpu_pid "$dp"); pc1=$(cpu_pg); ac1=$(cpu_all); w1=$(wal_sync)
  metrics_text "$WORK" $P_DELIVER >"$m1" || : >"$m1"
  local stmts
  read -r stmts _ <<<"$(statements deliver)"
  stop_pid "$dp"; unpid "$dp"
  local delivered=$((BACKLOG - left)) secs
  secs=$(echo "scale=2; ($t1 - $t0) / 1" | bc)
  : >"$m0"
  read -r s c <<<"$(hist hookd_commit_latency_seconds "$m1")"; read -r bs bc_ <<<"$(hist hookd_commit_batch_size "$m1")"
  read -r sy0 sm0 <<<"$w0"; read -r sy1 sm1 <<<"$w1"
  local line
  line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$conc" "$run" "$(awk -v n="$delivered" -v t="$secs" 'BEGIN { printf "%.0f", n / t }')" \
    "$secs" "$delivered" "$left" "$(awk -v s="$stmts" -v n="$delivered" 'BEGIN { if (n > 0) printf "%.3f", s / n; else print "-" }')" \
    "$(awk -v a="$bs" -v b="$bc_" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }')" \
    "$(awk -v a="$s" -v b="$c" 'BEGIN { if (b > 0) printf "%.2f", 1000 * a / b; else print "-" }')" \
    "$hc1" "$(sub "$pc1" "$pc0")" "$(sub "$ac1" "$ac0")" "$((sy1 - sy0))")
  echo "$line" >>"$WORK/deliver.tsv"
  echo "deliver $line" | tr '\t' ' ' >>"$RAW"
  log "drain at concurrency $conc run $run: $delivered of $BACKLOG in ${secs}s ($left left)"
  psql_ postgres -c "DROP DATABASE deliver" >/dev/null
}
for run in $(seq "$RUNS"); do
  for conc in $DELIVER_CONCS; do drain "$conc" "$run"; done
done
psql_ postgres -c "DROP DATABASE filled" >/dev/null
fi

# ---- the claim on 1M pending + 1M done ----------------------------------------------------------
: >"$WORK/claim.tsv"
: >"$WORK/claim-hookd.tsv"
if part claim; then
newdb claim
psql_ claim -f "$ROOT/src/spool/pg/schema.sql" >/dev/null
log "claim: making $CLAIM_PENDING pending + $CLAIM_PENDING done deliveries (1 KiB body each)"
t0=$(now)
TOTAL=$((2 * CLAIM_PENDING))
psql_ claim <<SQL >/dev/null
INSERT INTO requests (id, hook, received_at, headers, body)
  SELECT g, 'gh', now() - interval '1 hour', '\x'::bytea, convert_to(repeat(md5(g::text), 32), 'UTF8')
  FROM generate_series(1, $TOTAL) g;
INSERT INTO deliveries (id, request_id, hook, route, state, attempts, next_attempt, updated_at)
  SELECT g, g, 'gh', 'default', CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'done' END,
         CASE WHEN g % 2 = 0 THEN 0 ELSE 1 END,
         now() - interval '1 hour' + (g % 3600) * interval '1 second', now()
  FROM generate_series(1, $TOTAL) g;
INSERT INTO depth_counts (node, hook, route, state, n) VALUES
  ('seed', 'gh', 'default', 'pending', $CLAIM_PENDING), ('seed', 'gh', 'default', 'done', $CLAIM_PENDING);
SELECT setval('id_blocks', $TOTAL / 1024 + 2);
VACUUM ANALYZE;
CHECKPOINT;
SQL
SEED_SECONDS=$(echo "scale=1; ($(now) - $t0) / 1" | bc)
CLAIM_ROWS=$(psql_ claim -c "SELECT count(*) FILTER (WHERE state = 'pending') || ' pending + ' || count(*) FILTER (WHERE state = 'done') || ' done' FROM deliveries")
CLAIM_SIZE=$(psql_ claim -c "SELECT pg_size_pretty(pg_database_size('claim'))")
log "made $CLAIM_ROWS in ${SEED_SECONDS}s ($CLAIM_SIZE)"
# hookd's own claim statement, with pgbench variables for $1..$5.
python3 - "$ROOT/src/spool/pg/sql.rs" >"$WORK/claim.sql" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
def const(name):
    m = re.search(r'macro_rules! ' + name + r' \{\s*\(\) => \{\s*(.*?)\s*\};\s*\}', src, re.S)
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1), re.S))
m = re.search(r'pub\(crate\) const CLAIM: &str = concat!\((.*?)\);', src, re.S)
parts = []
for piece in re.split(r',\s*\n', m.group(1)):
    piece = piece.strip()
    if piece.endswith('!()'):
        parts.append(const(piece[:-3]))
    else:
        parts.append("".join(re.findall(r'"((?:[^"\\]|\\.)*)"', piece, re.S)))
sql = "".join(parts)
sql = re.sub(r'\\\s*\n\s*', '', sql).replace('\\n', ' ')
sql = sql.replace('$1', ":hook").replace('$2', ":route").replace('$3', ":max::int8") \
         .replace('$4', ":owner").replace('$5', ":lease")
print(sql + ";")
PY
grep -q "FOR UPDATE SKIP LOCKED" "$WORK/claim.sql" || { echo "pg.sh: could not take CLAIM from src/spool/pg/sql.rs" >&2; cat "$WORK/claim.sql" >&2; exit 1; }
unlease() {
  psql_ claim -c "UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_expiry = NULL, lease_gen = 0 WHERE state = 'leased'" >/dev/null
  psql_ claim -c "VACUUM deliveries" >/dev/null
}
for run in $(seq "$RUNS"); do
  for c in $CLAIM_CLIENTS; do
    stats_reset claim
    res=$(pgbench_run claim "$WORK/claim.sql" "$c" -D "max=$CLAIM_MAX" -D "lease=60" -D hook=gh -D route=default -D owner=bench)
    rows=$(psql_ claim -c "SELECT coalesce(sum(rows), 0) FROM pg_stat_statements WHERE query LIKE 'WITH expired AS%'")
    read -r tps p50 p99 <<<"$res"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$run" "$tps" "$p50" "$p99" "$rows" >>"$WORK/claim.tsv"
    echo "claim pgbench clients=$c run=$run tps=$tps p50=$p50 p99=$p99 rows=$rows" >>"$RAW"
    log "claim by pgbench, $c claimers, run $run: $tps claims/s p50 $p50 ms p99 $p99 ms ($rows rows)"
    unlease
  done
done
# hookd itself on that database: SECS seconds of delivery to bare_hyper.
for run in $(seq "$RUNS"); do
  conc=64
  config $P_DELIVER "$(pg_spool claim a)" $P_UPSTREAM "$conc" 30s >"$WORK/claim.toml"
  stats_reset claim
  "$HOOKD" serve --config "$WORK/claim.toml" >>"$WORK/hookd-claim.log" 2>&1 & CP=$!; PIDS+=("$CP")
  wait_port $P_DELIVER
  metrics_text "$WORK" $P_DELIVER >"$WORK/cm0.txt" || : >"$WORK/cm0.txt"
  d0=$(psql_ claim -c "SELECT coalesce(sum(n), 0) FROM depth_counts WHERE state = 'done'")
  t0=$(now)
  sleep "$SECS"
  t1=$(now)
  d1=$(psql_ claim -c "SELECT coalesce(sum(n), 0) FROM depth_counts WHERE state = 'done'")
  metrics_text "$WORK" $P_DELIVER >"$WORK/cm1.txt" || : >"$WORK/cm1.txt"
  stop_pid "$CP"; unpid "$CP"
  st=$(psql_ claim -F' ' -c "SELECT calls, round(mean_exec_time::numeric, 2), round(max_exec_time::numeric, 2), rows FROM pg_stat_statements WHERE query LIKE 'WITH expired AS%' ORDER BY calls DESC LIMIT 1")
  read -r calls cmean cmax crows <<<"${st:-0 - - 0}"
  cp99=$(hist_p99 hookd_commit_latency_seconds "$WORK/cm0.txt" "$WORK/cm1.txt")
  read -r s0 c0 <<<"$(hist hookd_commit_latency_seconds "$WORK/cm0.txt")"; read -r s1 c1 <<<"$(hist hookd_commit_latency_seconds "$WORK/cm1.txt")"
  cmean_commit=$(awk -v a="$s0" -v b="$s1" -v x="$c0" -v y="$c1" 'BEGIN { if (y > x) printf "%.2f", 1000 * (b - a) / (y - x); else print "-" }')
  rate=$(awk -v n="$((d1 - d0))" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$rate" "$calls" "$cmean" "$cmax" "$crows" "$cmean_commit" "$cp99" >>"$WORK/claim-hookd.tsv"
  echo "claim hookd run=$run delivered_per_s=$rate claim_calls=$calls claim_mean_ms=$cmean claim_max_ms=$cmax claim_rows=$crows commit_mean_ms=$cmean_commit commit_p99_le_ms=$cp99" >>"$RAW"
  log "hookd on the claim database, run $run: $rate delivered/s, claim mean $cmean ms max $cmax ms over $calls claims ($crows rows), commit p99 <= $cp99 ms"
done
fi
stop_pid "$UP"
UPSTREAM_SEEN=$(sed -n 's/^requests //p' "$WORK/upstream.log")
stop_all
PIDS=()

# ---- report --------------------------------------------------------------------------------
# col FILE A B COL: column COL of the rows whose first column is A (and second B, unless B is "").
col() { awk -F'\t' -v a="$2" -v b="$3" -v c="$4" '($1 == a) && (b == "" || $2 == b) { print $c }' "$1"; }
medc() { col "$@" | median; }
allc() { col "$@" | paste -sd, | sed 's/,/, /g'; }
im() { medc "$WORK/ingest.tsv" "$1" "$2" "$3"; }
ia() { allc "$WORK/ingest.tsv" "$1" "$2" "$3"; }
{
  echo "# hookd on PostgreSQL (issue 15), $STAMP"
  echo
  echo "Command: \`$(printf '%q ' env RUNS="$RUNS" SECS="$SECS" CONNS="$CONNS" THREADS="$THREADS" DELIVER_CONCS="$DELIVER_CONCS" FILL_SECONDS="$FILL_SECONDS" CLAIM_PENDING="$CLAIM_PENDING" CLAIM_MAX="$CLAIM_MAX" CLAIM_CLIENTS="$CLAIM_CLIENTS" NODE_CONNS="$NODE_CONNS" STARTS="$STARTS" PARTS="$PARTS" bench/pg.sh)\`"
  echo "at commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src || echo ' (src modified)')$([[ -n ${HOOKD_BIN:-} ]] && echo ", hookd binary $HOOKD_BIN")."
  echo
  echo "Machine: $MACHINE. Load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (other work shares the 2 cores and the disk)."
  echo "PostgreSQL $PG_VERSION, a fresh cluster (initdb + start: ${CLUSTER_START}s): fsync=on, synchronous_commit=on, full_page_writes=on, shared_buffers=256MB, max_wal_size=4GB, pg_stat_statements, track_wal_io_timing; hookd connects over TCP to 127.0.0.1, sslmode=disable."
  echo "wrk ($THREADS threads, ${SECS}s per run, post.lua: the 1 KiB signed body) and pgbench (-M prepared, -j $THREADS) run on the same cores as hookd and PostgreSQL. $RUNS runs per cell, interleaved round by round; medians, every run in brackets."
  echo "CPU columns: seconds of CPU used during the run by hookd, by PostgreSQL (every backend) and by the whole machine (everything, other sessions' work included), against the 2 cores' capacity (2 × wall time). WAL fsyncs are PostgreSQL's (pg_stat_wal); in a hookd-sqlite run they are the idle hookd-pg's heartbeats."
  echo
  if part ingest; then
    echo "### Ingest"
    echo
    echo "| server | conns | webhooks/s | p50 ms | p99 ms | errors | statements per webhook (without BEGIN/COMMIT) | mean batch | mean commit ms | CPU s hookd / PostgreSQL / machine of capacity | WAL fsyncs per run (mean ms each) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for conns in $CONNS; do
      for s in pg sqlite baseline; do
        name=$s; [[ $s == pg ]] && name=hookd-pg; [[ $s == sqlite ]] && name=hookd-sqlite; [[ $s == baseline ]] && name="baseline (pgbench, 1 INSERT per tx)"
        syn=$(im $s "$conns" 15); synms=$(im $s "$conns" 16)
        stc=-
        [[ $s == sqlite ]] || stc="$(im $s "$conns" 8) [$(ia $s "$conns" 8)] ($(im $s "$conns" 17))"
        echo "| $name | $conns | $(im $s "$conns" 4) [$(ia $s "$conns" 4)] | $(im $s "$conns" 5) | $(im $s "$conns" 6) [$(ia $s "$conns" 6)] | $(col "$WORK/ingest.tsv" $s "$conns" 7 | awk '{ n += $1 } END { print n + 0 }') | $stc | $(im $s "$conns" 9) | $(im $s "$conns" 10) | $(im $s "$conns" 11) / $(im $s "$conns" 12) / $(im $s "$conns" 13) of $(awk -v w="$(im $s "$conns" 14)" 'BEGIN { printf "%.1f", 2 * w }') | $syn ($(awk -v a="$synms" -v b="$syn" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')) |"
      done
    done
    echo
    echo "Ratios round by round:"
    echo
    echo "| round | conns | hookd-pg / baseline | hookd-pg / hookd-sqlite |"
    echo "|---|---|---|---|"
    for run in $(seq "$RUNS"); do
      for conns in $CONNS; do
        r() { awk -F'\t' -v s="$1" -v c="$conns" -v r="$run" '$1 == s && $2 == c && $3 == r { print $4 }' "$WORK/ingest.tsv"; }
        echo "| $run | $conns | $(ratio "$(r pg)" "$(r baseline)") | $(ratio "$(r pg)" "$(r sqlite)") |"
      done
    done
    echo
    echo "hookd-pg's ingest database held $INGEST_PG_ROWS webhooks after the rounds; its peak RSS $(awk -v k="${INGEST_PG_RSS:-0}" 'BEGIN { printf "%.1f", k / 1024 }') MiB."
    echo
  fi
  if part deliver; then
    echo "### Delivery drain (hookd-pg, a backlog of $BACKLOG webhooks filled by wrk in ${FILL_SECONDS}s, to bare_hyper)"
    echo
    echo "| concurrency | delivered/s | seconds | delivered (left) | statements per delivery | mean batch | mean commit ms | CPU s hookd / PostgreSQL / machine | WAL fsyncs |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for conc in $DELIVER_CONCS; do
      d() { medc "$WORK/deliver.tsv" "$conc" "" "$1"; }
      echo "| $conc | $(d 3) [$(allc "$WORK/deliver.tsv" "$conc" "" 3)] | $(d 4) | $(d 5) ($(d 6)) | $(d 7) | $(d 8) | $(d 9) | $(d 10) / $(d 11) / $(d 12) | $(d 13) |"
    done
    echo
  fi
  if part claim; then
    echo "### Claim on $CLAIM_ROWS deliveries (made in ${SEED_SECONDS}s; database $CLAIM_SIZE)"
    echo
    echo "hookd's CLAIM statement (src/spool/pg/sql.rs, taken from the source by the bench) run by pgbench, up to $CLAIM_MAX rows per claim, each claim its own transaction (with its commit's WAL flush); leases undone and VACUUM after each run."
    echo
    echo "| claimers | claims/s | p50 ms | p99 ms | rows per run |"
    echo "|---|---|---|---|---|"
    for c in $CLAIM_CLIENTS; do
      echo "| $c | $(medc "$WORK/claim.tsv" "$c" "" 3) [$(allc "$WORK/claim.tsv" "$c" "" 3)] | $(medc "$WORK/claim.tsv" "$c" "" 4) | $(medc "$WORK/claim.tsv" "$c" "" 5) [$(allc "$WORK/claim.tsv" "$c" "" 5)] | $(medc "$WORK/claim.tsv" "$c" "" 6) |"
    done
    echo
    echo "hookd (one node, concurrency 64) delivering from that database for ${SECS}s per run to bare_hyper (what one run delivered is done and stays; the next run claims from what is left):"
    echo
    echo "| run | delivered/s | claim statements | claim mean ms (pg_stat_statements) | claim max ms | rows claimed | mean commit ms | commit p99 ms (≤ bucket bound, /metrics) |"
    echo "|---|---|---|---|---|---|---|---|"
    while IFS=$'\t' read -r run rate calls cmean cmax crows cm cp; do
      echo "| $run | $rate | $calls | $cmean | $cmax | $crows | $cm | $cp |"
    done <"$WORK/claim-hookd.tsv"
    echo
  fi
  if part nodes; then
    echo "### Two nodes against one on one database (wrk at $NODE_CONNS connections to one node; two wrk of $half to each of two)"
    echo
    echo "| round | one node webhooks/s (p99 ms) | two nodes webhooks/s | a / b (p99 ms) | two / one | share spooled by a |"
    echo "|---|---|---|---|---|---|"
    while IFS=$'\t' read -r run one p99o two a b pa pb share; do
      echo "| $run | $one ($p99o) | $two | $a / $b ($pa / $pb) | $(ratio "$two" "$one") | $share |"
    done <"$WORK/nodes.tsv"
    echo
  fi
  if part ready; then
    echo "### Start to READY=1"
    echo
    echo "On PostgreSQL: first start (creates the schema) $READY_FIRST ms; then $READY ms median [$READY_RUNS], RSS after READY $(awk -v k="$READY_RSS" 'BEGIN { printf "%.1f", k / 1024 }') MiB. On SQLite (fresh file each start): $READY_SQ ms median."
    echo
  fi
  echo "### Goals (medians of this run)"
  echo
  echo "| goal | measured | verdict |"
  echo "|---|---|---|"
  if part ingest; then
    for conns in $CONNS; do
      r=$(ratio "$(im pg "$conns" 4)" "$(im baseline "$conns" 4)")
      echo "| ingest ≥ 6× the one-row baseline at $conns | $r ($(im pg "$conns" 4) / $(im baseline "$conns" 4)) | $(verdict "$r >= 6") |"
      r=$(ratio "$(im pg "$conns" 4)" "$(im sqlite "$conns" 4)")
      echo "| ingest ≥ 0.4× hookd-sqlite at $conns | $r ($(im pg "$conns" 4) / $(im sqlite "$conns" 4)) | $(verdict "$r >= 0.4") |"
    done
    p=$(im pg 64 6)
    echo "| p99 ≤ 20 ms at 64 connections | $p ms | $(verdict "$p <= 20") |"
    for conns in $CONNS; do
      s=$(im pg "$conns" 8)
      echo "| ≤ 0.1 statements per webhook (ingest at $conns; BEGIN and COMMIT counted) | $s ($(im pg "$conns" 17) without them) | $(verdict "$s <= 0.1") |"
    done
  fi
  if part deliver && part ingest; then
    h64=$(im pg 64 4)
    for conc in $DELIVER_CONCS; do
      d=$(medc "$WORK/deliver.tsv" "$conc" "" 3)
      echo "| delivery ≥ half of ingest (hookd-pg at 64: $h64 / 2), concurrency $conc | $d/s | $(verdict "$d >= $h64 / 2") |"
    done
  fi
  if part nodes; then
    # Round by round: each one-node run and the two-node run after it share
    # the machine's state, which swings between rounds more than the effect.
    one=$(cut -f2 "$WORK/nodes.tsv" | median); two=$(cut -f4 "$WORK/nodes.tsv" | median)
    r=$(awk -F'\t' '{ if ($2 > 0) printf "%.2f\n", $4 / $2 }' "$WORK/nodes.tsv" | median)
    echo "| 2 nodes ≥ 0.9× one node (median of the rounds' ratios) | $r [$(awk -F'\t' '{ if ($2 > 0) printf "%s%.2f", sep, $4 / $2; sep = ", " }' "$WORK/nodes.tsv")]; ratio of the medians $(ratio "$two" "$one") ($two / $one) | $(verdict "$r >= 0.9") |"
  fi
  if part ready; then
    echo "| READY ≤ 200 ms on PostgreSQL | $READY ms | $(verdict "$READY <= 200") |"
  fi
  echo
  if part claim; then
    echo "Claim p99 (the issue's figure, no goal): $(for c in $CLAIM_CLIENTS; do printf '%s ms at %s claimer(s); ' "$(medc "$WORK/claim.tsv" "$c" "" 5)" "$c"; done)hookd's claim statement inside its group commits: mean $(cut -f4 "$WORK/claim-hookd.tsv" | median) ms, max $(cut -f5 "$WORK/claim-hookd.tsv" | median) ms (medians of runs)."
  fi
  echo "The upstream counted ${UPSTREAM_SEEN:-0} deliveries in all."
  echo
  echo "<details><summary>raw lines</summary>"
  echo
  echo '```'
  cat "$RAW"
  echo '```'
  echo
  echo "</details>"
} >"$OUT"
log "report: $OUT"
cat "$OUT"
