#!/usr/bin/env bash
# Ends every process left in the namespaces of tests/netns/up.sh PREFIX N
# and deletes them:   tests/netns/down.sh PREFIX
set -uo pipefail
prefix="${1:?usage: down.sh PREFIX}"
for ns in $(ip netns list | awk '{print $1}' | grep -E "^$prefix-(sw|h[0-9]+)$"); do
    pids="$(ip netns pids "$ns" 2>/dev/null)"
    [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null
done
true
