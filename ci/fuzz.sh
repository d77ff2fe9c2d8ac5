#!/usr/bin/env bash
# Long fuzzing runs (minutes, not CI's seconds): the apply fuzzer (hostile
# tar streams) and the differential whiteout fuzzer (overlay2 through real
# overlayfs against the delete form; needs root). Each gets half of the
# time budget; a run that ends by the budget found nothing.
#
#   ci/fuzz.sh [SECONDS]        default 600; SEED=N to replay a run
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-600}
seed=${SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
echo "ci/fuzz.sh: seed $seed (replay: SEED=$seed ci/fuzz.sh $budget), budget ${budget}s"
export PROPTEST_RNG_SEED=$seed PROPTEST_CASES=100000000
cargo build --release --locked -p strata-conformance --tests -q
cargo build --release --locked -p strata-cli --test fuzz_whiteouts -q
run() {
  local what=$1; shift
  echo "== $what ($((budget / 2))s)"
  set +e
  timeout --signal=INT $((budget / 2)) "$@"
  rc=$?
  set -e
  case $rc in
    0|124|130) echo "$what: no failure within the budget" ;;
    *) echo "$what: FAILED (seed $seed)"; exit 1 ;;
  esac
}
run "apply fuzzer" cargo test --release --locked -q -p strata-conformance --test fuzz_apply
run "whiteout fuzzer" cargo test --release --locked -q -p strata-cli --test fuzz_whiteouts
