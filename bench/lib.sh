# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run).

# Processes a script started, stopped on exit.
PIDS=()

# SIGTERM to every pid in PIDS, a bounded wait (5 s each), then SIGKILL.
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# Waits (bounded: 10 s) until a TCP port on 127.0.0.1 accepts.
wait_port() {
  local port=$1
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bench: nothing listens on 127.0.0.1:$port after 10 s" >&2
  return 1
}

# Stops one process the script started: SIGTERM, a bounded wait (15 s), SIGKILL.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Open (pending + leased) items of hook gh, from `$1 spool stats --json --config $2`.
open_items() {
  "$1" spool stats --json --config "$2" | python3 -c '
import json, sys
print(sum(r["count"] for r in json.load(sys.stdin)["depth"]
          if r["hook"] == "gh" and r["state"] in ("pending", "leased")))'
}

# /metrics of the hookd that `hookd_config` $1 $2 configured: it is served on
# its own unix socket (server.metrics_listen), not on the webhook port.
metrics_text() {
  curl -sf --unix-socket "$1/metrics-$2.sock" http://hookd/metrics
}

# The same from the /metrics of a hookd with work dir $1 on port $2. Cheap
# enough to poll: a `hookd spool stats` and a python per poll took CPU from the
# two cores being measured.
open_items_http() {
  metrics_text "$1" "$2" | awk '
    $1 ~ /^hookd_spool_depth\{/ && $1 ~ /hook="gh"/ && $1 ~ /state="(pending|leased)"/ { n += $2 }
    END { print n + 0 }'
}

# The settings part of a hookd config on stdout, every hook to follow it:
# $1 work dir (holds `secret`, the control and metrics sockets, named by the
# port), $2 listen port, $3 spool file, then extra [server] lines, if any
# (`listen_tls = [..]`, a connection cap). HOOKD_LOG_LEVEL: info unless set.
hookd_config_head() {
  local dir=$1 port=$2 spool=$3
  shift 3
  cat <<EOF
[server]
listen = ["127.0.0.1:$port"]
metrics_listen = ["unix:$dir/metrics-$port.sock"]
control_socket = "$dir/control-$port.sock"
EOF
  if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi
  cat <<EOF

[spool]
path = "$spool"

[shutdown]
grace = "1s"

[log]
format = "plain"
level = "${HOOKD_LOG_LEVEL:-info}"
EOF
}

# A hookd config on stdout: one GitHub-signed hook "gh" forwarding to an upstream.
# $1 work dir (holds `secret` and the control socket), $2 listen port, $3 spool
# file, $4 upstream port, $5 hook concurrency, $6 action timeout.
hookd_config() {
  hookd_config_head "$1" "$2" "$3"
  cat <<EOF

[[hook]]
name = "gh"
verify = { scheme = "github", secret_file = "$1/secret" }
action = { forward = "http://127.0.0.1:$4/", timeout = "$6" }
concurrency = $5
retry = { max_attempts = 10, backoff = "1s", max_backoff = "1m" }
EOF
}
