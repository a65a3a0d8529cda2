#!/usr/bin/env bash
# Sets up (packages + build, see setup.sh) and runs the whole test suite:
# unit tests, MPI tests on 1, 2 and 3 ranks, CLI end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "$@"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j 2
