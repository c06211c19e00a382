#!/usr/bin/env bash
# The internet-facing edge (issue 11), side by side in one run:
#  1. slowhttptest slow headers (-H), slow body (-B) and slow read (-X), CONNS
#     connections each, against hookd (release build) and adnanh/webhook, both
#     started under the same open-file limit (NOFILE), while a legitimate client
#     (bench/legit.py) sends signed webhooks at LEGIT_RATE req/s from 127.0.0.2:
#     its success rate and p99, and each server's peak RSS (VmHWM) and peak fds.
#     hookd_nocap is hookd with max_connections_per_ip = 65536, as if the crowd
#     came from many addresses: then only the global limits stand in its way.
#  2. hookd ingest req/s at TLS_CONNS connections, plain against TLS, keep-alive
#     and a new connection per request (wrk; `Connection: close`).
# RUNS rounds; every round runs every case back to back; medians printed as a
# table (and every run in brackets). Not part of CI. Traffic only to 127.0.0.0/8;
# every process it starts is stopped on exit.
#
# Usage: bench/edge.sh
# Knobs: RUNS=3 SLOW_SERVERS="hookd hookd_nocap webhook" CONNS=2000 NOFILE=1024 ATTACK_RATE=200 LEGIT_RATE=50 LEGIT_SECONDS=20
#   RAMP=12 TLS_CONNS=64 DURATION=10 SKIP_BUILD=1 SKIP_SLOW=1 SKIP_TLS=1 KEEP=1
#   BENCH_DIR=/var/tmp/hookd-edge.PID OUT=path.md HOOKD=path/to/hookd (instead of the release build)
# Needs: slowhttptest, webhook, wrk (Debian packages), python3, openssl, curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
RUNS=${RUNS:-3}
read -r -a SLOW_SERVERS <<<"${SLOW_SERVERS:-hookd hookd_nocap webhook}"
CONNS=${CONNS:-2000}
NOFILE=${NOFILE:-1024}
ATTACK_RATE=${ATTACK_RATE:-200}
LEGIT_RATE=${LEGIT_RATE:-50}
LEGIT_SECONDS=${LEGIT_SECONDS:-20}
RAMP=${RAMP:-12}
TLS_CONNS=${TLS_CONNS:-64}
DURATION=${DURATION:-10}
WORK=${BENCH_DIR:-/var/tmp/hookd-edge.$$}
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-$BENCH/results/edge-$STAMP.md}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
SECRET=bench-secret-not-for-production
P_HOOKD=9200 P_WEBHOOK=9201 P_BLACKHOLE=9202 P_PLAIN=9203 P_TLS=9204

for tool in slowhttptest webhook wrk python3 openssl curl; do
  command -v "$tool" >/dev/null || { echo "edge.sh: needs $tool (apt-get install -y slowhttptest webhook wrk)" >&2; exit 2; }
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
for p in $P_HOOKD $P_WEBHOOK $P_BLACKHOLE $P_PLAIN $P_TLS; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "edge.sh: 127.0.0.1:$p is in use" >&2; exit 2; fi
done
# slowhttptest holds CONNS sockets itself.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < CONNS + 100)); then echo "edge.sh: open-file limit $(ulimit -n) < CONNS + 100" >&2; exit 2; fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi
HOOKD=${HOOKD:-$TARGET/hookd}
[[ -x $HOOKD ]] || { echo "edge.sh: no $HOOKD" >&2; exit 2; }
mkdir -p "$WORK" "$(dirname "$OUT")"
RAW=$WORK/raw.txt
: >"$RAW"
BODY=$BENCH/body.json
printf '%s\n' "$SECRET" >"$WORK/secret"
chmod 0600 "$WORK/secret"
SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" <"$BODY" | sed 's/^.*= //')"

# ---- servers ---------------------------------------------------------------------
# hookd: "gh" is GitHub-signed; "open" has no signature, so a slow body is read
# (a signed hook answers 401 to a request without the header before its body).
# Delivery is parked on a blackhole upstream (accepts, never answers).
hookd_edge_config() {  # $1 spool name, $2 listen port, then extra [server] lines
  local name=$1 port=$2
  shift 2
  HOOKD_LOG_LEVEL=warn hookd_config_head "$WORK" "$port" "$WORK/$name.db" "$@"
  cat <<EOF

[[hook]]
name = "gh"
verify = { scheme = "github", secret_file = "$WORK/secret" }
action = { forward = "http://127.0.0.1:$P_BLACKHOLE/", timeout = "10m" }

[[hook]]
name = "open"
verify = { scheme = "none" }
action = { forward = "http://127.0.0.1:$P_BLACKHOLE/", timeout = "10m" }
EOF
}
cat >"$WORK/hooks.json" <<EOF
[
  {"id": "gh", "execute-command": "", "response-message": "ok",
   "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "$SECRET",
                              "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}}
]
EOF
python3 "$BENCH/blackhole.py" $P_BLACKHOLE & PIDS+=($!)
wait_port $P_BLACKHOLE

SERVER_PID=""
start_server() {  # hookd|webhook, under the open-file limit NOFILE
  rm -f "$WORK"/slow.db*
  case $1 in
    hookd | hookd_nocap)
      local cap=""
      [[ $1 == hookd_nocap ]] && cap="max_connections_per_ip = 65536"
      hookd_edge_config slow $P_HOOKD ${cap:+"$cap"} >"$WORK/slow.toml"
      (ulimit -n "$NOFILE"; exec "$HOOKD" serve --config "$WORK/slow.toml") >>"$WORK/hookd-slow.log" 2>&1 &
      SERVER_PID=$!; wait_port $P_HOOKD ;;
    webhook)
      (ulimit -n "$NOFILE"; exec webhook -hooks "$WORK/hooks.json" -ip 127.0.0.1 -port $P_WEBHOOK -nopanic) >>"$WORK/webhook.log" 2>&1 &
      SERVER_PID=$!; wait_port $P_WEBHOOK ;;
  esac
  PIDS+=("$SERVER_PID")
}

# Peak descriptors of PID, sampled every 0.2 s until the file STOP exists
# (bounded: 10 minutes); the peak lands in FILE.
fd_sampler() {  # PID STOP FILE
  local max=0 n i
  for ((i = 0; i < 3000; i++)); do
    [[ -e $2 ]] && break
    n=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) || n=0
    ((n > max)) && max=$n
    sleep 0.2
  done
  echo "$max" >"$3"
}

# One attack: server S, mode M (H, B, X), round R. One line in $RAW:
# SLOW server=S mode=M run=R <LEGIT fields> rss_kib= fds=
slow_case() {
  local s=$1 m=$2 run=$3 port url legit_url ok args=() out hwm fds held
  start_server "$s"
  if [[ $s == hookd* ]]; then port=$P_HOOKD ok=202; else port=$P_WEBHOOK ok=200; fi
  legit_url="http://127.0.0.1:$port/hooks/gh"
  case $m in
    H) url="http://127.0.0.1:$port/hooks/gh"; args=(-H -i 10) ;;
    # 8 KiB announced, a few bytes every 10 s.
    B) if [[ $s == hookd* ]]; then url="http://127.0.0.1:$port/hooks/open"; else url="http://127.0.0.1:$port/hooks/gh"; fi
       args=(-B -i 10 -s 8192 -t POST) ;;
    # The same small GET 10 times (slowhttptest's most) pipelined per connection,
    # read 5 bytes a second through a window of 1-32 bytes.
    X) if [[ $s == hookd* ]]; then url="http://127.0.0.1:$port/healthz"; else url="http://127.0.0.1:$port/hooks/gh"; fi
       args=(-X -k 10 -n 1 -w 1 -y 32 -z 5) ;;
  esac
  rm -f "$WORK/fdstop"
  fd_sampler "$SERVER_PID" "$WORK/fdstop" "$WORK/fdpeak" &
  local sampler=$!
  timeout $((RAMP + LEGIT_SECONDS + 40)) slowhttptest "${args[@]}" -c "$CONNS" -r "$ATTACK_RATE" \
    -l $((RAMP + LEGIT_SECONDS + 15)) -p 5 -u "$url" >"$WORK/slowhttptest-$s-$m-$run.log" 2>&1 &
  local attacker=$!
  sleep "$RAMP"   # CONNS / ATTACK_RATE seconds to open the crowd
  if ! kill -0 "$attacker" 2>/dev/null; then
    echo "edge.sh: slowhttptest -$m ended early:" >&2; tail -c 600 "$WORK/slowhttptest-$s-$m-$run.log" >&2; exit 1
  fi
  out=$(python3 "$BENCH/legit.py" --url "$legit_url" --body "$BODY" --secret "$SECRET" \
    --rate "$LEGIT_RATE" --seconds "$LEGIT_SECONDS" --ok "$ok")
  hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
  touch "$WORK/fdstop"; wait "$sampler" || true
  fds=$(cat "$WORK/fdpeak")
  stop_pid "$attacker"
  stop_pid "$SERVER_PID"
  # slowhttptest's last status: how many of its connections were open.
  held=$(sed 's/\x1b\[[0-9;]*[mHJ]//g' "$WORK/slowhttptest-$s-$m-$run.log" | tr -d '\000' \
    | grep -a -o 'connected: *[0-9]*' | tail -n 1 | grep -o '[0-9]*$' || echo 0)
  echo "SLOW server=$s mode=$m run=$run ${out#LEGIT } rss_kib=${hwm:-0} fds=$fds attacker_open=${held:-0}" | tee -a "$RAW" >&2
}

# ---- TLS against plain ------------------------------------------------------------
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
}
tls_case() {  # run; one hookd with a plain and a TLS listener
  local run=$1 scheme port ka hdr=() line
  for scheme in http https; do
    for ka in keepalive newconn; do
      if [[ $scheme == http ]]; then port=$P_PLAIN; else port=$P_TLS; fi
      if [[ $ka == newconn ]]; then hdr=(-H "Connection: close"); else hdr=(); fi
      line=$(BENCH_BODY=$BODY BENCH_SIG=$SIG wrk -t 2 -c "$TLS_CONNS" -d "${DURATION}s" --timeout 10s \
        "${hdr[@]}" -s "$BENCH/post.lua" "$scheme://127.0.0.1:$port/hooks/gh" | grep '^BENCH ')
      echo "TLS scheme=$scheme conn=$ka run=$run ${line#BENCH }" | tee -a "$RAW" >&2
    done
  done
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"
for run in $(seq 1 "$RUNS"); do
  if [[ "${SKIP_SLOW:-0}" != 1 ]]; then
    for m in H B X; do
      for s in "${SLOW_SERVERS[@]}"; do
        log "round $run: slowhttptest -$m x$CONNS against $s, legit $LEGIT_RATE req/s for ${LEGIT_SECONDS}s"
        slow_case "$s" "$m" "$run"
      done
    done
  fi
  if [[ "${SKIP_TLS:-0}" != 1 ]]; then
    [[ -f $WORK/cert.pem ]] || make_cert
    rm -f "$WORK"/tls.db*
    hookd_edge_config tls $P_PLAIN "listen_tls = [\"127.0.0.1:$P_TLS\"]" \
      "tls = { cert_file = \"$WORK/cert.pem\", key_file = \"$WORK/key.pem\" }" >"$WORK/tls.toml"
    "$HOOKD" serve --config "$WORK/tls.toml" >>"$WORK/hookd-tls.log" 2>&1 &
    TLS_PID=$!; PIDS+=("$TLS_PID")
    wait_port $P_PLAIN; wait_port $P_TLS
    log "round $run: wrk -c $TLS_CONNS ${DURATION}s, plain and TLS, keep-alive and new connections"
    tls_case "$run"
    stop_pid "$TLS_PID"
  fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- table ------------------------------------------------------------------------
# med PATTERN KEY: the median and every run of KEY= over the lines of $RAW that match PATTERN
med() {
  local vals
  vals=$(grep -E "$1" "$RAW" | grep -o "\b$2=[^ ]*" | cut -d= -f2)
  [[ -z $vals ]] && { echo "-"; return; }
  python3 -c '
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
fmt = lambda x: f"{x:.0f}" if x >= 100 or x == int(x) else f"{x:.1f}"
runs = ", ".join(fmt(x) for x in v)
print(f"{fmt(statistics.median(v))} [{runs}]")' $vals
}
{
  echo "## Edge run $STAMP, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)"
  echo
  echo "Command: \`RUNS=$RUNS SLOW_SERVERS=\"${SLOW_SERVERS[*]}\" CONNS=$CONNS NOFILE=$NOFILE bench/edge.sh\`${SKIP_TLS:+ (SKIP_TLS=1)}. Load average before $LOAD_BEFORE, after $LOAD_AFTER."
  echo "$(nproc) cores shared with other builds; medians of $RUNS runs, every run in brackets."
  echo
  if [[ "${SKIP_SLOW:-0}" != 1 ]]; then
    echo "### slowhttptest, $CONNS connections at $ATTACK_RATE/s, both servers under \`ulimit -n $NOFILE\`; legitimate client $LEGIT_RATE req/s for ${LEGIT_SECONDS}s from 127.0.0.2 (10 s timeout)"
    echo
    echo "| attack | server | legit success % | legit p99 ms | legit p50 ms | peak RSS KiB | peak fds | attacker's open connections at the end |"
    echo "|---|---|---|---|---|---|---|---|"
    for m in H B X; do
      for s in "${SLOW_SERVERS[@]}"; do
        p="^SLOW server=$s mode=$m "
        echo "| -$m | $s | $(med "$p" success_pct) | $(med "$p" p99_ms) | $(med "$p" p50_ms) | $(med "$p" rss_kib) | $(med "$p" fds) | $(med "$p" attacker_open) |"
      done
    done
    echo
  fi
  if [[ "${SKIP_TLS:-0}" != 1 ]]; then
    echo "### hookd ingest, plain against TLS, $TLS_CONNS connections, wrk ${DURATION}s (TLS 1.3, P-256 certificate)"
    echo
    echo "| listener | connections | req/s | p99 ms | errors | non-2xx |"
    echo "|---|---|---|---|---|---|"
    for scheme in http https; do
      for ka in keepalive newconn; do
        p="^TLS scheme=$scheme conn=$ka "
        echo "| $scheme | $ka | $(med "$p" rps) | $(med "$p" p99_ms) | $(med "$p" errors) | $(med "$p" non2xx) |"
      done
    done
  fi
} | tee "$OUT"
echo >&2
echo "raw lines: $RAW (KEEP=1 keeps it); table: $OUT" >&2
cp "$RAW" "${OUT%.md}.raw.txt"
