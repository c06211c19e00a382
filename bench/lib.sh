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

# A hookd config on stdout: one GitHub-signed hook "gh" forwarding to an upstream.
# $1 work dir (holds `secret` and the control socket), $2 listen port, $3 spool
# file, $4 upstream port, $5 hook concurrency, $6 action timeout.
hookd_config() {
  cat <<EOF
[server]
listen = ["127.0.0.1:$2"]
control_socket = "$1/control-$2.sock"

[spool]
path = "$3"

[shutdown]
grace = "1s"

[log]
format = "plain"
level = "${HOOKD_LOG_LEVEL:-info}"

[[hook]]
name = "gh"
verify = { scheme = "github", secret_file = "$1/secret" }
action = { forward = "http://127.0.0.1:$4/", timeout = "$6" }
concurrency = $5
retry = { max_attempts = 10, backoff = "1s", max_backoff = "1m" }
EOF
}
