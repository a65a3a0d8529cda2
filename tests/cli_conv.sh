#!/usr/bin/env bash
# cli_conv: the convolutional layers from the command line, as a user runs
# them on Fashion-MNIST: `arsenal gradcheck` passes on a small CNN run file
# (conv2d with stride, padding and groups, batchnorm2d, avgpool2d,
# flatten, a residual block whose shortcut is the 1x1 conv + BatchNorm
# projection) under either product layout; a short training run of a ReLU
# CNN with a [basic_block] and max pooling; run files with impossible
# shapes are refused with FILE:LINE and the computed shapes. Run by ctest;
# ARSENAL_BINARY and ARSENAL_SOURCE_DIR are set by tests/CMakeLists.txt.
#
# The gradcheck run file is smooth (GELU, average pooling): in a CNN with
# train-mode BatchNorm one first-layer weight moves every value of its
# channel, so with ReLU or max pooling several kinks (relu corners, argmax
# switches) fall within the checker's step (3e-3; the CLI has no option to
# change it) and its smaller-step retries end just under the tolerance:
# measured 9.3e-3 to 9.9e-3 of 1e-2 with ReLU or max pooling here, one
# coordinate in 256 over it with --coords 256; without them at most 4e-4.
# Max pooling and the ReLU blocks are checked alone and at a smaller step
# in tests/test_conv_layers.c, and against PyTorch in test_conv_reference.c.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
contains() { grep -q -- "$2" "$1"; }

# A small CNN: [1, 28, 28] -> [6, 28, 28] -> pool [6, 14, 14] -> [8, 7, 7]
# (stride 2, 2 groups) -> block [12, 4, 4] (projected shortcut) -> pool
# [12, 2, 2] -> 48 -> 10.
cat > "$work/cnn.cfg" <<CFG
[run]
data = fashion-mnist
train_limit = 256
test_limit = 128
[conv2d]
channels = 6
kernel = 3
padding = 1
bias = false
[batchnorm2d]
[gelu]
[avgpool2d]
kernel = 2
[conv2d]
channels = 8
kernel = 3
stride = 2
padding = 1
groups = 2
[batchnorm2d]
[gelu]
[residual]
[conv2d]
channels = 12
kernel = 3
stride = 2
padding = 1
bias = false
[batchnorm2d]
[gelu]
[conv2d]
channels = 12
kernel = 3
padding = 1
bias = false
[batchnorm2d]
[end]
[gelu]
[avgpool2d]
kernel = 2
[flatten]
[dense]
units = 10
CFG
for layout in measure per_sample batched; do
    before=$failed
    "$bin" gradcheck "$work/cnn.cfg" --set conv2d.layout=$layout > "$work/out" 2>&1
    check "gradcheck passes on a small CNN (layout $layout)" [ $? -eq 0 ]
    check "its verdict is printed (layout $layout)" contains "$work/out" "gradient check passed"
    check "the conv layers are checked (layout $layout)" contains "$work/out" "^004_conv2d .* ok$"
    check "the projected shortcut is checked (layout $layout)" contains "$work/out" "^013_residual_add .* ok$"
    [ "$failed" -eq "$before" ] || cat "$work/out"
done

# A few training steps of a ReLU CNN with a basic block (stride 2: projection).
cat > "$work/resnet.cfg" <<CFG
[run]
data = fashion-mnist
train_limit = 256
test_limit = 128
max_steps = 4
batch = 32
[conv2d]
channels = 8
kernel = 3
padding = 1
bias = false
[batchnorm2d]
[relu]
[maxpool2d]
kernel = 2
[basic_block]
channels = 16
stride = 2
[global_avgpool]
[dense]
units = 10
CFG
"$bin" train "$work/resnet.cfg" > "$work/out" 2>&1
check "a CNN with a basic block trains" [ $? -eq 0 ]
check "the run names the input shape" contains "$work/out" "samples of \[1, 28, 28\]"
check "the run prints the measured layouts" contains "$work/out" "convolution layouts (rank 0's"
check "it ends with a test accuracy" contains "$work/out" "done: 4 steps"

# Impossible shapes: refused at load, one line naming file:line, layer and shapes.
refused() {   # refused NAME FILE FRAGMENT: arsenal train FILE exits 1 and says FRAGMENT
    "$bin" train "$2" > "$work/out" 2>&1
    local status=$?
    check "$1: exits 1" [ $status -eq 1 ]
    check "$1: says where and why" contains "$work/out" "$3"
}
printf '[run]\ndata = fashion-mnist\n[conv2d]\nchannels = 4\nkernel = 5\nstride = 4\n[conv2d]\nchannels = 4\nkernel = 9\n[dense]\nunits = 10\n' \
    > "$work/kernel.cfg"
refused "kernel larger than the padded input" "$work/kernel.cfg" \
    "kernel.cfg:7: layer 001_conv2d: \[conv2d\] on \[4, 6, 6\]: kernel 9x9 (dilation 1) is larger than the padded input 6x6 (input 6x6, padding 0)"
printf '[run]\ndata = fashion-mnist\n[conv2d]\nchannels = 6\nkernel = 3\n[conv2d]\nchannels = 8\nkernel = 3\ngroups = 4\n[dense]\nunits = 10\n' \
    > "$work/groups.cfg"
refused "channels not divisible by groups" "$work/groups.cfg" \
    "groups.cfg:6: layer 001_conv2d: \[conv2d\] on \[6, 26, 26\]: in_channels 6 is not divisible by groups 4"
printf '[run]\ndata = fashion-mnist\n[flatten]\n[conv2d]\nchannels = 4\nkernel = 3\n[dense]\nunits = 10\n' > "$work/flat.cfg"
refused "conv2d on a flat input" "$work/flat.cfg" \
    "flat.cfg:4: layer 001_conv2d: \[conv2d\] needs an image input \[channels, height, width\], found \[784\]"
printf '[run]\ndata = spirals\n[conv2d]\nchannels = 4\nkernel = 3\n[dense]\nunits = 3\n' > "$work/spirals.cfg"
refused "conv2d on a vector data set" "$work/spirals.cfg" \
    "spirals.cfg:3: layer 000_conv2d: \[conv2d\] needs an image input \[channels, height, width\], found \[2\]"
printf '[run]\ndata = fashion-mnist\n[conv2d]\nchannels = 4\nkernel = 3\n[flatten]\n[dense]\nunits = 7\n' > "$work/units.cfg"
refused "a last layer of the wrong width" "$work/units.cfg" "the last layer has 7 outputs but data 'fashion-mnist' has 10 classes"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
