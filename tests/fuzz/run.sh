#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) and prints "fuzz: N passed,
# N failed". A target fails when libFuzzer stops on a crash, a panic, a
# timeout or an out-of-memory; its input is then printed (base64) and kept in
# $FUZZ_WORK/artifacts, to become a regression test in src/fuzz_api/tests.rs.
#
#   bash tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install --locked cargo-fuzz`). Builds with the
# stable toolchain: no sanitizer (hookd is safe Rust; the C it links, SQLite,
# is not instrumented either way), so no -Z flag is passed and no nightly is
# needed. New corpus entries go to $FUZZ_WORK/corpus, not into tests/fuzz/seeds.
set -uo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(verify config ingress spool_model)
work=${FUZZ_WORK:-tests/fuzz/target/work}
tgt=${FUZZ_TARGET_DIR:-tests/fuzz/target}
mkdir -p "$work/artifacts"

# Optimised once per build (codegen units > 1): cargo fuzz would build every
# crate as one unit, which doubles the build on two cores.
flags=(--fuzz-dir tests/fuzz --sanitizer none --codegen-units 16 --target-dir "$tgt")

if ! cargo fuzz build "${flags[@]}"; then
  echo "fuzz: the targets do not build"
  echo "fuzz: 0 passed, ${#targets[@]} failed"
  exit 1
fi

passed=0
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t"
  log="$work/$t.log"
  # libFuzzer grows inputs slowly from the seeds' size; the spool model needs
  # 128 bytes (64 operations) to reach long histories within a minute.
  extra=()
  [ "$t" = spool_model ] && extra=(-max_len=128)
  cargo fuzz run "${flags[@]}" "$t" "$work/corpus/$t" "tests/fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$t-" "${extra[@]}" >"$log" 2>&1
  rc=$?
  runs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  speed=$(grep -o '^stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz $t: ok, ${runs:-?} inputs in ${secs}s (${speed:-?}/s)"
  else
    failed=$((failed + 1))
    echo "fuzz $t: FAILED (exit $rc); the end of its log:"
    tail -n 40 "$log"
    for a in "$work/artifacts/$t-"*; do
      [ -f "$a" ] || continue
      echo "fuzz $t: input $a (base64):"
      base64 -w 0 "$a"
      echo
    done
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
