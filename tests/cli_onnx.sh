#!/usr/bin/env bash
# cli_onnx: `arsenal export CKPT.h5 --onnx FILE.onnx` end to end. Trains
# small models a few steps (so that BatchNorm's running statistics are not
# their initial values), exports each, checks the file with Debian's
# python3-onnx (onnx.checker with full_check, strict shape inference, the
# promised interface), then runs the graph on 37 random samples (a .npy
# file) and compares its outputs with what `arsenal predict` writes for
# the same file: the logits (predict --logits) and the probabilities, or a
# regression's outputs, to 1e-5 (tests/onnx_check.py: onnx's reference
# evaluator or onnxruntime when present, else its numpy oracle); the worst
# difference over every model is printed at the end. Models: an MLP with BatchNorm, LayerNorm,
# dropout, every activation and residual blocks with and without a
# projection; the same with another input standardization written into
# the checkpoint (h5py); a regression (mse, no probabilities); an MLP on images (BatchNorm1d, LayerNorm and a dense layer
# on [1, 28, 28], which arsenal reads flat, a residual block whose skip is
# the image and whose F gives a vector of its size); a small CNN (conv2d grouped,
# strided, dilated, batchnorm2d, max and average pooling, flatten, dense);
# a ResNet of [basic_block]s with the projection shortcut and a global
# average pool; the sequence kinds: seq_dense (rows and bias = false),
# seq_layernorm, sinusoidal and learned positions, causal attention,
# mean_pool (a small regression: a readout of every step, so the causal
# mask matters), rnn and last_step (another), embedding +
# rnn + last_step (the copy task, token ids as inputs), and the examples
# adding-rnn, adding-transformer, fmnist-transformer (rows, and 7x7
# patches), each trained a few steps. Then the refusals: a wrong
# --input-shape, a missing --onnx. (Every built-in kind exports: the error
# for a kind without an equivalent is left to kinds registered at run
# time, which no run file reaches.) Skips (saying why) without
# python3-onnx, without Fashion-MNIST (the image models only), or when this
# build has no ONNX export (no protobuf-c). Run by ctest; ARSENAL_BINARY
# and ARSENAL_ONNX are set by tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$here/testutil.sh"
contains() { grep -q -- "$2" "$1"; }

if [[ "${ARSENAL_ONNX:-ON}" != "ON" ]]; then
    "$bin" export x.h5 --onnx x.onnx > "$work/out" 2>&1
    check "without protobuf-c export says how to get it" contains "$work/out" "libprotobuf-c-dev and protobuf-c-compiler"
    echo "SKIP: this build has no ONNX export (install libprotobuf-c-dev protobuf-c-compiler and rebuild)"
    echo "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
    exit
fi
# Debian's python3-onnx installs for /usr/bin/python3, which a pyenv python3
# first on PATH may not see
python=""
for candidate in "${ARSENAL_PYTHON:-}" /usr/bin/python3 python3; do
    if [[ -n "$candidate" ]] && "$candidate" -c "import onnx, numpy" 2>/dev/null; then python="$candidate"; break; fi
done
if [[ -z "$python" ]]; then
    echo "SKIP: no python3 with onnx and numpy (apt-get install python3-onnx)"
    exit 0
fi
fmnist=1
[[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] || fmnist=0

check "the numpy oracle agrees with ONNX's own node test cases" "$python" "$here/onnx_check.py" --self-test

# train NAME: trains $work/NAME.cfg into $work/NAME/, quietly
train() {
    "$bin" train "$work/$1.cfg" --ckpt-dir "$work/$1" --quiet > "$work/$1.train" 2>&1
}
# predict_both NAME CKPT classifier|regression: arsenal predict on
# $work/NAME.input.npy into NAME.logits.csv (a classifier's --logits, a
# regression's outputs) and, for a classifier, NAME.probabilities.csv
predict_both() {
    local name="$1" ckpt="$2" kind="$3"
    if [[ $kind == classifier ]]; then
        check "$name: arsenal predict --logits" \
            "$bin" predict "$ckpt" "$work/$name.input.npy" --logits --out "$work/$name.logits.csv" --batch 16
        check "$name: arsenal predict (probabilities)" \
            "$bin" predict "$ckpt" "$work/$name.input.npy" --out "$work/$name.probabilities.csv" --batch 16
    else
        check "$name: arsenal predict (outputs)" \
            "$bin" predict "$ckpt" "$work/$name.input.npy" --out "$work/$name.logits.csv" --batch 16
    fi
}
# onnx_vs_predict NAME MODEL.onnx [onnx_check options]: the check, its line kept for the summary
onnx_vs_predict() {
    local name="$1" model="$2"; shift 2
    "$python" "$here/onnx_check.py" "$model" "$work/$name" "$@" > "$work/$name.check" 2>&1
    local status=$?
    cat "$work/$name.check"
    grep -h "against arsenal predict" "$work/$name.check" >> "$work/checks"
    return $status
}
# roundtrip NAME classifier|regression [export options...]: export, inputs, predict, check
# (vocab=V roundtrip ...: the samples are token ids in [0, V), for a model that starts with an embedding)
roundtrip() {
    local name="$1" kind="$2"; shift 2
    local ckpt="$work/$name/latest.h5"
    check "$name: export" "$bin" export "$ckpt" --onnx "$work/$name.onnx" "$@"
    check "$name: 37 random samples" "$python" "$here/onnx_check.py" --make-input "$work/$name.onnx" "$work/$name" 37 7 \
        ${vocab:+"$vocab"}
    predict_both "$name" "$ckpt" "$kind"
    check "$name: checker, and outputs within 1e-5 of arsenal predict's" onnx_vs_predict "$name" "$work/$name.onnx"
}

cat > "$work/mlp.cfg" <<'CFG'
[run]
data = blobs
train_samples = 512
test_samples = 64
batch = 32
max_steps = 12
lr = 3e-3
[dense]
units = 24
[batchnorm]
[relu]
[residual]
  [dense]
  units = 24
  [batchnorm]
  [gelu]
  [dense]
  units = 24
[end]
[layernorm]
[dropout]
rate = 0.3
[residual]
  [dense]
  units = 12
  bias = false
  [leaky_relu]
  slope = 0.2
[end]
[elu]
alpha = 0.7
[dense]
units = 12
[selu]
[dense]
units = 12
[sigmoid]
[dense]
units = 12
[tanh]
[dense]
units = 4
CFG
check "mlp: trains" train mlp
roundtrip mlp classifier
check "mlp: a classifier gets logits and probabilities" \
    "$python" "$here/onnx_check.py" "$work/mlp.onnx" "$work/mlp" --expect-outputs logits,probabilities
check "mlp: --logits-only" "$bin" export "$work/mlp/latest.h5" --onnx "$work/mlp-logits.onnx" --logits-only
check "mlp: --logits-only has one output" \
    "$python" "$here/onnx_check.py" "$work/mlp-logits.onnx" "$work/mlp" --expect-outputs logits
"$bin" export "$work/mlp/latest.h5" --onnx "$work/mlp.onnx" > "$work/mlp.out" 2>&1
check "mlp: blobs are standardized: the graph starts with it" contains "$work/mlp.out" "standardized in the graph"

# the standardization a checkpoint records (data_mean, data_std) is the graph's first step
if "$python" -c "import h5py" 2>/dev/null; then
    mkdir -p "$work/mlp-std"
    cp -L "$work/mlp/latest.h5" "$work/mlp-std/latest.h5"
    check "mlp-std: data_mean 0.25, data_std 3.5 written into a copy" "$python" -c "
import h5py, sys
with h5py.File(sys.argv[1], 'r+') as f:
    f.attrs['data_mean'] = 0.25
    f.attrs['data_std'] = 3.5" "$work/mlp-std/latest.h5"
    roundtrip mlp-std classifier
    check "mlp-std: the graph records them" "$python" -c "
import onnx, sys
meta = {p.key: p.value for p in onnx.load(sys.argv[1]).metadata_props}
sys.exit(not (meta['arsenal.data_mean'] == '0.25' and meta['arsenal.data_std'] == '3.5'))" "$work/mlp-std.onnx"
else
    echo "SKIP mlp-std: no h5py to write another standardization into a checkpoint (apt-get install python3-h5py)"
fi

cp "$here/data/teacher-regression.cfg" "$work/reg.cfg"
check "reg: trains" train reg
roundtrip reg regression
check "reg: a regression gets logits only" \
    "$python" "$here/onnx_check.py" "$work/reg.onnx" "$work/reg" --expect-outputs logits

if [[ $fmnist -eq 1 ]]; then
    cat > "$work/image-mlp.cfg" <<'CFG'
[run]
data = fashion-mnist
train_limit = 256
test_limit = 32
batch = 32
max_steps = 6
[batchnorm]
[layernorm]
[residual]
  [dense]
  units = 784
[end]
[relu]
[residual]
  [dense]
  units = 32
[end]
[dense]
units = 10
CFG
    check "image-mlp: trains" train image-mlp
    roundtrip image-mlp classifier

    cat > "$work/cnn.cfg" <<'CFG'
[run]
data = fashion-mnist
train_limit = 256
test_limit = 32
batch = 32
max_steps = 6
lr = 3e-3
[conv2d]
channels = 4
kernel = 3
padding = 1
activation = relu
[batchnorm2d]
[maxpool2d]
kernel = 2
[conv2d]
channels = 6
kernel = 3x2
padding = 1x0
stride = 2
groups = 2
bias = false
[batchnorm2d]
[elu]
[conv2d]
channels = 6
kernel = 3
dilation = 2
padding = 2
[relu]
[avgpool2d]
kernel = 3
stride = 2
padding = 1
[maxpool2d]
kernel = 3
stride = 1
padding = 1
[flatten]
[dense]
units = 16
[relu]
[dense]
units = 10
CFG
    check "cnn: trains" train cnn
    roundtrip cnn classifier

    cat > "$work/resnet.cfg" <<'CFG'
[run]
data = fashion-mnist
train_limit = 256
test_limit = 32
batch = 32
max_steps = 6
lr = 3e-3
[conv2d]
channels = 8
kernel = 3
padding = 1
bias = false
[batchnorm2d]
[relu]
[basic_block]
channels = 8
[basic_block]
channels = 16
stride = 2
[global_avgpool]
[dense]
units = 10
CFG
    check "resnet: trains" train resnet
    roundtrip resnet classifier
    "$python" -c "import onnx, sys; ops = [n.op_type for n in onnx.load(sys.argv[1]).graph.node]; \
print(ops.count('Conv'), ops.count('BatchNormalization'), ops.count('Add'))" "$work/resnet.onnx" > "$work/resnet.ops"
    # 1 + 2 + 2 convolutions and one 1x1 projection; as many BatchNorms; 2 residual adds
    check "resnet: the projection shortcut is a Conv + BatchNormalization" grep -qx "6 6 2" "$work/resnet.ops"
    check "resnet: --input-shape of another count is refused" \
        bash -c "! '$bin' export '$work/resnet/latest.h5' --onnx '$work/x.onnx' --input-shape 3x28x28 2> '$work/shape.err'"
    check "resnet: ... naming both shapes" contains "$work/shape.err" "--input-shape 3x28x28: samples of shape \\[3, 28, 28\\] (2352 values) do not fit the model"
else
    echo "SKIP: the image models (no Fashion-MNIST: apt-get install dataset-fashion-mnist)"
fi

# the sequence kinds: every one of them, in small models and in the examples
cat > "$work/seq.cfg" <<'CFG'
[run]
data = adding
seq_len = 6
train_samples = 64
test_samples = 16
batch = 16
max_steps = 3
[seq_dense]
time = 6
units = 8
[seq_layernorm]
[positional]
encoding = sinusoidal
[attention]
heads = 2
causal = 1
[positional]
[seq_dense]
units = 8
bias = false
[mean_pool]
[dense]
units = 1
CFG
check "seq (seq_dense, seq_layernorm, both encodings, causal attention, mean_pool): trains" train seq
roundtrip seq regression

cat > "$work/rnn.cfg" <<'CFG'
[run]
data = adding
seq_len = 7
train_samples = 64
test_samples = 16
batch = 16
max_steps = 3
[rnn]
time = 7
units = 6
[last_step]
[dense]
units = 1
CFG
check "rnn (rnn, last_step): trains" train rnn
roundtrip rnn regression
check "rnn: is ONNX's RNN operator" grep -q "nodes: .*RNN" "$work/rnn.check"

cat > "$work/copy.cfg" <<'CFG'
[run]
data = copy
seq_len = 5
train_samples = 64
test_samples = 16
batch = 16
max_steps = 3
[embedding]
vocab = 9
units = 8
[rnn]
units = 8
[last_step]
[dense]
units = 8
CFG
check "copy (embedding, rnn, last_step): trains" train copy
vocab=9 roundtrip copy classifier

# the examples, a few steps each
trainex() {   # trainex NAME EXAMPLE.cfg [--set ...]: as train, from examples/
    local name="$1" cfg="$2"; shift 2
    "$bin" train "$here/../examples/$cfg" --ckpt-dir "$work/$name" --quiet "$@" > "$work/$name.train" 2>&1
}
check "adding-rnn example: trains 5 steps" trainex adding-rnn adding-rnn.cfg --set run.max_steps=5
roundtrip adding-rnn regression
check "adding-transformer example: trains 5 steps" trainex adding-transformer adding-transformer.cfg \
    --set run.max_steps=5
roundtrip adding-transformer regression
if [[ $fmnist -eq 1 ]]; then
    check "fmnist-transformer example: trains 4 steps" trainex fmnist-transformer fmnist-transformer.cfg \
        --set run.max_steps=4 --set run.train_limit=512 --set run.test_limit=64
    roundtrip fmnist-transformer classifier
    check "fmnist-transformer with 7x7 patches: trains 3 steps" trainex fmnist-patches fmnist-transformer.cfg \
        --set run.max_steps=3 --set run.train_limit=512 --set run.test_limit=64 --set seq_dense.time=16 \
        --set seq_dense.patch=7
    roundtrip fmnist-patches classifier
fi

"$bin" export "$work/mlp/latest.h5" > "$work/noonnx.out" 2>&1
check "export without --onnx exits 2" [ $? -eq 2 ]
check "... saying --onnx is required" contains "$work/noonnx.out" "onnx FILE.onnx is required"
"$bin" export "$work/missing.h5" --onnx "$work/m.onnx" > "$work/missing.out" 2>&1
check "a missing checkpoint: status 1 naming it" contains "$work/missing.out" "missing.h5"
"$bin" export --help > "$work/help.out"
check "export --help names the opset" contains "$work/help.out" "opset 13"

# the figure docs/onnx.md quotes: the worst difference of every comparison above
if [[ -s "$work/checks" ]]; then
    echo "worst |onnx - arsenal predict| / max(1, |arsenal predict|) per model:"
    sed -E 's|^onnx_check .*/([^/]*)\.onnx: ([0-9]+) samples on (.*) against arsenal predict: .*; worst relative difference (.*)$|  \1: \4 (\2 samples, \3)|' "$work/checks"
    echo "worst over all models: $(sed -E 's/.*worst relative difference //' "$work/checks" | sort -g | tail -1)"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
