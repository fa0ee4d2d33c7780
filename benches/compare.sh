#!/usr/bin/env bash
# Side-by-side benchmark: two hosts (namespaces) joined by vswitchd — once with TAP ports, once
# with veth ports (the hosts then have exactly the kernel bridge's veth interfaces) — and the
# same two hosts joined by the Linux kernel bridge, measured in one run on the same machine:
#   - TCP throughput (iperf3, one stream, Gbit/s)
#   - 64-byte UDP packet rate received (iperf3 -u -l 64 -b 0, packets/s)
#   - round-trip latency (ping, average ms)
#   - vswitchd's CPU time per Gbit/s during the TCP test
#   - TCP over VXLAN, both directions: a kernel vxlan device at each end, against vswitchd (with a
#     TAP host) at one end and the kernel at the other
# and prints each figure with the ratio vswitchd / kernel bridge (median of REPS runs).
#
# Usage (as root):  benches/compare.sh            REPS=5 SECS=8 benches/compare.sh
# Installs iperf3 and iputils-ping from the distribution if they are missing.
# Everything runs in namespaces it creates (names start with vsb-) and is removed on exit.
set -euo pipefail

REPS=${REPS:-3}
SECS=${SECS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/vswitchd-bench.XXXXXX)
H1=10.77.0.1
H2=10.77.0.2

[ "$(id -u)" = 0 ] || { echo "compare.sh: run as root (it creates namespaces and devices)" >&2; exit 2; }
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "building vswitchd (release)" >&2
cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p vswitchd-control
VSWITCHD="$ROOT/target/release/vswitchd"

NAMESPACES=(vsb-h1 vsb-h2 vsb-sw vsb-k)
VS_PID=""
cleanup() {
  [ -n "$VS_PID" ] && kill -TERM "$VS_PID" 2>/dev/null && wait "$VS_PID" 2>/dev/null || true
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

fresh_namespaces() {
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" link set lo up; done
}

setup_kernel_bridge() {
  fresh_namespaces
  ip -n vsb-sw link add br0 type bridge
  for i in 1 2; do
    ip link add eth0 netns vsb-h$i type veth peer name p$i netns vsb-sw
    ip -n vsb-sw link set p$i master br0
    ip -n vsb-sw link set p$i up
    ip -n vsb-h$i link set eth0 up
  done
  ip -n vsb-sw link set br0 up
  ip -n vsb-h1 addr add $H1/24 dev eth0
  ip -n vsb-h2 addr add $H2/24 dev eth0
}

setup_vswitchd() { # PORT_TYPE: tap or veth
  fresh_namespaces
  cat > "$WORK/topology.toml" <<EOF
[bridge]
name = "bench"
[[netns]]
name = "vsb-h1"
[[netns]]
name = "vsb-h2"
[[port]]
name = "eth0-h1"
type = "$1"
netns = "vsb-h1"
address = "$H1/24"
[[port]]
name = "eth0-h2"
type = "$1"
netns = "vsb-h2"
address = "$H2/24"
EOF
  # vswitchd runs in its own namespace; the host namespaces exist already, so it uses them.
  ip netns exec vsb-sw "$VSWITCHD" --config "$WORK/topology.toml" --socket "$WORK/ctl.sock" --log-level warn &
  VS_PID=$!
  for _ in $(seq 100); do [ -S "$WORK/ctl.sock" ] && break; sleep 0.1; done
  [ -S "$WORK/ctl.sock" ] || { echo "vswitchd did not start" >&2; exit 1; }
}

# The far VTEP, always the kernel's: vsb-k bridges vx0 and a veth to h2; underlay veth to vsb-sw.
setup_vxlan_far_end() {
  fresh_namespaces
  ip link add ul netns vsb-sw type veth peer name ul netns vsb-k
  ip -n vsb-sw addr add 192.0.2.1/24 dev ul; ip -n vsb-k addr add 192.0.2.2/24 dev ul
  ip -n vsb-sw link set ul up; ip -n vsb-k link set ul up
  ip -n vsb-k link add vx0 type vxlan id 42 dstport 4789 local 192.0.2.2 remote 192.0.2.1 dev ul
  ip -n vsb-k link add br0 type bridge
  ip link add eth0 netns vsb-h2 type veth peer name p2 netns vsb-k
  for d in vx0 p2 br0; do ip -n vsb-k link set $d up; done
  ip -n vsb-k link set vx0 master br0; ip -n vsb-k link set p2 master br0
  ip -n vsb-h2 link set eth0 mtu 1450; ip -n vsb-h2 addr add $H2/24 dev eth0; ip -n vsb-h2 link set eth0 up
}

setup_vxlan_kernel() {
  setup_vxlan_far_end
  ip -n vsb-sw link add vx0 type vxlan id 42 dstport 4789 local 192.0.2.1 remote 192.0.2.2 dev ul
  ip -n vsb-sw link add br0 type bridge
  ip link add eth0 netns vsb-h1 type veth peer name p1 netns vsb-sw
  for d in vx0 p1 br0; do ip -n vsb-sw link set $d up; done
  ip -n vsb-sw link set vx0 master br0; ip -n vsb-sw link set p1 master br0
  ip -n vsb-h1 link set eth0 mtu 1450; ip -n vsb-h1 addr add $H1/24 dev eth0; ip -n vsb-h1 link set eth0 up
}

setup_vxlan_vswitchd() {
  setup_vxlan_far_end
  cat > "$WORK/topology.toml" <<TOPOLOGY
[bridge]
name = "bench"
[[netns]]
name = "vsb-h1"
[[port]]
name = "vx0"
type = "vxlan"
vni = 42
local = "192.0.2.1"
remotes = ["192.0.2.2"]
mtu = 1450
[[port]]
name = "eth0-h1"
type = "tap"
netns = "vsb-h1"
address = "$H1/24"
mtu = 1450
TOPOLOGY
  ip netns exec vsb-sw "$VSWITCHD" --config "$WORK/topology.toml" --socket "$WORK/ctl.sock" --log-level warn &
  VS_PID=$!
  for _ in $(seq 100); do [ -S "$WORK/ctl.sock" ] && break; sleep 0.1; done
  [ -S "$WORK/ctl.sock" ] || { echo "vswitchd did not start" >&2; exit 1; }
}

# measure_tcp NAME: TCP h1 -> h2 and h2 -> h1
measure_tcp() {
  local name=$1 gbps
  ip netns exec vsb-h1 ping -c 3 -i 0.1 -q $H2 >/dev/null
  for dir in fwd rev; do
    ip netns exec vsb-h2 iperf3 -s -1 -B $H2 -D --logfile "$WORK/srv.log"; sleep 0.3
    local flag=""; [ $dir = rev ] && flag="-R"
    gbps=$(ip netns exec vsb-h1 iperf3 -c $H2 -t "$SECS" $flag -J | json 'd["end"]["sum_received"]["bits_per_second"]/1e9')
    echo "$name vxlan_tcp_$dir $gbps" >> "$WORK/results"
  done
}

stop_vswitchd() {
  kill -TERM "$VS_PID"; wait "$VS_PID" || true; VS_PID=""
}

cpu_ticks() { # utime + stime of a pid, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# measure NAME: appends "name metric value" lines to $WORK/results
measure() {
  local name=$1
  ip netns exec vsb-h1 ping -c 3 -i 0.1 -q $H2 >/dev/null
  local rtt
  rtt=$(ip netns exec vsb-h1 ping -c 50 -i 0.02 -q $H2 | awk -F/ '/^rtt/ {print $5}')
  echo "$name rtt_ms $rtt" >> "$WORK/results"

  ip netns exec vsb-h2 iperf3 -s -1 -B $H2 -D --logfile "$WORK/srv.log"; sleep 0.3
  local t0=0 t1=0
  [ -n "$VS_PID" ] && t0=$(cpu_ticks "$VS_PID")
  local gbps
  gbps=$(ip netns exec vsb-h1 iperf3 -c $H2 -t "$SECS" -J | json 'd["end"]["sum_received"]["bits_per_second"]/1e9')
  [ -n "$VS_PID" ] && t1=$(cpu_ticks "$VS_PID")
  echo "$name tcp_gbps $gbps" >> "$WORK/results"
  if [ -n "$VS_PID" ]; then
    python3 -c "print('$name cpu_sec_per_gbit', ($t1-$t0)/$(getconf CLK_TCK)/$SECS/$gbps)" >> "$WORK/results"
  fi

  ip netns exec vsb-h2 iperf3 -s -1 -B $H2 -D --logfile "$WORK/srv.log"; sleep 0.3
  local pps
  pps=$(ip netns exec vsb-h1 iperf3 -c $H2 -u -l 64 -b 0 -t "$SECS" -J \
        | json '(d["end"]["sum"]["packets"]-d["end"]["sum"]["lost_packets"])/d["end"]["sum"]["seconds"]')
  echo "$name udp64_rx_pps $pps" >> "$WORK/results"
}

: > "$WORK/results"
for rep in $(seq "$REPS"); do
  echo "repetition $rep/$REPS: kernel bridge" >&2
  setup_kernel_bridge; measure kernel
  echo "repetition $rep/$REPS: vswitchd, TAP ports" >&2
  setup_vswitchd tap; measure vswitchd; stop_vswitchd
  echo "repetition $rep/$REPS: vswitchd, veth ports" >&2
  setup_vswitchd veth; measure vswitchd-veth; stop_vswitchd
  echo "repetition $rep/$REPS: VXLAN, kernel to kernel" >&2
  setup_vxlan_kernel; measure_tcp kernel
  echo "repetition $rep/$REPS: VXLAN, vswitchd to kernel" >&2
  setup_vxlan_vswitchd; measure_tcp vswitchd; stop_vswitchd
done

python3 - "$WORK/results" "$REPS" "$SECS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
data = {}
for name, metric, value in rows:
    data.setdefault((name, metric), []).append(float(value))
med = lambda n, m: statistics.median(data[(n, m)]) if (n, m) in data else float("nan")
print(f"\nvswitchd vs the Linux kernel bridge, two namespaces, median of {sys.argv[2]} runs of {sys.argv[3]} s")
print(f"{'metric':<28}{'kernel bridge':>14}{'vswitchd tap':>14}{'ratio':>7}{'vswitchd veth':>15}{'ratio':>7}")
for metric, label, fmt in [("tcp_gbps", "TCP throughput (Gbit/s)", "{:.2f}"),
                           ("udp64_rx_pps", "UDP 64 B received (pkt/s)", "{:,.0f}"),
                           ("rtt_ms", "ping RTT (ms)", "{:.3f}"),
                           ("cpu_sec_per_gbit", "vswitchd CPU s per Gbit", "{:.3f}")]:
    k, t, v = med("kernel", metric), med("vswitchd", metric), med("vswitchd-veth", metric)
    ratio = lambda x: f"{x / k:>7.2f}" if k == k else f"{'':>7}"
    kt = fmt.format(k) if k == k else "-"
    print(f"{label:<28}{kt:>14}{fmt.format(t):>14}{ratio(t)}{fmt.format(v):>15}{ratio(v)}")
for metric, label in [("vxlan_tcp_fwd", "VXLAN TCP, to the kernel's VTEP (Gbit/s)"),
                      ("vxlan_tcp_rev", "VXLAN TCP, from the kernel's VTEP (Gbit/s)")]:
    k, t = med("kernel", metric), med("vswitchd", metric)
    print(f"{label:<44}{k:>8.2f}{t:>8.2f}{t / k:>7.2f}   (kernel-kernel, vswitchd-kernel, ratio)")
for name, label in [("vswitchd", "tap"), ("vswitchd-veth", "veth")]:
    added = (med(name, "rtt_ms") - med("kernel", "rtt_ms")) * 1000
    print(f"added latency over the kernel bridge, {label} ports: {added:.0f} us")
EOF
