//! Metrics end to end: the real vswitchd started with `--metrics 127.0.0.1:9477` inside a
//! namespace of the test's own (so the port is its loopback's alone), traffic between two host
//! namespaces, then `/metrics` scraped from a thread in that namespace and parsed with a real
//! Prometheus text-format parser, Python's `prometheus_client` (Debian: python3-prometheus-client),
//! and its values checked against `vswitchctl port show --json`; `vswitchctl metrics` parses
//! the same way; `vswitchctl top --count 2` prints rates for the ports.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use vswitchd_control::netns;

/// The Python the Debian package installs `prometheus_client` for.
const PYTHON: &str = "/usr/bin/python3";

/// Parses exposition text with `prometheus_client.parser` (it raises on any malformed line) and
/// prints every sample as JSON: `[name, labels, value, family type]`.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    if family.type not in ("counter", "gauge"):
        raise SystemExit("unexpected family type %r for %s" % (family.type, family.name))
    if not family.documentation:
        raise SystemExit("no HELP for %s" % family.name)
    for s in family.samples:
        out.append([s.name, s.labels, s.value, family.type])
print(json.dumps(out))
"#;

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
    kind: String,
}

/// Parses `text` with the real parser; panics with its complaint if it refuses the text.
fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (needs the Debian package python3-prometheus-client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, BTreeMap<String, String>, f64, String)> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter().map(|(name, labels, value, kind)| Sample { name, labels, value, kind }).collect()
}

/// The value of the sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?} matches {matching:?}");
    matching.first().map(|s| s.value)
}

#[test]
fn the_exposition_parses_with_prometheus_client_and_escaped_labels_round_trip() {
    let snapshot: vswitchd_control::metrics_text::MetricsSnapshot =
        serde_json::from_str(include_str!("fixtures/metrics_snapshot.json")).unwrap();
    let samples = parse(&vswitchd_control::metrics_text::exposition(&snapshot));
    let weird = "we\"ird\\port";
    assert_eq!(value(&samples, "vswitchd_port_drops_total", &[("port", weird), ("reason", "no_room")]), Some(7.0));
    assert_eq!(
        value(&samples, "vswitchd_port_info", &[("port", weird), ("netns", "line\nbreak"), ("type", "veth")]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "vswitchd_bond_member_active", &[("member", "m\"2")]), Some(0.0));
    assert_eq!(value(&samples, "vswitchd_fdb_learns_total", &[]), Some(17.0));
    assert_eq!(value(&samples, "vswitchd_build_info", &[("version", "0.1.0")]), Some(1.0));
    let kinds: BTreeMap<&str, &str> = samples.iter().map(|s| (s.name.as_str(), s.kind.as_str())).collect();
    assert_eq!(kinds["vswitchd_port_rx_frames_total"], "counter");
    assert_eq!(kinds["vswitchd_fdb_entries"], "gauge");
}

/// Sends `GET path` (or `method path`) to `127.0.0.1:port` from inside `netns_name`; returns
/// the status line, the headers and the body.
fn http(netns_name: &str, port: u16, method: &str, path: &str) -> (String, String, String) {
    http_try(netns_name, port, method, path).expect("an HTTP reply from the metrics port")
}

/// As [`http`]; `None` when nothing listens or the reply is not HTTP.
fn http_try(netns_name: &str, port: u16, method: &str, path: &str) -> Option<(String, String, String)> {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n");
    let reply = netns::run_in(netns_name, move || {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).ok()?;
        String::from_utf8(reply).ok()
    })
    .unwrap()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Some((status.to_string(), headers.to_ascii_lowercase(), body.to_string()))
}

fn port_counter(show: &serde_json::Value, port: &str, key: &str) -> u64 {
    let p = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == port).unwrap();
    p[key].as_u64().unwrap_or_else(|| p["drops"][key].as_u64().unwrap())
}

#[test]
fn scraped_metrics_parse_and_match_port_show_and_top_prints_rates() {
    with_tag(|tag| {
        let sw = format!("mt{tag}sw");
        let hosts = [format!("mt{tag}h1"), format!("mt{tag}h2")];
        let ports = [format!("m{tag}p1"), format!("m{tag}p2")];
        let ips = [Ipv4Addr::new(192, 168, 44, 1), Ipv4Addr::new(192, 168, 44, 2)];
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        for h in &hosts {
            guard.adopt(h);
        }
        ip(&["-n", &sw, "link", "set", "lo", "up"]);
        let mut topology = format!("[bridge]\nname = \"br{tag}\"\n\n");
        for i in 0..2 {
            topology.push_str(&format!(
                "[[netns]]\nname = \"{}\"\n\n[[port]]\nname = \"{}\"\ntype = \"tap\"\nnetns = \"{}\"\n\
                 address = \"{}/24\"\nmac = \"02:00:00:00:44:0{}\"\n\n",
                hosts[i],
                ports[i],
                hosts[i],
                ips[i],
                i + 1
            ));
        }
        let mut daemon = Daemon::start_with_args(&sw, &topology, "info", &["--metrics", "127.0.0.1:9477"]);

        // Traffic both ways, and frames dropped for a named reason: a multicast source MAC.
        assert_eq!(ping(&hosts[0], ips[1], 3, Duration::from_secs(2)), 3);
        assert_eq!(tcp_transfer(&hosts[1], ips[1], &hosts[0], 2 * 1024 * 1024), 2 * 1024 * 1024);
        let raw = RawPort::open(&hosts[0], &ports[0]);
        let mut bad = vec![0xffu8; 6];
        bad.extend_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x01, 0x08, 0x00]);
        bad.resize(60, 0);
        for _ in 0..5 {
            raw.send(&bad);
        }
        wait_for("the invalid source drops", Duration::from_secs(5), || {
            let show = daemon.ctl_json(&["port", "show"]).unwrap();
            (port_counter(&show, &ports[0], "invalid_source") >= 5).then_some(())
        });

        // Scrape between two `port show`s: every counter lies between the two.
        let before = daemon.ctl_json(&["port", "show"]).unwrap();
        let (status, headers, body) = http(&sw, 9477, "GET", "/metrics");
        let after = daemon.ctl_json(&["port", "show"]).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
        assert!(headers.contains("content-type: text/plain; version=0.0.4"), "{headers}");
        assert!(headers.contains(&format!("content-length: {}", body.len())), "{headers}");
        let samples = parse(&body);
        for port in &ports {
            for (metric, key) in [
                ("vswitchd_port_rx_frames_total", "rx_frames"),
                ("vswitchd_port_rx_bytes_total", "rx_bytes"),
                ("vswitchd_port_tx_frames_total", "tx_frames"),
                ("vswitchd_port_tx_bytes_total", "tx_bytes"),
            ] {
                let scraped = value(&samples, metric, &[("port", port)]).unwrap_or_else(|| panic!("{metric} {port}"));
                let (low, high) = (port_counter(&before, port, key), port_counter(&after, port, key));
                assert!(
                    low as f64 <= scraped && scraped <= high as f64,
                    "{metric}{{port={port}}} {scraped} not in {low}..={high}"
                );
            }
            // Every drop reason port show lists is a sample, with its value.
            let drops =
                after["ports"].as_array().unwrap().iter().find(|p| p["name"] == port.as_str()).unwrap()["drops"]
                    .as_object()
                    .unwrap()
                    .clone();
            for (reason, n) in drops {
                let scraped = value(&samples, "vswitchd_port_drops_total", &[("port", port), ("reason", &reason)])
                    .unwrap_or_else(|| panic!("drops {port} {reason}"));
                let low = port_counter(&before, port, &reason) as f64;
                assert!(low <= scraped && scraped <= n.as_u64().unwrap() as f64, "{port} {reason}: {scraped}");
            }
        }
        assert!(value(&samples, "vswitchd_port_rx_bytes_total", &[("port", &ports[0])]).unwrap() > 2e6);
        assert!(
            value(&samples, "vswitchd_port_drops_total", &[("port", &ports[0]), ("reason", "invalid_source")]).unwrap()
                >= 5.0
        );
        assert_eq!(value(&samples, "vswitchd_port_up", &[("port", &ports[1])]), Some(1.0));
        let show = daemon.ctl_json(&["show"]).unwrap();
        let learned = show["bridge"]["fdb_learned"].as_u64().unwrap() as f64;
        assert!(learned >= 2.0, "{show}");
        assert_eq!(value(&samples, "vswitchd_fdb_learns_total", &[]), Some(learned));
        assert_eq!(
            value(&samples, "vswitchd_fdb_entries", &[]),
            Some(show["bridge"]["fdb_entries"].as_u64().unwrap() as f64)
        );
        let workers: f64 =
            samples.iter().filter(|s| s.name == "vswitchd_worker_rx_frames_total").map(|s| s.value).sum();
        assert!(workers > 0.0);
        assert_eq!(value(&samples, "vswitchd_build_info", &[("bridge", &format!("br{tag}"))]), Some(1.0));
        assert_eq!(value(&samples, "vswitchd_stp_enabled", &[("mode", "off")]), Some(0.0));

        // The server answers only GET/HEAD /metrics.
        assert_eq!(http(&sw, 9477, "GET", "/").0, "HTTP/1.1 404 Not Found");
        assert_eq!(http(&sw, 9477, "POST", "/metrics").0, "HTTP/1.1 405 Method Not Allowed");
        let (status, headers, body) = http(&sw, 9477, "HEAD", "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.is_empty() && headers.contains("content-length: "), "{headers}");
        // A client that sends a head too long is told so and dropped; the server carries on.
        let long = netns::run_in(&sw, || {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, 9477)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)).as_bytes());
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            String::from_utf8_lossy(&reply).into_owned()
        })
        .unwrap();
        assert!(long.starts_with("HTTP/1.1 431"), "{long}");
        assert_eq!(http(&sw, 9477, "GET", "/metrics").0, "HTTP/1.1 200 OK");

        // `vswitchctl metrics` prints the same families, parsed by the same parser.
        let printed = parse(&daemon.ctl(&["metrics"]).unwrap());
        let names = |s: &[Sample]| s.iter().map(|s| s.name.clone()).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(names(&printed), names(&samples));
        let rx = value(&printed, "vswitchd_port_rx_frames_total", &[("port", &ports[0])]).unwrap();
        assert!(rx >= value(&samples, "vswitchd_port_rx_frames_total", &[("port", &ports[0])]).unwrap());

        // `top` while traffic flows: a block per interval, a row per port, rates > 0.
        let top = std::process::Command::new(VSWITCHCTL)
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["top", "--count", "2", "--interval", "0.5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (h1, h2, ip2) = (hosts[0].clone(), hosts[1].clone(), ips[1]);
        let traffic = std::thread::spawn(move || {
            for _ in 0..4 {
                tcp_transfer(&h2, ip2, &h1, 4 * 1024 * 1024);
            }
        });
        let out = top.wait_with_output().unwrap();
        traffic.join().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains('\x1b'), "escape codes when not on a terminal: {text:?}");
        let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.trim().is_empty()).collect();
        assert_eq!(blocks.len(), 2, "{text}");
        let mut busiest = 0.0f64;
        for block in &blocks {
            let lines: Vec<&str> = block.lines().collect();
            assert!(lines[0].starts_with(&format!("bridge br{tag}  interval ")), "{block}");
            assert!(lines[1].starts_with("PORT"), "{block}");
            for port in &ports {
                let row = lines.iter().find(|l| l.split_whitespace().next() == Some(port.as_str()));
                let cells: Vec<&str> =
                    row.unwrap_or_else(|| panic!("no row for {port}: {block}")).split_whitespace().collect();
                let rx_fps: f64 = cells[1].trim_end_matches(['k', 'M', 'G']).parse().unwrap();
                busiest = busiest.max(rx_fps);
            }
        }
        assert!(busiest > 0.0, "no traffic seen by top: {text}");

        assert!(daemon.log().contains("serving metrics"));

        // A takeover serves the metrics too, once the old process has let go of the address;
        // the counters carry over.
        let (old_status, old_log) = daemon.take_over_with_args(&sw, &["--metrics", "127.0.0.1:9477"]).unwrap();
        assert!(old_status.success(), "{old_log}");
        let rx_before = port_counter(&daemon.ctl_json(&["port", "show"]).unwrap(), &ports[0], "rx_frames");
        let scraped = wait_for("metrics from the new process", Duration::from_secs(10), || {
            let (status, _, body) = http_try(&sw, 9477, "GET", "/metrics")?;
            (status == "HTTP/1.1 200 OK").then_some(body)
        });
        let samples = parse(&scraped);
        assert!(value(&samples, "vswitchd_port_rx_frames_total", &[("port", &ports[0])]).unwrap() >= rx_before as f64);

        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "exit {status}: {stderr}");
        assert!(stderr.contains("serving metrics"), "{stderr}");
    });
}

#[test]
fn a_bad_metrics_address_exits_2_naming_the_option_before_anything_is_created() {
    let dir = std::env::temp_dir().join(format!("vswitchd-metrics-{}", unique_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("t.toml");
    std::fs::write(&config, "[bridge]\nname = \"brbadmetrics\"\n").unwrap();
    // 192.0.2.1 (TEST-NET-1) is no address of this machine: binding it fails, nothing is sent.
    for addr in ["nonsense", "127.0.0.1", "192.0.2.1:9477"] {
        let out = Command::new(VSWITCHD)
            .args(["--config", config.to_str().unwrap(), "--socket", dir.join("ctl").to_str().unwrap()])
            .args(["--metrics", addr])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{addr}: {stderr}");
        assert!(stderr.contains("--metrics"), "{addr}: {stderr}");
        assert!(!dir.join("ctl").exists());
    }
    let check = Command::new(VSWITCHD)
        .args(["--config", config.to_str().unwrap(), "--check", "--metrics", "127.0.0.1:9477"])
        .output()
        .unwrap();
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("metrics: http://127.0.0.1:9477/metrics"));
    let _ = std::fs::remove_dir_all(&dir);
}
