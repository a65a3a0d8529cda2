#!/usr/bin/env bash
# cli_faults: what a user sees when the environment or the input is wrong,
# end to end through the arsenal command (one and two MPI ranks): the disk
# fills up during a checkpoint, the checkpoint directory is read-only, data
# files are missing/unreadable/corrupt, a model cannot fit in memory, a run
# file or --set holds absurd sizes, command-line paths are wrong. Every case
# must end (no hang), with exit status 1 and one clear message, and never
# cost the last good checkpoint. Run by ctest (ARSENAL_BINARY and
# ARSENAL_SOURCE_DIR set by tests/CMakeLists.txt).
#
# The disk-full and read-only cases mount small tmpfs file systems: they
# need root (or CAP_SYS_ADMIN) and are skipped, saying why, without it.
# Checks marked PEND are known findings (docs/validation.md, "Findings"):
# they are reported but do not fail the test unless ARSENAL_FAULTS_STRICT=1;
# once fixed they pass and say so.
set -uo pipefail
# As root, run in a private mount namespace: the tmpfs mounts below vanish
# with the test even if it is killed (a ctest timeout) before its cleanup.
if [[ -z "${ARSENAL_FAULTS_NS:-}" && "$(id -u)" -eq 0 ]] && command -v unshare > /dev/null &&
        unshare --mount --propagation private true 2> /dev/null; then
    ARSENAL_FAULTS_NS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
bin="${ARSENAL_BINARY:?ARSENAL_BINARY is not set (run through ctest)}"
: "${ARSENAL_SOURCE_DIR:?ARSENAL_SOURCE_DIR is not set (run through ctest)}"
work="$(mktemp -d)"
chmod 755 "$work"   # the unreadable-file case runs arsenal as nobody
mounts=()
cleanup() {
    local m
    for m in "${mounts[@]}"; do umount "$m" 2> /dev/null || umount -l "$m" 2> /dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpiexec --oversubscribe --mca mpi_yield_when_idle 1)
skipped=0 pending=0

source "$(dirname "$0")/testutil.sh"
pend() {    # pend NAME FINDING COMMAND...: a check that fails until a known finding is fixed
    local name="$1" finding="$2"; shift 2
    if "$@"; then passed=$((passed + 1)); echo "ok   $name (finding $finding looks fixed: make this a plain check)"
    elif [[ "${ARSENAL_FAULTS_STRICT:-0}" == 1 ]]; then failed=$((failed + 1)); echo "FAIL $name [$finding]"
    else pending=$((pending + 1)); echo "PEND $name [known finding $finding]"; fi
}
skip() { skipped=$((skipped + 1)); echo "skip $1: $2"; }
contains() { grep -q -F -- "$2" "$1"; }
lacks() { ! grep -q -F -- "$2" "$1"; }
once() { [ "$(grep -c -F -- "$2" "$1")" -eq 1 ]; }
is() { [ "$1" -eq "$2" ]; }
# (a check is one command: `check NAME [ a ] && [ b ]` would check only a)
failed_not_hung() { [ "$1" -ne 0 ] && [ "$1" -ne 124 ]; }   # failed_not_hung STATUS
clean_error_within() { [ "$1" -eq 1 ] && [ $((SECONDS - $2)) -lt "$3" ]; }   # STATUS START SECONDS
quietly() { "$@" > /dev/null 2>&1; }
no_match() { ! compgen -G "$1" > /dev/null; }
show() { sed 's/^/     | /' "$1" | head -n "${2:-3}"; }   # the message, for the log

# run OUT COMMAND...: runs with a timeout (a hang is a failure, not a stuck
# test); sets $status (124 = timed out).
run() {
    local out="$1"; shift
    timeout 120 "$@" > "$out" 2>&1
    status=$?
}

# An ASan build reserves terabytes of address space: no ulimit -v for it.
# ctest says so (ARSENAL_SANITIZED); run by hand, look at the binary. (The
# text is captured first: with pipefail, `ldd | grep -q` fails by SIGPIPE.)
sanitized=0
case "${ARSENAL_SANITIZED:-}" in
    1) sanitized=1 ;;
    0) ;;
    *) [[ "$(ldd "$bin" 2> /dev/null; nm "$bin" 2> /dev/null)" =~ libasan|libclang_rt.asan|__asan_init ]] && sanitized=1 ;;
esac

# ---- fixtures ---------------------------------------------------------------

cat > "$work/small.cfg" <<CFG
[run]
data = spirals
train_samples = 64
test_samples = 32
batch = 16
max_steps = 12
ckpt_every = 2
ckpt_keep = 1
log_every = 1000
[dense]
units = 16
activation = tanh
[dense]
units = 3
CFG

# write_idx FILE DIMS... < payload: an unsigned-byte IDX file.
be32() { local h; h="$(printf '%08x' "$1")"; printf "\\x${h:0:2}\\x${h:2:2}\\x${h:4:2}\\x${h:6:2}"; }
write_idx() {
    local file="$1"; shift
    { printf "\\x00\\x00\\x08\\x$(printf '%02x' $#)"; for d in "$@"; do be32 "$d"; done; cat; } > "$file"
}
pixels() { head -c "$1" /dev/urandom; }
labels() { local i; for ((i = 0; i < $1; i++)); do printf "\\x0$((i % 2))"; done; }
make_mnist() {   # make_mnist DIR: 40 train + 20 test images of 2x2 pixels, labels 0/1
    mkdir -p "$1"
    pixels 160 | write_idx "$1/train-images-idx3-ubyte" 40 2 2
    labels 40 | write_idx "$1/train-labels-idx1-ubyte" 40
    pixels 80 | write_idx "$1/t10k-images-idx3-ubyte" 20 2 2
    labels 20 | write_idx "$1/t10k-labels-idx1-ubyte" 20
    gzip -n "$1/t10k-images-idx3-ubyte" "$1/t10k-labels-idx1-ubyte"   # the .gz path too
}
mnist_cfg() {    # mnist_cfg DIR > FILE
    printf '[run]\ndata = mnist\ndata_dir = %s\nbatch = 8\nepochs = 1\nlog_every = 1000\n[dense]\nunits = 2\n' "$1"
}

# ---- disk full during a checkpoint -------------------------------------------

mount_tmpfs() {   # mount_tmpfs DIR SIZE: 0 when mounted, else $mount_error says why
    mkdir -p "$1"
    if mount_error="$(mount -t tmpfs -o "size=$2" tmpfs "$1" 2>&1)"; then mounts+=("$1"); return 0; fi
    return 1
}

if mount_tmpfs "$work/full" 200k; then
    # One checkpoint of this model is ~120 KB: the first fits, the second does not.
    run "$work/out" "$bin" train "$work/small.cfg" --ckpt-dir "$work/full"
    show "$work/out" 100 | grep -E 'arsenal:|Segmentation' | head -3
    check "disk full: the run fails" failed_not_hung $status
    check "disk full: exit status 1, no crash at exit" is $status 1
    check "disk full: the message says the disk is full" contains "$work/out" "disk full"
    check "disk full: it names the checkpoint" contains "$work/out" "writing checkpoint $work/full/ckpt-"
    check "disk full: the first checkpoint was written" contains "$work/out" "checkpoint $work/full/ckpt-00000002.h5"
    check "disk full: no temporary file is left" no_match "$work/full/*.tmp-*"
    check "disk full: latest.h5 points at an existing checkpoint" [ -f "$work/full/latest.h5" ]
    if command -v h5ls > /dev/null; then
        check "disk full: h5ls reads the previous checkpoint" quietly h5ls -r "$work/full/latest.h5"
    fi
    run "$work/out" "$bin" train "$work/small.cfg" --set run.max_steps=14 --resume "$work/full/latest.h5"
    check "disk full: the previous checkpoint resumes" is $status 0
    check "disk full: ... from step 2" contains "$work/out" "at step 2 "

    # Two ranks: rank 0 writes; both must stop, the error printed once.
    rm -f "$work/full/"*
    start=$SECONDS
    run "$work/out" "${mpi[@]}" -n 2 "$bin" train "$work/small.cfg" --ckpt-dir "$work/full"
    check "disk full, 2 ranks: the job fails" failed_not_hung $status
    check "disk full, 2 ranks: it ends within a minute" [ $((SECONDS - start)) -lt 60 ]
    check "disk full, 2 ranks: the message appears once" once "$work/out" "disk full"
    check "disk full, 2 ranks: the previous checkpoint survives" [ -f "$work/full/ckpt-00000002.h5" ]
else
    skip "disk full" "cannot mount a 200k tmpfs to fill (needs root or CAP_SYS_ADMIN): $mount_error"
fi

# ---- read-only checkpoint directory -------------------------------------------

if mount_tmpfs "$work/ro" 2m && "$bin" train "$work/small.cfg" --set run.max_steps=4 --ckpt-dir "$work/ro" --quiet \
        && mount -o remount,ro "$work/ro" 2> "$work/err"; then
    run "$work/out" "$bin" train "$work/small.cfg" --ckpt-dir "$work/ro"
    show "$work/out"
    check "read-only --ckpt-dir: refused" is $status 1
    check "read-only --ckpt-dir: says why" contains "$work/out" "--ckpt-dir $work/ro: not writable: Read-only file system"
    check "read-only --ckpt-dir: before any training" lacks "$work/out" "epoch "
    run "$work/out" "$bin" train "$work/small.cfg" --set run.max_steps=6 --resume "$work/ro/latest.h5" \
        --ckpt-dir "$work/rw"
    check "read-only: resuming from a read-only checkpoint works" is $status 0
    check "read-only: ... and checkpoints elsewhere" [ -f "$work/rw/latest.h5" ]
    start=$SECONDS
    run "$work/out" "${mpi[@]}" -n 2 "$bin" train "$work/small.cfg" --ckpt-dir "$work/ro"
    check "read-only --ckpt-dir, 2 ranks: the job fails" failed_not_hung $status
    check "read-only --ckpt-dir, 2 ranks: it ends within a minute" [ $((SECONDS - start)) -lt 60 ]
    check "read-only --ckpt-dir, 2 ranks: the message appears once" once "$work/out" "not writable"
    check "read-only: the checkpoint there is intact" quietly "$bin" train "$work/small.cfg" --set run.max_steps=5 \
        --resume "$work/ro/latest.h5" --quiet
else
    skip "read-only checkpoint directory" "cannot mount a tmpfs and remount it read-only (root ignores permission bits, so chmod cannot stand in): ${mount_error:-$(cat "$work/err" 2> /dev/null)}"
fi

# ---- /dev/shm too small for the shared-memory gradient sum ----------------------
# 2 ranks x 7.5 MiB of gradients do not fit an 8 MiB /dev/shm (Open MPI's own
# segments still do). auto falls back to one MPI_Allreduce and says why;
# gradient_sync = shared_memory is refused at start-up, not a SIGBUS mid-run.
if [[ -n "${ARSENAL_FAULTS_NS:-}" ]] && mount_tmpfs /dev/shm 8m; then
    printf '[run]\ndata = spirals\ntrain_samples = 64\ntest_samples = 32\nbatch = 16\nmax_steps = 3\n'\
'log_every = 1000\n[dense]\nunits = 1400\nactivation = relu\n[dense]\nunits = 1400\n[dense]\nunits = 3\n' \
        > "$work/shm.cfg"
    run "$work/out" "${mpi[@]}" -n 2 "$bin" train "$work/shm.cfg"
    show "$work/out" 5 | grep "gradient sync"
    check "small /dev/shm, auto: trains" is $status 0
    check "small /dev/shm, auto: falls back to one all-reduce and says why" contains "$work/out" \
        "one MPI_Allreduce after backward (gradient_sync = auto: every rank on one host, but cannot share"
    run "$work/out" "${mpi[@]}" -n 2 "$bin" train "$work/shm.cfg" --set run.gradient_sync=shared_memory
    show "$work/out" 1
    check "small /dev/shm, shared_memory: refused" is $status 1
    check "small /dev/shm, shared_memory: says what and why, once" once "$work/out" \
        "gradient_sync = shared_memory: cannot share 15.0 MiB of gradients in /dev/shm: No space left on device"
    check "small /dev/shm: no segment left behind" no_match "/dev/shm/arsenal-*"
    umount /dev/shm
else
    skip "small /dev/shm" "needs root in the test's private mount namespace: ${mount_error:-not root}"
fi

# ---- data files -----------------------------------------------------------------

make_mnist "$work/mn"
mnist_cfg "$work/mn" > "$work/mn.cfg"
run "$work/out" "$bin" train "$work/mn.cfg"
check "data: a small valid IDX set trains (plain and .gz files)" is $status 0

data_case() {   # data_case NAME DIR EXPECTED-FRAGMENT: training on DIR fails naming the problem
    mnist_cfg "$2" > "$work/case.cfg"
    run "$work/out" "$bin" train "$work/case.cfg"
    show "$work/out" 1
    check "data: $1: exit status 1" is $status 1
    check "data: $1: message" contains "$work/out" "$3"
}
data_case "missing directory" "$work/nowhere" \
    "$work/nowhere: neither train-images-idx3-ubyte.gz nor train-images-idx3-ubyte found"
cp -r "$work/mn" "$work/nolabels"; rm "$work/nolabels/t10k-labels-idx1-ubyte.gz"
data_case "missing test labels" "$work/nolabels" "neither t10k-labels-idx1-ubyte.gz nor t10k-labels-idx1-ubyte found"
cp -r "$work/mn" "$work/trunc"; head -c 30 "$work/mn/t10k-images-idx3-ubyte.gz" > "$work/trunc/t10k-images-idx3-ubyte.gz"
data_case "truncated gzip" "$work/trunc" "t10k-images-idx3-ubyte.gz: gzip stream truncated"
cp -r "$work/mn" "$work/crc"
size=$(stat -c %s "$work/mn/t10k-images-idx3-ubyte.gz")
{ head -c $((size - 8)) "$work/mn/t10k-images-idx3-ubyte.gz"; printf 'XXXX'; tail -c 4 "$work/mn/t10k-images-idx3-ubyte.gz"; } \
    > "$work/crc/t10k-images-idx3-ubyte.gz"
data_case "gzip CRC mismatch" "$work/crc" "t10k-images-idx3-ubyte.gz: corrupt gzip data"
cp -r "$work/mn" "$work/short"; head -c 100 "$work/mn/train-images-idx3-ubyte" > "$work/short/train-images-idx3-ubyte"
data_case "truncated IDX" "$work/short" "truncated: expected 160 bytes of data, file has 84"
cp -r "$work/mn" "$work/text"; echo "not an idx file" > "$work/text/train-labels-idx1-ubyte"
data_case "not an IDX file" "$work/text" "train-labels-idx1-ubyte: bad magic"
cp -r "$work/mn" "$work/count"; labels 39 | write_idx "$work/count/train-labels-idx1-ubyte" 39
data_case "image and label counts differ" "$work/count" "has 40 images but"
cp -r "$work/mn" "$work/float"
{ printf '\x00\x00\x0d\x01'; be32 40; head -c 160 /dev/zero; } > "$work/float/train-labels-idx1-ubyte"
# float IDX is the only way a data file could carry NaN/Inf: it is refused outright
data_case "float IDX (could hold NaN)" "$work/float" "unsupported IDX data type 0x0d (32-bit float)"
cp -r "$work/mn" "$work/isdir"; rm "$work/isdir/train-images-idx3-ubyte"; mkdir "$work/isdir/train-images-idx3-ubyte"
data_case "a directory in place of a file" "$work/isdir" "train-images-idx3-ubyte: is a directory"
cp -r "$work/mn" "$work/tenclass"
{ printf '\x00\x00\x08\x01'; be32 40; printf '\x09'; head -c 39 /dev/zero; } > "$work/tenclass/train-labels-idx1-ubyte"
data_case "labels beyond the output layer" "$work/tenclass" "the last layer has 2 outputs but data 'mnist' has 10 classes"

cp -r "$work/mn" "$work/testlabel"; rm "$work/testlabel/t10k-labels-idx1-ubyte.gz"
{ printf '\x00\x00\x08\x01'; be32 20; printf '\x02'; head -c 19 /dev/zero; } > "$work/testlabel/t10k-labels-idx1-ubyte"
data_case "a test label the training set lacks" "$work/testlabel" "label 2 of row 0 outside the 2 outputs"

cp -r "$work/mn" "$work/noread"; chmod 000 "$work/noread/train-images-idx3-ubyte"
mnist_cfg "$work/noread" > "$work/noread.cfg"
if [ "$(id -u)" -ne 0 ]; then
    run "$work/out" "$bin" train "$work/noread.cfg"
elif command -v setpriv > /dev/null && [ -r "$bin" ]; then
    # root reads anything: run as nobody so that the permission bits count
    chmod 755 "$work/noread"; chmod 644 "$work/noread.cfg"
    run "$work/out" setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp "$bin" train "$work/noread.cfg"
else
    status=skip
fi
if [ "$status" = skip ]; then
    skip "data: unreadable file" "running as root without setpriv: root ignores permission bits"
else
    show "$work/out" 1
    check "data: unreadable file: exit status 1" is $status 1
    check "data: unreadable file: message" contains "$work/out" "train-images-idx3-ubyte: cannot open: Permission denied"
fi

# A FIFO nobody writes to: open() blocks. The job must not hang forever.
cp -r "$work/mn" "$work/fifo"; rm "$work/fifo/train-images-idx3-ubyte"; mkfifo "$work/fifo/train-images-idx3-ubyte"
mnist_cfg "$work/fifo" > "$work/fifo.cfg"
timeout 20 "$bin" train "$work/fifo.cfg" > "$work/out" 2>&1; status=$?
check "data: a FIFO in place of a file is an error, not a hang" [ $status -eq 1 ]
check "data: a FIFO in place of a file: says what it is" \
    contains "$work/out" "train-images-idx3-ubyte: is a FIFO (named pipe), expected an IDX file"

# NaN/Inf cannot reach training from a data file: IDX data is unsigned bytes
# (float IDX refused above) and the synthetic sets are finite by
# construction. The non-finite data scan itself (ars_dataset_find_nonfinite,
# naming the sample) is tested through the library in tests/mpi_faults.c.

# ---- memory: a model that cannot fit --------------------------------------------

cat > "$work/huge.cfg" <<CFG
[run]
data = spirals
train_samples = 64
test_samples = 16
[dense]
units = 2000000
[dense]
units = 2000000
[dense]
units = 3
CFG
limit=()
((sanitized)) || limit=(bash -c 'ulimit -v 8000000 && exec "$@"' limited)   # 8 GB: a runaway allocation fails, not the machine
start=$SECONDS
run "$work/out" "${limit[@]}" "$bin" train "$work/huge.cfg"
show "$work/out" 1
check "huge model: refused with exit status 1" is $status 1
check "huge model: refused at once" [ $((SECONDS - start)) -lt 30 ]
check "huge model: before training" lacks "$work/out" "epoch "
check "huge model: the message gives the estimated size" contains "$work/out" "the model needs about"
check "huge model: and the limit it is measured against" contains "$work/out" "but this rank has"

# ---- absurd sizes in the run file ---------------------------------------------------

absurd() {   # absurd NAME EXPECTED-FRAGMENT ARGS...: arsenal train small.cfg ARGS fails fast, naming it
    local name="$1" expected="$2"; shift 2
    local start=$SECONDS
    run "$work/out" "$bin" train "$work/small.cfg" "$@"
    check "absurd: $name: exit status 1 at once" clean_error_within $status $start 20
    check "absurd: $name: message" contains "$work/out" "$expected"
}
absurd "negative units" "--set dense.units = '-1': expected an integer in 1..16777216" --set dense.units=-1
absurd "overflowing units" "expected an integer in 1..16777216" --set dense#1.units=99999999999999999999
absurd "batch 2^31" "--set run.batch = '2147483648': expected an integer in 1..16777216" --set run.batch=2147483648
absurd "batch 0" "expected an integer in 1..16777216" --set run.batch=0
absurd "negative epochs" "--set run.epochs = '-1'" --set run.epochs=-1
absurd "a billion samples" "--set run.train_samples = '1000000000': expected an integer in 1..100000000" \
    --set run.train_samples=1000000000
absurd "max_steps as a float" "--set run.max_steps = '1e12': expected an integer" --set run.max_steps=1e12
absurd "lr overflowing to inf" "--set run.lr = '1e400': expected a number" --set run.lr=1e400
absurd "lr nan" "--set run.lr = 'nan': expected a number" --set run.lr=nan
absurd "histogram bins" "expected an integer in 2..4096" --set run.histogram_bins=100000
absurd "bucket size" "--set run.bucket_mb = '1e308'" --set run.bucket_mb=1e308
absurd "negative seed" "--set run.seed = '-1'" --set run.seed=-1
absurd "keep no checkpoint" "--set run.ckpt_keep = '0': expected an integer in 1..1000000" --set run.ckpt_keep=0
printf '[run]\ndata = spirals\n[repeat]\ncount = 1000000\n[repeat]\ncount = 1000000\n[relu]\n[end]\n[end]\n[dense]\nunits = 3\n' \
    > "$work/repeat.cfg"
run "$work/out" "$bin" train "$work/repeat.cfg"
check "absurd: [repeat] 10^12 sections: exit status 1" is $status 1
check "absurd: [repeat] 10^12 sections: message" contains "$work/out" "blocks expand to more than 1000000 sections"
printf '[run]\ndata = spirals\n[repeat]\ncount = 50000\n[relu]\n[end]\n[dense]\nunits = 3\nbogus = 1\n' > "$work/many.cfg"
start=$SECONDS
timeout 10 "$bin" train "$work/many.cfg" > "$work/out" 2>&1; status=$?
check "absurd: 50000 layers are parsed at once (then the typo reported)" \
    contains "$work/out" "many.cfg:9: [dense] unknown key 'bogus'"
{ printf '[run]\ndata = spirals\nlr = '; head -c 300 /dev/zero | tr '\0' 1; printf '\n[dense]\nunits = 3\n'; } > "$work/long.cfg"
run "$work/out" "$bin" train "$work/long.cfg"
check "absurd: a 305-character line: message" contains "$work/out" "long.cfg:3: line is 305 characters long"

# A synthetic set is measured before it is generated, against the memory
# the rank may use (RAM, cgroup, ulimit -v): refused at once, naming the keys.
if ((sanitized)); then
    skip "absurd: 10^8 samples" "ASan build (no ulimit -v)"
else
    start=$SECONDS
    run "$work/out" bash -c 'ulimit -v 2000000 && exec "$@"' limited "$bin" train "$work/small.cfg" \
        --set run.data=blobs --set run.train_samples=100000000 --set dense#2.units=4
    show "$work/out" 1
    check "absurd: 10^8 blobs samples in 2 GB: a clean error at once" clean_error_within $status $start 20
    check "absurd: 10^8 blobs samples in 2 GB: says memory" contains "$work/out" \
        "[run] data = blobs with train_samples = 100000000 and test_samples = 32 needs about 6.7 GiB per rank"
fi
# Larger than any machine's RAM: refused without a limit (also under ASan).
start=$SECONDS
run "$work/out" "$bin" train "$work/small.cfg" --set run.data=adding --set run.seq_len=16777216 \
    --set run.train_samples=1000000
show "$work/out" 1
check "absurd: 10^6 adding sequences of 2^24 steps: refused at once" clean_error_within $status $start 20
check "absurd: 10^6 adding sequences of 2^24 steps: says memory" contains "$work/out" \
    "[run] data = adding with train_samples = 1000000 and test_samples = 32 needs about"

# Both ranks parse the same file: both fail alike, rank 0 speaks once.
run "$work/out" "${mpi[@]}" -n 2 "$bin" train "$work/small.cfg" --set run.batch=-3
check "absurd, 2 ranks: the job fails" failed_not_hung $status
check "absurd, 2 ranks: the message appears once" once "$work/out" "run.batch = '-3'"
check "absurd, 2 ranks: no MPI_Abort" lacks "$work/out" "MPI_ABORT"
# Run files that differ between ranks: the rank whose copy is bad says so,
# the others do not wait for it in a collective.
sed 's/^batch = 16/batch = many/' "$work/small.cfg" > "$work/bad-batch.cfg"
run "$work/out" "${mpi[@]}" -n 1 "$bin" train "$work/small.cfg" : -n 1 "$bin" train "$work/bad-batch.cfg"
check "run file bad on rank 1 only: exit status 1" is $status 1
check "run file bad on rank 1 only: the message appears once" once "$work/out" "bad-batch.cfg:5: [run] batch = 'many'"
check "run file bad on rank 1 only: no MPI_Abort" lacks "$work/out" "MPI_ABORT"

# ---- errors every rank finds alike inside training ------------------------------------
# Decided on all-reduced figures or on the run file: rank 0 alone reports,
# every rank ends through MPI_Finalize with status 1, nothing is written after.

cat > "$work/explode.cfg" <<CFG
[run]
data = teacher
train_samples = 256
test_samples = 64
batch = 16
max_steps = 40
optimizer = sgd
lr = 1e4
nonfinite = stop
ckpt_every = 1
ckpt_keep = 2
log_every = 1000
[dense]
units = 32
activation = relu
[dense]
units = 4
CFG
run "$work/out" "${mpi[@]}" -n 2 "$bin" train "$work/explode.cfg" --ckpt-dir "$work/explode"
show "$work/out" 100 | grep 'arsenal:' | head -2
check "nonfinite = stop, 2 ranks: exit status 1" is $status 1
check "nonfinite = stop, 2 ranks: the message appears once" once "$work/out" "stopping as [run] nonfinite = stop says"
check "nonfinite = stop, 2 ranks: no MPI_Abort" lacks "$work/out" "MPI_ABORT"
stopped="$(sed -n 's/^arsenal: step \([0-9]*\): non-finite.*/\1/p' "$work/out")"
last_good() {   # last_good DIR STEP: latest.h5 is the checkpoint of STEP, whole and readable
    [ -n "$2" ] && [ "$(readlink "$1/latest.h5")" = "$(printf 'ckpt-%08d.h5' "$2")" ] &&
        "$bin" inspect "$1/latest.h5" > "$work/info" 2>&1 && contains "$work/info" "step $2,"
}
check "nonfinite = stop, 2 ranks: the last checkpoint is that of the last good step" \
    last_good "$work/explode" "$stopped"
run "$work/out" "${mpi[@]}" -n 2 "$bin" train "$work/small.cfg" --set run.batch_scope=global --set run.batch=1
check "batch below the ranks: exit status 1" is $status 1
check "batch below the ranks: the message appears once" once "$work/out" "[run] batch = 1 (global) is smaller than the 2 ranks"
check "batch below the ranks: no MPI_Abort" lacks "$work/out" "MPI_ABORT"

# ---- corrupted checkpoints that crash or hang libhdf5 (fuzz_ckpt findings) ------------

# --resume and inspect read a checkpoint in a child process first, with
# memory and time limits (src/ckpt.c, ars_ckpt_validate): whatever libhdf5
# does on these files, the user gets one line and status 1.
regressions="$ARSENAL_SOURCE_DIR/tests/fuzz/regressions/ckpt"
crashed=0 hung=0
for input in "$regressions"/*.h5; do
    name="$(basename "$input")"
    for command in resume inspect; do
        start=$SECONDS
        if [ $command = resume ]; then run "$work/out" "$bin" train "$work/small.cfg" --resume "$input"
        else run "$work/out" "$bin" inspect "$input"; fi
        check "corrupted checkpoint $name, $command: exit status 1 within 30 s" \
            [ $status -eq 1 ] && [ $((SECONDS - start)) -lt 30 ]
        check "corrupted checkpoint $name, $command: one line naming the file" \
            [ "$(wc -l < "$work/out")" -eq 1 ] && contains "$work/out" "$name"
        contains "$work/out" "the HDF5 reader crashed" && crashed=$((crashed + 1))
        contains "$work/out" "the HDF5 reader did not finish" && hung=$((hung + 1))
    done
done
echo "     | corrupted checkpoints: libhdf5 crashed $crashed times and hung $hung times in the checking child"
run "$work/out" "$bin" train "$work/small.cfg" --resume "$regressions/hdf5-h5hg-read-overflow-attr-1.h5"
show "$work/out" 1
check "corrupted checkpoint (HDF5 global heap): an error, not SIGSEGV" \
    contains "$work/out" "hdf5-h5hg-read-overflow-attr-1.h5: corrupted checkpoint (the HDF5 reader crashed"
start=$SECONDS
run "$work/out" "$bin" train "$work/small.cfg" --resume "$regressions/hdf5-h5hg-hang-1.h5"
show "$work/out" 1
check "corrupted checkpoint (HDF5 global heap loop): an error, not a hang" \
    contains "$work/out" "hdf5-h5hg-hang-1.h5: corrupted checkpoint (the HDF5 reader did not finish in 10 s)"
check "corrupted checkpoint (HDF5 global heap loop): within 20 s" [ $((SECONDS - start)) -lt 20 ]
run "$work/out" "$bin" train "$work/small.cfg" --resume "$regressions/history-fill-bomb-2g.h5"
check "history claiming 2^28 records: refused by size" contains "$work/out" "claims 2147483648 bytes of data"
for input in hdf5-h5hg-hang-1.h5 hdf5-h5hg-read-overflow-attr-1.h5; do
    start=$SECONDS
    run "$work/out" "${mpi[@]}" -n 2 "$bin" train "$work/small.cfg" --resume "$regressions/$input"
    check "corrupted checkpoint $input, 2 ranks: exit status 1 within 60 s" \
        [ $status -eq 1 ] && [ $((SECONDS - start)) -lt 60 ]
    check "corrupted checkpoint $input, 2 ranks: the message appears once" once "$work/out" "corrupted checkpoint"
    check "corrupted checkpoint $input, 2 ranks: no MPI_Abort" lacks "$work/out" "MPI_ABORT"
done
# Format 1 (variable-length strings, written by earlier arsenal builds) is
# still read, after the same check.
run "$work/out" "$bin" inspect "$ARSENAL_SOURCE_DIR/tests/fuzz/corpus/ckpt/adam-history.h5"
check "a format-1 checkpoint is still inspected" is $status 0

# ---- command line -------------------------------------------------------------------

"$bin" train "$work/small.cfg" --ckpt-dir "$work/ck" --quiet > /dev/null 2>&1
cmdline() {   # cmdline NAME EXPECTED-STATUS EXPECTED-FRAGMENT ARGS...
    local name="$1" want="$2" expected="$3"; shift 3
    run "$work/out" "$bin" "$@"
    show "$work/out" 1
    check "command line: $name: exit status $want" is $status "$want"
    check "command line: $name: message" contains "$work/out" "$expected"
}
cmdline "--resume a missing file" 1 "$work/nothing.h5: No such file or directory" \
    train "$work/small.cfg" --resume "$work/nothing.h5"
cmdline "--resume a run file" 1 "small.cfg: not an HDF5 file" train "$work/small.cfg" --resume "$work/small.cfg"
cmdline "--resume another model" 1 "has shape [16, 2], the model needs [8, 2]" \
    train "$work/small.cfg" --set dense#1.units=8 --resume "$work/ck/latest.h5"
cmdline "--resume another seed" 1 "a resumed run must keep its seed" \
    train "$work/small.cfg" --set run.seed=99 --resume "$work/ck/latest.h5"
cmdline "--resume another optimizer" 1 "the checkpoint's optimizer is adam, the run file says sgd" \
    train "$work/small.cfg" --set run.optimizer=sgd --resume "$work/ck/latest.h5"
cmdline "--ckpt-dir is a file" 1 "--ckpt-dir $work/small.cfg" train "$work/small.cfg" --ckpt-dir "$work/small.cfg"
pend "command line: --ckpt-dir is a file: says it is not a directory" F6 contains "$work/out" "not a directory"
cmdline "--metrics in a missing directory" 1 "cannot write metrics file $work/no/m.jsonl" \
    train "$work/small.cfg" --metrics "$work/no/m.jsonl"
cmdline "--set without '='" 1 "no '='" train "$work/small.cfg" --set run.lr
cmdline "--set without a value" 2 "--set needs a value" train "$work/small.cfg" --set
cmdline "run file is a directory" 1 "cannot read run file '$work': Is a directory" train "$work"
printf '[run]\ndata = spirals\n\0[dense]\n' > "$work/nul.cfg"
cmdline "run file with a NUL byte" 1 "nul.cfg:3: NUL byte: not a text file" train "$work/nul.cfg"
cmdline "run file /dev/zero" 1 "/dev/zero: run file is larger than 16777216 bytes" train /dev/zero
run "$work/out" "$bin" train <(cat "$work/small.cfg") --quiet
check "command line: a run file from a pipe works" is $status 0

echo "$passed passed, $failed failed, $pending pending (known findings), $skipped skipped"
[ "$failed" -eq 0 ]
