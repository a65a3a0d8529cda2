# testutil.sh: sourced by the tests/cli_*.sh scripts: the counters and the
# check they all report with (each script keeps its own matchers).
passed=0 failed=0

check() {   # check NAME COMMAND...: one command, its status is the verdict
    local name="$1"; shift
    if "$@"; then passed=$((passed + 1)); echo "ok   $name"
    else failed=$((failed + 1)); echo "FAIL $name"; fi
}

# set_mpi_launcher: $mpi = the build's MPI launcher (ARSENAL_MPIEXEC, else
# mpiexec), with Open MPI's flags for a machine with fewer cores than ranks.
set_mpi_launcher() {
    mpi=("${ARSENAL_MPIEXEC:-mpiexec}")
    if grep -q "Open MPI" <<< "$("${mpi[0]}" --version 2>&1)"; then
        mpi+=(--oversubscribe --mca mpi_yield_when_idle 1)
    fi
}
