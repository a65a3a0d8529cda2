#!/usr/bin/env bash
# Runs a command "on" a test host:   tests/netns/exec.sh PREFIX-hN COMMAND...
# in the host's network namespace and a UTS namespace of its own whose
# hostname is hN, so Open MPI (and arsenal's messages) see distinct hosts.
set -euo pipefail
ns="${1:?usage: exec.sh NAMESPACE COMMAND...}"; shift
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "${ns##*-}" "$@"
