#!/usr/bin/env bash
# The "containers on one bridge" topology of the routes test in tests/it/netns.rs, built inside
# the caller's own private network and mount namespaces (it refuses to run in the machine's):
# a bridge, as Docker's docker0, with three "container" network namespaces attached by veth
# pairs, addresses in 198.18.0.0/15.
#
#   cvbr0 198.18.0.1/24 here (the bridge; the daemon listens on this address)
#   cr1: eth0 198.18.0.2/24     cr2: eth0 198.18.0.3/24     cr3: eth0 198.18.0.200/24
#
# Each container's default route points at the bridge address, as Docker's does. The
# namespaces are named under a tmpfs mounted over /run/netns in the private mount namespace, so
# they vanish with the caller and never show up on the machine.
set -euo pipefail

# Fail closed unless this is a fresh namespace pair made for the test (as tests/netns/topology.sh):
# the caller passes the namespaces it started from; this shell's must differ, and hold no
# interface but lo.
refuse() {
  echo "bridge.sh: refusing to run: $*; run it under unshare -n -m with CREDVEND_OUTER_NETNS and CREDVEND_OUTER_MNTNS set to the namespaces outside" >&2
  exit 1
}
here_net=$(readlink /proc/self/ns/net) || refuse "cannot read this network namespace"
here_mnt=$(readlink /proc/self/ns/mnt) || refuse "cannot read this mount namespace"
outer_net=${CREDVEND_OUTER_NETNS:-}
outer_mnt=${CREDVEND_OUTER_MNTNS:-}
[ -n "$here_net" ] && [ -n "$here_mnt" ] || refuse "cannot read this shell's namespaces"
[ -n "$outer_net" ] && [ -n "$outer_mnt" ] || refuse "the outer namespaces are not given"
[ "$here_net" != "$outer_net" ] || refuse "this is the outer network namespace"
[ "$here_mnt" != "$outer_mnt" ] || refuse "this is the outer mount namespace"
others=$(ip -o link show | awk -F': ' '$2 != "lo"')
[ -z "$others" ] || refuse "this network namespace already has interfaces besides lo"

mkdir -p /run/netns
mount -t tmpfs -o mode=0755 credvend-netns /run/netns

ip link set lo up
ip link add cvbr0 type bridge
ip addr add 198.18.0.1/24 dev cvbr0
ip link set cvbr0 up
i=0
for host in 2 3 200; do
  i=$((i + 1))
  ip netns add "cr$i"
  ip link add "crh$i" type veth peer name eth0 netns "cr$i"
  ip link set "crh$i" master cvbr0
  ip link set "crh$i" up
  ip -n "cr$i" link set lo up
  ip -n "cr$i" addr add "198.18.0.$host/24" dev eth0
  ip -n "cr$i" link set eth0 up
  ip -n "cr$i" route add default via 198.18.0.1
done
