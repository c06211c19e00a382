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
