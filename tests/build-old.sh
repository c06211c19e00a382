#!/bin/bash
# build-old.sh TMP_DIR [COMMIT] - build hookd at an older commit, once, and print
# the directory of that build on stdout.
#
# TMP_DIR is cargo's CARGO_TARGET_TMPDIR (TARGET_DIR/tmp); the directory is
# TMP_DIR/old-<first 12 hex of COMMIT>: `src` a detached git worktree of COMMIT,
# `target` its own target dir, `target/release/hookd` the binary. Whichever of
# tests/upgrade.rs, tests/e2e/run.sh or bench/migrate.sh comes first builds it;
# the others reuse it.
# COMMIT defaults to the one in tests/upgrade-from (comment lines start with #).
# Progress goes to stderr; exits non-zero with a message naming what is missing
# (a shallow clone, an unknown commit, a failed build).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP_DIR=${1:?usage: build-old.sh TMP_DIR [COMMIT]}
if [ -n "${2:-}" ]; then
  ref=$2
else
  ref=$(grep -v '^[[:space:]]*#' "$REPO/tests/upgrade-from" | tr -d '[:space:]')
  [[ "$ref" =~ ^[0-9a-f]{40}$ ]] \
    || { echo "build-old.sh: $REPO/tests/upgrade-from: want one line with the full 40-hex commit hash, got '$ref'" >&2; exit 2; }
fi
if [ "$(git -C "$REPO" rev-parse --is-shallow-repository)" = true ]; then
  echo "build-old.sh: $REPO is a shallow clone: building $ref needs its history (git fetch --unshallow; CI: clone with full history)" >&2
  exit 2
fi
commit=$(git -C "$REPO" rev-parse --verify --quiet "$ref^{commit}") \
  || { echo "build-old.sh: commit $ref is not in $REPO (fetch it, or fix tests/upgrade-from)" >&2; exit 2; }
base=$(mkdir -p "$TMP_DIR" && cd "$TMP_DIR" && pwd)/old-${commit:0:12}
if [ ! -x "$base/target/release/hookd" ]; then
  if [ ! -f "$base/src/Cargo.toml" ]; then
    rm -rf "$base/src"
    git -C "$REPO" worktree prune
    git -C "$REPO" worktree add --detach --force "$base/src" "$commit" >&2
  fi
  echo "build-old.sh: building $commit in $base (release, once)" >&2
  (cd "$base/src" && CARGO_TARGET_DIR="$base/target" "${CARGO:-cargo}" build --release --locked --bin hookd >&2) \
    || { echo "build-old.sh: building $commit failed" >&2; exit 1; }
fi
echo "$base"
