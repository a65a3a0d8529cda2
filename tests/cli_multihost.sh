#!/usr/bin/env bash
# cli_multihost: arsenal across real (TCP) hosts, made on this machine from
# Linux network namespaces (tests/netns/: a bridge in a switch namespace,
# one veth per host, 10.77.0.0/24 existing only inside them; each host has
# its own hostname through a UTS namespace). mpirun runs on host h0 and
# starts its daemons on h1, h2 through tests/netns/agent.sh instead of ssh;
# MPI traffic is TCP only. Checks:
#   1. a fixed-seed run on 2 and 3 hosts ends with the same /model tensors
#      as the same run on one host (bit for bit with as many local ranks,
#      within float rounding of a single process);
#   2. a rank SIGKILLed mid-training: the job ends within seconds naming the
#      rank and host, the last checkpoint is intact, --resume continues from
#      it to the same parameters as an uninterrupted run;
#   3. a frozen rank (SIGSTOP): the collective watchdog of the others ends
#      the job, naming the step, the collective and the rank; status 3;
#   4. a silent partition (iptables DROP in one host, mid-training): the
#      watchdog ends the job likewise; the last checkpoint is intact;
#   5. 5% packet loss on one host's link: the run completes, slower, with
#      the same parameters; added delay too when the kernel has sch_netem.
# 3 and 4 need the watchdog ([run] watchdog_seconds) and are skipped, saying
# so, by an arsenal without it.
# Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces), iproute2,
# util-linux (unshare), Open MPI, hdf5-tools; iptables for 4 and 5.
# Without them it prints a SKIP line saying why and exits 0.
# ARSENAL_SKIP_NETNS=1 skips it on purpose. Run by ctest (ARSENAL_BINARY
# and ARSENAL_SOURCE_DIR set by tests/CMakeLists.txt); by hand:
#   ARSENAL_BINARY=build/arsenal ARSENAL_SOURCE_DIR=$PWD bash tests/cli_multihost.sh
set -uo pipefail
bin="${ARSENAL_BINARY:?ARSENAL_BINARY is not set (run through ctest)}"
src="${ARSENAL_SOURCE_DIR:?ARSENAL_SOURCE_DIR is not set (run through ctest)}"
netns="$src/tests/netns"
skipped=0

skip_all() {
    echo "SKIP: cli_multihost: $*"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
}
source "$(dirname "$0")/testutil.sh"
skip() { skipped=$((skipped + 1)); echo "SKIP $*"; }
contains() { grep -Eq -- "$2" "$1"; }
seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
less_than() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# --- can this machine do it? ------------------------------------------------
[[ "${ARSENAL_SKIP_NETNS:-0}" == 1 ]] && skip_all "ARSENAL_SKIP_NETNS=1"
[[ $(id -u) -eq 0 ]] || skip_all "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; run as root to test multi-host"
for tool in ip unshare h5diff h5dump mpirun; do
    command -v "$tool" > /dev/null || skip_all "'$tool' not found (Debian: iproute2, util-linux, hdf5-tools, openmpi-bin)"
done
# (grep reads captured text: with pipefail, `cmd | grep -q` fails when grep
# stops reading early)
grep -q "Open MPI" <<< "$(mpirun --version 2>&1)" ||
    skip_all "mpirun is not Open MPI: the netns launch agent is Open MPI's plm_rsh_agent"
grep -q 'libmpi\.so' <<< "$(ldd "$bin" 2>/dev/null)" ||
    skip_all "$bin is not linked against Open MPI's libmpi"
prefix="arsmh$$"
# Namespaces of an earlier run that was killed before its cleanup (a ctest
# timeout) are removed when the test that made them is gone.
for stale in $(ip netns list 2> /dev/null | awk '{print $1}' | sed -n 's/^arsmh\([0-9][0-9]*\)-sw$/\1/p'); do
    kill -0 "$stale" 2> /dev/null || "$netns/down.sh" "arsmh$stale"
done
ip netns add "$prefix-probe" 2> /tmp/"$prefix".err || skip_all "cannot create a network namespace: $(cat /tmp/"$prefix".err)"
ip netns del "$prefix-probe"
rm -f /tmp/"$prefix".err
have_iptables=1
command -v iptables > /dev/null || have_iptables=0

work="$(mktemp -d)"
jobs_started=()
cleanup() {
    local pid
    for pid in "${jobs_started[@]}"; do kill -KILL "$pid" 2> /dev/null; done
    "$netns/down.sh" "$prefix"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ARS_NETNS_PREFIX="$prefix" ARS_NETNS_LOG="$work/agent.log"
export TMPDIR="$work/tmp"   # Open MPI's session directories, per "host" hostname
mkdir -p "$TMPDIR"
subnet=10.77.0.0/24
"$netns/up.sh" "$prefix" 3 || skip_all "tests/netns/up.sh could not build the namespaces"
# mpirun waits for its daemon on a partitioned host until TCP gives up on
# the connection: tcp_retries2 (default 15, about 15 minutes) sets how long.
# These hosts use 4 (about 6 s), as a cluster that wants partitions to end
# jobs promptly would; the setting is per network namespace.
for h in 0 1 2; do ip netns exec "$prefix-h$h" sysctl -qw net.ipv4.tcp_retries2=4; done

# One rank per host; the "hosts" share this machine's cores, so no binding.
mpi_net=(--mca plm_rsh_agent "$netns/agent.sh"
         --mca btl tcp,self --mca btl_tcp_if_include "$subnet" --mca oob_tcp_if_include "$subnet"
         --mca mpi_yield_when_idle 1 --bind-to none -x OPENBLAS_NUM_THREADS)
mpi_local=(mpiexec --oversubscribe --bind-to none --mca mpi_yield_when_idle 1)

cat > "$work/run.cfg" <<'CFG'
[run]
data = spirals
train_samples = 4800
test_samples = 300
batch = 96
batch_scope = global
max_steps = 60
seed = 11
; the products as asked: separate jobs compared bit for bit must not each
; measure their own layouts (src/gemm.h), which may round differently
gemm_tuning = off
lr = 0.01
ckpt_every = 25
log_every = 25
check_every = 25
; one gradient-sync mode on one host and across hosts: gradient_sync = auto
; would sum in shared memory on one host and with bucketed MPI_Iallreduce
; across hosts, whose sums over 3 ranks may round differently
gradient_sync = overlap
[dense]
units = 32
activation = tanh
[dense]
units = 32
activation = tanh
[dense]
units = 3
CFG

hostfile() {   # hostfile N: h0 .. h<N-1>, one slot each
    local f="$work/hosts$1" i
    : > "$f"
    for ((i = 0; i < $1; i++)); do echo "h$i slots=1" >> "$f"; done
    echo "$f"
}
on_hosts() {   # on_hosts N LIMIT-SECONDS ARSENAL-ARGS...: mpirun on h0 over hosts h0..h<N-1>
    local n="$1" limit="$2"; shift 2
    timeout -k 5 "$limit" "$netns/exec.sh" "$prefix-h0" \
        mpirun --hostfile "$(hostfile "$n")" -np "$n" "${mpi_net[@]}" "$bin" "$@"
}
latest_step() {   # the step of DIR/latest.h5, 0 if none
    local name
    name="$(readlink "$1/latest.h5" 2> /dev/null)" || { echo 0; return; }
    name="${name#ckpt-}"
    echo $((10#${name%.h5}))
}
wait_for_step() {   # wait_for_step DIR STEP PID: until a checkpoint >= STEP (60 s at most)
    local i
    for ((i = 0; i < 600; i++)); do
        (( $(latest_step "$1") >= $2 )) && return 0
        kill -0 "$3" 2> /dev/null || return 1
        sleep 0.1
    done
    return 1
}
rank_pid_on() {   # the arsenal process in host h<N>'s namespace
    local pid
    for pid in $(ip netns pids "$prefix-h$1"); do
        [[ "$(cat "/proc/$pid/comm" 2> /dev/null)" == arsenal ]] && { echo "$pid"; return; }
    done
}
same_model() { h5diff -q "$1" "$2" /model /model > /dev/null 2>&1; }
close_model() { h5diff -q -d "$3" "$1" "$2" /model /model > /dev/null 2>&1; }
readable() { h5dump "$1" > /dev/null 2>&1; }   # reads every dataset: Fletcher-32 checked

# --- 1. the same result on 1 host and on 2 and 3 hosts ----------------------
"$bin" train "$work/run.cfg" --ckpt-dir "$work/r1" --quiet > "$work/r1.out" 2>&1
check "reference run, one process" [ $? -eq 0 ]
for n in 2 3; do
    "${mpi_local[@]}" -n "$n" "$bin" train "$work/run.cfg" --ckpt-dir "$work/r$n" --quiet > "$work/r$n.out" 2>&1
    check "reference run, $n ranks on one host" [ $? -eq 0 ]
done
for n in 2 3; do
    start=$(date +%s.%N)
    if [[ $n == 2 ]]; then   # through launch/cluster.sh, as a user would
        OMPI_MCA_plm_rsh_agent="$netns/agent.sh" ARSENAL_BIN="$bin" timeout -k 5 120 \
            "$netns/exec.sh" "$prefix-h0" "$src/launch/cluster.sh" -f "$(hostfile 2)" -i "$subnet" -b none \
            train "$work/run.cfg" --ckpt-dir "$work/h$n" > "$work/h$n.out" 2>&1
    else
        on_hosts "$n" 120 train "$work/run.cfg" --ckpt-dir "$work/h$n" > "$work/h$n.out" 2>&1
    fi
    status=$?
    echo "     $n hosts: 60 steps in $(seconds_since "$start") s"
    check "run on $n hosts exits 0$([[ $n == 2 ]] && echo ' (launch/cluster.sh)')" [ $status -eq 0 ]
    check "it reports $n ranks" contains "$work/h$n.out" "ranks: $n,"
    check "$n hosts: /model equals $n ranks on one host, bit for bit" \
        same_model "$work/h$n/latest.h5" "$work/r$n/latest.h5"
    check "$n hosts: /model equals one process within 1e-5" \
        close_model "$work/h$n/latest.h5" "$work/r1/latest.h5" 1e-5
done
on_hosts 2 60 train "$work/run.cfg" --set run.gradient_sync=shared_memory > "$work/shm.out" 2>&1
status=$?
check "gradient_sync = shared_memory across hosts is refused" [ $status -ne 0 -a $status -ne 124 ]
check "... saying why" contains "$work/shm.out" "gradient_sync = shared_memory needs every rank on one host"
on_hosts 2 60 train "$work/run.cfg" --set run.gradient_sync=auto --set run.max_steps=2 > "$work/auto.out" 2>&1
check "gradient_sync = auto across hosts overlaps bucketed all-reduces" \
    contains "$work/auto.out" "bucketed all-reduces overlapping backward \\(gradient_sync = auto: ranks on several hosts\\)"
check "daemons were started on h1 and h2 through the agent" \
    bash -c "grep -q '^agent: h1: ' '$work/agent.log' && grep -q '^agent: h2: ' '$work/agent.log'"

# --- 2. a rank is killed ----------------------------------------------------
long=(--set run.max_steps=100000 --set run.log_every=100 --set run.watchdog_seconds=6)
watchdog_ok=1
"$bin" train "$work/run.cfg" --set run.max_steps=1 --set run.watchdog_seconds=0 --quiet > "$work/probe" 2>&1 ||
    watchdog_ok=0
[[ $watchdog_ok == 1 ]] || long=(--set run.max_steps=100000 --set run.log_every=100)

on_hosts 3 120 train "$work/run.cfg" --ckpt-dir "$work/k" "${long[@]}" > "$work/k.out" 2>&1 &
job=$!
jobs_started+=("$job")
if wait_for_step "$work/k" 100 "$job"; then
    victim="$(rank_pid_on 1)"
    [[ -n "$victim" ]] || victim=0   # not found: the checks below fail
    start=$(date +%s.%N)
    kill -KILL "$victim"
    wait "$job"
    status=$?
    took="$(seconds_since "$start")"
    echo "     SIGKILL of rank 1 (pid $victim on h1): mpirun ended after $took s, status $status"
    check "a killed rank fails the job (not the test's timeout)" [ $status -ne 0 -a $status -ne 124 ]
    check "the job ends within 15 s of the kill" less_than "$took" 15
    check "the lost rank and host are named" contains "$work/k.out" "rank 1 with PID $victim on node h1 exited on signal 9"
    step="$(latest_step "$work/k")"
    check "the last checkpoint (step $step) is intact" readable "$work/k/latest.h5"
    final=$((step + 25))
    on_hosts 3 120 train "$work/run.cfg" --ckpt-dir "$work/k" --resume "$work/k/latest.h5" \
        --set run.max_steps=$final > "$work/k2.out" 2>&1
    check "--resume on 3 hosts continues to step $final" [ $? -eq 0 ]
    check "it says where it starts" contains "$work/k2.out" "resumed from .*latest.h5 at step $step"
    "${mpi_local[@]}" -n 3 "$bin" train "$work/run.cfg" --ckpt-dir "$work/u" --set run.max_steps=$final \
        --quiet > "$work/u.out" 2>&1
    check "killed + resumed equals an uninterrupted run, bit for bit" \
        same_model "$work/k/latest.h5" "$work/u/latest.h5"
else
    wait "$job"
    failed=$((failed + 1)); echo "FAIL the kill run did not reach step 100:"; tail -5 "$work/k.out"
fi

# --- 3. a frozen rank (SIGSTOP: a hung process; its host still answers) ----
if [[ $watchdog_ok == 0 ]]; then
    skip "frozen rank: this arsenal has no [run] watchdog_seconds (the collective watchdog is not wired in)"
else
    on_hosts 3 120 train "$work/run.cfg" --ckpt-dir "$work/f" "${long[@]}" > "$work/f.out" 2>&1 &
    job=$!
    jobs_started+=("$job")
    if wait_for_step "$work/f" 100 "$job"; then
        victim="$(rank_pid_on 1)"
        [[ -n "$victim" ]] || victim=0
        start=$(date +%s.%N)
        kill -STOP "$victim"
        wait "$job"
        status=$?
        took="$(seconds_since "$start")"
        echo "     SIGSTOP of rank 1 (pid $victim on h1): mpirun ended after $took s (watchdog 6 s), status $status"
        check "a frozen rank fails the job with the watchdog's status 3" [ $status -eq 3 ]
        check "the job ends within watchdog + 10 s" less_than "$took" 16
        check "the watchdog names rank, host, step and collective" contains "$work/f.out" \
            "arsenal: watchdog: rank [02] on host h[02]: step [0-9]+: .* did not complete within 6 s"
        check "the frozen rank is gone too (within 5 s)" \
            bash -c "for i in \$(seq 50); do kill -0 $victim 2> /dev/null || exit 0; sleep 0.1; done; exit 1"
    else
        wait "$job"
        failed=$((failed + 1)); echo "FAIL the frozen-rank run did not reach step 100:"; tail -5 "$work/f.out"
    fi
fi

# --- 4. a silent partition --------------------------------------------------
if [[ $have_iptables == 0 ]]; then
    skip "partition and packet loss: iptables not found (Debian: apt-get install iptables)"
elif [[ $watchdog_ok == 0 ]]; then
    skip "partition: this arsenal has no [run] watchdog_seconds (the collective watchdog is not wired in)"
else
    on_hosts 3 120 train "$work/run.cfg" --ckpt-dir "$work/p" "${long[@]}" > "$work/p.out" 2>&1 &
    job=$!
    jobs_started+=("$job")
    if wait_for_step "$work/p" 100 "$job"; then
        start=$(date +%s.%N)
        ip netns exec "$prefix-h1" iptables -A INPUT -j DROP
        ip netns exec "$prefix-h1" iptables -A OUTPUT -j DROP
        wait "$job"
        status=$?
        took="$(seconds_since "$start")"
        ip netns exec "$prefix-h1" iptables -F
        fired="$(grep -m1 'arsenal: watchdog:' "$work/p.out")"
        echo "     partition of h1: mpirun ended after $took s (watchdog 6 s), status $status"
        echo "     $fired"
        check "a partition fails the job with the watchdog's status 3" [ $status -eq 3 ]
        check "the job ends within watchdog + 20 s" less_than "$took" 26
        check "the watchdog names rank, host, step and collective" contains "$work/p.out" \
            "arsenal: watchdog: rank [02] on host h[02]: step [0-9]+: .* did not complete within 6 s"
        step="$(latest_step "$work/p")"
        check "the last checkpoint (step $step) is intact" readable "$work/p/latest.h5"
        "$bin" train "$work/run.cfg" --resume "$work/p/latest.h5" --set run.max_steps=$((step + 5)) \
            > "$work/p2.out" 2>&1
        check "a one-process run resumes from it" [ $? -eq 0 ]
    else
        wait "$job"
        failed=$((failed + 1)); echo "FAIL the partition run did not reach step 100:"; tail -5 "$work/p.out"
    fi
fi

# --- 5. packet loss (and delay) on one host's link ---------------------------
if [[ $have_iptables == 1 ]]; then
    for chain in INPUT OUTPUT; do
        ip netns exec "$prefix-h1" iptables -A "$chain" -m statistic --mode random --probability 0.05 -j DROP
    done
    start=$(date +%s.%N)
    on_hosts 3 180 train "$work/run.cfg" --ckpt-dir "$work/l" --quiet > "$work/l.out" 2>&1
    status=$?
    took="$(seconds_since "$start")"
    dropped="$(ip netns exec "$prefix-h1" iptables -L -v -n -x | awk '/statistic/ { n += $1 } END { print n + 0 }')"
    ip netns exec "$prefix-h1" iptables -F
    echo "     5% loss on h1: 60 steps in $took s, $dropped packets dropped"
    check "with 5% packet loss the run completes" [ $status -eq 0 ]
    check "packets were really dropped" [ "$dropped" -gt 0 ]
    check "with packet loss /model equals the clean 3-host run" same_model "$work/l/latest.h5" "$work/h3/latest.h5"
fi
if ip netns exec "$prefix-h1" tc qdisc add dev eth0 root netem delay 5ms 2> /dev/null; then
    start=$(date +%s.%N)
    on_hosts 3 180 train "$work/run.cfg" --ckpt-dir "$work/d" --quiet > "$work/d.out" 2>&1
    status=$?
    echo "     5 ms delay on h1: 60 steps in $(seconds_since "$start") s"
    ip netns exec "$prefix-h1" tc qdisc del dev eth0 root
    check "with 5 ms delay the run completes" [ $status -eq 0 ]
    check "with delay /model equals the clean 3-host run" same_model "$work/d/latest.h5" "$work/h3/latest.h5"
else
    skip "delay: this kernel has no netem qdisc (sch_netem); an NFQUEUE delay is not implemented"
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
