#!/usr/bin/env bash
# Builds arsenal against MPICH instead of Open MPI (the default) and runs
# its tests there: the unit tests, and every tests/mpi_* binary under
# mpiexec.mpich with 1, 2 and 3 ranks.
#   scripts/build-mpich.sh                 build in /tmp/build-mpich
#   BUILD_DIR=dir scripts/build-mpich.sh   elsewhere
# Both MPIs can be installed side by side (Debian's alternatives keep
# Open MPI as `mpicc`/`mpirun`); MPICH is selected at configure time with
#   cmake -DMPI_C_COMPILER=/usr/bin/mpicc.mpich -DMPIEXEC_EXECUTABLE=/usr/bin/mpiexec.mpich
# The CLI tests (tests/cli_*.sh) call Open MPI's mpiexec and are not run here.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
build_dir="${BUILD_DIR:-/tmp/build-mpich}"

install_missing build-mpich mpich libmpich-dev
mpicc=/usr/bin/mpicc.mpich
mpiexec=/usr/bin/mpiexec.mpich

# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
      -DMPI_C_COMPILER="$mpicc" -DMPIEXEC_EXECUTABLE="$mpiexec" ${CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$(nproc)"

# The binary must really use MPICH (a stale cache could keep Open MPI).
if [[ "$(ldd "$build_dir/arsenal")" != *libmpich* ]]; then
    echo "build-mpich: $build_dir/arsenal is not linked against libmpich:" >&2
    ldd "$build_dir/arsenal" | grep -i mpi >&2 || true
    exit 1
fi
"$mpiexec" --version | sed -n '1,2p'

export OPENBLAS_NUM_THREADS=1
status=0
echo "build-mpich: unit tests"
ctest --test-dir "$build_dir" --output-on-failure -j 2 -E '^(mpi_|cli_)' || status=1

# The MPI tests, run directly: MPICH's mpiexec knows no --oversubscribe
# (hydra runs any number of ranks on one host without it).
passed=0 failed=0
for test in "$build_dir"/tests/mpi_*; do
    [[ -x "$test" && -f "$test" ]] || continue
    for ranks in 1 2 3; do
        name="$(basename "$test")_np$ranks"
        log="$build_dir/$name.log"
        start=$SECONDS
        if timeout 600 "$mpiexec" -n "$ranks" "$test" > "$log" 2>&1; then
            passed=$((passed + 1)); echo "ok   $name ($((SECONDS - start)) s)"
        else
            failed=$((failed + 1)); status=1
            echo "FAIL $name ($((SECONDS - start)) s), log $log:"; tail -20 "$log" | sed 's/^/    /'
        fi
    done
done
echo "build-mpich: mpi tests: $passed passed, $failed failed"
exit $status
