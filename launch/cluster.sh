#!/usr/bin/env bash
# Runs arsenal over several machines with Open MPI's mpirun and a hostfile.
#   launch/cluster.sh -f HOSTFILE [options] [arsenal arguments...]   (default: train examples/mlp-fmnist.cfg)
#   launch/cluster.sh -f launch/hostfile.example train examples/mlp-fmnist.cfg --ckpt-dir /shared/ckpt
# options:
#   -f HOSTFILE   one line per machine: `name slots=N` (N ranks there; see launch/hostfile.example)
#   -n RANKS      ranks in all (default: the hostfile's slots added up)
#   -t THREADS    OpenBLAS threads (cores) per rank (default 1); ranks are bound to that many cores
#   -i NET        the network MPI uses: an interface (eth0, ib0) or a subnet (10.1.0.0/16);
#                 default: Open MPI picks (set it when machines have several networks)
#   -b none       do not bind ranks to cores (default: bind, -t cores per rank)
#   --dry-run     print the mpirun command line, run nothing
# Every machine needs the same arsenal binary at the same path (ARSENAL_BIN,
# default build/arsenal here), the data files under the same path, and
# passwordless ssh from this one (or any other launcher: OMPI_MCA_plm_rsh_agent).
# Checkpoints are written by rank 0 only, on the machine that runs rank 0
# (the first line of the hostfile). The collective watchdog ([run]
# watchdog_seconds) ends the job when a machine stops answering; see
# docs/launch.md for what mpirun then does and how to make it quick.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
hostfile="" ranks="" threads=1 net="" bind=core dry=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -f) [[ $# -ge 2 ]] || usage; hostfile="$2"; shift 2 ;;
        -n) [[ $# -ge 2 ]] || usage; ranks="$2"; shift 2 ;;
        -t) [[ $# -ge 2 ]] || usage; threads="$2"; shift 2 ;;
        -i) [[ $# -ge 2 ]] || usage; net="$2"; shift 2 ;;
        -b) [[ $# -ge 2 && ( "$2" == none || "$2" == core ) ]] || usage; bind="$2"; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h|--help) usage ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[[ -n "$hostfile" ]] || { echo "launch/cluster.sh: -f HOSTFILE is required (see launch/hostfile.example)" >&2; exit 2; }
[[ -r "$hostfile" ]] || { echo "launch/cluster.sh: cannot read hostfile '$hostfile'" >&2; exit 2; }
slots=$(awk '{ sub(/#.*/, "") } NF { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, s, "="); n = s[2] } total += n }
             END { print total + 0 }' "$hostfile")
(( slots > 0 )) || { echo "launch/cluster.sh: no machines in '$hostfile'" >&2; exit 2; }
[[ -n "$ranks" ]] || ranks=$slots
for pair in "ranks:$ranks" "threads:$threads"; do
    [[ "${pair#*:}" =~ ^[1-9][0-9]*$ ]] || { echo "launch/cluster.sh: ${pair%%:*} must be a positive number, got '${pair#*:}'" >&2; exit 2; }
done
if (( ranks > slots )); then
    echo "launch/cluster.sh: $ranks ranks but the hostfile has $slots slots" >&2; exit 2
fi
[[ $# -eq 0 ]] && set -- train "$here/examples/mlp-fmnist.cfg"
binary="${ARSENAL_BIN:-$here/build/arsenal}"
[[ -x "$binary" ]] || binary="$(command -v arsenal || true)"
[[ -n "$binary" ]] || { echo "launch/cluster.sh: no arsenal binary: build it (scripts/setup.sh) or set ARSENAL_BIN" >&2; exit 2; }

mpi_args=(--hostfile "$hostfile" -np "$ranks"
          -x "OPENBLAS_NUM_THREADS=$threads" -x PATH
          --mca mpi_yield_when_idle 1)   # a waiting rank yields its core (matters when oversubscribed)
[[ -n "${LD_LIBRARY_PATH:-}" ]] && mpi_args+=(-x LD_LIBRARY_PATH)
if [[ "$bind" == none ]]; then mpi_args+=(--map-by slot --bind-to none)
elif (( threads > 1 )); then mpi_args+=(--map-by "slot:PE=$threads" --bind-to core)
else mpi_args+=(--map-by slot --bind-to core); fi
if [[ -n "$net" ]]; then   # both MPI traffic (btl) and mpirun's own (oob) on that network
    mpi_args+=(--mca btl tcp,self,vader --mca btl_tcp_if_include "$net" --mca oob_tcp_if_include "$net")
fi
[[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "launch: $ranks ranks x $threads BLAS threads over $(awk '{ sub(/#.*/, "") } NF' "$hostfile" | wc -l) machines ($hostfile)" >&2
if (( dry )); then
    for word in mpirun "${mpi_args[@]}" "$binary" "$@"; do
        if [[ "$word" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s ' "$word"; else printf '%q ' "$word"; fi
    done
    echo
    exit 0
fi
exec mpirun "${mpi_args[@]}" "$binary" "$@"
