#!/bin/bash
# The cost of a hook's `when` rules per request, at 10 and 100 conditions
# (every operator, all holding, over bench/body.json): a release build of the
# unit test ingress::rules::tests::cost_per_request_at_10_and_100_conditions
# with many iterations. Prints medians of 5 rounds. No network, no daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ITERS:=20000}"
HOOKD_BENCH_RULES_ITERS=$ITERS cargo test --release --lib \
  ingress::rules::tests::cost_per_request_at_10_and_100_conditions -- --nocapture 2>&1 |
  grep '^rules cost:'
