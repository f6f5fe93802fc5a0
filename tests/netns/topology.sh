#!/usr/bin/env bash
# The "containers on a bridge" topology of tests/it/netns.rs, built inside the caller's own
# private network and mount namespaces (it refuses to run in the machine's): two "container"
# network namespaces, each joined to this one by a veth pair, addresses in 198.18.0.0/15.
#
#   cv1: cvc1 198.18.1.2/24  <->  cvh1 198.18.1.1/24 here   (the allowed container)
#   cv2: cvc2 198.18.2.2/24  <->  cvh2 198.18.2.1/24 here   (a container outside the allow list)
#
# Each container's default route points at its host side, as Docker's does at the bridge. The
# namespaces are named under a tmpfs mounted over /run/netns in the private mount namespace, so
# they vanish with the caller and never show up on the machine.
set -euo pipefail

# Fail closed unless this is a fresh namespace pair made for the test: the caller passes the
# namespaces it started from (CREDVEND_OUTER_NETNS / _MNTNS, `readlink /proc/self/ns/net` and
# `.../mnt` taken before `unshare -n -m`); this shell's must differ, and hold no interface but lo.
refuse() {
  echo "topology.sh: refusing to run: $*; run it under unshare -n -m with CREDVEND_OUTER_NETNS and CREDVEND_OUTER_MNTNS set to the namespaces outside" >&2
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
for i in 1 2; do
  ip netns add "cv$i"
  ip link add "cvh$i" type veth peer name "cvc$i" netns "cv$i"
  ip addr add "198.18.$i.1/24" dev "cvh$i"
  ip link set "cvh$i" up
  ip -n "cv$i" link set lo up
  ip -n "cv$i" addr add "198.18.$i.2/24" dev "cvc$i"
  ip -n "cv$i" link set "cvc$i" up
  ip -n "cv$i" route add default via "198.18.$i.1"
done
