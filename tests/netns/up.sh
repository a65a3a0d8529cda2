#!/usr/bin/env bash
# Creates a private test "cluster" of network namespaces on this machine:
#   tests/netns/up.sh PREFIX N
# makes hosts PREFIX-h0 .. PREFIX-h<N-1>, each with an eth0 at 10.77.0.(10+i)/24,
# and a switch namespace PREFIX-sw holding the bridge br0 that joins their
# veth pairs. Nothing is added to the root namespace: the addresses exist only
# inside the namespaces made here, so the traffic never leaves them.
# Undo with tests/netns/down.sh PREFIX. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
set -euo pipefail
prefix="${1:?usage: up.sh PREFIX N}"
count="${2:?usage: up.sh PREFIX N}"
subnet="${ARS_NETNS_SUBNET:-10.77.0}"
sw="$prefix-sw"
ip netns add "$sw"
ip -n "$sw" link set lo up
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
# Let the bridge forward whatever the host's br_netfilter settings are.
ip netns exec "$sw" sh -c 'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -w "$f" ] && echo 0 > "$f"; done; true' 2>/dev/null || true
for ((i = 0; i < count; i++)); do
    host="$prefix-h$i"
    ip netns add "$host"
    ip -n "$host" link set lo up
    # The veth pair is made inside the switch namespace, so its names never
    # meet the root namespace's interfaces.
    ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$host"
    ip -n "$sw" link set "p$i" master br0 up
    ip -n "$host" addr add "$subnet.$((10 + i))/24" dev eth0
    ip -n "$host" link set eth0 up
done
