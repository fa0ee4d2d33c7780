#!/usr/bin/env bash
# vswitchd's CPU cost per frame and per byte, for TAP and veth ports, and the cores it would
# need for 10, 25 and 100 Gbit/s of 64-byte and 1500-byte traffic.
#
# Two runs of benches/compare.sh on vs-tap and vs-veth: a line-rate trafgen flood of 64-byte
# frames (60 bytes + FCS), then the full rows with a flood of 1514-byte frames (a 1500-byte IP
# packet) and a TCP stream (TSO super-frames). For each, vswitchd's own CPU (utime + stime
# from /proc/PID/stat, which includes the kernel work done inside its read and write calls:
# the copies, and the receiving host's stack run inside the write) is divided by the frames
# it delivered. The per-frame cost at the two sizes gives the model
#     cost(L) = F + B * L   (microseconds; L the frame's bytes without FCS)
# and cores(R Gbit/s, L) = R * 1e9 / ((L + 24) * 8) * cost(L) / 1e6 (24: FCS, preamble, gap).
#
# Usage (as root):  benches/cost.sh          REPS=3 (median of 3 runs each; default 3)
# Writes $OUT/cost.tsv (OUT defaults to target/bench/cost) and prints the model.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/bench/cost}
REPS=${REPS:-3}
mkdir -p "$OUT/small" "$OUT/full"
export REPS VXLAN=0 ONLY="${ONLY:-vs-tap vs-veth}"
FLOOD_ONLY=1 FLOOD_LEN=60 OUT="$OUT/small" "$ROOT/benches/compare.sh"
FLOOD_LEN=1514 OUT="$OUT/full" "$ROOT/benches/compare.sh"

python3 - "$OUT/small/compare.tsv" "$OUT/full/compare.tsv" "$OUT/cost.tsv" $ONLY <<'MODEL'
import sys
small, full, tsv, setups = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def read(path):
    d = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        s, m, v = line.split("\t")
        d[(s, m)] = float(v)
    return d
a, b = read(small), read(full)
rates = [10, 25, 100]
out = open(tsv, "w")
out.write("# benches/cost.sh: SETUP METRIC VALUE (us per frame, ns per byte, cores)\n")
print("\nvswitchd's CPU (user + system, its own process) per frame delivered under a line-rate flood")
for s in setups:
    c64, c1514 = a.get((s, "flood_cpu_us_per_frame")), b.get((s, "flood_cpu_us_per_frame"))
    fwd64, fwd1514 = a.get((s, "flood_fwd_pps")), b.get((s, "flood_fwd_pps"))
    tcp = b.get((s, "cpu_sec_per_gbit"))
    if c64 is None or c1514 is None:
        print(f"{s}: no flood figures"); continue
    per_byte = (c1514 - c64) / (1514 - 60)          # us per byte
    per_frame = c64 - 60 * per_byte                  # us per frame of no bytes
    cost = lambda L: per_frame + per_byte * L        # noqa: E731
    for k, v in [("us_per_frame_64", c64), ("us_per_frame_1514", c1514), ("fixed_us_per_frame", per_frame),
                 ("ns_per_byte", per_byte * 1000), ("fwd_pps_64", fwd64), ("fwd_pps_1514", fwd1514)]:
        out.write(f"{s}\t{k}\t{v}\n")
    print(f"\n{s}: {c64:.2f} us per 64-byte frame (flood forwarded {fwd64:,.0f}/s), "
          f"{c1514:.2f} us per 1514-byte frame ({fwd1514:,.0f}/s)")
    print(f"  model: cost(L) = {per_frame:.2f} us + {per_byte * 1000:.3f} ns x L bytes")
    if tcp is not None:
        print(f"  TCP with TSO super-frames: {tcp:.3f} CPU-s per Gbit = {tcp / 0.125:.2f} ns per byte")
        out.write(f"{s}\ttcp_tso_ns_per_byte\t{tcp / 0.125}\n")
    for label, L in [("64-byte", 60), ("1500-byte", 1514)]:
        cells = []
        for r in rates:
            fps = r * 1e9 / ((L + 24) * 8)
            cores = fps * cost(L) / 1e6
            out.write(f"{s}\tcores_{r}g_{L}\t{cores}\n")
            cells.append(f"{r} Gbit/s {fps / 1e6:.2f} Mfr/s -> {cores:.1f} cores")
        print(f"  {label:<9} " + "; ".join(cells))
    if tcp is not None:
        print("  TCP, TSO  " + "; ".join(f"{r} Gbit/s -> {r * tcp:.1f} cores" for r in rates))
        for r in rates:
            out.write(f"{s}\tcores_{r}g_tso\t{r * tcp}\n")
out.close()
print(f"\nwritten to {tsv}")
MODEL
