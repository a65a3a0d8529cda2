#!/usr/bin/env bash
# cli_scaling: the scaling cost model's pipeline still runs end to end, and
# its fit is right.
#   1. bench/scaling.sh --quick on this build's programs (bench_comm and
#      bench_step at tiny sizes, one short arsenal train validation on 2
#      ranks; across network-namespace hosts too when run as root with `ip
#      netns`, else that part is skipped and the report says so): exit 0,
#      every section of the report, the regenerate command at its top, the
#      256-node projection and the SVG plot. It never looks at a speed.
#   2. bench/scaling.py on synthetic measurements made from known alpha and
#      beta (ring, recursive doubling, binomial, reduce-scatter +
#      all-gather, at 2 and 3 ranks): the fit gives them back.
#   3. bad input: a measurement line that is not JSON is named FILE:LINE,
#      a bad --rate is refused.
# Run by ctest (ARSENAL_BINARY and ARSENAL_SOURCE_DIR set by
# tests/CMakeLists.txt); by hand:
#   ARSENAL_BINARY=build/arsenal ARSENAL_SOURCE_DIR=$PWD bash tests/cli_scaling.sh
set -uo pipefail
bin="${ARSENAL_BINARY:?ARSENAL_BINARY is not set (run through ctest)}"
src="${ARSENAL_SOURCE_DIR:?ARSENAL_SOURCE_DIR is not set (run through ctest)}"
work="$(mktemp -d /tmp/arsenal-cli-scaling.XXXXXX)"
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/testutil.sh"
build="$(dirname "$bin")"
python=/usr/bin/python3
contains() { grep -qF -- "$2" "$1"; }

# --- 1. the pipeline ---------------------------------------------------------
netns_note="across hosts measured"
if [[ $(id -u) -ne 0 ]] || ! command -v ip > /dev/null; then
    echo "SKIP (part): not root or no 'ip': the namespace-host measurements are left out"
    netns_note="skipped"
fi
OPENBLAS_NUM_THREADS=1 "$src/bench/scaling.sh" --quick --prebuilt --build "$build" --work "$work/q" \
    > "$work/q.log" 2>&1
rc=$?
check "bench/scaling.sh --quick exits 0 (status $rc)" test "$rc" -eq 0
((rc == 0)) || tail -30 "$work/q.log"
report="$work/q/scaling.md"
check "it names the command that regenerates it at the top" \
    bash -c "head -8 '$report' | grep -qF 'bench/scaling.sh --quick'"
for section in "## 1. What a sync costs here" "### shm, 2 ranks" "## 2. The alpha-beta fit" \
    "## 3. Predicted against measured" "## 4. Toward 256 nodes" "### 25 GbE" "### 100 Gb InfiniBand" \
    "## 5. Against Horovod"; do
    check "report has '$section'" contains "$report" "$section"
done
check "the projection reaches 256 nodes, unsharded and sharded" \
    bash -c "grep -q '^| W1 | arsenal today |.*|.*%' '$report' && grep -q '^| W1 | sharded |' '$report' &&
             grep -q '| 256 |' '$report'"
check "the plot is written next to it" bash -c "grep -q '<polyline' '$work/q/scaling-efficiency.svg'"
if [[ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
    check "the validation table has the 2-rank run on one host" \
        bash -c "grep -q '^| W1 | one host | 2 |' '$report'"
else
    echo "SKIP (part): no Fashion-MNIST files: no validation rows"
fi
if [[ $netns_note == skipped ]]; then
    check "the report says the hosts were not measured" contains "$report" "Across hosts: not measured"
elif grep -q '^netns_skipped=' "$work/q/machine.txt"; then
    echo "SKIP (part): $(sed -n 's/^netns_skipped=//p' "$work/q/machine.txt")"
    check "the report says the hosts were not measured" contains "$report" "Across hosts: not measured"
else
    check "across 2 namespace hosts: measured" contains "$report" "### net, 2 ranks"
    check "... and validated" bash -c "grep -q '^| W1 | namespace hosts | 2 |' '$report'"
fi
check "every measurement line is JSON" "$python" -c '
import json, sys
for path in sys.argv[1:]:
    for line in open(path):
        json.loads(line)' "$work/q/comm.jsonl" "$work/q/step.jsonl" "$work/q/validation.jsonl"

# --- 2. the fit gives back known alpha and beta ----------------------------------
mkdir -p "$work/s"
cp "$work/q/step.jsonl" "$work/s/"
: > "$work/s/validation.jsonl"
"$python" - "$work/s/comm.jsonl" "$src/bench" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[2])
import scaling
alpha, beta = 20e-6, 1 / 0.5e9       # what the fit must find: 20 us, 0.5 GB/s
out = open(sys.argv[1], "w")
runs = {"default": [("rs_ag", "rs_ag"), ("dist_overlap", "binomial"), ("allreduce", "ring")],
        "ring": [("allreduce", "ring"), ("dist_overlap", "ring")],
        "rd": [("allreduce", "rd"), ("dist_overlap", "rd")]}
codes = {"default": "default", "ring": "4", "rd": "3"}
for p in (2, 3):
    for alg, ops in runs.items():
        print(json.dumps({"bench": "comm_meta", "label": "net", "ranks": p, "hosts": p, "single_host": False,
                          "allreduce_algorithm": codes[alg], "iallreduce_algorithm": "default"}), file=out)
        for n in (8, 512, 32768, 2097152, 33554432):
            for op, formula in ops:
                t = scaling.cost(formula, p, n, alpha, beta)
                print(json.dumps({"bench": "comm", "label": "net", "ranks": p, "op": op, "rep": 0, "bytes": n,
                                  "iters": 2, "buckets": 1, "ms": t * 1e3}), file=out)
PY
"$python" "$src/bench/scaling.py" --work "$work/s" --out "$work/s/scaling.md" > "$work/s.log" 2>&1
check "scaling.py renders synthetic measurements" test $? -eq 0
for row in "| net | allreduce (ring) | ring | 20.0 | 0.500 | 0% |" "| net | allreduce (rd) | rd | 20.0 | 0.500 | 0% |" \
    "| net | dist_overlap (default) | binomial | 20.0 | 0.500 | 0% |" "| net | rs_ag (default) | rs_ag | 20.0 | 0.500 | 0% |" \
    "| net | dist_overlap (ring) | ring | 20.0 | 0.500 | 0% |"; do
    check "fit recovers alpha 20 us, 0.5 GB/s: $row" contains "$work/s/scaling.md" "$row"
done
check "the ring's cost: 2(p-1) alpha + 2(p-1)/p n beta" "$python" -c '
import sys; sys.path.insert(0, sys.argv[1]); import scaling
assert abs(scaling.cost("ring", 4, 1000, 1.0, 1.0) - (6 + 1500)) < 1e-9
assert abs(scaling.cost("rd", 3, 10, 1.0, 1.0) - 3 * 11) < 1e-9          # 1 round + fold in and out
assert abs(scaling.cost("binomial", 5, 10, 1.0, 1.0) - 2 * 3 * 11) < 1e-9 # reduce + bcast, ceil(log2 5) each
assert scaling.rd_steps(256) == 8 and scaling.rd_steps(6) == 4' "$src/bench"
check "arsenal's bucket plan: W1 in 2 buckets (4.2 MB with the output layer, 3.2 MB)" "$python" -c '
import sys; sys.path.insert(0, sys.argv[1]); import scaling
layers = [{"index": 0, "params": 803840}, {"index": 1, "params": 0}, {"index": 2, "params": 1049600},
          {"index": 3, "params": 0}, {"index": 4, "params": 10250}]
assert scaling.buckets(layers) == [[4 * (1049600 + 10250), 2], [4 * 803840, 0]], scaling.buckets(layers)' "$src/bench"

# --- 3. bad input -------------------------------------------------------------------
cp -r "$work/s" "$work/bad"
echo '{"bench":"comm", broken' >> "$work/bad/comm.jsonl"
"$python" "$src/bench/scaling.py" --work "$work/bad" --out "$work/bad/scaling.md" > "$work/bad.log" 2>&1
check "a broken measurement line fails" test $? -ne 0
check "... naming the file and line" bash -c "grep -qE 'comm.jsonl:[0-9]+: not JSON' '$work/bad.log'"
"$src/bench/scaling.sh" --rate fast --work "$work/r" > "$work/rate.log" 2>&1
check "a bad --rate is refused" test $? -eq 2
check "... saying what a rate looks like" contains "$work/rate.log" "expected a tc rate such as 1gbit"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
