#!/usr/bin/env bash
# scaling.sh: the measurements behind docs/scaling.md, then bench/scaling.py
# to fit the alpha-beta model and write the report.
#   1. compute: bench_step --layers for W1, W2, W5 (1 rank, 1 BLAS thread:
#      per-layer forward/backward CPU time, the phases);
#   2. shared memory: bench_comm under mpirun -n 2 and -n 3 on this host
#      (oversubscribed: 2 cores), each with Open MPI's allreduce algorithm
#      as it picks it, forced to ring (4) and to recursive doubling (3);
#   3. across hosts: the same on 2 and 3 network-namespace hosts
#      (tests/netns) joined by a link shaped with tc tbf (--rate, default
#      500mbit, on both directions of every host's port; this kernel has no
#      netem, so the latency is the veth + TCP stack's own, which the fit
#      measures);
#   4. validation: `arsenal train` of W1 and W2 (as run files) at 2 and 3
#      ranks on this host and on 2 and 3 namespace hosts, each between two
#      measurements of the same number of concurrent single-rank bench_step
#      processes (the compute the ranks get from the shared cores) and next
#      to bench_comm --sync-points (what a blocking SyncBatchNorm all-reduce
#      costs between slices of compute, at the load of the moment); the
#      report sets the model's prediction against the measured step time.
# Stages 3 and 4's host part need root and `ip netns` (as tests/cli_multihost.sh):
# without them they are left out, saying so, and the report says so too.
#   bench/scaling.sh [--quick] [--work DIR] [--build DIR] [--prebuilt] [--out FILE]
#                    [--rate RATE] [--reps N] [--no-netns] [--report-only] [--validation-only]
# --quick: tiny sizes and step counts, writes into the work directory (for CI:
# checks that the pipeline runs, never a speed). --report-only: re-render
# the report from --work DIR's measurements. --validation-only: measure
# stage 4 again, keeping --work DIR's stages 1-3 (the fit).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

quick=0 work="" out="" rate=500mbit reps=3 netns=1 prebuilt=0 report_only=0 validation_only=0
build="${BUILD_DIR:-/tmp/arsenal-bench-build}"
while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --work) work="$2"; shift ;;
        --build) build="$2"; shift ;;
        --prebuilt) prebuilt=1 ;;
        --out) out="$2"; shift ;;
        --rate) rate="$2"; shift ;;
        --reps) reps="$2"; shift ;;
        --no-netns) netns=0 ;;
        --report-only) report_only=1 ;;
        --validation-only) validation_only=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "scaling.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ "$rate" =~ ^[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)$ ]] ||
    { echo "scaling.sh: --rate '$rate': expected a tc rate such as 1gbit, 500mbit" >&2; exit 2; }
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || { echo "scaling.sh: --reps '$reps': expected a count >= 1" >&2; exit 2; }
if [[ -z "$work" ]]; then
    ((report_only || validation_only)) && { echo "scaling.sh: --report-only and --validation-only need --work DIR" >&2; exit 2; }
    work="$(mktemp -d /tmp/arsenal-scaling.XXXXXX)"
fi
mkdir -p "$work"
work="$(cd "$work" && pwd)"
[[ -n "$out" ]] || { ((quick)) && out="$work/scaling.md" || out="$repo/docs/scaling.md"; }
python=/usr/bin/python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1

# Open MPI's allreduce algorithms: as it picks them, ring, recursive doubling
# (tuned's MPI_Allreduce and libnbc's MPI_Iallreduce, which the overlap uses)
if ((quick)); then
    sizes=(--min-bytes 8 --max-bytes 8192 --factor 32 --budget 0.002 --reps 1)
    workloads="W1" val_steps=6 log_every=2 step_steps=2 rounds=1 reps=1 train_limit=1000 sync_points=10
    algorithms=(default) net_algorithms=(default) comm_ranks="2" local_ranks="2" net_ranks="2"
else
    sizes=(--min-bytes 8 --max-bytes 33554432 --factor 4 --budget 0.05 --reps "$reps")
    workloads="W1 W2 W5" val_steps=40 log_every=10 step_steps=0 rounds=3 train_limit=20000 sync_points=100
    algorithms=(default ring rd) net_algorithms=(default ring rd) comm_ranks="2 3" local_ranks="1 2 3" net_ranks="2 3"
fi

render() {
    "$python" "$repo/bench/scaling.py" --work "$work" --out "$out" \
        --command "bench/scaling.sh$( ((quick)) && echo ' --quick')$( [[ $rate != 500mbit ]] && echo " --rate $rate")"
    echo "scaling.sh: wrote $out (measurements in $work)" >&2
    if [[ "$out" == "$repo/docs/scaling.md" ]]; then   # the report's measurements go with it
        rm -rf "$repo/docs/results/scaling"
        mkdir -p "$repo/docs/results/scaling"
        cp "$work"/machine.txt "$work"/step.jsonl "$work"/comm.jsonl "$work"/validation*.jsonl \
            "$repo/docs/results/scaling/"
    fi
}
if ((report_only)); then render; exit 0; fi
if ((validation_only)); then
    for f in step.jsonl comm.jsonl machine.txt; do
        [[ -s "$work/$f" ]] || { echo "scaling.sh: --validation-only: no $work/$f (run the full measurement first)" >&2; exit 1; }
    done
fi
measure_fit=$((!validation_only))

if ((prebuilt)); then
    for program in bench_step bench_comm arsenal; do
        [[ -x "$build/$program" ]] || { echo "scaling.sh: --prebuilt: no $build/$program (build it first)" >&2; exit 1; }
    done
else
    echo "scaling.sh: building in $build" >&2
    cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DARSENAL_TESTS=OFF >"$work/cmake.log" 2>&1 ||
        { cat "$work/cmake.log" >&2; exit 1; }
    cmake --build "$build" -j 2 --target bench_step bench_comm arsenal >>"$work/cmake.log" 2>&1 ||
        { tail -30 "$work/cmake.log" >&2; exit 1; }
fi

# --- the machine -----------------------------------------------------------
((measure_fit)) && {
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "cores=$(nproc)"
    echo "openblas=$(OPENBLAS_VERBOSE=2 "$build/bench_step" --workload W1 --steps 1 --warmup 0 --reps 1 2>&1 |
        sed -n 's/.*"corename":"\([^"]*\)".*/\1/p' | head -1)"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rate=$rate"
    echo "quick=$quick"
} >"$work/machine.txt"
if ((!measure_fit)); then
    sed -i '/^validation_/d; /^load_end=/d' "$work/machine.txt"
    echo "validation_date=$(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/machine.txt"
fi

# --- run files of the validation: W1 and W2 as bench_step builds them ------
write_run_files() {
    cat >"$work/val_W1.cfg" <<CFG
; W1 (bench/README.md): MLP 784-1024-1024-10, ReLU, Adam, clip 1.0, 128 per rank
[run]
data = fashion-mnist
train_limit = $train_limit
test_limit = 200
batch = 128
batch_scope = rank
max_steps = $val_steps
log_every = $log_every
check_every = 0
ckpt_every = 0
seed = 1
optimizer = adam
lr = 1e-3
schedule = constant
clip_norm = 1.0
[dense]
units = 1024
init = he_normal
activation = relu
[dense]
units = 1024
init = he_normal
activation = relu
[dense]
units = 10
CFG
    sed -e 's/^; W1.*/; W2 (bench\/README.md): 784-256, 48 x (x + Dense(ReLU(BatchNorm(x)))), 256-10, Adam, clip 1.0, 64 per rank/' \
        -e 's/^batch = 128/batch = 64/' -e '/^\[dense\]/,$d' "$work/val_W1.cfg" >"$work/val_W2.cfg"
    cat >>"$work/val_W2.cfg" <<'CFG'
[dense]
units = 256
init = he_normal
[repeat]
count = 48
[residual]
[batchnorm]
[relu]
[dense]
units = 256
init = he_normal
[end]
[end]
[batchnorm]
[relu]
[dense]
units = 10
CFG
}
write_run_files
val_workloads="W1 W2"
((quick)) && val_workloads="W1"
have_fmnist=1
[[ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] || have_fmnist=0

# --- 1. compute --------------------------------------------------------------
((measure_fit)) && : >"$work/step.jsonl"
((measure_fit)) && for w in $workloads; do
    echo "scaling.sh: compute, $w (bench_step --layers)" >&2
    steps=()
    ((step_steps > 0)) && steps=(--steps "$step_steps")
    "$build/bench_step" --workload "$w" --threads 1 --warmup 1 --reps "$reps" --rounds "$rounds" --layers \
        "${steps[@]}" >>"$work/step.jsonl"
done
((measure_fit)) && for w in $val_workloads; do
    steps=()
    ((step_steps > 0)) && steps=(--steps "$step_steps")
    "$build/bench_step" --config "$work/val_$w.cfg" --threads 1 --warmup 1 --reps "$reps" --rounds "$rounds" \
        --layers "${steps[@]}" | sed "s/\"workload\":\"[^\"]*\"/\"workload\":\"val_$w\"/" >>"$work/step.jsonl"
done

# --- 2. shared memory ----------------------------------------------------------
mpi_local=(mpirun --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -x OPENBLAS_NUM_THREADS)
algorithm_env() {   # the environment that forces algorithm $1 (ring | rd) in tuned and libnbc
    case "$1" in
        ring) echo "OMPI_MCA_coll_tuned_use_dynamic_rules=1 OMPI_MCA_coll_tuned_allreduce_algorithm=4 OMPI_MCA_coll_libnbc_iallreduce_algorithm=1" ;;
        rd) echo "OMPI_MCA_coll_tuned_use_dynamic_rules=1 OMPI_MCA_coll_tuned_allreduce_algorithm=3 OMPI_MCA_coll_libnbc_iallreduce_algorithm=4" ;;
    esac
}
((measure_fit)) && : >"$work/comm.jsonl"
((measure_fit)) && for p in $comm_ranks; do
    for alg in "${algorithms[@]}"; do
        echo "scaling.sh: shared memory, $p ranks, allreduce algorithm $alg" >&2
        env $(algorithm_env "$alg") "${mpi_local[@]}" -n "$p" "$build/bench_comm" --label "shm" "${sizes[@]}" \
            $( [[ $alg == default ]] && echo "--sync-points $sync_points") \
            >>"$work/comm.jsonl"
    done
done

# --- 4a. validation on one host --------------------------------------------------
# --validation-only keeps the earlier round as validation-N.jsonl (the report
# shows every round: the other work on this machine moves its load a lot)
if ((!measure_fit)) && [[ -s "$work/validation.jsonl" ]]; then
    round=1
    while [[ -e "$work/validation-$round.jsonl" ]]; do round=$((round + 1)); done
    mv "$work/validation.jsonl" "$work/validation-$round.jsonl"
fi
echo "{\"bench\":\"validation_meta\",\"date\":\"$(date -u '+%Y-%m-%d %H:%M UTC')\",\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" \
    >"$work/validation.jsonl"
# concurrent P: P single-rank bench_step processes at once, the compute P
# co-located ranks get from the shared cores (before and after each run:
# the other work on the machine drifts)
concurrent() {
    local p="$1" w="$2" i pids=()
    for ((i = 0; i < p; i++)); do
        "$build/bench_step" --config "$work/val_$w.cfg" --threads 1 --warmup 1 --reps 1 \
            $( ((step_steps > 0)) && echo "--steps $step_steps") >"$work/conc.$i" &
        pids+=($!)
    done
    wait "${pids[@]}"
    for ((i = 0; i < p; i++)); do
        sed -n "s/^{\"bench\":\"step\",/{\"bench\":\"concurrent\",\"where\":\"$3\",\"ranks\":$p,\"process\":$i,\"val\":\"$w\",/p" \
            "$work/conc.$i"
    done >>"$work/validation.jsonl"
}
sync_measure() {   # sync_measure WHERE RANKS LAUNCHER...: bench_comm's sync-point cost now, beside the runs
    local where="$1" p="$2"; shift 2
    "$@" "$build/bench_comm" --label "val-$where" --min-bytes 8 --max-bytes 8 --reps "$reps" --budget 0.002 \
        --sync-points "$sync_points" | grep '"sync_point"' >>"$work/validation.jsonl"
}
train_run() {   # train_run WHERE RANKS WORKLOAD COMMAND...: one arsenal train, its metrics
    local where="$1" p="$2" w="$3"; shift 3
    local metrics="$work/metrics-$where-$p-$w.jsonl"
    rm -f "$metrics"
    "$@" train "$work/val_$w.cfg" --metrics "$metrics" --quiet >"$work/train-$where-$p-$w.log" 2>&1 ||
        { echo "scaling.sh: arsenal train ($where, $p ranks, $w) failed:" >&2; tail -5 "$work/train-$where-$p-$w.log" >&2; exit 1; }
    "$python" - "$metrics" "$where" "$p" "$w" "$log_every" >>"$work/validation.jsonl" <<'PY'
import json, sys
path, where, ranks, w, log_every = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
for line in open(path):
    r = json.loads(line)
    if r.get("kind") == "step" and "samples_per_s" in r:
        print(json.dumps({"bench": "train", "where": where, "ranks": ranks, "val": w, "log_every": log_every,
                          "step": r["step"], "samples_per_s": r["samples_per_s"]}))
PY
}
if ((have_fmnist)); then
    for w in $val_workloads; do
        for p in $local_ranks; do
            echo "scaling.sh: validation, $w, $p rank(s) on this host" >&2
            concurrent "$p" "$w" local
            # (the quick run's W1 has no BatchNorm: no sync points to price)
            ((p > 1 && !quick)) && sync_measure local "$p" "${mpi_local[@]}" -n "$p"
            if ((p == 1)); then train_run local 1 "$w" "$build/arsenal"
            else train_run local "$p" "$w" "${mpi_local[@]}" -n "$p" "$build/arsenal"; fi
            ((quick)) || concurrent "$p" "$w" local
        done
    done
else
    echo "scaling.sh: no Fashion-MNIST files (/usr/share/datasets/fashion-mnist): validation left out" >&2
    echo "validation_skipped=no Fashion-MNIST files" >>"$work/machine.txt"
fi

# --- 3 and 4b. across namespace hosts ----------------------------------------------
netns_skip() {
    echo "scaling.sh: SKIP across hosts: $*" >&2
    echo "netns_skipped=$*" >>"$work/machine.txt"
}
netns_ok=1
if ((!netns)); then netns_skip "--no-netns"; netns_ok=0
elif [[ $(id -u) -ne 0 ]]; then netns_skip "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for network namespaces"; netns_ok=0
elif ! command -v ip >/dev/null || ! command -v unshare >/dev/null || ! command -v tc >/dev/null; then
    netns_skip "'ip', 'unshare' or 'tc' not found (Debian: iproute2, util-linux)"; netns_ok=0
fi
prefix="arssc$$"
if ((netns_ok)) && ! ip netns add "$prefix-probe" 2>"$work/netns.err"; then
    netns_skip "cannot create a network namespace: $(cat "$work/netns.err")"; netns_ok=0
fi
if ((netns_ok)); then
    ip netns del "$prefix-probe"
    netns_dir="$repo/tests/netns"
    trap '"$netns_dir/down.sh" "$prefix"' EXIT
    "$netns_dir/up.sh" "$prefix" 3
    # tbf on both directions of each host's port: the host's eth0 (what it
    # sends) and the switch's p<i> (what it receives), as a NIC's line rate;
    # 512 KiB of burst, 20 ms of queue. On this loaded 2-core machine the
    # payload rate MPI gets is about half the tbf rate (TCP over veth is
    # CPU-bound); the fit measures what it gets, and the report says so.
    for i in 0 1 2; do
        ip netns exec "$prefix-h$i" tc qdisc add dev eth0 root tbf rate "$rate" burst 512kb latency 20ms
        ip netns exec "$prefix-sw" tc qdisc add dev "p$i" root tbf rate "$rate" burst 512kb latency 20ms
        ip netns exec "$prefix-h$i" sysctl -qw net.ipv4.tcp_retries2=4
    done
    ((measure_fit)) && echo "link=tc tbf rate $rate burst 512kb latency 20ms, both directions of every host port" >>"$work/machine.txt"
    export ARS_NETNS_PREFIX="$prefix" ARS_NETNS_LOG="$work/agent.log"
    export TMPDIR="$work/tmp"
    mkdir -p "$TMPDIR"
    subnet="${ARS_NETNS_SUBNET:-10.77.0}.0/24"
    mpi_net=(--mca plm_rsh_agent "$netns_dir/agent.sh" --mca btl tcp,self --mca btl_tcp_if_include "$subnet"
             --mca oob_tcp_if_include "$subnet" --mca mpi_yield_when_idle 1 --bind-to none -x OPENBLAS_NUM_THREADS)
    on_hosts() {   # on_hosts N [VAR=VALUE...] -- PROGRAM ARGS...: mpirun on h0 over h0..h<N-1>, one rank each
        local n="$1" i; shift
        local assigns=() forward=()
        while [[ $1 != -- ]]; do assigns+=("$1"); forward+=(-x "${1%%=*}"); shift; done
        shift
        : >"$work/hosts$n"
        for ((i = 0; i < n; i++)); do echo "h$i slots=1" >>"$work/hosts$n"; done
        "$netns_dir/exec.sh" "$prefix-h0" env "${assigns[@]}" \
            mpirun --hostfile "$work/hosts$n" -np "$n" "${mpi_net[@]}" "${forward[@]}" "$@"
    }
    ((measure_fit)) && for p in $net_ranks; do
        for alg in "${net_algorithms[@]}"; do
            echo "scaling.sh: across $p hosts ($rate), allreduce algorithm $alg" >&2
            on_hosts "$p" $(algorithm_env "$alg") -- "$build/bench_comm" --label "net" "${sizes[@]}" \
                $( [[ $alg == default ]] && echo "--sync-points $sync_points") >>"$work/comm.jsonl"
        done
    done
    if ((have_fmnist)); then
        for w in $val_workloads; do
            for p in $net_ranks; do
                echo "scaling.sh: validation, $w, $p namespace hosts" >&2
                concurrent "$p" "$w" net
                ((quick)) || sync_measure net "$p" on_hosts "$p" --
                train_run net "$p" "$w" on_hosts "$p" -- "$build/arsenal"
                ((quick)) || concurrent "$p" "$w" net
            done
        done
    fi
fi
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$work/machine.txt"
render
