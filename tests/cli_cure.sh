#!/usr/bin/env bash
# cli_cure: [health] cure = off | suggest | apply end to end on a small deep
# sigmoid network (spirals, no download): the vanishing gradient is cured
# (sigmoid -> ReLU, He re-initialization, rollback), a cure that does not
# help is reverted and the next one tried, the cures land in /health/cures
# and in `arsenal inspect`, the checkpoint's /config is the cured run file
# (arsenal evaluate rebuilds the cured model), --resume continues bit for bit
# with the original run file, the run stops with a report when max_cures is
# used up, and the same under 2 ranks. Run by ctest; ARSENAL_BINARY is set
# by tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
set_mpi_launcher
contains() { grep -q -- "$2" "$1"; }
lacks() { ! grep -q -- "$2" "$1"; }

cat > "$work/sig.cfg" <<CFG
[run]
data = spirals
train_samples = 600
test_samples = 150
max_steps = 120
batch = 50
batch_scope = global
seed = 2
optimizer = sgd
lr = 0.1
probe_every = 5
ckpt_every = 40
ckpt_keep = 10
log_every = 1000
[health]
cure = apply
[repeat]
count = 11
[dense]
units = 16
init = normal
init_std = 0.01
activation = sigmoid
[end]
[dense]
units = 3
init = normal
init_std = 0.01
CFG

"$bin" train "$work/sig.cfg" --ckpt-dir "$work/a" > "$work/out" 2>&1; check "cure = apply: the run finishes" [ $? -eq 0 ]
check "the vanishing gradient is cured by ReLU and He" contains "$work/out" \
    "cure 1 for the vanishing gradient (000_dense): 11 sigmoid layers -> relu, he_normal re-initialization"
check "it rolls back to the healthy start" contains "$work/out" "rolled back to step 0"
check "a cure that did not help is reverted" contains "$work/out" "the previous cure did not help and was reverted"
"$bin" inspect "$work/a/latest.h5" > "$work/inspect" 2>&1; check "inspect reads it" [ $? -eq 0 ]
check "inspect lists the cures" contains "$work/inspect" "automatic cures (\[health\] cure = apply; 3)"
check "inspect says which was reverted" contains "$work/inspect" "lr 0.1 -> 0.01; rolled back to step 0; reverted"
"$bin" inspect --json "$work/a/latest.h5" > "$work/json" 2>&1
check "inspect --json lists the cures" contains "$work/json" '"rule": *"vanishing"'
"$bin" evaluate "$work/a/latest.h5" > "$work/eval" 2>&1; check "evaluate rebuilds the cured model" [ $? -eq 0 ]
if command -v h5dump > /dev/null; then
    h5dump -d /config "$work/a/latest.h5" > "$work/config" 2>&1
    check "/config is the cured run file" contains "$work/config" "activation = leaky_relu"
    check "/config has the cured initializer" contains "$work/config" "init = he_normal"
    h5dump -d /health/cures/settings "$work/a/latest.h5" > "$work/settings" 2>&1
    check "/health/cures/settings say what resume re-applies" contains "$work/settings" "act:001=relu;"
fi

# --resume with the original run file continues bit for bit (the cures are re-applied); from an
# epoch's end: a resume in mid-epoch restarts that epoch's mean training loss (/history/eval_train_loss)
"$bin" train "$work/sig.cfg" --resume "$work/a/ckpt-00000048.h5" --ckpt-dir "$work/b" > "$work/out" 2>&1
check "resume of a cured run works with the original run file" [ $? -eq 0 ]
if command -v h5diff > /dev/null; then
    for group in /model /optimizer /grad /history /rng /health; do
        h5diff "$work/a/ckpt-00000120.h5" "$work/b/latest.h5" "$group" > /dev/null 2>&1
        check "resumed run equals the uninterrupted one: $group" [ $? -eq 0 ]
    done
else
    echo "SKIP: no h5diff (apt-get install hdf5-tools): the bit-exact comparison of the resumed run"
fi

# max_cures used up: the run stops with a report and a checkpoint of what was tried
"$bin" train "$work/sig.cfg" --set health.max_cures=1 --ckpt-dir "$work/c" > "$work/out" 2>&1
check "max_cures used up: exit status 1" [ $? -eq 1 ]
check "the stop says why" contains "$work/out" "the run used its 1 cures (\[health\] max_cures)"
check "the report lists the cures tried" contains "$work/out" "1. step 10, vanishing at 000_dense"
check "the checkpoint of the stop holds the cure" contains <("$bin" inspect "$work/c/latest.h5" 2>&1) "automatic cures"

# suggest (the default) and off: nothing changes, suggest says what apply would do
"$bin" train "$work/sig.cfg" --set health.cure=suggest --ckpt-dir "$work/d" > "$work/out" 2>&1
check "cure = suggest: the run finishes" [ $? -eq 0 ]
check "suggest names the cure" contains "$work/out" "cure for the vanishing gradient (\[health\] cure = apply would"
check "suggest changes nothing" lacks "$work/out" "rolled back"
check "suggest writes no /health/cures" lacks <("$bin" inspect "$work/d/latest.h5" 2>&1) "automatic cures"
"$bin" train "$work/sig.cfg" --set health.cure=off --quiet > "$work/out" 2>&1
check "cure = off says nothing of cures" lacks "$work/out" "cure"
"$bin" train "$work/sig.cfg" --set health.cure=maybe > "$work/out" 2>&1
check "a bad cure value is an error" [ $? -ne 0 ]
check "it names the key and the choices" contains "$work/out" "cure = 'maybe'"
"$bin" train "$work/sig.cfg" --set health.max_cures=0 > "$work/out" 2>&1
check "max_cures = 0 is refused" contains "$work/out" "max_cures"

# two ranks take the same decisions (one broadcast per record)
"${mpi[@]}" -n 2 "$bin" train "$work/sig.cfg" --ckpt-dir "$work/e" > "$work/out" 2>&1
check "cure = apply under 2 ranks finishes" [ $? -eq 0 ]
check "2 ranks: the same first cure" contains "$work/out" "cure 1 for the vanishing gradient (000_dense)"
if command -v h5diff > /dev/null; then
    h5diff "$work/a/latest.h5" "$work/e/latest.h5" /health > /dev/null 2>&1
    check "2 ranks: the same cures as 1 rank" [ $? -eq 0 ]
fi

# sharded optimizer state: the snapshot, the rollback and the re-initialized
# layers' optimizer state are each rank's slice
"${mpi[@]}" -n 2 "$bin" train "$work/sig.cfg" --set run.optimizer_shard=on --ckpt-dir "$work/f" > "$work/out" 2>&1
check "cure = apply with optimizer_shard under 2 ranks finishes" [ $? -eq 0 ]
check "optimizer_shard: the same first cure" contains "$work/out" "cure 1 for the vanishing gradient (000_dense)"
if command -v h5diff > /dev/null; then
    h5diff "$work/e/latest.h5" "$work/f/latest.h5" /health > /dev/null 2>&1
    check "optimizer_shard: the same cures as unsharded" [ $? -eq 0 ]
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
