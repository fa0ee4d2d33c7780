#!/usr/bin/env bash
# Side-by-side benchmark, in one run on one machine, same namespaces and addresses: two hosts
# (h1 10.77.0.1, h2 10.77.0.2) joined by
#   kernel      the Linux kernel bridge (veth pairs on a bridge) — the reference for ratios
#   veth        a bare veth pair, no switch — the ceiling
#   vs-tap      vswitchd with TAP ports
#   vs-veth     vswitchd with veth ports (the hosts have exactly the kernel bridge's interfaces)
#   vs-tap      (the default: adaptive busy-polling, 100 us after a frame while traffic is sparse)
#   vs-sleep    vswitchd with TAP ports and --busy-poll-us 0 (never polls: always sleeps)
#   vs-poll     vswitchd with TAP ports and --busy-poll-us 100000 (trades a core for latency)
#   vs-tap2     vswitchd with two worker threads (--threads 2) over two-queue TAPs
#   ovs-tap     Open vSwitch's userspace datapath (datapath_type=netdev), TAP ports   } --peers
#   ovs-tso     the same with other_config:userspace-tso-enable=true                  } (installs
#   vde         vde_switch with two TAP ports                                         }  them)
# Measured: TCP with 1 and 4 streams (Gbit/s), 64-byte UDP received (pkt/s), ping RTT, the
# switch process's CPU-seconds per Gbit of TCP, and a line-rate flood: trafgen (netsniff-ng) on
# one core sends 64-byte frames (FLOOD_LEN=1514 for full-size ones) h1 -> h2; measured, from the
# middle of the flood (FLOOD_SECS), the frames per second the switch delivers to h2, its CPU per
# frame, and the round trip between two bystander hosts h3 (10.77.0.3) and h4 (.4) on the same
# switch, idle and during the flood. Then TCP over VXLAN, both directions: the
# kernel's vxlan device at each end, against vswitchd (TAP host) at one end (vxlan-vs), and
# one way with vswitchd at both ends (vxlan-vs2).
# Prints medians of REPS runs and ratios to the kernel bridge, and writes them to
# $OUT/compare.tsv (SETUP METRIC MEDIAN a line; OUT defaults to target/bench) and as a bar
# chart of the ratios to $OUT/compare.svg (benches/chart.py).
#
# Usage (as root):  benches/compare.sh [--peers]        REPS=5 SECS=8 benches/compare.sh
#                   ONLY="kernel vs-tap vs-tap2" VXLAN=0 benches/compare.sh   (a subset)
#                   FLOOD_ONLY=1 ONLY="kernel vs-tap" VXLAN=0 benches/compare.sh   (the flood alone)
#                   PROFILE=1 ... benches/compare.sh   (also profile the switch: perf record -g of
#                   its process in the middle of the flood and of each VXLAN direction, the top
#                   symbols in $OUT/profile-SETUP-MEASURE.txt)
# Installs iperf3, iputils-ping, netsniff-ng (and with --peers openvswitch-switch, vde2) if missing.
# Everything runs in namespaces it creates (names start with vsb-) and is removed on exit.
set -euo pipefail

REPS=${REPS:-3}
SECS=${SECS:-5}
FLOOD_SECS=${FLOOD_SECS:-2}
FLOOD_LEN=${FLOOD_LEN:-60}   # bytes from the Ethernet header to the payload's end: 60 + FCS = 64
PEERS=0
[ "${1:-}" = "--peers" ] && PEERS=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/vswitchd-bench.XXXXXX)
OUT=${OUT:-$ROOT/target/bench}
H1=10.77.0.1
H2=10.77.0.2
H3=10.77.0.3   # the bystander pair, whose round trip is measured during the flood
H4=10.77.0.4

[ "$(id -u)" = 0 ] || { echo "compare.sh: run as root (it creates namespaces and devices)" >&2; exit 2; }
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
command -v python3 >/dev/null || need+=(python3)
command -v trafgen >/dev/null || need+=(netsniff-ng)
if [ $PEERS = 1 ]; then
  command -v ovs-vswitchd >/dev/null || need+=(openvswitch-switch)
  command -v vde_switch >/dev/null || need+=(vde2)
fi
[ "${PROFILE:-0}" = 1 ] && ! command -v perf >/dev/null && need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "building vswitchd (release)" >&2
cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p vswitchd-control
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"   # where cargo put them
VSWITCHD="$BIN/vswitchd"

NAMESPACES=(vsb-h1 vsb-h2 vsb-h3 vsb-h4 vsb-sw vsb-k)
SWITCH_PID=""   # the process whose CPU time is measured (vswitchd, ovs-vswitchd, vde_switch)
OVS_DB=""
cleanup_switch() {
  if [ -n "$OVS_DB" ]; then
    timeout 10 ovs-vsctl --db="unix:$OVS_DB" --if-exists del-br br0 >/dev/null 2>&1 || true
    OVS_DB=""
  fi
  for pid in $(cat "$WORK/pids" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $(cat "$WORK/pids" 2>/dev/null); do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  : > "$WORK/pids"
  SWITCH_PID=""
}
cleanup() {
  cleanup_switch
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
: > "$WORK/pids"

fresh_namespaces() {
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" link set lo up; done
}

address_hosts() { # DEV1 DEV2 [MTU]
  ip -n vsb-h1 addr add $H1/24 dev "$1"; ip -n vsb-h2 addr add $H2/24 dev "$2"
  if [ -n "${3:-}" ]; then ip -n vsb-h1 link set "$1" mtu "$3"; ip -n vsb-h2 link set "$2" mtu "$3"; fi
  ip -n vsb-h1 link set "$1" up; ip -n vsb-h2 link set "$2" up
}
address_bystanders() { # DEV3 DEV4
  ip -n vsb-h3 addr add $H3/24 dev "$1"; ip -n vsb-h4 addr add $H4/24 dev "$2"
  ip -n vsb-h3 link set "$1" up; ip -n vsb-h4 link set "$2" up
}

setup_kernel() {
  fresh_namespaces
  ip -n vsb-sw link add br0 type bridge
  for i in 1 2 3 4; do
    ip link add eth0 netns vsb-h$i type veth peer name p$i netns vsb-sw
    ip -n vsb-sw link set p$i master br0; ip -n vsb-sw link set p$i up
  done
  ip -n vsb-sw link set br0 up
  address_hosts eth0 eth0
  address_bystanders eth0 eth0
}

setup_veth() {
  fresh_namespaces
  ip link add eth0 netns vsb-h1 type veth peer name eth0 netns vsb-h2
  address_hosts eth0 eth0
}

start_vswitchd() { # extra vswitchd arguments
  ip netns exec vsb-sw "$VSWITCHD" --config "$WORK/topology.toml" --socket "$WORK/ctl.sock" --log-level warn "$@" &
  SWITCH_PID=$!; echo $SWITCH_PID >> "$WORK/pids"
  # The socket is bound before the plumbing; it answers once the switch forwards.
  for _ in $(seq 100); do "$BIN/vswitchctl" --socket "$WORK/ctl.sock" show >/dev/null 2>&1 && break; sleep 0.1; done
  "$BIN/vswitchctl" --socket "$WORK/ctl.sock" show >/dev/null || { echo "vswitchd did not start" >&2; exit 1; }
}

setup_vswitchd() { # PORT_TYPE [extra vswitchd arguments]
  fresh_namespaces
  # vswitchd runs in its own namespace (under ip netns exec, so in a mount namespace of its
  # own): the host namespaces exist already, and it uses them.
  cat > "$WORK/topology.toml" <<TOPOLOGY
[bridge]
name = "bench"
[[netns]]
name = "vsb-h1"
[[netns]]
name = "vsb-h2"
[[netns]]
name = "vsb-h3"
[[netns]]
name = "vsb-h4"
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
[[port]]
name = "eth0-h3"
type = "$1"
netns = "vsb-h3"
address = "$H3/24"
[[port]]
name = "eth0-h4"
type = "$1"
netns = "vsb-h4"
address = "$H4/24"
TOPOLOGY
  shift
  start_vswitchd "$@"
}
setup_vs-tap() { setup_vswitchd tap; }
setup_vs-sleep() { setup_vswitchd tap --busy-poll-us 0; }
setup_vs-poll() { setup_vswitchd tap --busy-poll-us 100000; }
setup_vs-tap2() { setup_vswitchd tap --threads 2; }
setup_vs-veth() { setup_vswitchd veth; }

ovs_start() { # extra other_config key=value settings
  export OVS_RUNDIR=$WORK OVS_LOGDIR=$WORK OVS_DBDIR=$WORK OVS_SYSCONFDIR=$WORK
  OVS_DB=$WORK/db.sock
  rm -f "$WORK/conf.db"
  ovsdb-tool create "$WORK/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ip netns exec vsb-sw ovsdb-server "$WORK/conf.db" --remote="punix:$OVS_DB" --unixctl="$WORK/ovsdb-server.ctl" \
    --log-file="$WORK/ovsdb-server.log" -vconsole:off &
  echo $! >> "$WORK/pids"
  for _ in $(seq 50); do [ -S "$OVS_DB" ] && break; sleep 0.1; done
  ovs-vsctl --db="unix:$OVS_DB" --no-wait init
  for kv in "$@"; do ovs-vsctl --db="unix:$OVS_DB" --no-wait set Open_vSwitch . "other_config:$kv"; done
  ip netns exec vsb-sw ovs-vswitchd "unix:$OVS_DB" --disable-system --unixctl="$WORK/ovs-vswitchd.ctl" \
    --log-file="$WORK/ovs-vswitchd.log" -vconsole:off &
  SWITCH_PID=$!; echo $SWITCH_PID >> "$WORK/pids"
  for _ in $(seq 50); do [ -S "$WORK/ovs-vswitchd.ctl" ] && break; sleep 0.1; done
  timeout 20 ovs-vsctl --db="unix:$OVS_DB" add-br br0 -- set bridge br0 datapath_type=netdev
  for i in 1 2 3 4; do
    timeout 20 ovs-vsctl --db="unix:$OVS_DB" add-port br0 ovtap$i -- set interface ovtap$i type=tap
    ip -n vsb-sw link set ovtap$i netns vsb-h$i
  done
  address_hosts ovtap1 ovtap2
  address_bystanders ovtap3 ovtap4
}
setup_ovs-tap() { fresh_namespaces; ovs_start; }
setup_ovs-tso() { fresh_namespaces; ovs_start userspace-tso-enable=true; }

setup_vde() {
  fresh_namespaces
  ip netns exec vsb-sw vde_switch -d -p "$WORK/vde.pid" -s "$WORK/vde.ctl" -M "$WORK/vde.mgmt" -t vdtap1 -t vdtap2 -t vdtap3 -t vdtap4 \
    >"$WORK/vde.out" 2>&1
  for _ in $(seq 50); do [ -s "$WORK/vde.pid" ] && break; sleep 0.1; done
  SWITCH_PID=$(cat "$WORK/vde.pid"); echo $SWITCH_PID >> "$WORK/pids"
  for i in 1 2 3 4; do ip -n vsb-sw link set vdtap$i netns vsb-h$i; done
  address_hosts vdtap1 vdtap2
  address_bystanders vdtap3 vdtap4
}

# The underlay: fresh namespaces, vsb-sw (192.0.2.1) and vsb-k (192.0.2.2) joined by a veth.
setup_underlay() {
  fresh_namespaces
  ip link add ul netns vsb-sw type veth peer name ul netns vsb-k
  ip -n vsb-sw addr add 192.0.2.1/24 dev ul; ip -n vsb-k addr add 192.0.2.2/24 dev ul
  ip -n vsb-sw link set ul up; ip -n vsb-k link set ul up
}
# The far VXLAN end, the kernel's: vsb-k bridges vx0 and a veth to h2.
setup_vxlan_far_end() {
  setup_underlay
  kernel_vtep vsb-k 192.0.2.2 192.0.2.1 vsb-h2 "$H2"
}
# A kernel VXLAN endpoint in namespace $1 (underlay address $2, remote $3): vx0 and a veth to
# host namespace $4 (address $5, MTU 1450 for the 50 bytes of encapsulation) on a bridge br0.
kernel_vtep() {
  local ns=$1 local_ip=$2 remote_ip=$3 host=$4 host_ip=$5
  ip -n "$ns" link add vx0 type vxlan id 42 dstport 4789 local "$local_ip" remote "$remote_ip" dev ul
  ip -n "$ns" link add br0 type bridge
  ip link add eth0 netns "$host" type veth peer name host0 netns "$ns"
  for d in vx0 host0 br0; do ip -n "$ns" link set $d up; done
  ip -n "$ns" link set vx0 master br0; ip -n "$ns" link set host0 master br0
  ip -n "$host" link set eth0 mtu 1450; ip -n "$host" addr add "$host_ip"/24 dev eth0; ip -n "$host" link set eth0 up
}
setup_vxlan-kernel() {
  setup_vxlan_far_end
  kernel_vtep vsb-sw 192.0.2.1 192.0.2.2 vsb-h1 "$H1"
}
setup_vxlan-vs() {
  setup_vxlan_far_end
  vswitchd_vtep_near
}
# vswitchd at both ends: a second vswitchd in vsb-k (its own bridge name and socket) is the far
# VTEP, with h2 on a TAP. What one sends with UDP GSO reaches the other's socket as MTU-sized
# datagrams, one TCP segment each, as between two hosts: the receive offload merges them.
setup_vxlan-vs2() {
  setup_underlay
  vtep_topology benchfar 192.0.2.2 192.0.2.1 h2 "$H2" > "$WORK/far.toml"
  ip netns exec vsb-k "$VSWITCHD" --config "$WORK/far.toml" --socket "$WORK/far.sock" --log-level warn &
  echo $! >> "$WORK/pids"
  for _ in $(seq 100); do "$BIN/vswitchctl" --socket "$WORK/far.sock" show >/dev/null 2>&1 && break; sleep 0.1; done
  vswitchd_vtep_near
}
# A vswitchd VTEP's topology: bridge BRIDGE, VXLAN 42 from LOCAL to REMOTE, and host HOST
# (namespace vsb-HOST, address ADDRESS) on a TAP, MTU 1450 for the 50 bytes of encapsulation.
vtep_topology() { # BRIDGE LOCAL REMOTE HOST ADDRESS
  cat <<TOPOLOGY
[bridge]
name = "$1"
[[netns]]
name = "vsb-$4"
[[port]]
name = "vx0"
type = "vxlan"
vni = 42
local = "$2"
remotes = ["$3"]
mtu = 1450
[[port]]
name = "eth0-$4"
type = "tap"
netns = "vsb-$4"
address = "$5/24"
mtu = 1450
TOPOLOGY
}
# vswitchd in vsb-sw as the VTEP 192.0.2.1 toward 192.0.2.2, with h1 on a TAP.
vswitchd_vtep_near() {
  vtep_topology bench 192.0.2.1 192.0.2.2 h1 "$H1" > "$WORK/topology.toml"
  start_vswitchd
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
record() { echo "$1 $2 $3" >> "$WORK/results"; }

iperf_tcp() { # STREAMS [extra iperf3 flags]: prints Gbit/s received
  local streams=$1; shift
  ip netns exec vsb-h2 iperf3 -s -1 -B $H2 -D --logfile "$WORK/srv.log"; sleep 0.3
  ip netns exec vsb-h1 iperf3 -c $H2 -t "$SECS" -P "$streams" "$@" -J | json 'd["end"]["sum_received"]["bits_per_second"]/1e9'
}

measure() { # NAME
  local name=$1 t0=0 t1=0 gbps
  if [ "${FLOOD_ONLY:-0}" = 1 ]; then ip netns exec vsb-h1 ping -c 3 -i 0.1 -q $H2 >/dev/null; measure_flood "$name"; return; fi
  ip netns exec vsb-h1 ping -c 3 -i 0.1 -q $H2 >/dev/null
  record "$name" rtt_ms "$(ip netns exec vsb-h1 ping -c 50 -i 0.02 -q $H2 | awk -F/ '/^rtt/ {print $5}')"
  [ -n "$SWITCH_PID" ] && t0=$(cpu_ticks "$SWITCH_PID")
  gbps=$(iperf_tcp 1)
  [ -n "$SWITCH_PID" ] && t1=$(cpu_ticks "$SWITCH_PID")
  record "$name" tcp_gbps "$gbps"
  if [ -n "$SWITCH_PID" ]; then
    record "$name" cpu_sec_per_gbit "$(python3 -c "print(($t1-$t0)/$(getconf CLK_TCK)/$SECS/max($gbps, 1e-9))")"
  fi
  record "$name" tcp4_gbps "$(iperf_tcp 4)"
  ip netns exec vsb-h2 iperf3 -s -1 -B $H2 -D --logfile "$WORK/srv.log"; sleep 0.3
  record "$name" udp64_rx_pps "$(ip netns exec vsb-h1 iperf3 -c $H2 -u -l 64 -b 0 -t "$SECS" -J \
    | json '(d["end"]["sum"]["packets"]-d["end"]["sum"]["lost_packets"])/d["end"]["sum"]["seconds"]')"
  [ "${FLOOD:-1}" = 0 ] || measure_flood "$name"
}

profile_switch() { # LABEL SECONDS [DELAY]: with PROFILE=1, perf record -g of the switch for SECONDS
  [ "${PROFILE:-0}" = 1 ] && [ -n "$SWITCH_PID" ] || return 0
  PROFILE_LABEL=$1
  ( sleep "${3:-0}"; perf record -q -g -p "$SWITCH_PID" -o "$WORK/perf.data" -- sleep "$2" >/dev/null 2>&1 ) &
  PROFILER=$!
}
profile_wait() { # after the measure: the top symbols to $OUT/profile-LABEL.txt
  [ -n "${PROFILER:-}" ] || return 0
  wait "$PROFILER" 2>/dev/null || true
  PROFILER=""
  mkdir -p "$OUT"
  perf report -i "$WORK/perf.data" --no-children --sort sym --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -40 > "$OUT/profile-$PROFILE_LABEL.txt" || true
}

host_dev() { # NAMESPACE ADDRESS: the interface that holds the address
  ip -n "$1" -o -4 addr show | awk -v a="$2/" 'index($4, a) == 1 {print $2; exit}'
}
mac_bytes() { # NAMESPACE DEV: its MAC as trafgen bytes (0xaa, 0xbb, ...)
  ip -n "$1" link show dev "$2" | awk '/link\/ether/ {print $2}' | sed 's/^/0x/; s/:/, 0x/g'
}
dev_counter() { # NAMESPACE DEV rx|tx: packets
  ip -n "$1" -s -j link show dev "$2" | json "d[0]['stats64']['$3']['packets']"
}
ping_avg_ms() { # NAMESPACE ADDRESS: the % lost of 50 pings 20 ms apart, their mean and median RTT (ms)
  ip netns exec "$1" ping -c 50 -i 0.02 -W 1 "$2" | python3 -c '
import re, statistics, sys
text = sys.stdin.read()
times = [float(t) for t in re.findall(r" time=([0-9.]+)", text)]
loss = re.search(r"([0-9.]+)% packet loss", text)
print(loss.group(1) if loss else "", f"{statistics.mean(times):.3f} {statistics.median(times):.3f}" if times else "")' || true
}
record_rtt() { # NAME METRIC "LOSS AVG [MEDIAN]": the average and median (if any reply came), the loss
  local avg loss median
  read -r loss avg median <<< "$3"
  [ -n "$avg" ] && [ -n "$loss" ] && record "$1" "$2" "$avg"
  [ -n "$median" ] && record "$1" "${2%_ms}_p50_ms" "$median"
  [ -n "$loss" ] && record "$1" "${2%_ms}_loss_pct" "$loss"
  return 0
}

# A line-rate flood h1 -> h2 of FLOOD_LEN-byte UDP frames from trafgen on one core, addressed to
# h2's MAC (learnt by the switch from the pings before); h2 has no listener on the port. In the
# middle of it: frames/s delivered to h2, the switch's CPU per delivered frame, the bystanders'
# round trip, mean and median (their idle one first).
measure_flood() { # NAME
  local name=$1 d1 d2 c0 c1 s0 s1 t0 t1 p0=0 p1=0 tg bp="" bys="" ip_len=$((FLOOD_LEN - 14))
  d1=$(host_dev vsb-h1 $H1); d2=$(host_dev vsb-h2 $H2)
  if ip netns exec vsb-h3 ping -c 3 -i 0.1 -W 1 -q $H4 >/dev/null 2>&1; then
    bys=1
    record_rtt "$name" bystander_idle_rtt_ms "$(ping_avg_ms vsb-h3 $H4)"
  fi
  cat > "$WORK/flood.cfg" <<CFG
{
  $(mac_bytes vsb-h2 "$d2"), $(mac_bytes vsb-h1 "$d1"), c16(0x0800),
  0x45, 0x00, c16($ip_len), 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, csumip(14, 33),
  10, 77, 0, 1, 10, 77, 0, 2,
  c16(12345), c16(9), c16($((ip_len - 20))), 0x00, 0x00,
  fill(0x00, $((ip_len - 28)))
}
CFG
  # --no-sock-mem, --notouch-irq: leave the machine's socket-memory sysctls and IRQ affinity alone.
  # In a session of its own (it forks a sender), so that one signal stops them all.
  setsid ip netns exec vsb-h1 trafgen -o "$d1" -i "$WORK/flood.cfg" -P 1 --no-sock-mem --notouch-irq -C >"$WORK/trafgen.out" 2>&1 &
  tg=$!
  sleep 1
  [ -n "$SWITCH_PID" ] && p0=$(cpu_ticks "$SWITCH_PID")
  c0=$(dev_counter vsb-h2 "$d2" rx); s0=$(dev_counter vsb-h1 "$d1" tx); t0=$(date +%s.%N)
  if [ -n "$bys" ]; then ping_avg_ms vsb-h3 $H4 > "$WORK/bystander" & bp=$!; fi
  profile_switch "$name-flood" "$FLOOD_SECS"
  sleep "$FLOOD_SECS"
  [ -n "$SWITCH_PID" ] && p1=$(cpu_ticks "$SWITCH_PID")
  c1=$(dev_counter vsb-h2 "$d2" rx); s1=$(dev_counter vsb-h1 "$d1" tx); t1=$(date +%s.%N)
  [ -n "$bp" ] && { wait "$bp" || true; }
  kill -TERM -- -"$tg" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 -- -"$tg" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- -"$tg" 2>/dev/null || true
  wait "$tg" 2>/dev/null || true
  profile_wait
  record "$name" flood_fwd_pps "$(python3 -c "print(($c1-$c0)/($t1-$t0))")"
  record "$name" flood_sent_pps "$(python3 -c "print(($s1-$s0)/($t1-$t0))")"
  [ -n "$bys" ] && record_rtt "$name" bystander_flood_rtt_ms "$(cat "$WORK/bystander")"
  if [ -n "$SWITCH_PID" ]; then
    record "$name" flood_cpu_us_per_frame "$(python3 -c "print(($p1-$p0)/$(getconf CLK_TCK)*1e6/max($c1-$c0, 1))")"
  fi
  sleep 0.5   # let h2 drain before the next measure
}

measure_vxlan() { # NAME: TCP both ways, and the near vswitchd's CPU-seconds per Gbit of each
  local name=$1 direction gbps t0 t1
  ip netns exec vsb-h1 ping -c 3 -i 0.1 -q $H2 >/dev/null
  for direction in fwd rev; do
    [ -n "$SWITCH_PID" ] && t0=$(cpu_ticks "$SWITCH_PID")
    profile_switch "$name-vxlan-$direction" $((SECS > 3 ? SECS - 2 : 1)) 1
    if [ $direction = fwd ]; then gbps=$(iperf_tcp 1); else gbps=$(iperf_tcp 1 -R); fi
    record "$name" vxlan_${direction}_gbps "$gbps"
    if [ -n "$SWITCH_PID" ]; then
      t1=$(cpu_ticks "$SWITCH_PID")
      record "$name" vxlan_${direction}_cpu_sec_per_gbit "$(python3 -c "print(($t1-$t0)/$(getconf CLK_TCK)/$SECS/max($gbps, 1e-9))")"
    fi
    profile_wait
  done
}

TOPOS=(kernel veth vs-tap vs-veth vs-poll vs-tap2)
[ $PEERS = 1 ] && TOPOS+=(ovs-tap ovs-tso vde)
[ -n "${ONLY:-}" ] && read -r -a TOPOS <<< "$ONLY"
VXLAN_TOPOS=(vxlan-kernel vxlan-vs vxlan-vs2)
[ "${VXLAN:-1}" = 0 ] && VXLAN_TOPOS=()
: > "$WORK/results"
for rep in $(seq "$REPS"); do
  for topo in "${TOPOS[@]}"; do
    echo "repetition $rep/$REPS: $topo" >&2
    "setup_$topo"; measure "$topo"; cleanup_switch
  done
  for topo in "${VXLAN_TOPOS[@]}"; do
    echo "repetition $rep/$REPS: $topo" >&2
    "setup_$topo"; measure_vxlan "$topo"; cleanup_switch
  done
done

mkdir -p "$OUT"
python3 - "$WORK/results" "$REPS" "$SECS" "$OUT/compare.tsv" "${TOPOS[@]}" <<'REPORT'
import datetime, statistics, sys
path, reps, secs, tsv, topos = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
data = {}
for line in open(path):
    name, metric, value = line.split()
    data.setdefault((name, metric), []).append(float(value))
med = lambda n, m: statistics.median(data[(n, m)]) if (n, m) in data else None
with open(tsv, "w") as out:
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    out.write(f"# benches/compare.sh, {when}, median of {reps} runs of {secs} s: SETUP METRIC MEDIAN\n")
    out.write(f"# title: vswitchd and its peers against the kernel bridge ({when})\n")
    for (name, metric) in data:
        out.write(f"{name}\t{metric}\t{med(name, metric)}\n")
print(f"\nmedian of {reps} runs of {secs} s; ratio = value / kernel bridge")
metrics = [("tcp_gbps", "TCP 1 stream (Gbit/s)", "{:.2f}"), ("tcp4_gbps", "TCP 4 streams (Gbit/s)", "{:.2f}"),
           ("udp64_rx_pps", "UDP 64 B rx (pkt/s)", "{:,.0f}"), ("rtt_ms", "ping RTT (ms)", "{:.3f}"),
           ("cpu_sec_per_gbit", "switch CPU-s per Gbit", "{:.3f}"),
           ("flood_fwd_pps", "flood forwarded (fr/s)", "{:,.0f}"), ("flood_sent_pps", "flood sent by h1 (fr/s)", "{:,.0f}"),
           ("flood_cpu_us_per_frame", "flood switch CPU us/fr", "{:.2f}"),
           ("bystander_idle_rtt_ms", "bystander RTT idle (ms)", "{:.3f}"),
           ("bystander_idle_rtt_p50_ms", "  its median (ms)", "{:.3f}"),
           ("bystander_flood_rtt_ms", "bystander RTT flood (ms)", "{:.3f}"),
           ("bystander_flood_rtt_p50_ms", "  its median (ms)", "{:.3f}")]
print(f"{'':<24}" + "".join(f"{t:>18}" for t in topos))
for metric, label, fmt in metrics:
    k = med("kernel", metric)
    cells = []
    for t in topos:
        v = med(t, metric)
        if v is None:
            cells.append(f"{'-':>18}")
        elif k and t != "kernel":
            cells.append(f"{fmt.format(v) + f' ({v / k:.2f})':>18}")
        else:
            cells.append(f"{fmt.format(v):>18}")
    print(f"{label:<24}" + "".join(cells))
for t in topos:
    if t != "kernel" and med(t, "rtt_ms") is not None and med("kernel", "rtt_ms") is not None:
        print(f"added latency over the kernel bridge, {t}: {(med(t, 'rtt_ms') - med('kernel', 'rtt_ms')) * 1000:.0f} us")
for metric, label in [("vxlan_fwd_gbps", "VXLAN TCP toward the kernel's VTEP"), ("vxlan_rev_gbps", "VXLAN TCP from the kernel's VTEP")]:
    k, v = med("vxlan-kernel", metric), med("vxlan-vs", metric)
    if k is None or v is None:
        continue
    print(f"{label:<40} kernel-kernel {k:.2f}  vswitchd-kernel {v:.2f} Gbit/s  ({v / k:.2f})")
for metric, label in [("vxlan_fwd_cpu_sec_per_gbit", "encapsulating"), ("vxlan_rev_cpu_sec_per_gbit", "decapsulating")]:
    v = med("vxlan-vs", metric)
    if v is not None:
        print(f"vswitchd CPU-s per Gbit of VXLAN TCP, {label}: {v:.3f}")
k, v = med("vxlan-kernel", "vxlan_fwd_gbps"), med("vxlan-vs2", "vxlan_fwd_gbps")
if k is not None and v is not None:
    print(f"{'VXLAN TCP vswitchd to vswitchd':<40} kernel-kernel {k:.2f}  vswitchd-vswitchd {v:.2f} Gbit/s  ({v / k:.2f})")
REPORT
if python3 "$ROOT/benches/chart.py" "$OUT/compare.tsv" -o "$OUT/compare.svg"; then
  echo "medians in $OUT/compare.tsv, chart of the ratios in $OUT/compare.svg" >&2
else
  echo "medians in $OUT/compare.tsv (no chart: it needs the kernel bridge's figures)" >&2
fi
