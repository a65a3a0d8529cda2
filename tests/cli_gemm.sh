#!/usr/bin/env bash
# cli_gemm: the matrix products' layouts (src/gemm.h) as a user sees them:
# the run header names the layouts rank 0 measured, the checkpoint records
# them (/model gemm_tuning) and a resume says it computes with the
# checkpoint's; run.gemm_tuning = off prints and records nothing; a bad
# value of the key and a corrupted attribute are refused with a message
# saying where. On 2 ranks. Run by ctest.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
set_mpi_launcher
contains() { grep -q -- "$2" "$1"; }
lacks() { ! grep -q -- "$2" "$1"; }

cat > "$work/run.cfg" <<CFG
[run]
data = spirals
train_samples = 400
test_samples = 100
epochs = 1
batch = 40
lr = 0.01
[dense]
units = 48
activation = relu
[dense]
units = 3
CFG

"${mpi[@]}" -n 2 "$bin" train "$work/run.cfg" --ckpt-dir "$work/on" > "$work/on.out" 2>&1
check "a run with the default gemm_tuning exits 0" [ $? -eq 0 ]
check "the header names rank 0's measured layouts" \
    contains "$work/on.out" "^matrix product layouts (rank 0's, [0-9]* products measured in [0-9]* ms, [0-9]* ms of CPU; run.gemm_tuning = off fixes them): "
attr() { h5dump -a /model/gemm_tuning "$1" > "$work/attr" 2>&1; }
if command -v h5dump > /dev/null; then
    check "the checkpoint records the layouts" attr "$work/on/latest.h5"
    check "... a row of 10 per product" contains "$work/attr" "DATASPACE  SIMPLE { ( [0-9]*, 10 )"
fi
"${mpi[@]}" -n 2 "$bin" train "$work/run.cfg" --set run.epochs=2 --ckpt-dir "$work/on" \
    --resume "$work/on/latest.h5" > "$work/resume.out" 2>&1
check "resume exits 0" [ $? -eq 0 ]
check "the resumed run computes with the checkpoint's layouts" \
    contains "$work/resume.out" "^matrix product layouts (the checkpoint's, [0-9]* products): "

"${mpi[@]}" -n 2 "$bin" train "$work/run.cfg" --set run.gemm_tuning=off --ckpt-dir "$work/off" > "$work/off.out" 2>&1
check "gemm_tuning = off exits 0" [ $? -eq 0 ]
check "... and prints no layouts" lacks "$work/off.out" "matrix product layouts"
if command -v h5dump > /dev/null; then
    check "... and records none" bash -c "! h5dump -a /model/gemm_tuning '$work/off/latest.h5' > /dev/null 2>&1"
fi

"$bin" train "$work/run.cfg" --set run.gemm_tuning=sometimes > "$work/bad.out" 2>&1
check "a bad gemm_tuning value is refused" [ $? -ne 0 ]
check "... naming the key and what it takes" contains "$work/bad.out" "gemm_tuning.*on/off"

if /usr/bin/python3 -c "import h5py" 2> /dev/null; then
    cp "$work/on/latest.h5" "$work/broken.h5"
    /usr/bin/python3 - "$work/broken.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    rows = f["model"].attrs["gemm_tuning"].copy()
    rows[0, 9] = 12
    f["model"].attrs["gemm_tuning"] = rows
PY
    "$bin" train "$work/run.cfg" --set run.epochs=2 --resume "$work/broken.h5" > "$work/broken.out" 2>&1
    check "a checkpoint with a layout out of range is refused" [ $? -ne 0 ]
    check "... naming the file, the attribute and the row" \
        contains "$work/broken.out" "broken.h5: /model attribute gemm_tuning row 0 (.*layout 12)"
else
    echo "SKIP: no h5py for the corrupted-attribute check"
fi

echo "cli_gemm: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
