#!/bin/sh
# The "ssh" of the netns test cluster: Open MPI's rsh launcher runs
#   agent.sh HOST ORTED-COMMAND-LINE...
# (mpirun --mca plm_rsh_agent tests/netns/agent.sh). Instead of logging into
# HOST it runs the command in the namespace $ARS_NETNS_PREFIX-HOST, with its
# own hostname HOST, through a shell as sshd would (the command line is one
# string with shell quoting).
[ -n "$ARS_NETNS_PREFIX" ] || { echo "agent.sh: ARS_NETNS_PREFIX is not set" >&2; exit 255; }
while [ $# -gt 0 ]; do   # skip ssh-style options (-x, -o X) if any are given
    case "$1" in -o|-l|-p) shift 2 ;; -*) shift ;; *) break ;; esac
done
host="$1"; shift
[ -n "$ARS_NETNS_LOG" ] && echo "agent: $host: $*" >> "$ARS_NETNS_LOG"
exec ip netns exec "$ARS_NETNS_PREFIX-$host" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*"
