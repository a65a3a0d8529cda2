#!/usr/bin/env bash
# cli_bf16: [run] precision from the command line (docs/bf16.md). A bad
# value is an error naming FILE:LINE; precision = bf16 on a machine that
# cannot run it (no oneDNN in the build, no AVX512-BF16 / AMX-BF16) stops
# before any training with what is missing and writes no checkpoint (where
# the CPU runs it, it trains instead); bf16_emulated trains, says so in the
# header, records `precision` in the checkpoint, a resume keeps it (the
# resumed run ends bit-identical to an uninterrupted one, which it would not
# in fp32) unless the run file names another; fp32 checkpoints say fp32;
# 2 ranks stay bit-identical in bf16_emulated; gradcheck checks in fp32
# whatever the run trains in. Run by ctest;
# ARSENAL_BINARY is set by tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
contains() { grep -q -- "$2" "$1"; }
lacks() { ! grep -q -- "$2" "$1"; }
attr() { h5dump -a precision "$1" 2>/dev/null | grep '(0):' | grep -o '"[^"]*"' | tr -d '"'; }
same_attr() { [[ "$(attr "$1")" == "$2" ]]; }
no_checkpoint() { ! ls "$1"/ckpt-*.h5 >/dev/null 2>&1; }

cat > "$work/run.cfg" <<CFG
[run]
data = spirals
train_samples = 600
test_samples = 200
max_steps = 40
batch = 32
seed = 5
lr = 0.01
precision = half
[dense]
units = 32
activation = tanh
[dense]
units = 3
CFG
"$bin" train "$work/run.cfg" > "$work/bad" 2>&1
check "a bad precision fails" test $? -ne 0
check "  naming the file and line" contains "$work/bad" "run.cfg:9: \[run\] precision = 'half': expected one of: fp32, bf16, bf16_emulated"
"$bin" train "$work/run.cfg" --set run.precision=fp16 > "$work/bad_set" 2>&1
check "a bad --set precision names the --set" contains "$work/bad_set" "--set run.precision = 'fp16'"
sed -i '/^precision/d' "$work/run.cfg"

# bf16: refused here with what is missing, or trained where the CPU runs it
"$bin" train "$work/run.cfg" --set run.precision=bf16 --ckpt-dir "$work/ck_bf16" > "$work/bf16" 2>&1
bf16_rc=$?
if grep -q "precision = bf16 needs\|built without\|precision = bf16 on" "$work/bf16"; then
    check "bf16 where it cannot run fails" test "$bf16_rc" -ne 0
    check "  saying what is missing" grep -q "AVX512-BF16 or AMX-BF16\|libdnnl-dev\|oneDNN" "$work/bf16"
    check "  before any training" lacks "$work/bf16" "^step\|^epoch"
    check "  with no checkpoint written" no_checkpoint "$work/ck_bf16"
    echo "note: bf16 not runnable here: $(grep -o 'precision = bf16.*' "$work/bf16" | head -1)"
else
    check "bf16 trains where the CPU runs it" test "$bf16_rc" -eq 0
    check "  the header says oneDNN" contains "$work/bf16" "precision: bf16 products, fp32 accumulation (oneDNN"
    check "  the checkpoint says bf16" same_attr "$work/ck_bf16/latest.h5" bf16
fi

# bf16_emulated: the header, the checkpoint attribute, a bit-exact resume
"$bin" train "$work/run.cfg" --set run.precision=bf16_emulated --ckpt-dir "$work/full" > "$work/full.out" 2>&1
check "bf16_emulated trains" test $? -eq 0
check "  the header says so" contains "$work/full.out" "precision: bf16_emulated: operands rounded to bf16"
check "  the checkpoint records it" same_attr "$work/full/latest.h5" bf16_emulated
"$bin" train "$work/run.cfg" --set run.precision=bf16_emulated --set run.max_steps=20 --ckpt-dir "$work/half" \
    > "$work/half.out" 2>&1
cp -r "$work/half" "$work/half_fp32"
"$bin" train "$work/run.cfg" --ckpt-dir "$work/half" --resume "$work/half/latest.h5" > "$work/resume.out" 2>&1
check "a resume from a run file without precision" test $? -eq 0
check "  keeps the checkpoint's precision" contains "$work/resume.out" "resume: keeping the checkpoint's precision bf16_emulated"
check "  and records it again" same_attr "$work/half/latest.h5" bf16_emulated
check "  ending bit-identical to the uninterrupted run" h5diff "$work/full/latest.h5" "$work/half/latest.h5" /model
"$bin" train "$work/run.cfg" --set run.precision=fp32 --ckpt-dir "$work/half_fp32" \
    --resume "$work/half_fp32/latest.h5" > "$work/resume_fp32.out" 2>&1
check "a resume whose run file names fp32" contains "$work/resume_fp32.out" "resume: precision fp32 as \[run\] precision says (the checkpoint was trained in bf16_emulated)"
check "  trains in fp32" same_attr "$work/half_fp32/latest.h5" fp32
check "  which differs from bf16" bash -c "! h5diff -q '$work/full/latest.h5' '$work/half_fp32/latest.h5' /model"

# a bf16 checkpoint resumed where bf16 cannot run: the message says how to go on
if [[ "$bf16_rc" -ne 0 ]] && /usr/bin/python3 -c "import h5py" 2>/dev/null; then
    cp "$(readlink -f "$work/full/latest.h5")" "$work/as_bf16.h5"
    /usr/bin/python3 -c "
import h5py, sys
with h5py.File(sys.argv[1], 'r+') as f:
    del f.attrs['precision']
    f.attrs.create('precision', b'bf16', dtype=h5py.string_dtype('utf-8', 5))" "$work/as_bf16.h5"
    "$bin" train "$work/run.cfg" --set run.max_steps=60 --resume "$work/as_bf16.h5" > "$work/resume_bf16" 2>&1
    check "resuming a bf16 checkpoint where bf16 cannot run fails" test $? -ne 0
    check "  saying the resume keeps bf16 and how to resume in another" contains "$work/resume_bf16" \
        "the checkpoint was trained in bf16, which a resume keeps: .*--set run.precision=fp32 (or bf16_emulated)"
    check "  before any training" lacks "$work/resume_bf16" "^step\|^epoch"
fi

# 2 ranks: the replicas stay bit-identical (the parameter checksum every 10 steps)
set_mpi_launcher
"${mpi[@]}" -n 2 "$bin" train "$work/run.cfg" --set run.precision=bf16_emulated --set run.check_every=10 \
    > "$work/ranks.out" 2>&1
check "bf16_emulated on 2 ranks keeps the replicas identical" test $? -eq 0

"$bin" train "$work/run.cfg" --ckpt-dir "$work/fp32" > "$work/fp32.out" 2>&1
check "fp32 (the default) trains" test $? -eq 0
check "  without a precision line" lacks "$work/fp32.out" "^precision:"
check "  its checkpoint says fp32" same_attr "$work/fp32/latest.h5" fp32

"$bin" gradcheck "$work/run.cfg" --set run.precision=bf16_emulated --rows 4 > "$work/gc" 2>&1
check "gradcheck of a bf16 run passes" test $? -eq 0
check "  checking in fp32" contains "$work/gc" "gradients are checked in fp32"

echo "cli_bf16: $passed passed, $failed failed"
((failed == 0))
