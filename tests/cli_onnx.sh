#!/usr/bin/env bash
# cli_onnx: `arsenal export CKPT.h5 --onnx FILE.onnx` end to end. Trains
# small models a few steps (so that BatchNorm's running statistics are not
# their initial values), exports each, checks the file with Debian's
# python3-onnx (onnx.checker with full_check, strict shape inference, the
# promised interface) and runs the graph on the same random samples as
# arsenal's own eval-mode forward (tests/onnx_forward.c), to 1e-5
# (tests/onnx_check.py: onnx's reference evaluator or onnxruntime when
# present, else its numpy oracle). Models: an MLP with BatchNorm, LayerNorm,
# dropout, every activation and residual blocks with and without a
# projection; the same with the input standardization recorded in the
# checkpoint; an MLP on images (BatchNorm1d, LayerNorm and a dense layer
# on [1, 28, 28], which arsenal reads flat, a residual block whose skip is
# the image and whose F gives a vector of its size); a small CNN (conv2d grouped,
# strided, dilated, batchnorm2d, max and average pooling, flatten, dense);
# a ResNet of [basic_block]s with the projection shortcut and a global
# average pool. Then the refusals: a kind without an ONNX equivalent, a
# wrong --input-shape, a missing --onnx. Skips (saying why) without
# python3-onnx, without Fashion-MNIST (the image models only), or when this
# build has no ONNX export (no protobuf-c). Run by ctest; ARSENAL_BINARY,
# ARSENAL_ONNX_FORWARD and ARSENAL_ONNX are set by tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
forward="${ARSENAL_ONNX_FORWARD:?}"
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
# roundtrip NAME [export options...]: export, reference forward, check
roundtrip() {
    local name="$1"; shift
    local ckpt="$work/$name/latest.h5"
    check "$name: export" "$bin" export "$ckpt" --onnx "$work/$name.onnx" "$@"
    check "$name: arsenal's eval forward" "$forward" "$ckpt" 37 7 "$work/$name"
    check "$name: checker and outputs within 1e-5 of arsenal's" \
        "$python" "$here/onnx_check.py" "$work/$name.onnx" "$work/$name"
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
roundtrip mlp
check "mlp: a classifier gets logits and probabilities" \
    "$python" "$here/onnx_check.py" "$work/mlp.onnx" "$work/mlp" --expect-outputs logits,probabilities
check "mlp: --logits-only" "$bin" export "$work/mlp/latest.h5" --onnx "$work/mlp-logits.onnx" --logits-only
check "mlp: --logits-only has one output" \
    "$python" "$here/onnx_check.py" "$work/mlp-logits.onnx" "$work/mlp" --expect-outputs logits

# the standardization a checkpoint records (data_mean, data_std) is the graph's first step
mkdir -p "$work/mlp-std"
cp -L "$work/mlp/latest.h5" "$work/mlp-std/latest.h5"
check "mlp-std: records data_mean / data_std" "$forward" --standardize 0.25 3.5 "$work/mlp-std/latest.h5" 37 8 "$work/mlp-std"
"$bin" export "$work/mlp-std/latest.h5" --onnx "$work/mlp-std.onnx" > "$work/mlp-std.out" 2>&1
check "mlp-std: export says the graph standardizes" contains "$work/mlp-std.out" "standardized in the graph"
check "mlp-std: raw samples within 1e-5 of arsenal's" \
    "$python" "$here/onnx_check.py" "$work/mlp-std.onnx" "$work/mlp-std"

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
    roundtrip image-mlp

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
    roundtrip cnn

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
    roundtrip resnet
    "$python" -c "import onnx, sys; ops = [n.op_type for n in onnx.load(sys.argv[1]).graph.node]; \
print(ops.count('Conv'), ops.count('BatchNormalization'), ops.count('Add'))" "$work/resnet.onnx" > "$work/resnet.ops"
    # 1 + 2 + 2 convolutions and one 1x1 projection; as many BatchNorms; 2 residual adds
    check "resnet: the projection shortcut is a Conv + BatchNormalization" grep -qx "6 6 2" "$work/resnet.ops"
    check "resnet: --input-shape of another count is refused" \
        bash -c "! '$bin' export '$work/resnet/latest.h5' --onnx '$work/x.onnx' --input-shape 3x28x28 2> '$work/shape.err'"
    check "resnet: ... naming the layer and shapes" contains "$work/shape.err" "000_conv2d"
else
    echo "SKIP: the image models (no Fashion-MNIST: apt-get install dataset-fashion-mnist)"
fi

cat > "$work/attention.cfg" <<'CFG'
[run]
data = adding
seq_len = 6
train_samples = 64
test_samples = 16
batch = 16
max_steps = 2
[attention]
heads = 1
[seq_dense]
units = 8
[mean_pool]
[dense]
units = 1
CFG
check "attention: trains" train attention
"$bin" export "$work/attention/latest.h5" --onnx "$work/attention.onnx" > "$work/attention.out" 2>&1
check "attention: export fails with status 1" [ $? -eq 1 ]
check "attention: ... naming the first layer without an equivalent" \
    contains "$work/attention.out" "layer 000_attention: no ONNX export for kind attention"
check "attention: ... and writes nothing" [ ! -e "$work/attention.onnx" ]
"$bin" export "$work/mlp/latest.h5" > "$work/noonnx.out" 2>&1
check "export without --onnx exits 2" [ $? -eq 2 ]
check "... saying --onnx is required" contains "$work/noonnx.out" "onnx FILE.onnx is required"
"$bin" export "$work/missing.h5" --onnx "$work/m.onnx" > "$work/missing.out" 2>&1
check "a missing checkpoint: status 1 naming it" contains "$work/missing.out" "missing.h5"
"$bin" export --help > "$work/help.out"
check "export --help names the opset" contains "$work/help.out" "opset 13"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
