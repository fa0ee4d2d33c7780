#!/usr/bin/env bash
# A real VM through vswitchd, side by side with the kernel bridge, in one run: a QEMU guest
# (tests/vm's Debian kernel + busybox, under TCG) and a host namespace (vmb-h, 10.79.0.2,
# behind a veth pair) joined by
#   kernel      the Linux bridge; QEMU's TAP (vhost=on when /dev/vhost-net exists) on it — the
#               reference for ratios
#   vs-tap      vswitchd: the same QEMU TAP as a `netdev` port, the host on a `veth` port
#   vs-stream   vswitchd `socket` port, QEMU -netdev stream (unix, 4-byte length + frame)
#   vs-dgram    vswitchd `socket` port, QEMU -netdev dgram (unix, a frame per datagram)
#   vs-vhost    vswitchd `vhost-user` port (server), QEMU the vhost-user client, MSI-X off
# Setups this vswitchd does not have yet (its `--check` refuses the port) are skipped and
# named in the output. Measured, the guest booted once per setup: guest-to-host TCP
# throughput (the host downloads an all-zero file of MIB MiB from the guest's busybox httpd,
# REPS times; median, Mbit/s) and round-trip time (the host pings the guest PINGS times,
# 0.05 s apart; median, ms). The guest runs under TCG (software emulation), so its figures are
# far below a KVM guest's and mostly measure the emulated guest; the ratios say what the switch
# in between costs.
#
# Usage (as root):  benches/vm.sh              REPS=5 MIB=128 benches/vm.sh
#                   ONLY="kernel vs-tap" benches/vm.sh            (a subset)
# Builds vswitchd in release mode and the guest (tests/vm/build-guest.sh, cached in
# /tmp/vswitchd-vm); installs qemu-system-x86 and iputils-ping if missing. Everything runs in
# namespaces it creates (vmb-sw, vmb-h) and is removed on exit.
set -euo pipefail

REPS=${REPS:-5}
MIB=${MIB:-64}
PINGS=${PINGS:-40}
ONLY=${ONLY:-kernel vs-tap vs-stream vs-dgram vs-vhost}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/vswitchd-vmbench.XXXXXX)
GUEST=10.79.0.1
HOST=10.79.0.2
NAMESPACES=(vmb-sw vmb-h)

[ "$(id -u)" = 0 ] || { echo "vm.sh: run as root (it creates namespaces and devices)" >&2; exit 2; }
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v ping >/dev/null || need+=(iputils-ping)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "building vswitchd (release)" >&2
cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p vswitchd-control
VSWITCHD="$TARGET/release/vswitchd"
VSWITCHCTL="$TARGET/release/vswitchctl"
echo "building the guest (tests/vm/build-guest.sh)" >&2
IMAGE=$(sh "$ROOT/tests/vm/build-guest.sh" | tail -n 1)
TAP_OPTIONS=""
TAP_NOTE="QEMU's TAP without vhost (no /dev/vhost-net)"
if [ -e /dev/vhost-net ]; then TAP_OPTIONS=",vhost=on"; TAP_NOTE="QEMU's TAP with vhost=on"; fi

cleanup_setup() {
  for pid in $(cat "$WORK/pids" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $(cat "$WORK/pids" 2>/dev/null); do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  : > "$WORK/pids"
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
cleanup() {
  cleanup_setup
  rm -rf "$WORK"
}
trap cleanup EXIT
: > "$WORK/pids"

fresh_namespaces() {
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" link set lo up; done
}

boot_guest() { # NETDEV NIC_OPTIONS [more QEMU arguments]: QEMU in vmb-sw, console in $WORK/console
  local netdev=$1 nic=$2 bios=()
  shift 2
  [ -e /usr/share/qemu/qboot.rom ] && bios=(-bios /usr/share/qemu/qboot.rom)
  ip netns exec vmb-sw qemu-system-x86_64 "${bios[@]}" -accel tcg -machine pc -cpu max -m 256 -smp 1 \
    -nodefaults -no-user-config -display none -no-reboot -serial stdio \
    -kernel "$IMAGE/vmlinux" -initrd "$IMAGE/initramfs.cpio" \
    -append "console=ttyS0 quiet panic=-1 vm.ip=$GUEST/24 vm.peer=$HOST vm.zero=$MIB vm.hold=900" \
    -netdev "$netdev,id=n0" -device "virtio-net-pci,netdev=n0,mac=52:54:00:79:00:01$nic" "$@" \
    </dev/null >"$WORK/console" 2>&1 &
  GUEST_PID=$!
  echo $GUEST_PID >> "$WORK/pids"
}

bring_up_tap() { # NAME [BRIDGE]: QEMU made the TAP (script=no): bring it up, on BRIDGE if given
  for _ in $(seq 200); do ip -n vmb-sw link show "$1" >/dev/null 2>&1 && break; sleep 0.05; done
  [ -n "${2:-}" ] && ip -n vmb-sw link set "$1" master "$2"
  ip -n vmb-sw link set "$1" up
}

wait_guest() { # the guest pinged the host (VMTEST PASS), or fail with its console
  for _ in $(seq 900); do
    grep -q "VMTEST PASS" "$WORK/console" && return 0
    grep -q "VMTEST FAIL" "$WORK/console" && break
    kill -0 "$GUEST_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "vm.sh: the guest did not reach the host; its console:" >&2
  cat "$WORK/console" >&2
  exit 1
}

topology() { # the host's veth port, then the guest's [[port]] table from stdin
  cat > "$WORK/topology.toml" <<TOPOLOGY
[bridge]
name = "vmbench"
[[netns]]
name = "vmb-h"
[[port]]
name = "eth0"
type = "veth"
netns = "vmb-h"
peer = "hp"
address = "$HOST/24"
TOPOLOGY
  cat >> "$WORK/topology.toml"
}

supported() { # whether this vswitchd accepts $WORK/topology.toml; else SKIP_REASON says why
  "$VSWITCHD" --check --config "$WORK/topology.toml" >"$WORK/check" 2>&1 && return 0
  SKIP_REASON=$( (grep -m1 -iE "unknown|error|invalid" "$WORK/check" || head -n1 "$WORK/check") | sed "s/, expected one of.*//")
  return 1
}

start_vswitchd() {
  ip netns exec vmb-sw "$VSWITCHD" --config "$WORK/topology.toml" --socket "$WORK/ctl.sock" --log-level error &
  echo $! >> "$WORK/pids"
  for _ in $(seq 100); do "$VSWITCHCTL" --socket "$WORK/ctl.sock" show >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "vm.sh: vswitchd did not start" >&2
  exit 1
}

setup_kernel() {
  fresh_namespaces
  ip -n vmb-sw link add br0 type bridge
  ip link add eth0 netns vmb-h type veth peer name hp netns vmb-sw
  ip -n vmb-sw link set hp master br0
  ip -n vmb-sw link set hp up
  ip -n vmb-sw link set br0 up
  ip -n vmb-h addr add $HOST/24 dev eth0
  ip -n vmb-h link set eth0 up
  boot_guest "tap,ifname=vmbt0,script=no,downscript=no$TAP_OPTIONS" ""
  bring_up_tap vmbt0 br0
}

# port_NAME prints the guest's [[port]] table for setup NAME; setup_NAME builds the setup.
port_vs-tap() { printf '[[port]]\nname = "vm0"\ntype = "netdev"\ndevice = "vmbt0"\n'; }
setup_vs-tap() {
  fresh_namespaces
  start_vswitchd
  boot_guest "tap,ifname=vmbt0,script=no,downscript=no$TAP_OPTIONS" ""
  bring_up_tap vmbt0
}

port_vs-stream() { printf '[[port]]\nname = "vm0"\ntype = "socket"\npath = "%s"\nframing = "stream"\n' "$WORK/vm0.sock"; }
setup_vs-stream() {
  fresh_namespaces
  start_vswitchd
  boot_guest "stream,addr.type=unix,addr.path=$WORK/vm0.sock,server=off" ""
}

port_vs-dgram() { printf '[[port]]\nname = "vm0"\ntype = "socket"\npath = "%s"\nframing = "dgram"\n' "$WORK/vm0.sock"; }
setup_vs-dgram() {
  fresh_namespaces
  start_vswitchd
  boot_guest "dgram,local.type=unix,local.path=$WORK/qemu0.sock,remote.type=unix,remote.path=$WORK/vm0.sock" ""
}

port_vs-vhost() { printf '[[port]]\nname = "vm0"\ntype = "vhost-user"\nsocket = "%s"\nserver = true\n' "$WORK/vm0.vhost"; }
setup_vs-vhost() {
  fresh_namespaces
  start_vswitchd
  boot_guest "vhost-user,chardev=c0" ",vectors=0" -chardev "socket,id=c0,path=$WORK/vm0.vhost" \
    -object memory-backend-memfd,id=m0,size=256M,share=on -numa node,memdev=m0
}

cat > "$WORK/get.py" <<'GET'
import sys, time, urllib.request
url, want = sys.argv[1], int(sys.argv[2])
start = time.monotonic()
with urllib.request.urlopen(url, timeout=60) as response:
    got = 0
    while chunk := response.read(1 << 20):
        got += len(chunk)
elapsed = time.monotonic() - start
if got != want:
    sys.exit(f"vm.sh: {got} bytes of {want} from {url}")
print(f"{got * 8 / elapsed / 1e6:.1f}")
GET

record() { echo "$1 $2 $3" >> "$WORK/results"; }

measure() { # NAME
  local name=$1
  ip netns exec vmb-h ping -c 3 -i 0.1 -q $GUEST >/dev/null || true
  for t in $(ip netns exec vmb-h ping -c "$PINGS" -i 0.05 $GUEST | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p'); do
    record "$name" rtt_ms "$t"
  done
  for _ in $(seq "$REPS"); do
    record "$name" tcp_mbps "$(ip netns exec vmb-h python3 "$WORK/get.py" "http://$GUEST:8080/zero" $((MIB << 20)))"
  done
}

read -r -a SETUPS <<< "$ONLY"
: > "$WORK/results"
: > "$WORK/skipped"
for setup in "${SETUPS[@]}"; do
  echo "$setup" >&2
  if [ "$setup" != kernel ]; then
    "port_$setup" | topology
    if ! supported; then
      echo "$setup: skipped, this vswitchd refuses the port: $SKIP_REASON" | tee -a "$WORK/skipped" >&2
      continue
    fi
  fi
  "setup_$setup"
  wait_guest
  measure "$setup"
  cleanup_setup
done

echo
echo "guest: Debian $(cat "$IMAGE/kernel-package" 2>/dev/null), busybox, QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}') TCG, 1 vCPU; $TAP_NOTE"
cat "$WORK/skipped"
python3 - "$WORK/results" "$REPS" "$MIB" "$PINGS" "${SETUPS[@]}" <<'REPORT'
import statistics, sys
path, reps, mib, pings, setups = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
data = {}
for line in open(path):
    name, metric, value = line.split()
    data.setdefault((name, metric), []).append(float(value))
setups = [s for s in setups if any(n == s for n, _ in data)]
med = lambda n, m: statistics.median(data[(n, m)]) if (n, m) in data else None
print(f"guest -> host TCP: median of {reps} downloads of {mib} MiB; RTT: median of {pings} pings host -> guest")
print("ratio = value / kernel bridge\n")
print(f"{'':<28}" + "".join(f"{s:>18}" for s in setups))
for metric, label, fmt in [("tcp_mbps", "guest->host TCP (Mbit/s)", "{:.0f}"), ("rtt_ms", "RTT host<->guest (ms)", "{:.3f}")]:
    k = med("kernel", metric)
    cells = []
    for s in setups:
        v = med(s, metric)
        if v is None:
            cells.append(f"{'-':>18}")
        elif k and s != "kernel":
            cells.append(f"{fmt.format(v) + f' ({v / k:.2f})':>18}")
        else:
            cells.append(f"{fmt.format(v):>18}")
    print(f"{label:<28}" + "".join(cells))
for s in setups:
    if s != "kernel" and med("kernel", "rtt_ms") is not None:
        print(f"added latency over the kernel bridge, {s}: {(med(s, 'rtt_ms') - med('kernel', 'rtt_ms')) * 1000:.0f} us")
REPORT
