#!/usr/bin/env bash
# cli_conv_ckpt: a convolutional model's checkpoint as a user reads it with
# h5py. `arsenal train` on 2 ranks (a conv2d with layout = batched, a
# grouped 3x2 conv2d, batchnorm2d, a basic block with the projection
# shortcut, on Fashion-MNIST) writes a checkpoint whose conv weights are
# float32 [out, in / groups, kh, kw], the batchnorm2d vectors [channels],
# the shortcut's projection [out, in, 1, 1] with proj_gamma, proj_beta,
# proj_mean, proj_var, and the layouts as `tuning` attributes; a resume
# from a run file without the layout keys keeps the recorded ones. Skips
# (saying why) without Fashion-MNIST or without a python3 that has h5py
# (Debian's python3-h5py installs it for /usr/bin/python3, which a pyenv
# python3 first on PATH may not see). Run by ctest; ARSENAL_BINARY is set
# by tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
set_mpi_launcher
contains() { grep -q -- "$2" "$1"; }

python=""
for candidate in "${ARSENAL_PYTHON:-}" python3 /usr/bin/python3; do
    if [[ -n "$candidate" ]] && "$candidate" -c "import h5py" 2>/dev/null; then python="$candidate"; break; fi
done
if [[ -z "$python" ]]; then
    echo "SKIP: no python3 with h5py (apt-get install python3-h5py)"
    exit 0
fi

cat > "$work/conv.cfg" <<CFG
[run]
data = fashion-mnist
train_limit = 64
test_limit = 32
batch = 16
batch_scope = global
max_steps = 3
lr = 3e-3
clip_norm = 1.0
[conv2d]
channels = 4
kernel = 3
padding = 1
layout = batched
[batchnorm2d]
[relu]
[conv2d]
channels = 6
kernel = 3x2
padding = 1
groups = 2
bias = false
layout = per_sample
[batchnorm2d]
[relu]
[basic_block]
channels = 8
stride = 2
[global_avgpool]
[dense]
units = 10
CFG
"${mpi[@]}" -n 2 "$bin" train "$work/conv.cfg" --ckpt-dir "$work/ck" > "$work/out" 2>&1
status=$?
if [[ $status -ne 0 ]] && contains "$work/out" "dataset-fashion-mnist"; then
    echo "SKIP: no Fashion-MNIST files (apt-get install dataset-fashion-mnist)"
    exit 0
fi
check "conv run on 2 ranks exits 0" [ $status -eq 0 ]
check "the header names the layouts" contains "$work/out" "convolution layouts.*000 batched, 003 per_sample"
check "latest checkpoint exists" [ -e "$work/ck/latest.h5" ]

# h5py: every conv tensor's shape and type, and the tuning attributes.
read_checkpoint() {   # read_checkpoint FILE: prints one line per finding, "ok" when all hold
    "$python" - "$1" <<'PY'
import sys
import h5py
import numpy as np

expected = {
    "000_conv2d": {"weight": (4, 1, 3, 3), "bias": (4,)},
    "001_batchnorm2d": {t: (4,) for t in ("gamma", "beta", "running_mean", "running_var")},
    "003_conv2d": {"weight": (6, 2, 3, 2)},            # [out, in / groups, kh, kw]
    "004_batchnorm2d": {t: (6,) for t in ("gamma", "beta", "running_mean", "running_var")},
    "007_conv2d": {"weight": (8, 6, 3, 3)},
    "008_batchnorm2d": {t: (8,) for t in ("gamma", "beta", "running_mean", "running_var")},
    "010_conv2d": {"weight": (8, 8, 3, 3)},
    "011_batchnorm2d": {t: (8,) for t in ("gamma", "beta", "running_mean", "running_var")},
    "012_residual_add": {"projection": (8, 6, 1, 1), "proj_gamma": (8,), "proj_beta": (8,),
                         "proj_mean": (8,), "proj_var": (8,)},
    "015_dense": {"weight": (10, 8), "bias": (10,)},
}
tuned = {"000_conv2d", "003_conv2d", "007_conv2d", "010_conv2d", "012_residual_add"}
problems = []
with h5py.File(sys.argv[1], "r") as f:
    model = f["model"]
    for layer, tensors in expected.items():
        group = model[layer]
        kind = group.attrs["kind"].decode()
        if kind != layer[4:]:
            problems.append(f"{layer}: kind {kind}")
        if set(group.keys()) != set(tensors):
            problems.append(f"{layer}: tensors {sorted(group.keys())}, expected {sorted(tensors)}")
        for name, shape in tensors.items():
            data = group[name]
            if data.shape != shape or data.dtype != np.float32:
                problems.append(f"{layer}/{name}: {data.dtype} {data.shape}, expected float32 {shape}")
            elif not np.all(np.isfinite(data[()])):
                problems.append(f"{layer}/{name}: not finite")
        if "weight" in tensors and f["optimizer/m"][layer]["weight"].shape != tensors["weight"]:
            problems.append(f"optimizer/m/{layer}/weight: {f['optimizer/m'][layer]['weight'].shape}")
    for layer in model:
        has = "tuning" in model[layer].attrs
        if has != (layer in tuned):
            problems.append(f"{layer}: tuning attribute {'present' if has else 'missing'}")
        elif has and int(model[layer].attrs["tuning"]) not in (1, 2):
            problems.append(f"{layer}: tuning {model[layer].attrs['tuning']}")
    for layer in sorted(tuned):
        print(f"tuning {layer} {int(model[layer].attrs['tuning'])}")
    print(f"step {int(f.attrs['step'])}")
print("\n".join(problems) if problems else "ok")
PY
}
read_checkpoint "$work/ck/latest.h5" > "$work/h5" 2>&1
cat "$work/h5"
check "h5py reads every conv tensor in PyTorch's shape" contains "$work/h5" "^ok$"
check "layout = batched is recorded as tuning 2" contains "$work/h5" "^tuning 000_conv2d 2$"
check "layout = per_sample is recorded as tuning 1" contains "$work/h5" "^tuning 003_conv2d 1$"

# A resume from a run file without the layout keys keeps the recorded layouts.
sed '/^layout = /d' "$work/conv.cfg" > "$work/measure.cfg"
"${mpi[@]}" -n 2 "$bin" train "$work/measure.cfg" --set run.max_steps=5 --ckpt-dir "$work/ck" \
    --resume "$work/ck/latest.h5" > "$work/out" 2>&1
check "resume without the layout keys exits 0" [ $? -eq 0 ]
check "the resumed run computes with the recorded layouts" contains "$work/out" \
    "convolution layouts.*000 batched, 003 per_sample"
read_checkpoint "$work/ck/latest.h5" > "$work/h5" 2>&1
cat "$work/h5"
check "the resumed checkpoint is read by h5py" contains "$work/h5" "^ok$"
check "the resumed checkpoint is at step 5" contains "$work/h5" "^step 5$"
check "the resumed checkpoint records tuning 2 again" contains "$work/h5" "^tuning 000_conv2d 2$"
check "the resumed checkpoint records tuning 1 again" contains "$work/h5" "^tuning 003_conv2d 1$"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
