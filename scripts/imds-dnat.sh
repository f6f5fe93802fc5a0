#!/bin/sh
# Lets containers on a bridge find credvend at the EC2 metadata address with no environment
# variable: nftables DNATs what arrives on BRIDGE for 169.254.169.254:80 to credvend's [[imds]]
# listener on the bridge address. Run as root on the host. The integration test
# `netns_dnat_link_local` runs exactly these commands (inside a private network namespace).
#
#   scripts/imds-dnat.sh add BRIDGE LISTEN_ADDR LISTEN_PORT   # e.g. add docker0 172.17.0.1 9254
#   scripts/imds-dnat.sh remove
#
# The listener must allow the bridge's subnet, e.g. in config.toml:
#   [[imds]]
#   listen = "172.17.0.1:9254"
#   profile = "dev"
#   allow = ["172.17.0.0/16"]
# The containers need no route of their own: their default route already leads to the bridge.
set -eu

TABLE=credvend_imds

usage() {
  echo "usage: $0 add BRIDGE LISTEN_ADDR LISTEN_PORT | remove" >&2
  exit 2
}

case "${1:-}" in
  add)
    [ $# -eq 4 ] || usage
    nft add table ip "$TABLE"
    nft add chain ip "$TABLE" prerouting '{ type nat hook prerouting priority dstnat; policy accept; }'
    nft add rule ip "$TABLE" prerouting iifname "\"$2\"" ip daddr 169.254.169.254 tcp dport 80 dnat to "$3:$4"
    ;;
  remove)
    [ $# -eq 1 ] || usage
    nft delete table ip "$TABLE"
    ;;
  *) usage ;;
esac
