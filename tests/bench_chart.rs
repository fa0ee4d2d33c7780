//! `benches/chart.py`, the benchmark chart: run on fixture tables, its SVG must parse as XML
//! (Python's own parser reads it back) and hold one bar per setup and metric with the ratio to
//! the kernel bridge; a malformed table exits 2 naming file and line; and the chart shown in
//! docs/benchmarks.md is the one the script draws from the figures it was made from.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python() -> Command {
    Command::new("python3")
}

/// Runs the chart script on `table`: exit code, SVG (stdout), stderr.
fn chart(table: &Path) -> (i32, String, String) {
    let out = python()
        .arg(root().join("benches/chart.py"))
        .arg(table)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): the chart script needs the Debian package python3"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses `svg` with Python's XML parser and returns its bars as (metric, setup, ratio), in
/// document order; panics if it is not well-formed XML or not an SVG.
fn bars(svg: &str) -> Vec<(String, String, String)> {
    let dir = scratch();
    let path = dir.join("chart.svg");
    std::fs::write(&path, svg).unwrap();
    let script = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
for r in root.iter("{http://www.w3.org/2000/svg}rect"):
    if r.get("class") == "bar":
        assert float(r.get("width")) > 0
        print(r.get("data-metric"), r.get("data-setup"), r.get("data-ratio"), sep="\t")
"#;
    let out = python().arg("-c").arg(script).arg(&path).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "the SVG does not parse: {}\n{svg}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            (cells[0].to_string(), cells[1].to_string(), cells[2].to_string())
        })
        .collect()
}

fn scratch() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vswitchd-chart-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bar<'a>(all: &'a [(String, String, String)], metric: &str, setup: &str) -> Option<&'a str> {
    all.iter().find(|(m, s, _)| m == metric && s == setup).map(|(_, _, r)| r.as_str())
}

#[test]
fn a_table_becomes_one_bar_per_setup_and_metric_with_its_ratio() {
    let dir = scratch();
    let table = dir.join("results.tsv");
    std::fs::write(
        &table,
        "# title: a <fixture> & its \"peers\"\n\
         kernel\ttcp_gbps\t10\nvs-tap\ttcp_gbps\t9.9\novs-tap\ttcp_gbps\t1.3\nvde\ttcp_gbps\t2\n\
         kernel\trtt_ms\t0.08\nvs-tap\trtt_ms\t0.14\n\
         vs-tap\tudp64_rx_pps\t100000\n\
         vs-tap\tcpu_sec_per_gbit\t0.04\novs-tap\tcpu_sec_per_gbit\t0.6\n\
         vxlan-kernel\tvxlan_rev_gbps\t11.31\nvxlan-vs\tvxlan_rev_gbps\t12.43\n\
         my<switch>\ttcp_gbps\t5\n",
    )
    .unwrap();
    let (code, svg, err) = chart(&table);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0, "{err}");
    let all = bars(&svg);
    assert_eq!(
        all,
        [
            ("TCP, 1 stream", "vs-tap", "0.99"),
            ("TCP, 1 stream", "ovs-tap", "0.13"),
            ("TCP, 1 stream", "vde", "0.20"),
            ("TCP, 1 stream", "my<switch>", "0.50"),
            ("ping RTT (lower is better)", "vs-tap", "1.75"),
            ("VXLAN TCP h2 → h1 (vs. kernel VTEPs)", "vxlan-vs", "1.10"),
        ]
        .map(|(m, s, r)| (m.to_string(), s.to_string(), r.to_string())),
        "UDP has no kernel figure and CPU time no reference: neither is drawn\n{svg}"
    );
    assert!(svg.contains("a &lt;fixture&gt; &amp; its \"peers\""), "the title is escaped: {svg}");
    assert!(svg.contains("kernel bridge = 1"), "{svg}");
}

#[test]
fn a_malformed_table_exits_2_naming_file_and_line() {
    let dir = scratch();
    for (text, line, what) in [
        ("kernel\ttcp_gbps\t10\nvs-tap tcp_gbps 9\n", 2, "SETUP<TAB>METRIC<TAB>VALUE"),
        ("# c\nkernel\ttcp_gbps\tfast\n", 2, "not a number"),
        ("kernel\ttcp_gbps\t10\n\nvs-tap\ttcp_gbps\tnan\n", 3, "finite"),
        ("kernel\ttcp_gbps\t10\n", 0, "nothing to draw"),
    ] {
        let table = dir.join("bad.tsv");
        std::fs::write(&table, text).unwrap();
        let (code, svg, err) = chart(&table);
        assert_eq!(code, 2, "{text:?}: {err}");
        assert!(svg.is_empty(), "{text:?}: {svg}");
        assert!(err.contains(what), "{text:?}: {err}");
        if line > 0 {
            assert!(err.contains(&format!("{}:{line}:", table.display())), "{text:?}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_chart_in_the_docs_is_drawn_from_the_documented_figures() {
    let (code, svg, err) = chart(&root().join("benches/fixtures/compare-2026-11-30e.tsv"));
    assert_eq!(code, 0, "{err}");
    let all = bars(&svg);
    // Five metrics of nine setups (the bare veth pair among them), the bystander row without
    // the veth pair, and the two VXLAN directions of two setups (vswitchd toward and from the
    // kernel's VTEP, vswitchd at both ends): the table's ratios.
    assert_eq!(all.len(), 5 * 9 + 8 + 2 * 2, "{all:?}");
    for (metric, setup, ratio) in [
        ("TCP, 1 stream", "vs-tap", "0.61"),
        ("TCP, 1 stream", "ovs-tso", "0.69"),
        ("UDP 64 B received", "vs-tap", "0.40"),
        ("UDP 64 B received", "ovs-tap", "0.44"),
        ("ping RTT (lower is better)", "vs-tap", "1.62"),
        ("ping RTT (lower is better)", "vs-sleep", "2.71"),
        ("64 B line-rate flood forwarded", "vs-tap", "0.67"),
        ("bystander RTT in the flood", "vs-tap", "6.50"),
        ("VXLAN TCP h1 → h2 (vs. kernel VTEPs)", "vxlan-vs", "0.59"),
        ("VXLAN TCP h2 → h1 (vs. kernel VTEPs)", "vxlan-vs", "0.75"),
        ("VXLAN TCP h1 → h2 (vs. kernel VTEPs)", "vxlan-vs2", "0.35"),
    ] {
        assert_eq!(bar(&all, metric, setup), Some(ratio), "{metric} {setup}: {all:?}");
    }
    // The axis ends at 3: a longer bar is cut there (and its text says so), never wider.
    assert!(svg.contains("6.50 ▸"), "the cut bar is marked");
    let shown = std::fs::read_to_string(root().join("docs/bench-ratios.svg")).unwrap();
    assert!(
        shown == svg,
        "docs/bench-ratios.svg is stale: benches/chart.py benches/fixtures/compare-2026-11-30e.tsv -o docs/bench-ratios.svg"
    );
}
