#!/usr/bin/env bash
# The job adnanh/webhook exists for, side by side with hookd: a GitHub-signed
# hook with a rule (ref == refs/heads/main) running /bin/true with two payload
# arguments, under wrk at 64 connections. Prints, per server and round:
# requests/s accepted, commands completed per second during the load, and for
# hookd the backlog drain rate after the load stops (hookd spools first and
# runs commands from the spool; webhook runs them as it answers).
#
#   [CONCURRENCY=8] bench/rules.sh [ROUNDS] [SECONDS]   (defaults 3 and 15; CONCURRENCY: hookd's hook concurrency)
#
# Needs: a release build (target/release/hookd), wrk, webhook (Debian package),
# curl, python3. webhook's completions are counted from its -verbose log
# ("finished handling"), hookd's from hookd_delivered_total in /metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source bench/lib.sh
ROUNDS=${1:-3}
SECS=${2:-15}
HOOKD=${HOOKD:-target/release/hookd}
WEBHOOK=${WEBHOOK:-/usr/bin/webhook}
for t in wrk curl python3 "$WEBHOOK" "$HOOKD"; do
  command -v "$t" >/dev/null || { echo "bench: $t not found" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'stop_all; rm -rf "$work"' EXIT
secret="bench secret"
printf '%s' "$secret" > "$work/secret"; chmod 600 "$work/secret"
body=bench/body.json
sig="sha256=$(openssl dgst -sha256 -hmac "$secret" -r < "$body" | cut -d' ' -f1)"
export BENCH_BODY=$body BENCH_SIG=$sig BENCH_UNIQUE=1

cat > "$work/hooks.json" <<EOF
[{ "id": "gh", "execute-command": "/bin/true",
   "pass-arguments-to-command": [ { "source": "payload", "name": "after" },
                                  { "source": "payload", "name": "pusher.name" } ],
   "trigger-rule": { "and": [
     { "match": { "type": "payload-hmac-sha256", "secret": "$secret",
                  "parameter": { "source": "header", "name": "X-Hub-Signature-256" } } },
     { "match": { "type": "value", "value": "refs/heads/main",
                  "parameter": { "source": "payload", "name": "ref" } } } ] } }]
EOF

hookd_conf() {  # $1 port, $2 spool
  HOOKD_LOG_LEVEL=warn hookd_config_head "$work" "$1" "$2"
  cat <<EOF
[[hook]]
name = "gh"
verify = { scheme = "github", secret_file = "$work/secret" }
when = [ { field = "payload.ref", eq = "refs/heads/main" } ]
action = { exec = ["/bin/true", "{payload.after}", "{payload.pusher.name}"], timeout = "10s" }
concurrency = ${CONCURRENCY:-8}
EOF
}

delivered() {  # $1 port
  metrics_text "$work" "$1" | awk '$1 ~ /^hookd_delivered_total/ { n += $2 } END { print n + 0 }'
}

wrk_rps() { awk '/^BENCH/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "rps") print kv[2] } }'; }

printf '| round | server | accepted req/s | commands/s during load | backlog at stop | drain rate (cmd/s) |\n|---|---|---|---|---|---|\n'
for r in $(seq "$ROUNDS"); do
  # webhook
  port=$(( 19000 + r ))
  "$WEBHOOK" -hooks "$work/hooks.json" -ip 127.0.0.1 -port "$port" -verbose > "$work/webhook.log" 2>&1 &
  wpid=$!; PIDS+=("$wpid"); wait_port "$port"
  rps=$(wrk -t2 -c64 -d"${SECS}s" -s bench/post.lua "http://127.0.0.1:$port/hooks/gh" | wrk_rps)
  done_n=$(grep -c "finished handling" "$work/webhook.log" || true)
  stop_pid "$wpid"
  printf '| %s | webhook | %s | %.1f | - | - |\n' "$r" "$rps" "$(echo "$done_n / $SECS" | bc -l)"

  # hookd
  port=$(( 19100 + r ))
  hookd_conf "$port" "$work/spool-$r.db" > "$work/hookd-$r.toml"
  "$HOOKD" serve --config "$work/hookd-$r.toml" > "$work/hookd.log" 2>&1 &
  hpid=$!; PIDS+=("$hpid"); wait_port "$port"
  rps=$(wrk -t2 -c64 -d"${SECS}s" -s bench/post.lua "http://127.0.0.1:$port/hooks/gh" | wrk_rps)
  at_stop=$(delivered "$port")
  accepted=$(metrics_text "$work" "$port" | awk '$1 ~ /^hookd_spooled_total/ { n += $2 } END { print n + 0 }')
  t0=$(date +%s.%N)
  # Bounded: at most 600 s of draining.
  for _ in $(seq 6000); do
    [ "$(delivered "$port")" -ge "$accepted" ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  final=$(delivered "$port")
  stop_pid "$hpid"
  backlog=$(( accepted - at_stop ))
  printf '| %s | hookd | %s | %.1f | %s | %.1f |\n' "$r" "$rps" "$(echo "$at_stop / $SECS" | bc -l)" "$backlog" \
    "$(echo "($final - $at_stop) / ($t1 - $t0)" | bc -l)"
done
