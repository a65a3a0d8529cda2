#!/usr/bin/env bash
# Runs arsenal with N MPI ranks on this machine.
#   launch/local.sh [-n RANKS] [arsenal arguments...]      (default: train, 2 ranks)
#   launch/local.sh -n 4 train examples/mlp-fmnist.cfg --metrics run.jsonl
# BLAS threads per rank = cores / ranks (at least 1); ranks are bound to cores
# when there are enough of them, and waiting ranks yield the CPU when the
# machine is oversubscribed (otherwise small all-reduces get ~10x slower).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
ranks=2
if [[ "${1:-}" == "-n" ]]; then ranks="${2:-}"; shift; [[ $# -gt 0 ]] && shift; fi
if ! [[ "$ranks" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch/local.sh: -n needs a positive number of ranks, got '$ranks'" >&2; exit 2
fi
[[ $# -eq 0 ]] && set -- train "$here/examples/mlp-fmnist.cfg"
binary="${ARSENAL_BIN:-$here/build/arsenal}"
[[ -x "$binary" ]] || binary="$(command -v arsenal || true)"
if [[ -z "$binary" ]]; then
    echo "launch/local.sh: no arsenal binary: run scripts/setup.sh first (or set ARSENAL_BIN)" >&2; exit 2
fi
cores=$(nproc)
threads=$(( cores / ranks )); (( threads < 1 )) && threads=1
mpi_args=(-n "$ranks" -x "OPENBLAS_NUM_THREADS=$threads" --mca mpi_yield_when_idle 1)
if (( ranks > cores )); then
    mpi_args+=(--oversubscribe --bind-to none)
else
    mpi_args+=(--bind-to core --map-by "core:PE=$threads")
fi
[[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "launch: $ranks ranks x $threads BLAS threads on $cores cores" >&2
exec mpirun "${mpi_args[@]}" "$binary" "$@"
