#!/usr/bin/env bash
# cli_predict: `arsenal predict` as a user runs it, and python/arsenal_torch.py
# against it. Short runs of an MLP (leaky ReLU, BatchNorm, dropout, a
# residual block, LayerNorm, a residual block with a projection) and of a
# small CNN (conv2d + BatchNorm2d + max pooling, a [basic_block] of stride
# 2 whose shortcut is the 1x1 convolution + BatchNorm2d, average pooling, a
# grouped dilated convolution, flatten, dense with LayerNorm, GELU, dropout)
# on a Fashion-MNIST subset, then predict on t10k-images-idx3-ubyte.gz
# (10000 samples, 40 batches): CSV with a header and probabilities that
# sum to 1, the predictions evaluate scores (the same accuracy), small and
# default batches alike, --top K (the argmax first, in order), HDF5 output
# (probabilities [N, classes], top_classes), CSV on stdout; an input larger
# than the process's memory use streams (peak RSS measured); bad input is
# one line naming it, exit 1 (2 for usage), with no output file left. With
# a /usr/bin/python3 that has torch, h5py and numpy: the PyTorch module
# built by arsenal_torch from each checkpoint gives arsenal predict's
# probabilities to 1e-5 (the MLP, the CNN, and a regression's outputs);
# HDF5, .npy and CSV inputs of the same samples give the IDX input's
# predictions exactly; a checkpoint from before data_mean / data_std
# predicts the same after recomputing them; a kind the module does not
# know (rnn) is refused by name. Run by ctest; ARSENAL_BINARY and
# ARSENAL_SOURCE_DIR are set by tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
src="${ARSENAL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
set_mpi_launcher
contains() { grep -q -- "$2" "$1"; }
lines() { [ "$(wc -l < "$1")" -eq "$2" ]; }
fmnist=/usr/share/datasets/fashion-mnist   # ARS_FASHION_MNIST_DIR
images="$fmnist/t10k-images-idx3-ubyte.gz"
labels="$fmnist/t10k-labels-idx1-ubyte.gz"
if [[ ! -r "$images" || ! -r "$fmnist/train-images-idx3-ubyte.gz" ]]; then
    echo "SKIP: no Fashion-MNIST files (apt-get install dataset-fashion-mnist)"
    exit 0
fi

cat > "$work/mlp.cfg" <<CFG
[run]
data = fashion-mnist
train_limit = 2000
test_limit = 700
max_steps = 30
batch = 50
lr = 3e-3
[dense]
units = 64
activation = leaky_relu
[batchnorm]
[dropout]
rate = 0.2
[residual]
[dense]
units = 64
[selu]
[end]
[layernorm]
[dense]
units = 32
activation = tanh
[residual]
[dense]
units = 16
activation = sigmoid
[end]
[dense]
units = 10
CFG
cat > "$work/cnn.cfg" <<CFG
[run]
data = fashion-mnist
train_limit = 1000
test_limit = 300
max_steps = 20
batch = 50
lr = 3e-3
; [1, 28, 28] -> [4, 28, 28] -> [4, 14, 14]
[conv2d]
channels = 4
kernel = 3
padding = 1
activation = relu
[batchnorm2d]
[maxpool2d]
kernel = 2
; -> [8, 7, 7], shortcut: 1x1 convolution of stride 2 + BatchNorm2d
[basic_block]
channels = 8
stride = 2
; -> [8, 4, 4] -> [6, 4, 4]
[avgpool2d]
kernel = 3
stride = 2
padding = 1
[conv2d]
channels = 6
kernel = 3
padding = 2
dilation = 2
groups = 2
[elu]
[flatten]
[dense]
units = 24
[layernorm]
[gelu]
[dropout]
rate = 0.1
[dense]
units = 10
CFG
for model in mlp cnn; do
    "$bin" train "$work/$model.cfg" --ckpt-dir "$work/$model" --quiet > "$work/out" 2>&1
    check "a short $model run exits 0" [ $? -eq 0 ] || cat "$work/out"
done
mlp="$work/mlp/latest.h5" cnn="$work/cnn/latest.h5"

"$bin" predict --help > "$work/out" 2>&1; check "predict --help exits 0" [ $? -eq 0 ]
check "predict --help says what streams" contains "$work/out" "read a batch at a time"
"$bin" --help > "$work/out" 2>&1; check "arsenal --help lists predict" contains "$work/out" "arsenal predict CKPT.h5 INPUT"

# CSV: a header, a line per sample, probabilities summing to 1.
"$bin" predict "$mlp" "$images" --out "$work/mlp.csv" > "$work/out" 2>&1; check "predict to CSV exits 0" [ $? -eq 0 ]
check "it says what it wrote" contains "$work/out" "wrote 10000 predictions (10 class probabilities each) to .*mlp.csv (CSV)"
check "a header and 10000 lines" lines "$work/mlp.csv" 10001
check "the header names the classes" [ "$(head -1 "$work/mlp.csv")" = "prob_0,prob_1,prob_2,prob_3,prob_4,prob_5,prob_6,prob_7,prob_8,prob_9" ]
check "every row sums to 1" awk -F, 'NR > 1 { s = 0; for (i = 1; i <= NF; i++) s += $i; if (s < 0.99999 || s > 1.00001 || NF != 10) bad++ } END { exit bad > 0 }' "$work/mlp.csv"
# The same predictions evaluate scores (its 700 test samples).
gzip -dc "$labels" | tail -c +9 | od -An -tu1 -v -w1 | tr -d ' ' > "$work/labels"
accuracy=$(awk -F, 'NR > 1 && NR <= 701 { best = 1; for (i = 2; i <= NF; i++) if ($i > $best) best = i; print best - 1 }' \
           "$work/mlp.csv" | paste -d' ' - <(head -700 "$work/labels") | awk '{ n++; c += $1 == $2 } END { printf "%d", c }')
"$bin" evaluate "$mlp" --json > "$work/eval" 2>&1
check "predict's argmax scores evaluate's accuracy ($accuracy of 700)" contains "$work/eval" "\"correct\":$accuracy,"
# Batches of 7 give the same probabilities (to float rounding of other products).
"$bin" predict "$mlp" "$images" --batch 7 --out "$work/mlp7.csv" > /dev/null 2>&1; check "--batch 7 exits 0" [ $? -eq 0 ]
check "--batch 7 gives the default batch's probabilities (1e-6)" awk -F, 'NR == FNR { a[FNR] = $0; next }
    { split(a[FNR], x, ","); for (i = 1; i <= NF; i++) { d = x[i] - $i; if (d > 1e-6 || d < -1e-6) bad++ } } END { exit bad > 0 }' \
    "$work/mlp.csv" "$work/mlp7.csv"
# CSV on stdout.
"$bin" predict "$cnn" "$images" > "$work/cnn_stdout.csv" 2> "$work/err"; check "predict to stdout exits 0" [ $? -eq 0 ]
check "stdout holds the header and 10000 lines" lines "$work/cnn_stdout.csv" 10001
check "nothing on stderr" [ ! -s "$work/err" ]

# --top K: the K best classes, best first; the first is the argmax.
"$bin" predict "$mlp" "$images" --top 3 --out "$work/top.csv" > /dev/null 2>&1; check "--top 3 exits 0" [ $? -eq 0 ]
check "--top 3 header" [ "$(head -1 "$work/top.csv")" = "top1_class,top1_prob,top2_class,top2_prob,top3_class,top3_prob" ]
check "--top 3: 10000 lines" lines "$work/top.csv" 10001
check "--top 3: probabilities in decreasing order" awk -F, 'NR > 1 && !($2 >= $4 && $4 >= $6) { bad++ } END { exit bad > 0 }' "$work/top.csv"
check "--top 3: the first is the argmax of the full probabilities" cmp -s \
    <(awk -F, 'NR > 1 { best = 1; for (i = 2; i <= NF; i++) if ($i > $best) best = i; print best - 1 }' "$work/mlp.csv") \
    <(awk -F, 'NR > 1 { print $1 }' "$work/top.csv")

# HDF5 output.
"$bin" predict "$cnn" "$images" --out "$work/cnn.h5" --top 2 > "$work/out" 2>&1; check "predict to HDF5 exits 0" [ $? -eq 0 ]
check "it says HDF5" contains "$work/out" "to .*cnn.h5 (HDF5)"
h5dump -H "$work/cnn.h5" > "$work/h5" 2>&1
check "HDF5: probabilities [10000, 10]" grep -A3 'DATASET "probabilities"' "$work/h5" -q
check "HDF5: its shape" contains "$work/h5" "( 10000, 10 ) / ( H5S_UNLIMITED, 10 )"
check "HDF5: top_classes [10000, 2]" contains "$work/h5" "( 10000, 2 ) / ( H5S_UNLIMITED, 2 )"
first=$(h5dump -m %.9g -d /probabilities -s 0,0 -c 1,10 "$work/cnn.h5" | grep "(0,[0-9]):" | sed 's/.*://' | tr -d ' \n')
check "HDF5 holds the values of the CSV" [ "$first" = "$(sed -n 2p "$work/cnn_stdout.csv")" ]

# Streaming: an input of 120000 images (376 MB as floats) in a small process
# (measured: 32 MiB; 91 MiB under AddressSanitizer, whose shadow memory and
# quarantine count too).
limit=120
case "${ARSENAL_SANITIZED:-}" in
    1) limit=250 ;;
    0) ;;
    *) [[ "$(ldd "$bin" 2> /dev/null; nm "$bin" 2> /dev/null)" =~ libasan|__asan_init ]] && limit=250 ;;
esac
big="$work/big-idx3-ubyte"
{ printf '\x00\x00\x08\x03\x00\x01\xd4\xc0\x00\x00\x00\x1c\x00\x00\x00\x1c'
  for i in 1 2; do gzip -dc "$fmnist/train-images-idx3-ubyte.gz" | tail -c +17; done; } > "$big"
gnu_time="$(type -P time)"   # GNU time (the shell's builtin has no -f)
if [[ -n "$gnu_time" ]] && "$gnu_time" -f %M true > /dev/null 2>&1; then
    "$gnu_time" -f "%M" -o "$work/rss" "$bin" predict "$mlp" "$big" --out "$work/big.h5" > "$work/out" 2>&1
    status=$?
    rss=$(tail -1 "$work/rss")
    echo "peak RSS predicting 120000 images (376 MB as floats): $((rss / 1024)) MiB"
    check "predict of 120000 images exits 0" [ $status -eq 0 ]
    check "its peak RSS stays below $limit MiB" [ "$rss" -lt $((limit * 1024)) ]
else
    "$bin" predict "$mlp" "$big" --out "$work/big.h5" > "$work/out" 2>&1
    check "predict of 120000 images exits 0" [ $? -eq 0 ]
    echo "skip the peak RSS of the large input: no GNU time (apt-get install time)"
fi
check "it wrote 120000 predictions" contains "$work/out" "wrote 120000 predictions"
rm -f "$big" "$work/big.h5"

# Bad input.
"$bin" predict "$mlp" "$labels" --out "$work/bad.csv" > "$work/out" 2>&1; check "samples of another shape exit 1" [ $? -eq 1 ]
check "... in one line" lines "$work/out" 1
check "... naming both shapes" contains "$work/out" "t10k-labels-idx1-ubyte.gz: samples of shape \[1\] (1 value) do not fit the model of .*, which takes \[1, 28, 28\] (784 values)"
check "... leaving no output" [ ! -e "$work/bad.csv" ]
gzip -dc "$images" | head -c 100000 > "$work/short-idx3-ubyte"
"$bin" predict "$mlp" "$work/short-idx3-ubyte" --out "$work/short.csv" > "$work/out" 2>&1
check "a truncated IDX file exits 1" [ $? -eq 1 ]
check "... saying where it ends" contains "$work/out" "short-idx3-ubyte: truncated: the header declares 10000 samples, the file ends in sample 127"
check "... leaving no output" [ -z "$(ls "$work" | grep short.csv)" ]
"$bin" predict "$mlp" "$work/nothing.h5" > "$work/out" 2>&1; check "a missing input exits 1" [ $? -eq 1 ]
check "... naming it" bash -c "[ \"\$(cat '$work/out')\" = 'arsenal predict: $work/nothing.h5: No such file or directory' ]"
"$bin" predict "$work/nothing.h5" "$images" > "$work/out" 2>&1; check "a missing checkpoint exits 1" [ $? -eq 1 ]
"$bin" predict "$mlp" "$images" --top 11 > "$work/out" 2>&1; check "--top 11 of 10 classes exits 1" [ $? -eq 1 ]
check "... saying how many there are" contains "$work/out" "--top 11: the model of .* has 10 classes"
"$bin" predict "$mlp" "$images" --top 0 > "$work/out" 2>&1; check "--top 0 exits 2" [ $? -eq 2 ]
"$bin" predict "$mlp" > "$work/out" 2>&1; check "no INPUT exits 2" [ $? -eq 2 ]
check "... saying an INPUT is expected" contains "$work/out" "an INPUT file is expected"
"$bin" predict "$mlp" "$images" --dataset x > "$work/out" 2>&1; check "--dataset on an IDX file exits 1" [ $? -eq 1 ]
"${mpi[@]}" -n 2 "$bin" predict "$mlp" "$images" > "$work/out" 2>&1; check "predict under 2 ranks exits non-zero" [ $? -ne 0 ]
check "... saying once it runs on one process" [ "$(grep -c 'runs on one process' "$work/out")" -eq 1 ]

# A regression's outputs.
cp "$src/tests/data/teacher-regression.cfg" "$work/teacher.cfg"
"$bin" train "$work/teacher.cfg" --ckpt-dir "$work/reg" --quiet > "$work/out" 2>&1
check "a regression run exits 0" [ $? -eq 0 ]
"$bin" predict "$work/reg/latest.h5" "$images" > "$work/out" 2>&1; check "fashion images into a 16-input regression exit 1" [ $? -eq 1 ]
"$bin" predict "$work/reg/latest.h5" "$images" --top 1 > "$work/out" 2>&1; check "--top on a regression exits 1" [ $? -eq 1 ]
"$bin" predict "$work/reg/latest.h5" "$images" --logits > "$work/out" 2>&1; check "--logits on a regression exits 1" [ $? -eq 1 ]
check "... saying its outputs are what it predicts" contains "$work/out" "is a regression (loss mse): its outputs are"
"$bin" predict "$mlp" "$images" --logits --top 2 > "$work/out" 2>&1; check "--logits with --top exits 1" [ $? -eq 1 ]
check "... naming both" contains "$work/out" "--top and --logits"
# --logits: the softmax of the logits written is the probabilities written
"$bin" predict "$mlp" "$images" --batch 100 --logits --out "$work/logits.csv" > /dev/null 2>&1
check "--logits exits 0" [ $? -eq 0 ]
check "... a header of logit_0..logit_9" contains "$work/logits.csv" "^logit_0,logit_1,.*,logit_9$"
"$bin" predict "$mlp" "$images" --batch 100 --out "$work/probs.csv" > /dev/null 2>&1
check "... the softmax of its rows is predict's probabilities (1e-6)" awk -F, '
    NR == FNR { if (FNR > 1) for (j = 1; j <= NF; j++) z[FNR, j] = $j; next }
    FNR > 1 { m = z[FNR, 1]; for (j = 2; j <= NF; j++) if (z[FNR, j] > m) m = z[FNR, j]
              s = 0; for (j = 1; j <= NF; j++) s += exp(z[FNR, j] - m)
              for (j = 1; j <= NF; j++) { d = exp(z[FNR, j] - m) / s - $j; if (d < 0) d = -d; if (d > w) w = d } }
    END { exit !(FNR > 1 && w <= 1e-6) }' "$work/logits.csv" "$work/probs.csv"

# A model trained on a CSV file predicts on such a file: its label column is
# skipped ([run] label), so the training file itself works.
awk 'BEGIN { srand(4); print "f0,f1,label,f2"
    for (i = 0; i < 500; i++) { c = int(rand() * 3); printf "%.6f,%.6f,%d,%.6f\n", rand() + c, 2 * rand(), c, rand() - c } }' \
    > "$work/train.csv"
printf '[run]\ndata = csv:%s\nlabel = label\nvalidation = 0.2\nmax_steps = 20\nbatch = 25\n[dense]\nunits = 8\nactivation = relu\n[dense]\nunits = 3\n' \
    "$work/train.csv" > "$work/csv.cfg"
"$bin" train "$work/csv.cfg" --ckpt-dir "$work/csv" --quiet > "$work/out" 2>&1
check "a CSV run exits 0" [ $? -eq 0 ] || cat "$work/out"
"$bin" predict "$work/csv/latest.h5" "$work/train.csv" --out "$work/csv-with-label.csv" > "$work/out" 2>&1
check "predict on the training CSV (label column skipped) exits 0" [ $? -eq 0 ] || cat "$work/out"
check "... one line per row" lines "$work/csv-with-label.csv" 501
cut -d, -f1,2,4 "$work/train.csv" > "$work/features.csv"
"$bin" predict "$work/csv/latest.h5" "$work/features.csv" --out "$work/csv-features.csv" > /dev/null 2>&1
check "the features alone give the same probabilities" cmp -s "$work/csv-with-label.csv" "$work/csv-features.csv"
# --label names the column to skip of a CSV input when the run did not train on one
awk 'BEGIN { srand(6); printf "target"; for (j = 0; j < 16; j++) printf ",x%d", j; print ""
    for (i = 0; i < 30; i++) { printf "%.3f", rand(); for (j = 0; j < 16; j++) printf ",%.4f", rand() - 0.5; print "" } }' \
    > "$work/reg-with-target.csv"
cut -d, -f2- "$work/reg-with-target.csv" > "$work/reg-features.csv"
"$bin" predict "$work/reg/latest.h5" "$work/reg-with-target.csv" --label target --out "$work/reg-label.csv" > "$work/out" 2>&1
check "--label target exits 0" [ $? -eq 0 ] || cat "$work/out"
"$bin" predict "$work/reg/latest.h5" "$work/reg-features.csv" --out "$work/reg-features-out.csv" > /dev/null 2>&1
check "... the outputs of the features alone" cmp -s "$work/reg-label.csv" "$work/reg-features-out.csv"
"$bin" predict "$work/reg/latest.h5" "$work/reg-with-target.csv" --label nope > "$work/out" 2>&1
check "--label of a missing column exits 1" [ $? -eq 1 ]
check "... naming it" contains "$work/out" "--label nope: .*reg-with-target.csv has no such column"

# An HDF5 input is read whole in a checking child (src/isolate.c) before
# anything else, by training's reader, as training's loader reads its data:
# libhdf5 crashes on some corrupted files. This one (a chunk shorter than its
# shape, fuzz_h5data's finding: libhdf5 would copy past the chunk) is refused
# by the reader's chunk check, before the shape check (2 features for a
# 3-feature model) and before any output.
bad_h5="$src/tests/fuzz/regressions/h5data/hdf5-short-raw-chunk-overflow.h5"
"$bin" predict "$work/csv/latest.h5" "$bad_h5" > "$work/stdout" 2> "$work/out"
check "a corrupted HDF5 input exits 1" [ $? -eq 1 ]
check "... with the checking child's verdict, naming the dataset" contains "$work/out" "hdf5-short-raw-chunk-overflow.h5:/x: the chunk at sample 0 stores 34 bytes"
check "... before anything is written" [ ! -s "$work/stdout" ]

# PyTorch.
python=""
for candidate in "${ARSENAL_PYTHON:-}" /usr/bin/python3 python3; do
    if [[ -n "$candidate" ]] && "$candidate" -c "import torch, h5py, numpy" 2>/dev/null; then python="$candidate"; break; fi
done
if [[ -z "$python" ]]; then
    echo "SKIP the PyTorch comparison: no python3 with torch, h5py and numpy (apt-get install python3-torch python3-h5py)"
else
    # inputs of other formats holding the same samples (the first 1000), and the regression's inputs
    PYTHONPATH="$src/python" "$python" - "$work" "$images" <<'PY'
import sys
import h5py
import numpy as np
import arsenal_torch
work, images = sys.argv[1], sys.argv[2]
x = arsenal_torch.read_idx(images)[:1000]                 # [1000, 28, 28] in [0, 1]
with h5py.File(f"{work}/x.h5", "w") as f:
    f["x"] = x.reshape(1000, 1, 28, 28)
    f["flat"] = x.reshape(1000, 784).astype(np.float64)
with h5py.File(f"{work}/x-userblock", "w", userblock_size=1024) as f:   # the signature at 1024
    f["x"] = x.reshape(1000, 1, 28, 28)
np.save(f"{work}/x.npy", x)
with open(f"{work}/x.csv", "w") as f:
    f.write(",".join(f"pixel{i}" for i in range(784)) + "\n")
    for row in x.reshape(1000, 784):
        f.write(",".join(f"{v:.9g}" for v in row) + "\n")
rng = np.random.default_rng(1)
with h5py.File(f"{work}/teacher.h5", "w") as f:
    f["x"] = rng.normal(size=(300, 16)).astype(np.float32)
PY
    check "python writes the inputs" [ -s "$work/x.csv" ]
    gzip -dc "$images" | head -c $((16 + 1000 * 784)) | { printf '\x00\x00\x08\x03\x00\x00\x03\xe8\x00\x00\x00\x1c\x00\x00\x00\x1c'; tail -c +17; } > "$work/x-idx3-ubyte"
    for model in mlp cnn; do
        "$bin" predict "$work/$model/latest.h5" "$work/x-idx3-ubyte" --out "$work/$model-idx.csv" > /dev/null 2>&1
        check "$model: predict on 1000 IDX images exits 0" [ $? -eq 0 ]
        for input in x.h5 x.npy x-userblock; do
            "$bin" predict "$work/$model/latest.h5" "$work/$input" --out "$work/$model-$input.csv" > "$work/out" 2>&1
            check "$model: predict on $input exits 0" [ $? -eq 0 ]
            check "$model: $input gives the IDX input's predictions" cmp -s "$work/$model-idx.csv" "$work/$model-$input.csv"
        done
    done
    "$bin" predict "$mlp" "$work/x.csv" --out "$work/mlp-x.csv.csv" > /dev/null 2>&1
    check "mlp: predict on a CSV of pixels exits 0" [ $? -eq 0 ]
    check "mlp: the CSV input gives the IDX input's predictions" cmp -s "$work/mlp-idx.csv" "$work/mlp-x.csv.csv"
    "$bin" predict "$mlp" "$work/x.h5" --dataset flat --out "$work/mlp-flat.csv" > /dev/null 2>&1
    check "mlp: a flat float64 dataset ([1000, 784]) gives the same" cmp -s "$work/mlp-idx.csv" "$work/mlp-flat.csv"
    "$bin" predict "$work/reg/latest.h5" "$work/teacher.h5" --out "$work/reg.h5" --batch 64 > /dev/null 2>&1
    check "regression: predict to HDF5 exits 0" [ $? -eq 0 ]
    # an older checkpoint: no data_mean, data_std, input_shape
    cp "$mlp" "$work/old.h5"
    "$python" -c "
import h5py, sys
with h5py.File(sys.argv[1], 'r+') as f:
    for name in ('data_mean', 'data_std', 'input_shape'):
        del f.attrs[name]" "$work/old.h5"
    "$bin" predict "$work/old.h5" "$work/x-idx3-ubyte" --out "$work/old.csv" > "$work/out" 2>&1
    check "an older checkpoint predicts" [ $? -eq 0 ]
    check "... with a note on the recomputed standardization" contains "$work/out" "recomputed from the run's training data"
    check "... the same probabilities" cmp -s "$work/mlp-idx.csv" "$work/old.csv"
    # a kind arsenal_torch does not know
    printf '[run]\ndata = adding\nseq_len = 5\ntrain_samples = 64\ntest_samples = 32\nmax_steps = 1\nbatch = 32\n[rnn]\nunits = 8\n[last_step]\n[dense]\nunits = 1\n' > "$work/rnn.cfg"
    "$bin" train "$work/rnn.cfg" --ckpt-dir "$work/rnn" --quiet > "$work/out" 2>&1
    check "an RNN run exits 0" [ $? -eq 0 ] || cat "$work/out"
    PYTHONPATH="$src/python" "$python" - "$work" "$images" > "$work/torch" 2>&1 <<'PY'
import sys
import h5py
import numpy as np
import torch
import arsenal_torch
work, images = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
x = arsenal_torch.read_idx(images)[:1000]
for name in ("mlp", "cnn"):
    model = arsenal_torch.load(f"{work}/{name}/latest.h5")
    assert not model.training
    p = model.predict(x)
    q = np.loadtxt(f"{work}/{name}-idx.csv", delimiter=",", skiprows=1)
    print(f"{name}: kinds {' '.join(model.kinds)}")
    print(f"{name}: max |torch - arsenal predict| over {q.shape[0]} x {q.shape[1]} probabilities: {abs(p - q).max():.3g}")
    print(f"{name}: torch {'ok' if abs(p - q).max() < 1e-5 else 'DIFFERS'}")
model = arsenal_torch.load(f"{work}/reg/latest.h5")
with h5py.File(f"{work}/teacher.h5") as f:
    t = f["x"][()]
with h5py.File(f"{work}/reg.h5") as f:
    q = f["outputs"][()]
p = model.predict(t)
print(f"regression: max |torch - arsenal predict| over {q.shape[0]} x {q.shape[1]} outputs: {abs(p - q).max():.3g}")
print(f"regression: torch {'ok' if abs(p - q).max() < 1e-5 else 'DIFFERS'}")
try:
    arsenal_torch.load(f"{work}/rnn/latest.h5")
    print("rnn: loaded (it should be refused)")
except arsenal_torch.CheckpointError as e:
    print(f"rnn: refused: {e}")
PY
    cat "$work/torch"
    check "PyTorch gives the MLP's probabilities to 1e-5" contains "$work/torch" "^mlp: torch ok"
    check "PyTorch gives the CNN's probabilities to 1e-5" contains "$work/torch" "^cnn: torch ok"
    check "PyTorch gives the regression's outputs to 1e-5" contains "$work/torch" "^regression: torch ok"
    check "the CNN has the image shortcut and the kinds asked for" contains "$work/torch" "cnn: kinds conv2d relu batchnorm2d maxpool2d residual conv2d batchnorm2d relu conv2d batchnorm2d residual_add relu avgpool2d conv2d elu flatten dense layernorm gelu dropout dense"
    check "arsenal_torch refuses an rnn by name" contains "$work/torch" "rnn: refused: .*layer 000_rnn: kind 'rnn' is not supported"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
