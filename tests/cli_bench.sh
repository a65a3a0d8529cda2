#!/usr/bin/env bash
# cli_bench: the benchmark harness still runs end to end. bench/run.sh
# --quick on the programs of this build (tiny step counts, 1 round, the
# time-to-accuracy runs cut to 1 epoch on 2000 samples), without PyTorch:
# every program must succeed and the report must have each section (the bf16
# stage's table too, where bf16 runs or is refused with its reason). It never
# looks at a speed (benchmarks are not timed tests). Without the
# Fashion-MNIST files the time-to-accuracy stage is left out, saying so.
# Run by ctest (ARSENAL_BINARY and ARSENAL_SOURCE_DIR set by
# tests/CMakeLists.txt); by hand:
#   ARSENAL_BINARY=build/arsenal ARSENAL_SOURCE_DIR=$PWD bash tests/cli_bench.sh
set -uo pipefail
bin="${ARSENAL_BINARY:?ARSENAL_BINARY is not set (run through ctest)}"
src="${ARSENAL_SOURCE_DIR:?ARSENAL_SOURCE_DIR is not set (run through ctest)}"
work="$(mktemp -d /tmp/arsenal-cli-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT

source "$(dirname "$0")/testutil.sh"

tta=()
if [[ ! -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then   # ARS_FASHION_MNIST_DIR
    echo "SKIP (part): no Fashion-MNIST files: time to accuracy left out"
    tta=(--no-tta)
fi

OPENBLAS_NUM_THREADS=1 "$src/bench/run.sh" --quick --no-torch --prebuilt --build "$(dirname "$bin")" \
    --work "$work" "${tta[@]}" >"$work/run.log" 2>&1
rc=$?
check "bench/run.sh --quick exits 0 (status $rc)" test "$rc" -eq 0
((rc == 0)) || tail -30 "$work/run.log"
report="$work/performance.md"
for section in "## Training step" "### W1" "### W4" "## Matrix products against raw sgemm" \
    "## Data-parallel" "## Health probes and checkpoints"; do
    check "report has '$section'" grep -qF -- "$section" "$report"
done
check "report has the bf16 step table" grep -qF "## bf16 step" "$report"
check "  with arsenal's W1 at fp32 and bf16 (measured, or refused with the reason)" \
    grep -qE "^\| W1 \| [0-9.]+ \| ([0-9.]+|refused) \| [0-9.]+ \|" "$report"
if ((${#tta[@]} == 0)); then
    check "report has the time-to-accuracy table" grep -qF "| arsenal, 2 ranks x 1 thread |" "$report"
fi
check "every result line is JSON" python3 -c '
import json, sys
for n, line in enumerate(open(sys.argv[1]), 1):
    json.loads(line)' "$work/results.jsonl"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
