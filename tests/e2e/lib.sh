# lib.sh - container plumbing for the hookd end-to-end suite (sourced by run.sh, bash, root).
#
# Boots a real systemd as PID 1 of a systemd-nspawn container over a tmpfs overlay of a
# cached Debian 12 rootfs, runs commands in it with nsenter, and tears everything down.
# Works on a host whose PID 1 is not systemd (no machined: no machinectl, no -M).
#
# API: ensure_rootfs, ct_boot, X CMD... (run inside), ct_shutdown, ct_cleanup_stale,
#      wait_for SECONDS CMD... ; pass/fail accounting: pass NAME [INFO], fail NAME REASON.

: "${E2E_CACHE:=/var/tmp/hookd-e2e-cache}"     # rootfs tarball + unpacked base (kept)
: "${E2E_VAR:=/var/tmp/hookd-e2e}"             # per-run state, logs (kept for CI artifacts)
: "${MACHINE:=hookd-e2e}"
: "${E2E_SUITE:=bookworm}"
: "${E2E_INCLUDE:=systemd,systemd-sysv,dbus,procps,curl,python3}"
: "${CT_LIFETIME:=1500}"     # hard cap on the container's life: timeout(1) around nspawn
: "${CT_EXEC_TIMEOUT:=60}"   # default cap on each command run inside
STATE=$E2E_VAR/$MACHINE
MERGED=$STATE/root
UPPER=$STATE/upper
CG_NAME=$MACHINE
# The cache key changes when the package list or the builder changes.
ROOTFS_KEY=$(printf '%s %s r1' "$E2E_SUITE" "$E2E_INCLUDE" | sha256sum | cut -c1-12)
ROOTFS_TAR=$E2E_CACHE/$E2E_SUITE-$ROOTFS_KEY.tar.zst
ROOTFS_DIR=$E2E_CACHE/$E2E_SUITE-$ROOTFS_KEY
CT_PID1="" NSPAWN_PID="" TIMEOUT_PID=""
PASSED=0 FAILED=0

log() { printf '[%(%T)T] %s\n' -1 "$*" >&2; }
pass() { PASSED=$((PASSED + 1)); echo "PASS $1${2:+  ($2)}"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: $2"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds; false at the deadline.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# Cgroup roots to create our own cgroup in: both hierarchies on a hybrid host, or the
# single cgroup2 tree. nspawn creates its payload/supervisor cgroups under the cgroup
# it is started from; starting from our own keeps them ours and removable.
cg_roots() {
  if [ -d /sys/fs/cgroup/unified ]; then
    echo /sys/fs/cgroup/unified
    [ -d /sys/fs/cgroup/systemd ] && echo /sys/fs/cgroup/systemd
  elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    echo /sys/fs/cgroup
  fi
}

# --- rootfs -------------------------------------------------------------------------------
ensure_rootfs() {
  [ -f "$ROOTFS_DIR/.complete" ] && return 0
  if [ ! -f "$ROOTFS_TAR" ]; then
    log "no cached rootfs: building $ROOTFS_TAR"
    E2E_SUITE=$E2E_SUITE E2E_INCLUDE=$E2E_INCLUDE "$E2E_DIR/mkrootfs.sh" "$ROOTFS_TAR" "$ROOTFS_DIR" || return 1
    [ -f "$ROOTFS_DIR/.complete" ] && return 0
  fi
  log "unpacking $ROOTFS_TAR"
  rm -rf --one-file-system "$ROOTFS_DIR.tmp" && mkdir -p "$ROOTFS_DIR.tmp" || return 1
  zstd -q -dc "$ROOTFS_TAR" | tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$ROOTFS_DIR.tmp" -xf - || return 1
  rm -rf --one-file-system "$ROOTFS_DIR" && mv "$ROOTFS_DIR.tmp" "$ROOTFS_DIR" && touch "$ROOTFS_DIR/.complete"
}

# --- our processes: found by the pid we recorded, checked by command line ---------------------
is_our_nspawn() {  # PID: the timeout(1) wrapper or nspawn itself, for our machine name
  local cmd
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] || return 1
  cmd=$(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null)
  case "$cmd" in *systemd-nspawn*"--machine=$MACHINE "*) return 0 ;; esac
  return 1
}
alive() {  # a zombie counts as gone
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}
find_ct_pids() {  # TIMEOUT_PID -> NSPAWN_PID (child) -> CT_PID1 (its child whose NSpid ends in 1)
  local c
  NSPAWN_PID="" CT_PID1=""
  for c in $(pgrep -P "$TIMEOUT_PID" 2>/dev/null); do
    [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd-nspawn ] && NSPAWN_PID=$c
  done
  [ -n "$NSPAWN_PID" ] || return 1
  for c in $(pgrep -P "$NSPAWN_PID" 2>/dev/null); do
    awk '/^NSpid:/ { exit !($NF == 1) }' "/proc/$c/status" 2>/dev/null && CT_PID1=$c
  done
  [ -n "$CT_PID1" ]
}

# --- run inside ---------------------------------------------------------------------------
# X CMD...: run CMD in every namespace of the container, clean environment (the host's
# PATH may hold pyenv shims), no pager or colours; rc and output pass through.
# CT_TIMEOUT=N X ... for a longer cap.
X() {
  [ -n "$CT_PID1" ] || { echo "X: container not running" >&2; return 125; }
  timeout -k 5 "${CT_TIMEOUT:-$CT_EXEC_TIMEOUT}" nsenter --target "$CT_PID1" --all -- \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
      TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

# --- boot ---------------------------------------------------------------------------------
ct_boot() {
  local st r
  mkdir -p "$STATE" "$MERGED" "$UPPER"
  # Every write of the container lands on a tmpfs: fast, and gone at umount. (An upper
  # dir on the lower layer's filesystem gives ELOOP inside.)
  mount -t tmpfs -o size=2G,mode=0755 "e2e-upper-$MACHINE" "$UPPER" || return 1
  mkdir -p "$UPPER/upper" "$UPPER/work"
  mount -t overlay "e2e-root-$MACHINE" \
    -o "lowerdir=$ROOTFS_DIR,upperdir=$UPPER/upper,workdir=$UPPER/work" "$MERGED" || return 1
  [ -n "${CT_PRE_BOOT:-}" ] && "$CT_PRE_BOOT"
  for r in $(cg_roots); do mkdir -p "$r/$CG_NAME"; done
  (
    for r in $(cg_roots); do echo "$BASHPID" > "$r/$CG_NAME/cgroup.procs"; done
    # A pure cgroup2 tree inside, like a normal Debian 12 boot, on a hybrid host.
    export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
    # --register=no --keep-unit: no host systemd or machined to talk to.
    # systemd.firstboot=off: never prompt (the rootfs ships an empty machine-id).
    exec timeout -k 20 "$CT_LIFETIME" systemd-nspawn -D "$MERGED" --machine="$MACHINE" \
      --register=no --keep-unit --console=read-only --resolv-conf=copy-host --timezone=off \
      -b -- systemd.firstboot=off > "$STATE/nspawn.log" 2>&1 < /dev/null
  ) &
  TIMEOUT_PID=$!
  echo "$TIMEOUT_PID" > "$STATE/timeout.pid"
  for _ in $(seq 1 100); do find_ct_pids && break; sleep 0.1; done
  [ -n "$CT_PID1" ] || { log "container PID 1 not found"; tail -20 "$STATE/nspawn.log" >&2; return 1; }
  echo "$CT_PID1" > "$STATE/pid1"
  # systemctl needs the private bus socket before is-system-running --wait can answer.
  for _ in $(seq 1 300); do [ -S "/proc/$CT_PID1/root/run/systemd/private" ] && break; sleep 0.1; done
  st=$(CT_TIMEOUT=90 X systemctl is-system-running --wait 2>/dev/null)
  case "$st" in
    running) return 0 ;;
    degraded) X systemctl --failed --no-pager --no-legend >&2; return 0 ;;
    *) log "boot state: $st"; tail -30 "$STATE/nspawn.log" >&2; return 1 ;;
  esac
}

# --- shutdown -----------------------------------------------------------------------------
wait_gone() { local _; for _ in $(seq 1 "$2"); do alive "$1" || return 0; sleep 0.1; done; return 1; }

ct_shutdown() {
  [ -n "$TIMEOUT_PID" ] || TIMEOUT_PID=$(cat "$STATE/timeout.pid" 2>/dev/null)
  if is_our_nspawn "$TIMEOUT_PID"; then
    find_ct_pids
    # SIGRTMIN+4 to systemd is "poweroff": no bus needed.
    [ -n "$CT_PID1" ] && kill -s RTMIN+4 "$CT_PID1" 2>/dev/null
    if ! wait_gone "$TIMEOUT_PID" 300; then
      log "poweroff took over 30s: SIGTERM to nspawn"
      [ -n "$NSPAWN_PID" ] && kill -TERM "$NSPAWN_PID" 2>/dev/null
      if ! wait_gone "$TIMEOUT_PID" 150; then
        log "SIGKILL to container PID 1 $CT_PID1 and nspawn $NSPAWN_PID"
        [ -n "$CT_PID1" ] && kill -KILL "$CT_PID1" 2>/dev/null   # ends the whole PID namespace
        [ -n "$NSPAWN_PID" ] && kill -KILL "$NSPAWN_PID" 2>/dev/null
        wait_gone "$TIMEOUT_PID" 100
      fi
    fi
    wait "$TIMEOUT_PID" 2>/dev/null
  fi
  # Keep the container's journal for CI artifacts (journalctl reads the files from here).
  if mountpoint -q "$MERGED" && [ -d "$MERGED/var/log/journal" ]; then
    journalctl -D "$MERGED/var/log/journal" --no-pager -o short-precise > "$STATE/journal.txt" 2>/dev/null
    rm -rf "$STATE/journal" && cp -a "$MERGED/var/log/journal" "$STATE/journal"   # journalctl -D
  fi
  unmount_and_clean
  CT_PID1="" NSPAWN_PID="" TIMEOUT_PID=""
}

unmount_and_clean() {
  local m r
  for m in "$MERGED" "$UPPER"; do
    if mountpoint -q "$m"; then
      umount "$m" 2>/dev/null || { sleep 1; umount "$m" 2>/dev/null; } || { log "umount $m busy: lazy"; umount -l "$m"; }
    fi
  done
  for r in $(cg_roots); do
    [ -d "$r/$CG_NAME" ] && find "$r/$CG_NAME" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  # nspawn cannot remove this when the host's /run is not a tmpfs.
  rmdir "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null
  rm -f "$STATE/timeout.pid" "$STATE/pid1"
  return 0
}

# Leftovers of a run that was killed: its container (found by the recorded pid and checked
# by command line), its mounts and cgroups.
ct_cleanup_stale() {
  local tp p1 p
  tp=$(cat "$STATE/timeout.pid" 2>/dev/null)
  p1=$(cat "$STATE/pid1" 2>/dev/null)
  # Commands a killed run left running in the container (nsenter into its PID 1).
  if [ -n "$p1" ]; then
    for p in $(pgrep -f "nsenter --target $p1 --all "); do kill -KILL "$p" 2>/dev/null; done
  fi
  if [ -n "$tp" ] && is_our_nspawn "$tp"; then
    log "container of an earlier run (pid $tp) still up: shutting it down"
    TIMEOUT_PID=$tp
    ct_shutdown
  fi
  unmount_and_clean
}
