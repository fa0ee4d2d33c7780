#!/usr/bin/env python3
"""Draws benches/compare.sh's medians as an SVG horizontal bar chart of ratios to the kernel bridge.

Usage:  benches/chart.py RESULTS.tsv [-o CHART.svg] [--title TEXT]

RESULTS.tsv (written by compare.sh) holds one median a line, tab-separated: SETUP METRIC VALUE
(lines starting with '#' are comments; a '# title: TEXT' line titles the chart). Each metric
becomes a group of bars, one per setup that measured it, the bar's length its value divided by
the reference setup's (the kernel bridge; for the VXLAN metrics the kernel's own VTEP), with a
line at 1.0. A metric its reference did not measure is left out, as is CPU time (the kernel
bridge uses none of its own), and so are the flood's other figures (what h1 sent, the idle
bystander RTT, losses). Only the Python standard library is used; the output is the same
for the same input. A malformed line exits 2, naming file and line.
"""

import argparse
import math
import sys
from xml.sax.saxutils import escape, quoteattr

# Metric, label, reference setup: in drawing order.
METRICS = [
    ("tcp_gbps", "TCP, 1 stream", "kernel"),
    ("tcp4_gbps", "TCP, 4 streams", "kernel"),
    ("udp64_rx_pps", "UDP 64 B received", "kernel"),
    ("rtt_ms", "ping RTT (lower is better)", "kernel"),
    ("flood_fwd_pps", "64 B line-rate flood forwarded", "kernel"),
    ("bystander_flood_rtt_ms", "bystander RTT in the flood", "kernel"),
    ("vxlan_fwd_gbps", "VXLAN TCP h1 → h2 (vs. kernel VTEPs)", "vxlan-kernel"),
    ("vxlan_rev_gbps", "VXLAN TCP h2 → h1 (vs. kernel VTEPs)", "vxlan-kernel"),
]

# Setup, legend name, colour: in drawing order. vswitchd in blues, the peers in warm colours,
# the bare veth pair (the ceiling) in grey.
SETUPS = [
    ("veth", "bare veth pair (ceiling)", "#9e9e9e"),
    ("vs-tap", "vswitchd, TAP ports", "#1f5fa8"),
    ("vs-sleep", "vswitchd, TAP, never polls", "#a9c9ec"),
    ("vs-veth", "vswitchd, veth ports", "#4a8fd6"),
    ("vs-poll", "vswitchd, TAP, always polls", "#7fb2e5"),
    ("vs-tap2", "vswitchd, TAP, 2 threads", "#0d3a6e"),
    ("vxlan-vs", "vswitchd VTEP, kernel VTEP far end", "#1f5fa8"),
    ("vxlan-vs2", "vswitchd VTEPs at both ends", "#0d3a6e"),
    ("ovs-tap", "Open vSwitch userspace", "#d9822b"),
    ("ovs-tso", "Open vSwitch userspace + TSO", "#f2b05e"),
    ("vde", "vde_switch", "#b5443a"),
]
OTHER_COLOUR = "#6a6a6a"

WIDTH = 760
AXIS_CAP = 3.0  # the axis's end: ratios beyond it are drawn cut, with their value
LABEL_W = 200  # the left column: metric and setup names
PLOT_X = LABEL_W + 10
PLOT_W = WIDTH - PLOT_X - 60  # room on the right for the ratio text
BAR_H = 13
BAR_GAP = 3
GROUP_GAP = 16
TOP = 58


class BadInput(Exception):
    pass


def read_results(path):
    """Returns ({(setup, metric): value}, title, [setups in file order])."""
    values, title, order = {}, None, []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                if line.startswith("# title:"):
                    title = line[len("# title:"):].strip()
                continue
            cells = line.split("\t")
            if len(cells) != 3:
                raise BadInput(f"{path}:{number}: expected SETUP<TAB>METRIC<TAB>VALUE, got {line!r}")
            setup, metric, value = cells
            try:
                number_value = float(value)
            except ValueError:
                raise BadInput(f"{path}:{number}: value {value!r} is not a number") from None
            if not math.isfinite(number_value) or number_value < 0:
                raise BadInput(f"{path}:{number}: value {value!r} must be finite and not negative")
            values[(setup, metric)] = number_value
            if setup not in order:
                order.append(setup)
    return values, title, order


def groups(values, order):
    """[(label, reference, [(setup, ratio)])] for each metric its reference measured."""
    known = [s for s, _, _ in SETUPS]
    setups = known + sorted(s for s in order if s not in known)
    out = []
    for metric, label, reference in METRICS:
        ref = values.get((reference, metric))
        if not ref:
            continue
        bars = [(s, values[(s, metric)] / ref) for s in setups
                if s != reference and s not in ("kernel", "vxlan-kernel") and (s, metric) in values]
        if bars:
            out.append((label, reference, bars))
    return out


def fmt(x):
    return f"{x:.2f}"


def render(values, title, order):
    data = groups(values, order)
    if not data:
        raise BadInput("no metric has both the reference and another setup: nothing to draw")
    names = {s: n for s, n, _ in SETUPS}
    colours = {s: c for s, _, c in SETUPS}
    top_ratio = max(max(r for _, r in bars) for _, _, bars in data)
    # The axis stops at AXIS_CAP: one setup 15 times slower on one row would otherwise squash
    # every other bar to a sliver. Longer bars are cut there and marked.
    scale_max = min(max(1.0, math.ceil(top_ratio * 4) / 4), AXIS_CAP)
    x_of = lambda r: PLOT_X + PLOT_W * min(r, scale_max) / scale_max  # noqa: E731
    used = [s for s in [s for s, _, _ in SETUPS] + order if any(s == b for _, _, bars in data for b, _ in bars)]
    used = list(dict.fromkeys(used))
    legend_rows = math.ceil(len(used) / 3)
    plot_top = TOP + legend_rows * 18 + 10
    height_plot = sum(len(bars) * (BAR_H + BAR_GAP) + GROUP_GAP + 16 for _, _, bars in data)
    height = plot_top + height_plot + 30

    out = []
    w = out.append
    w('<?xml version="1.0" encoding="UTF-8"?>')
    w(f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
      f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="11">')
    w(f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>')
    w(f'<text x="{WIDTH / 2:g}" y="22" text-anchor="middle" font-size="14" font-weight="bold">'
      f'{escape(title or "Ratios to the kernel bridge")}</text>')
    w(f'<text x="{WIDTH / 2:g}" y="40" text-anchor="middle" fill="#444444">value / kernel bridge '
      f'(VXLAN: / the kernel\'s VTEP); right of the line is more, except for the RTTs</text>')
    for i, s in enumerate(used):
        lx, ly = 20 + (i % 3) * 245, TOP + (i // 3) * 18
        w(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colours.get(s, OTHER_COLOUR)}"/>')
        w(f'<text x="{lx + 17}" y="{ly + 10}">{escape(names.get(s, s))}</text>')
    # Grid and axis.
    bottom = plot_top + height_plot
    steps = int(round(scale_max / 0.25))
    for k in range(steps + 1):
        r = k * 0.25
        x = x_of(r)
        if k % 2 == 0 or steps <= 8:
            w(f'<line x1="{x:.1f}" y1="{plot_top}" x2="{x:.1f}" y2="{bottom}" stroke="#e4e4e4"/>')
            w(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#444444">{r:g}</text>')
    y = plot_top
    for label, reference, bars in data:
        w(f'<text x="{PLOT_X - 6}" y="{y + 11}" text-anchor="end" font-weight="bold">{escape(label)}</text>')
        y += 16
        for setup, ratio in bars:
            bw = max(x_of(ratio) - PLOT_X, 0.5)
            w(f'<text x="{PLOT_X - 6}" y="{y + BAR_H - 3}" text-anchor="end" fill="#333333">'
              f'{escape(names.get(setup, setup))}</text>')
            w(f'<rect class="bar" data-metric={quoteattr(label)} data-setup={quoteattr(setup)} '
              f'data-ratio="{fmt(ratio)}" x="{PLOT_X}" y="{y}" width="{bw:.1f}" height="{BAR_H}" '
              f'fill="{colours.get(setup, OTHER_COLOUR)}"><title>{escape(names.get(setup, setup))}: '
              f'{fmt(ratio)} × {escape(reference)}</title></rect>')
            if ratio > scale_max:  # cut at the axis's end: a white break, and the ratio after it
                w(f'<path d="M{PLOT_X + bw - 9:.1f},{y + BAR_H + 1} l5,-{BAR_H + 2} m2,0 l-5,{BAR_H + 2}" '
                  f'stroke="#ffffff" stroke-width="2" fill="none"/>')
                w(f'<text x="{PLOT_X + bw + 4:.1f}" y="{y + BAR_H - 3}">{fmt(ratio)} ▸</text>')
            else:
                w(f'<text x="{PLOT_X + bw + 4:.1f}" y="{y + BAR_H - 3}">{fmt(ratio)}</text>')
            y += BAR_H + BAR_GAP
        y += GROUP_GAP
    one = x_of(1.0)
    w(f'<line x1="{one:.1f}" y1="{plot_top - 4}" x2="{one:.1f}" y2="{bottom}" stroke="#000000" '
      f'stroke-dasharray="4,3"/>')
    w(f'<text x="{one:.1f}" y="{bottom + 26}" text-anchor="middle">kernel bridge = 1</text>')
    w('</svg>')
    return "\n".join(out) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(description="benches/compare.sh results as an SVG bar chart of ratios")
    parser.add_argument("results", help="the TSV compare.sh writes (SETUP METRIC VALUE a line)")
    parser.add_argument("-o", "--output", help="the SVG to write (default: standard output)")
    parser.add_argument("--title", help="the chart's title (default: the file's '# title:' line)")
    args = parser.parse_args(argv)
    try:
        values, title, order = read_results(args.results)
        svg = render(values, args.title or title, order)
    except (BadInput, OSError) as e:
        print(f"chart.py: {e}", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(svg)
    else:
        sys.stdout.write(svg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
