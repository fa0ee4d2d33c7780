#!/usr/bin/env bash
# Soak: vswitchd forwarding mixed traffic for a long time (default one hour), with its memory
# (RSS) and open file descriptors sampled every minute; both must stay flat. At the end every
# port's frames are accounted for.
#
# Topology (namespaces vss-*, removed on exit): four hosts on TAP ports (h1..h4, 10.78.0.1-4)
# and a fifth host behind a `netdev` port on a veth end that the soak deletes and recreates
# every minute (a device that comes and goes). Traffic, all at once:
#   h1 -> h2   TCP at 1 Gbit/s (iperf3, back to back; paced so the soak leaves the machine usable)
#   h3 -> h4   64-byte UDP at 20 Mbit/s (iperf3 -u)
#   h4         broadcast pings every 10 ms (floods to every port)
#   h5 <-> h1  pings through the netdev port that comes and goes
# Usage (as root):  benches/soak.sh [SECONDS]         (default 3600; installs iperf3, ping)
# Prints one line per minute: elapsed, RSS (KiB), open fds, FDB entries, frames forwarded; then
# the per-port accounting and whether RSS and fds stayed flat (last sample vs the one at
# minute 2, when every buffer has been touched).
set -euo pipefail

DURATION=${1:-3600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/vswitchd-soak.XXXXXX)
[ "$(id -u)" = 0 ] || { echo "soak.sh: run as root" >&2; exit 2; }
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p vswitchd-control
VSWITCHD="$ROOT/target/release/vswitchd"
VSWITCHCTL="$ROOT/target/release/vswitchctl"
SOCK="$WORK/ctl.sock"

cleanup() {
  declare -F stop_traffic >/dev/null && stop_traffic
  [ -n "${VS_PID:-}" ] && kill -TERM "$VS_PID" 2>/dev/null && wait "$VS_PID" 2>/dev/null || true
  for ns in vss-h5 vss-sw; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add vss-sw
ip netns add vss-h5
cat >"$WORK/soak.toml" <<EOF
[bridge]
name = "soak"
fdb_max_entries = 4096
EOF
for i in 1 2 3 4; do
  cat >>"$WORK/soak.toml" <<EOF

[[netns]]
name = "vss-h$i"

[[port]]
name = "vss-t$i"
type = "tap"
netns = "vss-h$i"
address = "10.78.0.$i/24"
EOF
done
cat >>"$WORK/soak.toml" <<EOF

[[port]]
name = "vss-come-go"
type = "netdev"
device = "vss-c5"
EOF

make_h5() {
  ip -n vss-sw link add vss-c5 type veth peer name h5 netns vss-h5
  ip -n vss-sw link set vss-c5 up
  ip -n vss-h5 addr add 10.78.0.5/24 dev h5 2>/dev/null || true
  ip -n vss-h5 link set h5 up
  ip -n vss-h5 link set lo up
}
make_h5
# nsenter, not `ip netns exec`: that one gives the daemon a mount namespace of its own, and the
# namespaces vswitchd creates (bind mounts under /run/netns) would be invisible out here.
nsenter --net=/run/netns/vss-sw "$VSWITCHD" --config "$WORK/soak.toml" --socket "$SOCK" --log-level warn >"$WORK/vswitchd.log" 2>&1 &
VS_PID=$!
for _ in $(seq 1 100); do "$VSWITCHCTL" --socket "$SOCK" show >/dev/null 2>&1 && break; sleep 0.1; done

ip netns exec vss-h2 iperf3 -s -D -p 5201 >/dev/null
ip netns exec vss-h4 iperf3 -s -D -p 5202 >/dev/null
sleep 0.5
TRAFFIC=()
(while true; do ip netns exec vss-h1 iperf3 -c 10.78.0.2 -p 5201 -b 1G -t 60 >/dev/null 2>&1 || sleep 1; done) &
TRAFFIC+=($!)
(while true; do ip netns exec vss-h3 iperf3 -c 10.78.0.4 -p 5202 -u -l 64 -b 20M -t 60 >/dev/null 2>&1 || sleep 1; done) &
TRAFFIC+=($!)
(ip netns exec vss-h4 ping -b -q -i 0.01 10.78.0.255 >/dev/null 2>&1 || true) &
TRAFFIC+=($!)
(while true; do ip netns exec vss-h5 ping -q -c 50 -i 0.2 10.78.0.1 >/dev/null 2>&1 || true; done) &
TRAFFIC+=($!)
stop_traffic() {
  for pid in "${TRAFFIC[@]}"; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  pkill -f "iperf3 -c 10.78.0" 2>/dev/null || true
  pkill -f "ping -b -q -i 0.01 10.78.0.255" 2>/dev/null || true
  pkill -f "iperf3 -s -D -p 520[12]" 2>/dev/null || true
}

sample() {
  local rss fds fdb fwd
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$VS_PID/status")
  fds=$(ls "/proc/$VS_PID/fd" | wc -l)
  fdb=$("$VSWITCHCTL" --socket "$SOCK" --json fdb show | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["entries"]))')
  fwd=$("$VSWITCHCTL" --socket "$SOCK" --json port show | python3 -c 'import json,sys; print(sum(p["tx_frames"] for p in json.load(sys.stdin)["ports"]))')
  echo "$1 $rss $fds $fdb $fwd"
}

echo "minute rss_kib fds fdb_entries frames_forwarded"
start=$(date +%s)
minute=0
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
  sleep 30
  # The netdev's interface goes away and comes back once a minute.
  ip -n vss-sw link del vss-c5 2>/dev/null || true
  sleep 2
  make_h5
  sleep 28
  kill -0 "$VS_PID" || { echo "vswitchd died"; tail -20 "$WORK/vswitchd.log"; exit 1; }
  minute=$((minute + 1))
  sample "$minute" | tee -a "$WORK/samples"
done

stop_traffic
sleep 2
echo "per-port accounting after the traffic stopped:"
"$VSWITCHCTL" --socket "$SOCK" --json port show | python3 -c '
import json, sys
ports = json.load(sys.stdin)["ports"]
rx = sum(p["rx_frames"] for p in ports); tx = sum(p["tx_frames"] for p in ports)
drops = sum(sum(p["drops"].values()) for p in ports)
for p in ports:
    name, r, t = p["name"], p["rx_frames"], p["tx_frames"]
    d = {k: v for k, v in p["drops"].items() if v}
    print(f"  {name:12} rx {r:>12} tx {t:>12} drops {d}")
print(f"  total rx {rx}, tx {tx}, drops {drops}: floods make tx exceed rx - drops; "
      f"rx - drops = {rx - drops} frames forwarded at least once")
'
python3 - "$WORK/samples" <<'EOF'
import sys
rows = [list(map(int, line.split())) for line in open(sys.argv[1])]
base = rows[min(1, len(rows) - 1)]
last = rows[-1]
print(f"RSS {base[1]} KiB at minute {base[0]} -> {last[1]} KiB at minute {last[0]}; "
      f"fds {base[2]} -> {last[2]}; max RSS {max(r[1] for r in rows)} KiB")
flat = last[1] <= base[1] * 1.1 + 1024 and last[2] == base[2]
print("flat" if flat else "NOT FLAT")
sys.exit(0 if flat else 1)
EOF
"$VSWITCHCTL" --socket "$SOCK" show >/dev/null
kill -TERM "$VS_PID"
wait "$VS_PID"
echo "vswitchd stopped cleanly"
