#!/usr/bin/env bash
# cli_train: end-to-end tests of the arsenal command as a user runs it: help
# texts, a short training run with metrics and checkpoints, and what a user
# sees for bad input (missing file, bad key, a rank without its data, a
# diverging run). Run by ctest; ARSENAL_BINARY and ARSENAL_SOURCE_DIR are
# set by tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
src="${ARSENAL_SOURCE_DIR:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
set_mpi_launcher
contains() { grep -q -- "$2" "$1"; }

# Help and usage errors.
"$bin" --help > "$work/help" 2>&1; check "arsenal --help exits 0" [ $? -eq 0 ]
check "help lists train" contains "$work/help" "arsenal train FILE.cfg"
"$bin" train --help > "$work/thelp" 2>&1; check "train --help exits 0" [ $? -eq 0 ]
check "train --help explains --set" contains "$work/thelp" "dense#2.units"
"$bin" train --frobnicate x.cfg > "$work/out" 2>&1; check "unknown option exits 2" [ $? -eq 2 ]
check "unknown option is named" contains "$work/out" "unknown option '--frobnicate'"
"$bin" dance > "$work/out" 2>&1; check "unknown command exits 2" [ $? -eq 2 ]

# A short real run with metrics and checkpoints.
cat > "$work/run.cfg" <<CFG
[run]
data = spirals
train_samples = 600
test_samples = 200
epochs = 2
batch = 32
lr = 0.01
probe_every = 5
[dense]
units = 32
activation = tanh
[dense]
units = 3
CFG
"$bin" train "$work/run.cfg" --metrics "$work/m.jsonl" --ckpt-dir "$work/ck" > "$work/out" 2>&1
check "spirals run exits 0" [ $? -eq 0 ]
check "prints the global batch" contains "$work/out" "global batch 32"
check "metrics has step records" contains "$work/m.jsonl" '"kind":"step"'
check "metrics has epoch records with test_acc" contains "$work/m.jsonl" '"test_acc":'
check "latest checkpoint exists" [ -e "$work/ck/latest.h5" ]
"$bin" train "$work/run.cfg" --set run.epochs=3 --ckpt-dir "$work/ck" --resume "$work/ck/latest.h5" > "$work/out" 2>&1
check "resume exits 0" [ $? -eq 0 ]
check "resume says where it starts" contains "$work/out" "resumed from"

# Bad input: one clear line naming what and where.
"$bin" train "$work/missing.cfg" > "$work/out" 2>&1; check "missing run file exits 1" [ $? -eq 1 ]
check "missing run file is named" contains "$work/out" "missing.cfg"
sed 's/^lr = 0.01/lr = fast/' "$work/run.cfg" > "$work/bad.cfg"
"$bin" train "$work/bad.cfg" > "$work/out" 2>&1; check "bad value exits 1" [ $? -eq 1 ]
check "bad value names file:line and key" contains "$work/out" "bad.cfg:7: \[run\] lr = .fast.: expected a number"
"$bin" train "$work/run.cfg" --set run.learning_rate=1 > "$work/out" 2>&1
check "unknown --set key exits 1" [ $? -eq 1 ]
check "unknown --set key is named" contains "$work/out" "learning_rate"
# The model's errors name the run file and line as the parser's do.
printf '[run]\ndata = spirals\n[residual]\n[end]\n[dense]\nunits = 3\n' > "$work/empty.cfg"
"$bin" train "$work/empty.cfg" > "$work/out" 2>&1; check "empty residual block exits 1" [ $? -eq 1 ]
check "empty residual block names file:line" contains "$work/out" "empty.cfg:4: empty residual block"
printf '[run]\ndata = spirals\n[dense]\nunits = 6\n[rnn]\ntime = 4\nunits = 2\n' > "$work/rnn.cfg"
"$bin" train "$work/rnn.cfg" > "$work/out" 2>&1; check "bad layer shape exits 1" [ $? -eq 1 ]
check "bad layer shape names file:line and layer" contains "$work/out" \
    "rnn.cfg:5: layer 001_rnn: \[rnn\] time = 4 does not divide its input width 6"

# One rank cannot find its data: the job ends (no hang), the rank and path are named once.
start=$(date +%s)
timeout 120 "${mpi[@]}" -n 1 "$bin" train "$src/examples/mlp-fmnist.cfg" --set run.max_steps=1 \
    : -n 1 "$bin" train "$src/examples/mlp-fmnist.cfg" --set run.max_steps=1 --set run.data_dir="$work/nowhere" \
    > "$work/out" 2>&1
status=$?
check "a rank without data fails the job" bash -c "[ $status -ne 0 ] && [ $status -ne 124 ]"
check "it ends within a minute" [ $(( $(date +%s) - start )) -lt 60 ]
check "the failing rank and path are named" contains "$work/out" "rank 1 on host"
check "the message appears once" [ "$(grep -c 'rank 1 on host' "$work/out")" -eq 1 ]

# A learning-rate explosion is caught by the non-finite guard, with the step.
cat > "$work/explode.cfg" <<CFG
[run]
data = teacher
train_samples = 256
test_samples = 64
epochs = 5
batch = 32
optimizer = sgd
lr = 1e4
nonfinite = stop
[dense]
units = 32
activation = relu
[dense]
units = 4
CFG
"$bin" train "$work/explode.cfg" > "$work/out" 2>&1; check "exploding run stops with status 1" [ $? -eq 1 ]
check "the step of the explosion is reported" contains "$work/out" "non-finite"
sed 's/nonfinite = stop/nonfinite = skip/' "$work/explode.cfg" > "$work/skip.cfg"
"$bin" train "$work/skip.cfg" > "$work/out" 2>&1; check "skip policy finishes the run" [ $? -eq 0 ]
check "skipped updates are reported" contains "$work/out" "update skipped"

# The whole-model gradient check.
"$bin" gradcheck "$work/run.cfg" > "$work/out" 2>&1; check "gradcheck passes on a tanh MLP" [ $? -eq 0 ]
check "gradcheck prints its verdict" contains "$work/out" "gradient check passed"

# The sharded optimizer and gradient accumulation from the command line:
# the header says what runs, --set reaches them, bad values name the line.
set_mpi_launcher
cat > "$work/shard.cfg" <<CFG
[run]
data = spirals
train_samples = 300
test_samples = 60
epochs = 2
batch = 16
seed = 2
accumulate = 3
[dense]
units = 16
activation = tanh
[dense]
units = 3
CFG
"${mpi[@]}" -n 2 "$bin" train "$work/shard.cfg" --set run.optimizer_shard=on --ckpt-dir "$work/shard" \
    > "$work/out" 2>&1
check "sharded, accumulating run on 2 ranks succeeds" [ $? -eq 0 ]
check "the header states the sharded optimizer" contains "$work/out" "optimizer_shard: each rank keeps the optimizer state of"
check "the header states the accumulation" contains "$work/out" "gradient accumulation: 3 micro-batches of 32 per optimizer step (96 samples per step"
check "an epoch is ceil(10 / 3) = 4 optimizer steps" contains "$work/out" "epoch   2  step       8"
"$bin" train "$work/shard.cfg" --resume "$work/shard/latest.h5" --set run.epochs=3 > "$work/out" 2>&1
check "a sharded checkpoint resumes on one process" contains "$work/out" "resumed from .* at step 8 (epoch 2)"
if command -v h5diff > /dev/null; then
    # the shared-memory slices are the unsharded sum's: the checkpoints agree bit for bit
    "${mpi[@]}" -n 2 "$bin" train "$work/shard.cfg" --quiet --set run.gradient_sync=shared_memory \
        --ckpt-dir "$work/plain" > /dev/null 2>&1
    "${mpi[@]}" -n 2 "$bin" train "$work/shard.cfg" --quiet --set run.gradient_sync=shared_memory \
        --set run.optimizer_shard=on --ckpt-dir "$work/sharded" > /dev/null 2>&1
    for group in /model /optimizer /grad; do
        check "sharded checkpoint's $group is the unsharded one" \
            h5diff -q "$work/plain/latest.h5" "$work/sharded/latest.h5" $group
    done
fi
printf '[run]\ndata = spirals\nepochs = 1\naccumulate = 0\n[dense]\nunits = 3\n' > "$work/bad.cfg"
"$bin" train "$work/bad.cfg" > "$work/out" 2>&1
check "accumulate = 0 is refused with file and line" contains "$work/out" "bad.cfg:4: \[run\] accumulate"
"$bin" train "$work/shard.cfg" --set run.optimizer_shard=half > "$work/out" 2>&1
check "optimizer_shard = half is refused" contains "$work/out" "optimizer_shard"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
