#!/usr/bin/env bash
# hookd benchmark: hookd's durable ingest side by side with adnanh/webhook,
# a bare hyper server and SQLite's one-fsync-per-row rate, plus hookd's RSS,
# startup time (empty and 1,000,000 pending items) and delivery throughput.
# Everything in one run, interleaved round by round so drift hits all alike.
# Not part of CI. Uses only 127.0.0.1; every process it starts is stopped on exit.
#
# Usage: bench/run.sh            (from anywhere in the repository)
# Knobs (environment): RUNS=3 DURATION=10 CONNS="64 256" THREADS=2
#   STARTS=5 MILLION=1000000 FILL_SECONDS=3 DELIVER_MAX=60 DELIVER_CONCS="16 64"
#   RELOAD_SECONDS=20 (0 skips the reload-latency part) RELOAD_RATE=1000 BENCH_DIR=/var/tmp/hookd-bench.PID
#   KEEP=1 (keep BENCH_DIR) SKIP_BUILD=1 OUT=path.md
# Needs: wrk, webhook (Debian packages), python3, sqlite3, openssl, curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-"64 256"}
THREADS=${THREADS:-2}
STARTS=${STARTS:-5}
MILLION=${MILLION:-1000000}
FILL_SECONDS=${FILL_SECONDS:-3}
DELIVER_MAX=${DELIVER_MAX:-60}
DELIVER_CONCS=${DELIVER_CONCS:-"16 64"}
RELOAD_SECONDS=${RELOAD_SECONDS:-20}
RELOAD_RATE=${RELOAD_RATE:-1000}
WORK=${BENCH_DIR:-/var/tmp/hookd-bench.$$}
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-$BENCH/results/$STAMP.md}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release

P_HOOKD=9100 P_WEBHOOK=9101 P_BARE=9102 P_BLACKHOLE=9103 P_UPSTREAM=9104 P_DELIVER=9105 P_RELOAD=9106
SECRET=bench-secret-not-for-production

for tool in wrk webhook python3 sqlite3 openssl curl; do
  command -v "$tool" >/dev/null || { echo "run.sh: needs $tool (apt-get install -y wrk webhook sqlite3 ...)" >&2; exit 2; }
done

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
cleanup() {
  stop_all
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "run.sh: 127.0.0.1:$1 is already in use" >&2
    exit 2
  fi
}

proc_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for p in $P_HOOKD $P_WEBHOOK $P_BARE $P_BLACKHOLE $P_UPSTREAM $P_DELIVER $P_RELOAD; do port_free "$p"; done

# ---- build -------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --bins --examples)
fi
# Copies, so that a rebuild in the (shared) target directory during the run
# changes nothing. HOOKD_BIN overrides the hookd binary.
mkdir -p "$WORK/bin" "$(dirname "$OUT")"
for b in "${HOOKD_BIN:-$TARGET/hookd}" "$TARGET/examples/bare_hyper" "$TARGET/examples/fsync_per_row"; do
  [[ -x $b ]] || { echo "run.sh: missing $b" >&2; exit 2; }
  cp "$b" "$WORK/bin/"
done
HOOKD=$WORK/bin/$(basename "${HOOKD_BIN:-hookd}")
BARE=$WORK/bin/bare_hyper
FSYNC=$WORK/bin/fsync_per_row

# ---- setup -------------------------------------------------------------------
RAW="$WORK/raw.txt"
: >"$RAW"
umask 077
printf '%s' "$SECRET" >"$WORK/secret"
chmod 600 "$WORK/secret"
export BENCH_BODY="$BENCH/body.json"
BENCH_SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r <"$BENCH_BODY" | cut -d' ' -f1)"
export BENCH_SIG

# Ingest: delivery forwards to an upstream that never answers, one at a time,
# so it holds one item in flight and leaves ingest alone.
hookd_config "$WORK" $P_HOOKD "$WORK/ingest.db" $P_BLACKHOLE 1 10m >"$WORK/ingest.toml"
hookd_config "$WORK" $P_HOOKD "$WORK/empty.db" $P_BLACKHOLE 1 10m >"$WORK/empty.toml"
hookd_config "$WORK" $P_HOOKD "$WORK/million.db" $P_BLACKHOLE 1 10m >"$WORK/million.toml"
hookd_config "$WORK" $P_DELIVER "$WORK/deliver.db" $P_BLACKHOLE 1 10m >"$WORK/fill.toml"
hookd_config "$WORK" $P_RELOAD "$WORK/reload.db" $P_UPSTREAM 4 30s >"$WORK/reload.toml"

# adnanh/webhook: the same HMAC check on X-Hub-Signature-256, no command
# (execute-command "" answers, then fails the lookup without forking), and a
# variant that runs /bin/true per request after answering.
cat >"$WORK/hooks.json" <<EOF
[
  {"id": "gh", "execute-command": "", "response-message": "ok",
   "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "$SECRET",
                              "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}},
  {"id": "gh-true", "execute-command": "/bin/true", "response-message": "ok",
   "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "$SECRET",
                              "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}}
]
EOF

FS_TYPE=$(df -T "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')
MACHINE="nproc $(nproc), $(uname -sr), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo); spool and SQLite files in $WORK ($FS_TYPE)"
log "machine: $MACHINE"
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- startup, empty spool ------------------------------------------------------
log "startup to READY=1, empty spool (fresh file each start), $STARTS starts"
python3 "$BENCH/notify_start.py" --hookd "$HOOKD" --config "$WORK/empty.toml" --runs "$STARTS" \
  --fresh "$WORK/empty.db" --log "$WORK/hookd-startup.log" | tee -a "$RAW" | tee "$WORK/startup-empty.txt" >&2
STARTUP_EMPTY=$(sed -n 's/^STARTUP median_ms=\([0-9.]*\).*/\1/p' "$WORK/startup-empty.txt")
STARTUP_EMPTY_RUNS=$(sed -n 's/^STARTUP .*runs_ms=\([0-9.,]*\).*/\1/p' "$WORK/startup-empty.txt")
STARTUP_EMPTY_RSS=$(sed -n 's/^STARTUP .*median_rss_kib=\([0-9]*\).*/\1/p' "$WORK/startup-empty.txt")

# ---- servers for the ingest rounds --------------------------------------------
python3 "$BENCH/blackhole.py" $P_BLACKHOLE & PIDS+=($!)
"$BARE" 127.0.0.1:$P_BARE >"$WORK/bare.log" 2>&1 & PIDS+=($!)
start_webhook() {
  webhook -hooks "$WORK/hooks.json" -ip 127.0.0.1 -port $P_WEBHOOK -nopanic >>"$WORK/webhook.log" 2>&1 & WEBHOOK_PID=$!; PIDS+=("$WEBHOOK_PID")
}
start_webhook
"$HOOKD" serve --config "$WORK/ingest.toml" >"$WORK/hookd-ingest.log" 2>&1 & HOOKD_PID=$!; PIDS+=("$HOOKD_PID")
for p in $P_BLACKHOLE $P_BARE $P_WEBHOOK $P_HOOKD; do wait_port "$p"; done

# One signed POST to each, checked, before any measurement.
for url in "http://127.0.0.1:$P_HOOKD/hooks/gh" "http://127.0.0.1:$P_WEBHOOK/hooks/gh" "http://127.0.0.1:$P_BARE/"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -H "X-Hub-Signature-256: $BENCH_SIG" --data-binary @"$BENCH_BODY" "$url")
  [[ $code == 2?? ]] || { echo "run.sh: $url answered $code to a signed POST" >&2; exit 1; }
done
sleep 1
IDLE_RSS=$(proc_kib "$HOOKD_PID" VmRSS)
log "hookd idle RSS ${IDLE_RSS} KiB"

declare -A URL=(
  [hookd]="http://127.0.0.1:$P_HOOKD/hooks/gh"
  [webhook]="http://127.0.0.1:$P_WEBHOOK/hooks/gh"
  [webhook_true]="http://127.0.0.1:$P_WEBHOOK/hooks/gh-true"
  [bare_hyper]="http://127.0.0.1:$P_BARE/"
)
SERVERS=(hookd webhook bare_hyper)
[[ "${WEBHOOK_TRUE:-1}" == 1 ]] && SERVERS+=(webhook_true)

# Runs wrk once; appends "server conns run rps p50 p99 max errors" to $WORK/wrk.tsv.
run_wrk() {
  local server=$1 conns=$2 run=$3 line
  line=$(wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --timeout 5s --latency -s "$BENCH/post.lua" "${URL[$server]}" \
    | tee -a "$WORK/wrk-full.txt" | grep '^BENCH ') || { echo "run.sh: wrk failed on $server" >&2; return 1; }
  echo "$server c=$conns run=$run $line" >>"$RAW"
  log "$server c=$conns run $run: $line"
  # shellcheck disable=SC2046
  set -- $(sed -E 's/.*rps=([0-9.]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+) max_ms=([0-9.]+) errors=([0-9]+).*/\1 \2 \3 \4 \5/' <<<"$line")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$conns" "$run" "$1" "$2" "$3" "$4" "$5" >>"$WORK/wrk.tsv"
}

: >"$WORK/wrk.tsv"
: >"$WORK/fsync.tsv"
for run in $(seq "$RUNS"); do
  log "round $run/$RUNS"
  out=$("$FSYNC" "$WORK/fsync.db" 5)
  echo "fsync_per_row run=$run $out" >>"$RAW"
  log "fsync_per_row run $run: $out"
  sed -E 's/.*rows_per_s ([0-9.]+).*/\1/' <<<"$out" >>"$WORK/fsync.tsv"
  rm -f "$WORK"/fsync.db*
  for conns in $CONNS; do
    for server in "${SERVERS[@]}"; do
      if [[ $server == webhook_true && $conns != 64 ]]; then continue; fi
      run_wrk "$server" "$conns" "$run"
      if [[ $server == webhook_true ]]; then
        # webhook answers first and runs the command later: after a run it
        # still has tens of thousands of /bin/true queued (about 1,000 forks
        # a second), which would load the next measurement. A restart drops them.
        stop_pid "$WEBHOOK_PID"
        start_webhook
        wait_port "$P_WEBHOOK"
      fi
    done
  done
done
PEAK_RSS=$(proc_kib "$HOOKD_PID" VmHWM)
log "hookd peak RSS ${PEAK_RSS} KiB"
metrics_text "$WORK" $P_HOOKD >"$WORK/metrics-ingest.txt" || true
"$HOOKD" spool stats --json --config "$WORK/ingest.toml" >"$WORK/stats-ingest.json" 2>&1 || true
SPOOLED=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["total"])' "$WORK/stats-ingest.json" 2>/dev/null || echo "?")
# Every 2xx hookd gave (wrk rounds + the one curl check) must be an item.
ANSWERED=$(awk '$1 == "hookd" { for (i = 1; i <= NF; i++) if ($i ~ /^requests=/) { split($i, kv, "="); n += kv[2] } } END { print n + 1 }' "$RAW")
for p in "${PIDS[@]}"; do stop_pid "$p"; done
PIDS=()

# ---- startup with a million pending items ------------------------------------------
# The schema comes from hookd itself (one start on a fresh file); the rows are
# then made inside SQLite in one transaction (a recursive CTE), with the same
# 1 KiB body, in hookd's own tables; the item counts are set as hookd keeps them.
log "making $MILLION pending items"
python3 "$BENCH/notify_start.py" --hookd "$HOOKD" --config "$WORK/million.toml" --runs 1 \
  --fresh "$WORK/million.db" --log "$WORK/hookd-startup.log" >/dev/null
t0=$(date +%s.%N)
BODY_HEX=$(od -An -v -tx1 "$BENCH_BODY" | tr -d ' \n')
sqlite3 "$WORK/million.db" <<EOF
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $MILLION)
INSERT INTO items (hook, dedup_id, received_at, headers, body, state, next_attempt, updated_at)
SELECT 'gh', NULL, strftime('%s','now') * 1000, x'', x'$BODY_HEX', 'pending', 0, 0 FROM n;
INSERT INTO item_counts (hook, state, n) VALUES ('gh', 'pending', $MILLION)
  ON CONFLICT (hook, state) DO UPDATE SET n = n + excluded.n;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
EOF
MAKE_SECONDS=$(echo "scale=1; ($(date +%s.%N) - $t0) / 1" | bc)
MILLION_SIZE=$(du -sh "$WORK/million.db" | cut -f1)
log "made in ${MAKE_SECONDS}s, file $MILLION_SIZE"
"$HOOKD" spool stats --json --config "$WORK/million.toml" >"$WORK/stats-million.json" 2>&1 || true
MILLION_PENDING=$(python3 -c 'import json, sys; print(sum(r["count"] for r in json.load(open(sys.argv[1]))["depth"] if r["state"] == "pending"))' "$WORK/stats-million.json" 2>/dev/null || echo "?")
log "spool stats: $MILLION_PENDING pending"
python3 "$BENCH/blackhole.py" $P_BLACKHOLE & BH=$!; PIDS+=("$BH")
log "startup to READY=1 with $MILLION pending, $STARTS starts"
python3 "$BENCH/notify_start.py" --hookd "$HOOKD" --config "$WORK/million.toml" --runs "$STARTS" \
  --log "$WORK/hookd-startup.log" | tee -a "$RAW" | tee "$WORK/startup-million.txt" >&2
STARTUP_MILLION=$(sed -n 's/^STARTUP median_ms=\([0-9.]*\).*/\1/p' "$WORK/startup-million.txt")
STARTUP_MILLION_RUNS=$(sed -n 's/^STARTUP .*runs_ms=\([0-9.,]*\).*/\1/p' "$WORK/startup-million.txt")
STARTUP_MILLION_RSS=$(sed -n 's/^STARTUP .*median_rss_kib=\([0-9]*\).*/\1/p' "$WORK/startup-million.txt")
rm -f "$WORK"/million.db*

# ---- delivery throughput ---------------------------------------------------------
# Fill a backlog with real POSTs (delivery parked on the blackhole), stop, then
# for each concurrency in DELIVER_CONCS start on a copy of that spool with a
# forward to bare_hyper (answers 204 at once); time from start until nothing is
# pending or leased. The goal's verdict is read at 64, the concurrency of the
# ingest figure it is compared to.
log "delivery: filling a backlog for ${FILL_SECONDS}s"
"$HOOKD" serve --config "$WORK/fill.toml" >"$WORK/hookd-fill.log" 2>&1 & FILL_PID=$!; PIDS+=("$FILL_PID")
wait_port $P_DELIVER
wrk -t"$THREADS" -c64 -d"${FILL_SECONDS}s" -s "$BENCH/post.lua" "http://127.0.0.1:$P_DELIVER/hooks/gh" >/dev/null
stop_pid "$FILL_PID"
stop_pid "$BH"
for f in "$WORK"/deliver.db*; do mv "$f" "${f/deliver.db/filled.db}"; done
"$BARE" 127.0.0.1:$P_UPSTREAM >"$WORK/upstream.log" 2>&1 & UP=$!; PIDS+=("$UP")
wait_port $P_UPSTREAM

declare -A DELIVER_RATE DELIVERED DELIVER_SECONDS BACKLOG
for conc in $DELIVER_CONCS; do
  rm -f "$WORK"/deliver.db*
  for f in "$WORK"/filled.db*; do cp "$f" "${f/filled.db/deliver.db}"; done
  hookd_config "$WORK" $P_DELIVER "$WORK/deliver.db" $P_UPSTREAM "$conc" 30s >"$WORK/deliver.toml"
  BACKLOG[$conc]=$(open_items "$HOOKD" "$WORK/deliver.toml")
  log "backlog: ${BACKLOG[$conc]} items, concurrency $conc"
  t0=$(date +%s.%N)
  "$HOOKD" serve --config "$WORK/deliver.toml" >"$WORK/hookd-deliver-$conc.log" 2>&1 & DPID=$!; PIDS+=("$DPID")
  wait_port $P_DELIVER
  left=${BACKLOG[$conc]}
  deadline=$(( $(date +%s) + DELIVER_MAX ))
  while (( left > 0 )) && (( $(date +%s) < deadline )); do
    sleep 0.2
    if v=$(open_items_http "$WORK" $P_DELIVER); then left=$v; fi
  done
  DELIVER_SECONDS[$conc]=$(echo "scale=2; ($(date +%s.%N) - $t0) / 1" | bc)
  metrics_text "$WORK" $P_DELIVER >"$WORK/metrics-deliver-$conc.txt" || true
  stop_pid "$DPID"
  left=$(open_items "$HOOKD" "$WORK/deliver.toml")
  DELIVERED[$conc]=$(( BACKLOG[$conc] - left ))
  DELIVER_RATE[$conc]=$(awk -v n="${DELIVERED[$conc]}" -v t="${DELIVER_SECONDS[$conc]}" 'BEGIN { printf "%.0f", n / t }')
  log "delivered ${DELIVERED[$conc]} of ${BACKLOG[$conc]} in ${DELIVER_SECONDS[$conc]}s at concurrency $conc: ${DELIVER_RATE[$conc]}/s ($left left)"
  echo "delivery concurrency=$conc backlog=${BACKLOG[$conc]} delivered=${DELIVERED[$conc]} seconds=${DELIVER_SECONDS[$conc]} rate=${DELIVER_RATE[$conc]} left=$left" >>"$RAW"
done
rm -f "$WORK"/filled.db* "$WORK"/deliver.db*

# ---- latency across reloads (hand-off) -----------------------------------------------
# A paced load (RELOAD_RATE req/s over 16 keep-alive connections) for
# RELOAD_SECONDS without reloads, then as long with `hookd reload` every second;
# deliveries go to bare_hyper. reload_bench.py is a child subreaper, as systemd
# is for a unit, and answers BARRIER=1 on its NOTIFY_SOCKET.
RELOAD_NO="" RELOAD_WITH="" RELOAD_SPOOLED=""
if (( RELOAD_SECONDS > 0 )); then
  log "latency across reloads: ${RELOAD_SECONDS}s without, ${RELOAD_SECONDS}s with a reload every second"
  python3 "$BENCH/reload_bench.py" --hookd "$HOOKD" --config "$WORK/reload.toml" --port $P_RELOAD \
    --body "$BENCH_BODY" --sig "$BENCH_SIG" --rate "$RELOAD_RATE" --conns 16 --duration "$RELOAD_SECONDS" \
    --every 1 --log "$WORK/hookd-reload.log" | tee -a "$RAW" | tee "$WORK/reload.txt" >&2
  RELOAD_NO=$(grep '^no_reload:' "$WORK/reload.txt" || true)
  RELOAD_WITH=$(grep '^with_reload:' "$WORK/reload.txt" || true)
  RELOAD_SPOOLED=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["total"])' \
    <("$HOOKD" spool stats --json --config "$WORK/reload.toml") 2>/dev/null || echo "?")
fi
stop_pid "$UP"
UPSTREAM_SEEN=$(sed -n 's/^requests //p' "$WORK/upstream.log")
PIDS=()

# ---- report ----------------------------------------------------------------------
# Median of a column for (server, conns): med SERVER CONNS COL (4 rps, 5 p50, 6 p99, 7 max)
med() { awk -F'\t' -v s="$1" -v c="$2" -v col="$3" '$1 == s && $2 == c { print $col }' "$WORK/wrk.tsv" | median; }
all() { awk -F'\t' -v s="$1" -v c="$2" -v col="$3" '$1 == s && $2 == c { printf "%s%s", sep, $col; sep = ", " }' "$WORK/wrk.tsv"; }
errs() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s && $2 == c { n += $8 } END { print n + 0 }' "$WORK/wrk.tsv"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
verdict() { if (( $(echo "$1" | bc) )); then echo met; else echo "NOT met"; fi; }
FSYNC_MED=$(median <"$WORK/fsync.tsv")
FSYNC_ALL=$(paste -sd, "$WORK/fsync.tsv" | sed 's/,/, /g')

hist_mean() { # mean of a Prometheus histogram: NAME FILE SCALE
  awk -v n="$1" -v k="${3:-1}" '$1 == n"_sum" { s = $2 } $1 == n"_count" { c = $2 } END { if (c > 0) printf "%.2f (%d commits)", k * s / c, c; else print "n/a" }' "$2"
}

{
  echo "## Run $STAMP"
  echo
  echo "Command: \`$(printf '%q ' env RUNS="$RUNS" DURATION="$DURATION" CONNS="$CONNS" THREADS="$THREADS" STARTS="$STARTS" MILLION="$MILLION" FILL_SECONDS="$FILL_SECONDS" DELIVER_MAX="$DELIVER_MAX" DELIVER_CONCS="$DELIVER_CONCS" bench/run.sh)\`"
  echo "at commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src || echo ' (src modified)')."
  echo
  echo "Machine: $MACHINE. Load average (1, 5, 15 min) before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shares the 2 cores and the disk)."
  echo "wrk ($THREADS threads, ${DURATION}s per run, $RUNS runs per cell, interleaved round by round) runs on the same cores as the server."
  echo
  echo "### Ingest (medians; all runs in brackets)"
  echo
  echo "| server | conns | req/s | p50 ms | p99 ms | socket errors + non-2xx |"
  echo "|---|---|---|---|---|---|"
  for conns in $CONNS; do
    for server in "${SERVERS[@]}"; do
      med "$server" "$conns" 4 | grep -qv nan || continue
      echo "| $server | $conns | $(med "$server" "$conns" 4) [$(all "$server" "$conns" 4)] | $(med "$server" "$conns" 5) [$(all "$server" "$conns" 5)] | $(med "$server" "$conns" 6) [$(all "$server" "$conns" 6)] | $(errs "$server" "$conns") |"
    done
  done
  echo "| fsync_per_row (SQLite WAL FULL, 1 row/txn, 1 thread, 5 s) | - | $FSYNC_MED rows/s [$FSYNC_ALL] | | | |"
  echo
  echo "### Ratios round by round (each round runs all servers back to back, so it shares the machine's state)"
  echo
  echo "| round | fsync_per_row rows/s | hookd/webhook 64 | hookd/bare 64 | hookd/webhook 256 | hookd/bare 256 | hookd p99 64 ms |"
  echo "|---|---|---|---|---|---|---|"
  for run in $(seq "$RUNS"); do
    rps() { awk -F'\t' -v s="$1" -v c="$2" -v r="$run" '$1 == s && $2 == c && $3 == r { print $4 }' "$WORK/wrk.tsv"; }
    p99r=$(awk -F'\t' -v r="$run" '$1 == "hookd" && $2 == 64 && $3 == r { print $6 }' "$WORK/wrk.tsv")
    echo "| $run | $(sed -n "${run}p" "$WORK/fsync.tsv") | $(ratio "$(rps hookd 64)" "$(rps webhook 64)") | $(ratio "$(rps hookd 64)" "$(rps bare_hyper 64)") | $(ratio "$(rps hookd 256)" "$(rps webhook 256)") | $(ratio "$(rps hookd 256)" "$(rps bare_hyper 256)") | $p99r |"
  done
  echo
  echo "### Goals (ratios of medians from this run)"
  echo
  echo "| goal | measured | verdict |"
  echo "|---|---|---|"
  for conns in $CONNS; do
    h=$(med hookd "$conns" 4)
    r=$(ratio "$h" "$(med webhook "$conns" 4)")
    echo "| hookd / webhook >= 2.5 at $conns conns | $r | $(verdict "$r >= 2.5") |"
    r=$(ratio "$h" "$(med bare_hyper "$conns" 4)")
    echo "| hookd / bare hyper >= 0.7 at $conns conns | $r | $(verdict "$r >= 0.7") |"
    r=$(ratio "$h" "$FSYNC_MED")
    echo "| hookd / fsync-per-row >= 6 at $conns conns | $r | $(verdict "$r >= 6") |"
  done
  p99=$(med hookd 64 6)
  echo "| hookd p99 <= 10 ms at 64 conns | $p99 ms | $(verdict "$p99 <= 10") |"
  echo "| idle RSS < 30 MiB (1 s after one request; right after READY: $(echo "scale=1; $STARTUP_EMPTY_RSS / 1024" | bc) MiB) | $(echo "scale=1; $IDLE_RSS / 1024" | bc) MiB | $(verdict "$IDLE_RSS < 30720") |"
  echo "| peak RSS under load < 100 MiB (VmHWM after all rounds) | $(echo "scale=1; $PEAK_RSS / 1024" | bc) MiB | $(verdict "$PEAK_RSS < 102400") |"
  echo "| startup to READY=1, empty spool < 100 ms | $STARTUP_EMPTY ms [$STARTUP_EMPTY_RUNS] | $(verdict "$STARTUP_EMPTY < 100") |"
  echo "| startup to READY=1, $MILLION pending < 1 s | $STARTUP_MILLION ms [$STARTUP_MILLION_RUNS], RSS after READY $(echo "scale=1; $STARTUP_MILLION_RSS / 1024" | bc) MiB | $(verdict "$STARTUP_MILLION < 1000") |"
  h=$(med hookd 64 4)
  for conc in $DELIVER_CONCS; do
    goal=""
    [[ $conc == 64 ]] && goal=" (the verdict: the ingest figure is at 64 connections)"
    echo "| delivery >= half the ingest rate (64 conns: $h / 2), concurrency $conc$goal | ${DELIVER_RATE[$conc]} items/s (${DELIVERED[$conc]} of ${BACKLOG[$conc]} in ${DELIVER_SECONDS[$conc]}s) | $(verdict "${DELIVER_RATE[$conc]} >= $h / 2") |"
  done
  echo
  echo "The upstream counted $UPSTREAM_SEEN requests in all (every drain and the reload part's deliveries)."
  for conc in $DELIVER_CONCS; do
    echo "Delivery at concurrency $conc (from /metrics): mean batch size $(hist_mean hookd_commit_batch_size "$WORK/metrics-deliver-$conc.txt"), mean commit latency $(hist_mean hookd_commit_latency_seconds "$WORK/metrics-deliver-$conc.txt" 1000) ms."
  done
  echo
  if [[ -n $RELOAD_WITH ]]; then
    kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
    echo "### Latency across reloads (hand-off), paced load $RELOAD_RATE req/s over 16 keep-alive connections, ${RELOAD_SECONDS}s each"
    echo
    echo "| phase | requests | p50 ms | p99 ms | max ms | errors (kinds) | non-2xx | longest time with no answer ms |"
    echo "|---|---|---|---|---|---|---|---|"
    for line in "$RELOAD_NO" "$RELOAD_WITH"; do
      echo "| ${line%%:*} | $(kv requests "$line") | $(kv p50_ms "$line") | $(kv p99_ms "$line") | $(kv max_ms "$line") | $(kv errors "$line") ($(kv error_kinds "$line")) | $(kv non2xx "$line") | $(kv longest_gap_ms "$line") |"
    done
    echo
    mx=$(kv in_reload_max_ms "$RELOAD_WITH")
    echo "Reloads: $(kv reloads "$RELOAD_WITH") ($(kv failed_reloads "$RELOAD_WITH") failed); \`hookd reload\` took $(kv reload_cmd_ms_median "$RELOAD_WITH") ms median, $(kv reload_cmd_ms_max "$RELOAD_WITH") ms max."
    echo "Requests in flight during a reload (its start to its end + 100 ms): $(kv in_reload_requests "$RELOAD_WITH"), p99 $(kv in_reload_p99_ms "$RELOAD_WITH") ms, max $mx ms: goal max < 100 ms $(verdict "$mx < 100")."
    echo "The spool holds $RELOAD_SPOOLED items for $(( $(kv requests "$RELOAD_NO") + $(kv requests "$RELOAD_WITH") )) requests sent (requests without an answer were not spooled when the two numbers differ by the errors)."
    echo
  fi
  echo "Group commit during the ingest rounds (from /metrics): mean batch size $(hist_mean hookd_commit_batch_size "$WORK/metrics-ingest.txt"), mean commit latency $(hist_mean hookd_commit_latency_seconds "$WORK/metrics-ingest.txt" 1000) ms."
  echo "Spool check: hookd answered $ANSWERED signed POSTs with 202 (wrk counts plus one curl; wrk saw no non-2xx: see the errors column); the spool holds $SPOOLED items afterwards (at least as many: wrk does not count the answers still in flight when it stops, up to one per connection per run)."
  echo "The $MILLION pending items: made in SQL in ${MAKE_SECONDS}s (file $MILLION_SIZE; \`hookd spool stats\` counted $MILLION_PENDING pending before the starts; each start leases one to the never-answering upstream, and each stop releases it)."
  echo
  echo "<details><summary>raw lines</summary>"
  echo
  echo '```'
  cat "$RAW"
  echo
  grep -E '^hookd_commit_(batch_size|latency_seconds)' "$WORK/metrics-ingest.txt" || true
  echo '```'
  echo "</details>"
} >"$OUT"
log "wrote $OUT"
cat "$OUT"
