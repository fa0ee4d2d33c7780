#!/usr/bin/env bash
# Runs every test: unit tests, the command lines, and the end-to-end tests on real TAP devices,
# veth pairs and network namespaces. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and /dev/net/tun;
# installs what the end-to-end tests drive if it is missing: iproute2 (an independent observer),
# nftables (the NAT router in the containers tutorial), QEMU (guests on every VM attachment),
# podman, runc, the CNI plugins and busybox-static (containers on a vswitchd network), dnsmasq-base
# (the DHCP and DNS server of an internal port). Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
# Real clients the VM and container tests drive: QEMU guests (TCG), podman with its CNI backend.
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v podman >/dev/null 2>&1 || need+=(podman runc)
[ -x /usr/lib/cni/host-local ] || need+=(containernetworking-plugins)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# The DHCP and DNS server vswitchd runs for an internal port (dhcp = ..., dns = true).
[ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
# Independent readers of what vswitchd writes: tcpdump (captures), Graphviz (show --dot).
command -v tcpdump >/dev/null 2>&1 || [ -x /usr/bin/tcpdump ] || need+=(tcpdump)
command -v dot >/dev/null 2>&1 || need+=(graphviz)
# FRR (zebra, bgpd) for the EVPN tests: the fleet's real routing daemon.
[ -x /usr/lib/frr/zebra ] || need+=(frr)
# A real Prometheus text-format parser for the metrics tests (Debian's python3).
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need+=(python3 python3-prometheus-client)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "scripts/test.sh: the end-to-end tests need ${need[*]}; install them (as root) and run again" >&2
    exit 1
  fi
fi
if [ ! -c /dev/net/tun ] && [ "$(id -u)" = 0 ]; then
  mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
fi
# Every test binary runs even after one fails; the last line is the totals over all of them.
cargo test --workspace --no-fail-fast "$@" 2>&1 | scripts/summarize-tests.sh
