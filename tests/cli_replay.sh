#!/usr/bin/env bash
# cli_replay: `arsenal replay CKPT --step K` recomputes a step of a run
# trained under mpiexec -n 1, 2 and 3 on one process, and its global
# gradient norm equals the run's recorded one to 1e-6 (relative): shard by
# shard for an MLP with dropout, in one pass for synchronized BatchNorm;
# `arsenal inspect --blame` names the incident and the layer and step where
# the gradient broke in a diverging run; bad input gets clear errors. Run by
# ctest; ARSENAL_BINARY is set by tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
set_mpi_launcher
contains() { grep -q -- "$2" "$1"; }

cat > "$work/mlp.cfg" <<CFG
[run]
data = spirals
train_samples = 600
test_samples = 100
max_steps = 12
batch = 60
batch_scope = global
seed = 5
optimizer = sgd
momentum = 0.9
lr = 0.05
clip_norm = 0.5
probe_every = 1
ckpt_every = 4
ckpt_keep = 10
log_every = 1000
[dense]
units = 32
activation = tanh
[dropout]
rate = 0.2
[dense]
units = 3
CFG
sed -e 's/^\[dropout\]/[batchnorm]/' -e '/^rate = 0.2/d' "$work/mlp.cfg" > "$work/bn.cfg"

for ranks in 1 2 3; do
    for model in mlp bn; do
        dir="$work/$model$ranks"
        "${mpi[@]}" -n "$ranks" "$bin" train "$work/$model.cfg" --quiet --ckpt-dir "$dir" > "$work/out" 2>&1
        status=$?
        check "$model on $ranks rank(s) trains" [ $status -eq 0 ]
        [ $status -eq 0 ] || tail -n 5 "$work/out"
        # from a checkpoint before the step (two steps trained on the way) and at it
        for pair in "4 6" "8 8"; do
            set -- $pair
            "$bin" replay "$dir/ckpt-0000000$1.h5" --step "$2" --against "$dir/latest.h5" > "$work/replay" 2>&1
            check "$model, $ranks rank(s): replay of step $2 from step $1 equals the run to 1e-6" [ $? -eq 0 ]
            check "$model, $ranks rank(s): replay prints per-layer figures" contains "$work/replay" "000_dense"
        done
        if [ "$model" = bn ] && [ "$ranks" -gt 1 ]; then
            check "bn, $ranks ranks: one pass for synchronized BatchNorm" contains "$work/replay" "in one pass"
        elif [ "$ranks" -gt 1 ]; then
            check "mlp, $ranks ranks: shard by shard" contains "$work/replay" "shard by shard"
        fi
    done
done

# bad input
"$bin" replay "$work/mlp2/ckpt-00000008.h5" --step 5 > "$work/out" 2>&1
check "a step before the checkpoint: exit 1" [ $? -eq 1 ]
check "it says which steps the checkpoint replays" contains "$work/out" "it replays steps 8 to 11"
"$bin" replay "$work/mlp2/ckpt-00000008.h5" --step 12 > "$work/out" 2>&1
check "a step past the run: exit 1" [ $? -eq 1 ]
check "it says the run's steps" contains "$work/out" "has 12 steps (0 to 11)"
"$bin" replay "$work/mlp2/ckpt-00000008.h5" > "$work/out" 2>&1
check "no --step: usage, exit 2" [ $? -eq 2 ]
"$bin" replay "$work/mlp2/ckpt-00000008.h5" --step -3 > "$work/out" 2>&1
check "a negative step: exit 2" [ $? -eq 2 ]
"$bin" replay "$work/mlp.cfg" --step 1 > "$work/out" 2>&1
check "not a checkpoint: exit 1" [ $? -eq 1 ]
check "not a checkpoint: named" contains "$work/out" "mlp.cfg"
"$bin" replay "$work/mlp2/ckpt-00000004.h5" --step 5 --against "$work/mlp2/ckpt-00000004.h5" > "$work/out" 2>&1
check "--against a history without the step: exit 1" [ $? -eq 1 ]
check "--against says the record is missing" contains "$work/out" "has no record of step 5"

# blame: a diverging run (learning rate far too high, no clipping)
cat > "$work/boom.cfg" <<CFG
[run]
data = spirals
train_samples = 600
test_samples = 100
max_steps = 40
batch = 50
seed = 3
optimizer = sgd
lr = 3
probe_every = 1
log_every = 1000
[repeat]
count = 6
[dense]
units = 32
init = he_normal
activation = relu
[end]
[dense]
units = 3
CFG
"$bin" train "$work/boom.cfg" --quiet --ckpt-dir "$work/boom" > /dev/null 2>&1
"$bin" inspect --blame "$work/boom/latest.h5" > "$work/blame" 2>&1; check "inspect --blame exits 0" [ $? -eq 0 ]
check "blame names the incident" contains "$work/blame" "incident: step"
check "blame names the first break" contains "$work/blame" "first break: layer 0"
check "blame points at replay" contains "$work/blame" "arsenal replay CKPT.h5 --step"
"$bin" inspect --blame "$work/mlp1/latest.h5" > "$work/blame" 2>&1
check "a healthy run: no incident" contains "$work/blame" "no incident"
"$bin" inspect --blame "$work/mlp1/latest.h5" --json > "$work/out" 2>&1
check "--blame with --json: exit 2" [ $? -eq 2 ]

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
