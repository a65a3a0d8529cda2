#!/usr/bin/env bash
# cli_evaluate: `arsenal evaluate` as a user runs it. A short run of an MLP
# with BatchNorm and dropout on a Fashion-MNIST subset, then: the text
# report (loss, accuracy, per-class table, confusion matrix) agrees with
# the training's own last evaluation of the same parameters (accuracy
# exactly, loss to 1e-6); --json is one object whose figures are identical
# on 1, 2 and 3 ranks; --plot writes the confusion matrix as a PNG; the
# training split and --set work; a regression (the teacher set) reports
# MSE / MAE / RMSE / R^2; a checkpoint written before data_mean/data_std
# (attributes removed with h5py, when /usr/bin/python3 has it) gives the
# same figures with a note; a user's CSV files (the run's test file,
# another through --data, the validation split) and an HDF5 file whose x
# is streamed from the file (the figures of x in memory, on 1-3 ranks);
# bad input is one line naming what and where,
# exit status 1 (2 for usage). The figures against a hand computation are
# in tests/test_evaluate.c, world-size invariance of the library in
# tests/mpi_evaluate.c. Run by ctest; ARSENAL_BINARY is set by
# tests/CMakeLists.txt.
set -uo pipefail
bin="${ARSENAL_BINARY:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
source "$(dirname "$0")/testutil.sh"
set_mpi_launcher
contains() { grep -q -- "$2" "$1"; }
lines() { [ "$(wc -l < "$1")" -eq "$2" ]; }
json_value() { grep -o "\"$2\":[^,}]*" "$1" | head -1 | cut -d: -f2; }   # json_value FILE KEY: the first KEY's value
close() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }

cat > "$work/mlp.cfg" <<CFG
[run]
data = fashion-mnist
train_limit = 2000
test_limit = 700
max_steps = 40
batch = 50
lr = 3e-3
[dense]
units = 48
activation = relu
[batchnorm]
[dropout]
rate = 0.2
[dense]
units = 10
CFG
"$bin" train "$work/mlp.cfg" --ckpt-dir "$work/ck" --quiet > "$work/out" 2>&1
status=$?
if [[ $status -ne 0 ]] && contains "$work/out" "dataset-fashion-mnist"; then
    echo "SKIP: no Fashion-MNIST files (apt-get install dataset-fashion-mnist)"
    exit 0
fi
check "a short training run exits 0" [ $status -eq 0 ]
ck="$work/ck/latest.h5"

"$bin" evaluate --help > "$work/out" 2>&1; check "evaluate --help exits 0" [ $? -eq 0 ]
check "evaluate --help explains --data" contains "$work/out" "as the run file's \[run\] data key"
"$bin" --help > "$work/out" 2>&1; check "arsenal --help lists evaluate" contains "$work/out" "arsenal evaluate CKPT.h5"

# The text report.
"$bin" evaluate "$ck" > "$work/text" 2>&1; check "evaluate exits 0" [ $? -eq 0 ]
cat "$work/text"
check "it names the data and split" contains "$work/text" "data fashion-mnist, test split: 700 samples; 1 rank"
check "it says the standardization is the checkpoint's" contains "$work/text" "stored in the checkpoint"
check "it prints loss and accuracy" contains "$work/text" "^loss [0-9.]*  accuracy [0-9.]* ([0-9]* of 700)"
check "it prints a row per class, with its name" contains "$work/text" "^9 Ankle boot  *[0-9.]*  *[0-9.]*  *[0-9.]*  *[0-9]*$"
check "it prints the averages" contains "$work/text" "^weighted avg"
check "it prints the confusion matrix" contains "$work/text" "confusion matrix (rows: true class, columns: predicted class)"

# The same figures as the training's own last evaluation of these parameters.
"$bin" evaluate "$ck" --json > "$work/j1" 2>&1; check "--json exits 0" [ $? -eq 0 ]
check "--json is one line" lines "$work/j1" 1
check "--json is an object" contains "$work/j1" '^{"checkpoint":.*]]}$'
trained_accuracy=$(h5dump -m %.17g -a /test_accuracy "$ck" | grep -o "(0): .*" | cut -d' ' -f2)
trained_loss=$(h5dump -m %.17g -a /test_loss "$ck" | grep -o "(0): .*" | cut -d' ' -f2)
echo "training's evaluation: accuracy $trained_accuracy, loss $trained_loss; evaluate: accuracy" \
     "$(json_value "$work/j1" accuracy), loss $(json_value "$work/j1" loss)"
check "the accuracy is the training's" close "$(json_value "$work/j1" accuracy)" "$trained_accuracy" 1e-12
check "the loss is the training's (to 1e-6)" close "$(json_value "$work/j1" loss)" "$trained_loss" 1e-6
correct=$(json_value "$work/j1" correct)
diagonal=$(grep -o '"confusion_matrix":.*' "$work/j1" | tr -d '[]}"a-z_:' | tr ',' '\n' |
           awk 'NF { v[n++] = $1 } END { for (i = 0; i < 10; i++) s += v[i * 10 + i]; print s }')
check "correct = the confusion matrix's diagonal ($correct)" [ "$correct" = "$diagonal" ]

# The same figures on 1, 2 and 3 ranks, bit for bit.
for n in 1 2 3; do
    "${mpi[@]}" -n $n "$bin" evaluate "$ck" --json --batch 64 > "$work/jn$n" 2> "$work/errn$n"
    status=$?; [ $status -eq 0 ] || cat "$work/errn$n"
    check "evaluate on $n ranks exits 0" [ $status -eq 0 ]
    check "$n ranks: one JSON line" lines "$work/jn$n" 1
    check "$n ranks: world_size $n" contains "$work/jn$n" "\"world_size\":$n,"
    sed 's/"world_size":[0-9]*,//' "$work/jn$n" > "$work/jn$n.figures"
done
check "2 ranks give the figures of 1 rank" cmp -s "$work/jn1.figures" "$work/jn2.figures"
check "3 ranks give the figures of 1 rank" cmp -s "$work/jn1.figures" "$work/jn3.figures"

# The confusion matrix as a picture.
"$bin" evaluate "$ck" --plot "$work/plots" > "$work/out" 2>&1
status=$?
if [[ $status -ne 0 ]] && contains "$work/out" "without PLplot\|neither a PNG"; then
    echo "skip --plot: $(tail -1 "$work/out")"
else
    check "--plot exits 0" [ $status -eq 0 ]
    check "--plot names the file" contains "$work/out" "wrote .*/confusion_matrix.png"
    check "confusion_matrix.png is a PNG" bash -c "head -c 8 '$work/plots/confusion_matrix.png' | od -An -c | grep -q 'P   N   G'"
    check "confusion_matrix.png is not empty" [ "$(stat -c %s "$work/plots/confusion_matrix.png")" -gt 10000 ]
    "$bin" evaluate "$ck" --json --plot "$work/plots2" > "$work/out" 2> "$work/err"
    check "--json --plot keeps stdout one JSON line" lines "$work/out" 1
    check "--json --plot names the file on stderr" contains "$work/err" "confusion_matrix.png"
    # inspect --plot draws through the same figure loop (src/plot/plot.c)
    "$bin" inspect "$ck" --plot "$work/iplots" > "$work/out" 2>&1
    check "inspect --plot exits 0" [ $? -eq 0 ]
    for figure in gradient_flow loss_gradnorm grad_heatmap grad_histograms; do
        check "inspect --plot: $figure.png and .svg" bash -c "head -c 8 '$work/iplots/$figure.png' | od -An -c | grep -q 'P   N   G' && grep -q '<svg' '$work/iplots/$figure.svg'"
    done
fi

# The training split, and --set on the run file.
"$bin" evaluate "$ck" --split train --set run.train_limit=500 --json > "$work/out" 2>&1
check "--split train --set run.train_limit=500 exits 0" [ $? -eq 0 ]
check "it evaluates 500 training samples" contains "$work/out" '"split":"train","samples":500,'

# A regression.
cat > "$work/teacher.cfg" <<CFG
[run]
data = teacher
train_samples = 400
test_samples = 150
max_steps = 30
batch = 40
[dense]
units = 32
activation = tanh
[dense]
units = 4
CFG
"$bin" train "$work/teacher.cfg" --ckpt-dir "$work/ckr" --quiet > "$work/out" 2>&1
check "a regression run exits 0" [ $? -eq 0 ]
"$bin" evaluate "$work/ckr/latest.h5" > "$work/out" 2>&1; check "evaluate of a regression exits 0" [ $? -eq 0 ]
cat "$work/out"
check "it prints MSE, MAE, RMSE and R^2" contains "$work/out" "^loss [0-9.]* (mse)  mse [0-9.e-]*  mae [0-9.e-]*  rmse [0-9.e-]*  r2 [-0-9.e]* (4 outputs)"
"${mpi[@]}" -n 3 "$bin" evaluate "$work/ckr/latest.h5" --json --batch 16 > "$work/r3" 2>&1
"$bin" evaluate "$work/ckr/latest.h5" --json --batch 16 > "$work/r1" 2>&1
check "regression JSON: task and figures" contains "$work/r1" '"task":"regression","loss":.*"mse":.*"r2":'
check "regression figures on 3 ranks = on 1" cmp -s <(sed 's/"world_size":[0-9]*,//' "$work/r1") \
    <(sed 's/"world_size":[0-9]*,//' "$work/r3")
trained_loss=$(h5dump -m %.17g -a /test_loss "$work/ckr/latest.h5" | grep -o "(0): .*" | cut -d' ' -f2)
check "the regression loss is the training's (to 1e-6)" close "$(json_value "$work/r1" loss)" "$trained_loss" 1e-6
"$bin" evaluate "$work/ckr/latest.h5" --plot "$work/rp" > "$work/out" 2>&1
check "--plot of a regression exits 1" [ $? -eq 1 ]
check "... saying there is no confusion matrix" contains "$work/out" "regression (loss mse): there is no confusion matrix"

# A user's data set (CSV files, src/data/csv_data.c): the run's test part,
# another file through --data, and the validation split a run carves out.
make_csv() {   # make_csv FILE ROWS SEED: 5 features, the class (0-2) in a column called label
    awk -v n="$2" -v seed="$3" 'BEGIN { srand(seed); print "f0,f1,label,f2,f3,f4"
        for (i = 0; i < n; i++) { c = int(rand() * 3); printf "%.6f,%.6f,%d,%.6f,%.6f,%.6f\n",
            2 * rand() + c, 3 * rand(), c, rand() - c, 10 * rand(), rand() + 5 } }' > "$1"
}
make_csv "$work/train.csv" 600 1
make_csv "$work/test.csv" 150 2
make_csv "$work/other.csv" 90 3
cat > "$work/csv.cfg" <<CFG
[run]
data = csv:$work/train.csv
test_data = csv:$work/test.csv
label = label
max_steps = 30
batch = 30
[dense]
units = 12
activation = relu
[batchnorm]
[dense]
units = 3
CFG
"$bin" train "$work/csv.cfg" --ckpt-dir "$work/ckc" --quiet > "$work/out" 2>&1
check "a run on CSV files exits 0" [ $? -eq 0 ] || cat "$work/out"
"$bin" evaluate "$work/ckc/latest.h5" > "$work/out" 2>&1; check "evaluate of the CSV run exits 0" [ $? -eq 0 ]
check "it evaluates the run's test file" contains "$work/out" "data csv:.*train.csv, test split: 150 samples"
for n in 1 3; do
    "${mpi[@]}" -n $n "$bin" evaluate "$work/ckc/latest.h5" --json > "$work/c$n" 2>&1
    sed -i 's/"world_size":[0-9]*,//' "$work/c$n"
done
check "CSV data: 3 ranks give the figures of 1" cmp -s "$work/c1" "$work/c3"
trained_accuracy=$(h5dump -m %.17g -a /test_accuracy "$work/ckc/latest.h5" | grep -o "(0): .*" | cut -d' ' -f2)
check "CSV data: the accuracy is the training's" close "$(json_value "$work/c1" accuracy)" "$trained_accuracy" 1e-12
"$bin" evaluate "$work/ckc/latest.h5" --data "csv:$work/other.csv" > "$work/out" 2>&1
check "--data csv:other.csv exits 0" [ $? -eq 0 ] || cat "$work/out"
check "... and evaluates its 90 samples (the file is the test part)" contains "$work/out" "test split: 90 samples"
"$bin" train "$work/csv.cfg" --set run.test_data= --set run.validation=0.2 --ckpt-dir "$work/ckv" --quiet > "$work/out" 2>&1
check "a CSV run with validation = 0.2 exits 0" [ $? -eq 0 ] || cat "$work/out"
"$bin" evaluate "$work/ckv/latest.h5" --json > "$work/out" 2>&1
check "evaluate takes its validation split" contains "$work/out" '"split":"validation","samples":120,'
trained_accuracy=$(h5dump -m %.17g -a /test_accuracy "$work/ckv/latest.h5" | grep -o "(0): .*" | cut -d' ' -f2)
check "... with the training's accuracy" close "$(json_value "$work/out" accuracy)" "$trained_accuracy" 1e-12

# Bad input: one line naming what and where.
"$bin" evaluate "$work/missing.h5" > "$work/out" 2>&1; check "a missing checkpoint exits 1" [ $? -eq 1 ]
check "... naming it in one line" bash -c "[ \"\$(cat '$work/out')\" = 'arsenal evaluate: $work/missing.h5: No such file or directory' ]"
"${mpi[@]}" -n 2 "$bin" evaluate "$work/missing.h5" > "$work/out" 2>&1; check "... on 2 ranks too" [ $? -ne 0 ]
check "... said once on 2 ranks" [ "$(grep -c 'missing.h5: No such file' "$work/out")" -eq 1 ]
"$bin" evaluate "$work/mlp.cfg" > "$work/out" 2>&1; check "a run file instead of a checkpoint exits 1" [ $? -eq 1 ]
check "... saying it is no HDF5 file" contains "$work/out" "mlp.cfg: not an HDF5 file"
"$bin" evaluate "$ck" --data spirals > "$work/out" 2>&1; check "data of another shape exits 1" [ $? -eq 1 ]
check "... naming both shapes" contains "$work/out" "data spirals: samples of shape \[2\] (2 values) do not fit the model of .*latest.h5, which takes \[1, 28, 28\] (784 values)"
"$bin" evaluate "$ck" --data nonsense > "$work/out" 2>&1; check "an unknown data set exits 1" [ $? -eq 1 ]
check "... listing the known ones" contains "$work/out" "--data nonsense: .*expected one of: fashion-mnist, mnist"
"$bin" evaluate "$ck" --set dense.units=20 > "$work/out" 2>&1; check "a --set that changes the model exits 1" [ $? -eq 1 ]
check "... naming the tensor and both shapes" contains "$work/out" "000_dense/weight has shape \[48, 784\], the model needs \[20, 784\]"
"$bin" evaluate "$ck" --split validation > "$work/out" 2>&1; check "a bad --split exits 2" [ $? -eq 2 ]
"$bin" evaluate "$ck" --batch 0 > "$work/out" 2>&1; check "--batch 0 exits 2" [ $? -eq 2 ]
"$bin" evaluate > "$work/out" 2>&1; check "no checkpoint exits 2" [ $? -eq 2 ]

# A checkpoint from before data_mean / data_std / input_shape (needs h5py).
python=""
for candidate in "${ARSENAL_PYTHON:-}" /usr/bin/python3 python3; do
    if [[ -n "$candidate" ]] && "$candidate" -c "import h5py" 2>/dev/null; then python="$candidate"; break; fi
done
if [[ -z "$python" ]]; then
    echo "skip the older checkpoint: no python3 with h5py (apt-get install python3-h5py)"
else
    cp "$ck" "$work/old.h5"
    "$python" -c "
import h5py, sys
with h5py.File(sys.argv[1], 'r+') as f:
    for name in ('data_mean', 'data_std', 'input_shape'):
        del f.attrs[name]" "$work/old.h5"
    "$bin" evaluate "$work/old.h5" > "$work/out" 2>&1; check "an older checkpoint evaluates" [ $? -eq 0 ]
    check "... with a note that the standardization was recomputed" contains "$work/out" "recomputed from the run's training data"
    "$bin" evaluate "$work/old.h5" --json > "$work/jold" 2>&1
    check "... to the same figures" cmp -s <(sed 's/"checkpoint":"[^"]*",//; s/"source":"[a-z]*"//' "$work/j1") \
        <(sed 's/"checkpoint":"[^"]*",//; s/"source":"[a-z]*"//' "$work/jold")
    # an HDF5 data set, its x read from the file chunk by chunk (stream_data = true)
    "$python" - "$work/user.h5" <<'PY'
import sys
import h5py
import numpy as np
rng = np.random.default_rng(0)
def part(n):
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 6)).astype(np.float32) * 2 + 3
    x[:, 0] += 1.5 * y
    return x, y
with h5py.File(sys.argv[1], "w") as f:
    f["x"], f["y"] = part(600)
    f["x_test"], f["y_test"] = part(250)
PY
    printf '[run]\ndata = hdf5:%s\nmax_steps = 30\nbatch = 32\n[dense]\nunits = 16\nactivation = relu\n[batchnorm]\n[dense]\nunits = 3\n' \
        "$work/user.h5" > "$work/user.cfg"
    "$bin" train "$work/user.cfg" --ckpt-dir "$work/cku" --quiet > "$work/out" 2>&1
    check "a run on an HDF5 file exits 0" [ $? -eq 0 ] || cat "$work/out"
    "$bin" evaluate "$work/cku/latest.h5" --json > "$work/u1" 2>&1
    check "evaluate of the HDF5 run: its x_test" contains "$work/u1" '"split":"test","samples":250,'
    for n in 1 2 3; do
        "${mpi[@]}" -n $n "$bin" evaluate "$work/cku/latest.h5" --json --set run.stream_data=true > "$work/us$n" 2>&1
        check "x streamed from the file on $n ranks: the figures of x in memory" \
            cmp -s <(sed 's/"world_size":[0-9]*,//' "$work/u1") <(sed 's/"world_size":[0-9]*,//' "$work/us$n")
    done
    # that model on a CSV file: --set run.label names its label column (a key
    # the HDF5 run's own file has no use for)
    awk 'BEGIN { srand(5); print "a,b,c,class,d,e,f"; for (i = 0; i < 40; i++)
        printf "%.4f,%.4f,%.4f,%d,%.4f,%.4f,%.4f\n", 3 + rand(), 3 + rand(), 3 + rand(), i % 3, 3 + rand(), 3 + rand(), 3 + rand() }' \
        > "$work/six.csv"
    "$bin" evaluate "$work/cku/latest.h5" --data "csv:$work/six.csv" --set run.label=class > "$work/out" 2>&1
    check "the HDF5 run's model on a CSV file (--set run.label=class) exits 0" [ $? -eq 0 ] || cat "$work/out"
    check "... evaluating its 40 rows" contains "$work/out" "data csv:.*six.csv, test split: 40 samples"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
