#!/usr/bin/env bash
# cli_experiment: `arsenal experiment --quick` end to end on 2 MPI ranks:
# it must exit 0 (its checks pass: the 20-layer sigmoid network's gradient
# vanishes, the 1000-layer residual network trains above chance, clipping
# prevents the NaN, the degradation section's four CNNs get their first
# convolution's gradient measured, the learning rate 0.5 run is cured
# without a non-finite step) and write the results document with
# every section and its PNG plots; killed, it removes its temporary
# checkpoints. Also the usage errors. Run by ctest; ARSENAL_BINARY and
# ARSENAL_SOURCE_DIR are set by tests/CMakeLists.txt. About 1-3 minutes.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpiexec -n 2 --oversubscribe --mca mpi_yield_when_idle 1)
source "$(dirname "$0")/testutil.sh"
contains() { grep -q -- "$2" "$1"; }
nonempty_png() { [ -s "$1" ] && [ "$(head -c 4 "$1" | tail -c 3)" = "PNG" ]; }

# Usage.
"$bin" experiment --help > "$work/help" 2>&1; check "experiment --help exits 0" [ $? -eq 0 ]
check "help explains --quick" contains "$work/help" "--quick"
"$bin" experiment --frobnicate > "$work/out" 2>&1; check "unknown option exits 2" [ $? -eq 2 ]
check "unknown option is named" contains "$work/out" "unknown option '--frobnicate'"
"$bin" experiment --only nonsense > "$work/out" 2>&1; check "unknown section exits 2" [ $? -eq 2 ]
check "unknown section is named" contains "$work/out" "unknown section 'nonsense'"

# The quick experiment on 2 ranks.
start=$(date +%s)
"${mpi[@]}" "$bin" experiment --quick --out "$work/out-dir" > "$work/log" 2>&1
status=$?
echo "quick experiment: exit $status in $(( $(date +%s) - start ))s"
check "experiment --quick exits 0 (its checks pass)" [ $status -eq 0 ]
[ $status -eq 0 ] || tail -n 40 "$work/log"
doc="$work/out-dir/arsenal-results.md"
check "the document exists" [ -s "$doc" ]
if [ -s "$doc" ]; then
    check "stamped with the world size" contains "$doc" "with 2 MPI ranks"
    check "stamped with the commit" contains "$doc" "from commit \`"
    check "has the verdict table" contains "$doc" "## Verdicts"
    for title in "## 1. Activations" "## 2. Initialization" "## 3. Normalization" "## 4. Residual" \
                 "## 5. Exploding" "## 6. Optimizers" "## 7. Degradation" "## 8. Automatic cures"; do
        check "has section '$title'" contains "$doc" "$title"
    done
    check "all checks passed" contains "$doc" "Checks (they decide the exit status): all passed"
    check "no failed check" bash -c "! grep -q 'check ✘' '$doc'"
    check "the log reports the checks" contains "$work/log" "check passed: "
fi
for plot in activations_gradient_flow activations_loss init_loss normalization_lr residual_depth \
            residual_gradient_flow exploding_loss optimizers_loss degradation_loss degradation_gradient_flow \
            cure_accuracy; do
    if [ -s "$doc" ] && grep -q "Plot $plot not drawn" "$doc"; then
        echo "skip $plot.png (arsenal built without PLplot's PNG device)"
        continue
    fi
    check "plot $plot.png is a PNG" nonempty_png "$work/out-dir/results/$plot.png"
    check "the document links $plot.png" contains "$doc" "(results/$plot.png)"
done
runs_dir="$(sed -n 's/.*checkpoints in \(.*\)$/\1/p' "$work/log" | head -n 1)"
check "the temporary checkpoints are removed" bash -c "[ -n '$runs_dir' ] && [ ! -e '$runs_dir' ]"

# A killed experiment leaves no temporary checkpoints behind: SIGINT to
# mpiexec (Ctrl-C; it passes SIGTERM on to the ranks) and SIGTERM to a
# process run alone. Each is killed once its first run has a directory.
killed_leaves_nothing() {   # killed_leaves_nothing SIGNAL [LAUNCHER...]
    local sig="$1"; shift
    local tmp="$work/tmp-$sig" log="$work/killed-$sig" waited=0
    mkdir -p "$tmp"
    set -m   # its own process group: a background job's SIGINT is otherwise ignored
    TMPDIR="$tmp" "$@" "$bin" experiment --quick --only activations --out "$work/out-$sig" > "$log" 2>&1 &
    local pid=$!
    set +m
    until compgen -G "$tmp/arsenal-experiment-*/*" > /dev/null || [ $waited -ge 300 ]; do
        sleep 0.1; waited=$((waited + 1))
    done
    kill -s "$sig" "$pid"
    wait "$pid"
    if compgen -G "$tmp/arsenal-experiment-*" > /dev/null || ! grep -q "removing $tmp/arsenal-experiment-" "$log"; then
        ls -R "$tmp"; cat "$log"; return 1
    fi
}
check "SIGINT under mpiexec removes the temporary checkpoints" killed_leaves_nothing INT "${mpi[@]}"
check "SIGTERM removes the temporary checkpoints" killed_leaves_nothing TERM

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
