//! The CNI plugin `vswitchd-cni` end to end: driven directly as a runtime drives it
//! (`CNI_COMMAND` and friends, a configuration on stdin, host-local IPAM from
//! containernetworking-plugins) against a running vswitchd, and under podman with its CNI
//! backend, containers from a local busybox image on vswitchd networks. vswitchd, the plugin's
//! host side and podman all run in a namespace the test creates, so nothing lands in the root
//! namespace.

mod support;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use vswitchd_control::netns;

const CNI: &str = env!("CARGO_BIN_EXE_vswitchd-cni");
/// Where Debian's containernetworking-plugins puts host-local.
const CNI_PLUGINS: &str = "/usr/lib/cni";
const SECOND: Duration = Duration::from_secs(1);

/// A directory the test writes (IPAM leases, podman's state), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str, what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vswitchd-cni-{what}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails with a clear message when a program or file the CNI tests need is missing.
fn require(paths: &[&str], packages: &str) {
    let missing: Vec<&&str> = paths.iter().filter(|p| !Path::new(p).exists()).collect();
    assert!(missing.is_empty(), "the CNI tests need {missing:?}: install {packages} (apt-get install {packages})");
}

/// What the plugin did: exit code and stdout as JSON (`Null` when empty).
#[derive(Debug)]
struct Outcome {
    code: i32,
    out: Value,
    stderr: String,
}

/// Runs the plugin inside namespace `host_ns` (vswitchd's), as a runtime does: `command`,
/// the attachment `(container id, netns, ifname)` if any, `config` on stdin.
fn cni(host_ns: &str, command: &str, attachment: Option<(&str, &str, &str)>, config: &Value) -> Outcome {
    let mut process = Command::new(CNI);
    process
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", CNI_PLUGINS)
        .env_remove("CNI_CONTAINERID")
        .env_remove("CNI_NETNS")
        .env_remove("CNI_IFNAME")
        .env_remove("CNI_ARGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The namespace is a name under /run/netns, a path, or "" for none (DEL may come without).
    if let Some((id, ns, ifname)) = attachment {
        process.env("CNI_CONTAINERID", id).env("CNI_IFNAME", ifname);
        if ns.starts_with('/') {
            process.env("CNI_NETNS", ns);
        } else if !ns.is_empty() {
            process.env("CNI_NETNS", netns::path(ns));
        }
    }
    let mut child = netns::run_in(host_ns, move || process.spawn()).unwrap().expect("run vswitchd-cni");
    child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
    let output = wait_bounded(child, 30 * SECOND, "vswitchd-cni");
    let text = String::from_utf8_lossy(&output.stdout);
    let out = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{command}: stdout is not JSON ({e}): {text}"))
    };
    Outcome { code: output.status.code().unwrap_or(-1), out, stderr: String::from_utf8_lossy(&output.stderr).into() }
}

/// Waits for `child` at most `limit`, killing it after that; its output.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

/// Succeeds, or panics with what the plugin said.
fn cni_ok(host_ns: &str, command: &str, attachment: Option<(&str, &str, &str)>, config: &Value) -> Value {
    let outcome = cni(host_ns, command, attachment, config);
    assert_eq!(outcome.code, 0, "{command} {attachment:?} failed: {}\n{}", outcome.out, outcome.stderr);
    outcome.out
}

/// A network configuration on the bridge at `socket`.
fn network(name: &str, bridge: &str, socket: &Path, vlan: u16, is_gateway: bool, ipam: Value) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "vswitchd-cni",
        "bridge": bridge,
        "socket": socket,
        "vlan": vlan,
        "isGateway": is_gateway,
        "ipMasq": false,
        "mtu": 1500,
        "ipam": ipam
    })
}

/// The container address in an ADD result.
fn address_of(result: &Value) -> Ipv4Addr {
    let cidr = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no address in {result}"));
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// The names of the bridge's ports.
fn ports(daemon: &Daemon) -> Vec<String> {
    let show = daemon.ctl_json(&["show"]).unwrap();
    show["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}

/// The host interface the plugin made for an ADD result (its first interface).
fn host_end(result: &Value) -> String {
    result["interfaces"][0]["name"].as_str().unwrap().to_string()
}

/// The leases host-local holds for `network` in its data directory `dir` (files named after
/// addresses, in a directory named after the network).
fn leases(dir: &Path, network: &Value) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join(network["name"].as_str().unwrap())) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.parse::<Ipv4Addr>().is_ok())
        .collect();
    names.sort();
    names
}

#[test]
fn the_plugin_attaches_checks_and_detaches_containers() {
    require(&[CNI_PLUGINS, "/usr/lib/cni/host-local"], "containernetworking-plugins");
    with_tag(|tag| {
        let (sw, c1, c2, c3) = (format!("cn{tag}sw"), format!("cn{tag}c1"), format!("cn{tag}c2"), format!("cn{tag}c3"));
        let mut guard = NamespaceGuard::default();
        for ns in [&sw, &c1, &c2, &c3] {
            guard.create(ns);
        }
        let gw = format!("g{tag}");
        let mut daemon = Daemon::start(
            &sw,
            &format!(
                "[bridge]\nname = \"cn{tag}\"\n\
                 [[port]]\nname = \"{gw}\"\ntype = \"internal\"\naddress = \"10.77.0.1/24\"\nvlan = 10\n"
            ),
        );
        let leases_a = TempDir::new(tag, "a");
        let leases_b = TempDir::new(tag, "b");
        let ipam = |dir: &TempDir, start: &str| {
            json!({"type": "host-local", "subnet": "10.77.0.0/24", "rangeStart": start,
                   "routes": [{"dst": "0.0.0.0/0"}], "dataDir": dir.0})
        };
        // Two networks on one subnet, told apart only by their VLANs: if VLANs leaked, the
        // third container would reach the first.
        let net_a =
            network(&format!("cna{tag}"), &format!("cn{tag}"), &daemon.socket, 10, true, ipam(&leases_a, "10.77.0.10"));
        let net_b = network(
            &format!("cnb{tag}"),
            &format!("cn{tag}"),
            &daemon.socket,
            20,
            false,
            ipam(&leases_b, "10.77.0.100"),
        );

        let version = cni_ok(&sw, "VERSION", None, &json!({"cniVersion": "1.0.0"}));
        assert_eq!(version, json!({"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]}));
        assert_eq!(cni_ok(&sw, "STATUS", None, &net_a), Value::Null, "STATUS prints nothing on success");

        let r1 = cni_ok(&sw, "ADD", Some(("ctr-1", &c1, "eth0")), &net_a);
        let r2 = cni_ok(&sw, "ADD", Some(("ctr-2", &c2, "eth0")), &net_a);
        let r3 = cni_ok(&sw, "ADD", Some(("ctr-3", &c3, "eth0")), &net_b);
        // The result: host end, then the container's interface with its namespace; the
        // address on the container's interface; IPAM's routes.
        assert_eq!(r1["cniVersion"], "1.0.0");
        assert_eq!(r1["interfaces"][1]["name"], "eth0");
        assert_eq!(r1["interfaces"][1]["sandbox"], netns::path(&c1).display().to_string());
        assert!(r1["interfaces"][0].get("sandbox").is_none(), "{r1}");
        assert_eq!(r1["ips"][0]["interface"], 1);
        assert_eq!(r1["ips"][0]["gateway"], "10.77.0.1");
        assert_eq!(r1["routes"], json!([{"dst": "0.0.0.0/0"}]));
        let (a1, a2, a3) = (address_of(&r1), address_of(&r2), address_of(&r3));
        assert_eq!(
            (a1, a2, a3),
            (Ipv4Addr::new(10, 77, 0, 10), Ipv4Addr::new(10, 77, 0, 11), Ipv4Addr::new(10, 77, 0, 100))
        );
        let (p1, p2, p3) = (host_end(&r1), host_end(&r2), host_end(&r3));
        let mut shown = ports(&daemon);
        shown.sort();
        let mut expected = vec![gw.clone(), p1.clone(), p2.clone(), p3.clone()];
        expected.sort();
        assert_eq!(shown, expected, "one netdev port per attachment");
        let show = daemon.ctl_json(&["show"]).unwrap();
        let port1 = show["ports"].as_array().unwrap().iter().find(|p| p["name"] == p1.as_str()).unwrap().clone();
        assert_eq!((port1["type"].as_str(), port1["vlan"].as_str()), (Some("netdev"), Some("access 10")));
        assert_eq!(links_in(&c1), vec!["eth0".to_string()]);
        assert!(links_in(&sw).contains(&p1), "the host end is in vswitchd's namespace: {:?}", links_in(&sw));

        assert_eq!(ping(&c1, a2, 3, 2 * SECOND), 3, "two containers on one network reach each other");
        assert_eq!(ping(&c2, Ipv4Addr::new(10, 77, 0, 1), 2, 2 * SECOND), 2, "and the gateway, an internal port");
        assert_eq!(ping(&c3, a1, 3, SECOND / 2), 0, "a container in VLAN 20 does not reach VLAN 10");
        assert_eq!(ping(&c1, a3, 2, SECOND / 2), 0, "nor the other way");

        // CHECK passes on what ADD made, and fails on an address the container lacks.
        let mut check = net_a.clone();
        check["prevResult"] = r1.clone();
        assert_eq!(cni_ok(&sw, "CHECK", Some(("ctr-1", &c1, "eth0")), &check), Value::Null);
        check["prevResult"]["ips"][0]["address"] = json!("10.77.0.99/24");
        let broken = cni(&sw, "CHECK", Some(("ctr-1", &c1, "eth0")), &check);
        assert_ne!(broken.code, 0);
        assert!(broken.out["msg"].as_str().unwrap().contains("container namespace"), "{}", broken.out);
        assert!(broken.out["details"].as_str().unwrap().contains("10.77.0.99/24"), "{}", broken.out);
        let mut no_prev = net_a.clone();
        no_prev["prevResult"] = Value::Null;
        assert_eq!(cni(&sw, "CHECK", Some(("ctr-1", &c1, "eth0")), &no_prev).out["code"], 7);

        // Refusals: the spec's error JSON on stdout, a non-zero exit, nothing changed.
        let again = cni(&sw, "ADD", Some(("ctr-1", &c1, "eth0")), &net_a);
        assert_ne!(again.code, 0);
        assert_eq!(again.out["cniVersion"], "1.0.0");
        assert!(again.out["msg"].as_str().unwrap().contains("already"), "{}", again.out);
        let taken = cni(&sw, "ADD", Some(("ctr-9", &c1, "eth0")), &net_a);
        assert!(taken.out["details"].as_str().unwrap_or_default().contains("exists already"), "{}", taken.out);
        assert_eq!(leases(&leases_a.0, &net_a), vec!["10.77.0.10", "10.77.0.11"], "the failed ADD released its lease");
        let mut masq = net_a.clone();
        masq["ipMasq"] = json!(true);
        let refused = cni(&sw, "ADD", Some(("ctr-4", &c1, "eth1")), &masq);
        assert_eq!((refused.code, refused.out["code"].as_u64()), (1, Some(2)), "{}", refused.out);
        let mut no_gateway = net_b.clone();
        no_gateway["isGateway"] = json!(true);
        let refused = cni(&sw, "ADD", Some(("ctr-4", &c1, "eth1")), &no_gateway);
        assert!(refused.out["msg"].as_str().unwrap().contains("no internal port"), "{}", refused.out);
        assert_eq!(ports(&daemon).len(), 4);

        // DEL, twice; the container's interface and the port go, the lease is released.
        cni_ok(&sw, "DEL", Some(("ctr-1", &c1, "eth0")), &net_a);
        assert!(!ports(&daemon).contains(&p1));
        assert!(links_in(&c1).is_empty(), "{:?}", links_in(&c1));
        assert!(!links_in(&sw).contains(&p1));
        cni_ok(&sw, "DEL", Some(("ctr-1", &c1, "eth0")), &net_a);
        assert_eq!(leases(&leases_a.0, &net_a), vec!["10.77.0.11"]);

        // DEL after the namespace is gone (and without CNI_NETNS).
        netns::delete(&c2).unwrap();
        cni_ok(&sw, "DEL", Some(("ctr-2", &netns::path(&c2).display().to_string(), "eth0")), &net_a);
        assert!(!ports(&daemon).contains(&p2));
        cni_ok(&sw, "DEL", Some(("ctr-2", "", "eth0")), &net_a);
        assert!(leases(&leases_a.0, &net_a).is_empty());

        // GC keeps the valid attachments and removes the rest, of this network only.
        let r4 = cni_ok(&sw, "ADD", Some(("ctr-4", &c1, "eth0")), &net_a);
        let p4 = host_end(&r4);
        let mut gc_b = net_b.clone();
        gc_b["cniVersion"] = json!("1.1.0");
        gc_b["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-3", "ifname": "eth0"}]);
        cni_ok(&sw, "GC", None, &gc_b);
        assert!(ports(&daemon).contains(&p3) && ports(&daemon).contains(&p4), "nothing stale: {:?}", ports(&daemon));
        gc_b["cni.dev/valid-attachments"] = json!([]);
        cni_ok(&sw, "GC", None, &gc_b);
        assert!(!ports(&daemon).contains(&p3), "the stale attachment's port went");
        assert!(!links_in(&sw).contains(&p3), "and its host end");
        assert!(ports(&daemon).contains(&p4), "another network's port stays");
        assert_eq!(ping(&c1, Ipv4Addr::new(10, 77, 0, 1), 1, 2 * SECOND), 1);
        cni_ok(&sw, "DEL", Some(("ctr-3", &c3, "eth0")), &net_b);
        cni_ok(&sw, "DEL", Some(("ctr-4", &c1, "eth0")), &net_a);
        assert_eq!(ports(&daemon), vec![gw.clone()]);

        // STATUS says 50 when vswitchd does not answer; DEL still succeeds.
        let (stopped, log) = daemon.terminate();
        assert!(stopped.success(), "{log}");
        let status = cni(&sw, "STATUS", None, &net_a);
        assert_eq!((status.code, status.out["code"].as_u64()), (1, Some(50)), "{}", status.out);
        cni_ok(&sw, "DEL", Some(("ctr-4", &c1, "eth0")), &net_a);
        assert!(leases(&leases_a.0, &net_a).is_empty() && leases(&leases_b.0, &net_b).is_empty());
    });
}
