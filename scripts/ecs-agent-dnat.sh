#!/bin/sh
# Lets containers on a bridge use AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, as ECS tasks do: every
# client sends those requests to http://169.254.170.2 (port 80), and nftables DNATs what arrives on
# BRIDGE for 169.254.170.2:80 to credvend's [ecs_agent] listener on the bridge address. Run as root
# on the host. The integration test `netns_ecs_agent_relative_uri` runs exactly these commands
# (inside a private network namespace). The sibling of scripts/imds-dnat.sh, with a table of its own.
#
#   scripts/ecs-agent-dnat.sh add BRIDGE LISTEN_ADDR LISTEN_PORT   # e.g. add docker0 172.17.0.1 9257
#   scripts/ecs-agent-dnat.sh remove
#
# The listener must allow the bridge's subnet, e.g. in config.toml:
#   [ecs_agent]
#   listen = "172.17.0.1:9257"
#   allow = ["172.17.0.0/16"]
# and the container gets only AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (`credvend env PROFILE --container`
# prints it). The containers need no route of their own: their default route leads to the bridge.
set -eu

TABLE=credvend_ecs_agent

usage() {
  echo "usage: $0 add BRIDGE LISTEN_ADDR LISTEN_PORT | remove" >&2
  exit 2
}

case "${1:-}" in
  add)
    [ $# -eq 4 ] || usage
    nft add table ip "$TABLE"
    nft add chain ip "$TABLE" prerouting '{ type nat hook prerouting priority dstnat; policy accept; }'
    nft add rule ip "$TABLE" prerouting iifname "\"$2\"" ip daddr 169.254.170.2 tcp dport 80 dnat to "$3:$4"
    ;;
  remove)
    [ $# -eq 1 ] || usage
    nft delete table ip "$TABLE"
    ;;
  *) usage ;;
esac
