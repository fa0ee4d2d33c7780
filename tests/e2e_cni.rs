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

/// The programs the podman test needs, from the packages that bring them.
const PODMAN_NEEDS: &[(&str, &str)] =
    &[("podman", "podman"), ("runc", "runc"), ("busybox", "busybox-static"), ("conmon", "conmon")];

/// Where `program` is on `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// podman with its CNI backend and all its state in a directory of the test's
/// (`/work/shared/notes/podman-cni.md`'s recipe), run inside vswitchd's namespace. On drop it
/// removes every container it ran (their CNI DELs detach them), then the directory.
struct Podman {
    dir: TempDir,
    netns: String,
}

impl Podman {
    /// Sets podman up in a fresh directory: a containers.conf naming the CNI backend, the
    /// plugin directories and a private network directory; a root filesystem with busybox for
    /// the containers (`--rootfs`: no registry, and no image store — importing an image would
    /// also write the system-wide blob cache under /var/lib/containers).
    fn new(tag: &str, netns: &str) -> Podman {
        let podman = Podman { dir: TempDir::new(tag, "podman"), netns: netns.into() };
        let root = &podman.dir.0;
        for sub in ["cni", "plugins", "rootfs/bin", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(CNI, root.join("plugins/vswitchd-cni")).unwrap();
        std::fs::copy(on_path("busybox").unwrap(), root.join("rootfs/bin/busybox")).unwrap();
        for applet in ["sh", "ping", "ip", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("rootfs/bin").join(applet)).unwrap();
        }
        std::fs::write(
            root.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{CNI_PLUGINS}\", \"{}\"]\n\
                 network_config_dir = \"{}\"\n",
                root.join("plugins").display(),
                root.join("cni").display()
            ),
        )
        .unwrap();
        podman
    }

    /// `podman` with the test's global options and configuration.
    fn command(&self, args: &[&str]) -> Command {
        let root = &self.dir.0;
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", root.join("containers.conf"))
            .arg("--root")
            .arg(root.join("storage"))
            .arg("--runroot")
            .arg(root.join("run"))
            .arg("--tmpdir")
            .arg(root.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(["--runtime", "runc"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `podman ARGS` in vswitchd's namespace, for at most a minute.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        let child = netns::run_in(&self.netns, move || command.spawn()).unwrap().expect("run podman");
        wait_bounded(child, 60 * SECOND, &format!("podman {}", args.join(" ")))
    }

    /// Runs `podman ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes network `config` (one plugin) as a conflist in podman's network directory.
    fn network(&self, config: &Value) {
        let mut plugin = config.clone();
        let name = plugin["name"].as_str().unwrap().to_string();
        let version = plugin["cniVersion"].clone();
        for key in ["name", "cniVersion"] {
            plugin.as_object_mut().unwrap().remove(key);
        }
        let list = json!({"cniVersion": version, "name": name, "plugins": [plugin]});
        std::fs::write(self.dir.0.join("cni").join(format!("{name}.conflist")), list.to_string()).unwrap();
    }

    /// Starts container `name` on `network`, sleeping; returns its IPv4 address.
    fn start(&self, name: &str, network: &str) -> Ipv4Addr {
        let limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];
        let rootfs = self.dir.0.join("rootfs").display().to_string();
        let args =
            [&["run", "-d", "--name", name][..], &limits, &["--network", network, "--rootfs", &rootfs, "sleep", "300"]];
        self.ok(&args.concat());
        let shown = self.ok(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"]);
        let inet = shown.split_whitespace().skip_while(|w| *w != "inet").nth(1);
        inet.and_then(|cidr| cidr.split('/').next()?.parse().ok()).unwrap_or_else(|| panic!("no address: {shown}"))
    }

    /// Whether `from` gets answers to 2 pings of `to`.
    fn pings(&self, from: &str, to: Ipv4Addr) -> bool {
        self.run(&["exec", from, "ping", "-c", "2", "-W", "2", &to.to_string()]).status.success()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let mut command = self.command(&["rm", "--all", "--force", "--time", "0"]);
        if let Ok(Ok(child)) = netns::run_in(&self.netns, move || command.spawn()) {
            let _ = std::panic::catch_unwind(|| wait_bounded(child, 60 * SECOND, "podman rm"));
        }
    }
}

#[test]
fn podman_containers_reach_each_other_on_a_vswitchd_network_and_not_across_vlans() {
    let missing: Vec<String> = PODMAN_NEEDS
        .iter()
        .filter(|(program, _)| on_path(program).is_none())
        .map(|(program, package)| format!("{program} (package {package})"))
        .collect();
    assert!(
        missing.is_empty(),
        "the podman end-to-end test needs {}: apt-get install podman runc conmon busybox-static \
         containernetworking-plugins",
        missing.join(", ")
    );
    require(&["/usr/lib/cni/host-local"], "containernetworking-plugins");
    with_tag(|tag| {
        let sw = format!("pm{tag}sw");
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        let gw = format!("g{tag}");
        let bridge = format!("pm{tag}");
        let mut daemon = Daemon::start(
            &sw,
            &format!(
                "[bridge]\nname = \"{bridge}\"\n\
                 [[port]]\nname = \"{gw}\"\ntype = \"internal\"\naddress = \"10.78.0.1/24\"\nvlan = 10\n"
            ),
        );
        let podman = Podman::new(tag, &sw);
        let leases = podman.dir.0.join("ipam");
        let ipam = |start: &str| {
            json!({"type": "host-local", "subnet": "10.78.0.0/24", "rangeStart": start,
                   "routes": [{"dst": "0.0.0.0/0"}], "dataDir": leases})
        };
        let (net_a, net_b) = (format!("pa{tag}"), format!("pb{tag}"));
        podman.network(&network(&net_a, &bridge, &daemon.socket, 10, true, ipam("10.78.0.10")));
        podman.network(&network(&net_b, &bridge, &daemon.socket, 20, false, ipam("10.78.0.100")));

        let (c1, c2, c3) = (format!("c1{tag}"), format!("c2{tag}"), format!("c3{tag}"));
        let a1 = podman.start(&c1, &net_a);
        let a2 = podman.start(&c2, &net_a);
        let a3 = podman.start(&c3, &net_b);
        assert_eq!(
            (a1, a2, a3),
            (Ipv4Addr::new(10, 78, 0, 10), Ipv4Addr::new(10, 78, 0, 11), Ipv4Addr::new(10, 78, 0, 100))
        );
        assert_eq!(ports(&daemon).len(), 4, "the gateway and one port per container: {:?}", ports(&daemon));

        assert!(podman.pings(&c2, a1), "two containers on one vswitchd network reach each other");
        assert!(podman.pings(&c1, Ipv4Addr::new(10, 78, 0, 1)), "and the gateway");
        assert!(!podman.pings(&c3, a1), "a container on the VLAN 20 network does not reach VLAN 10");

        // Removing the containers runs the plugin's DEL: the ports and leases go.
        podman.ok(&["rm", "--force", "--time", "0", &c1, &c2, &c3]);
        assert_eq!(ports(&daemon), vec![gw.clone()]);
        let left: Vec<String> = [&net_a, &net_b]
            .iter()
            .flat_map(|net| std::fs::read_dir(leases.join(net)).into_iter().flatten())
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<Ipv4Addr>().is_ok())
            .collect();
        assert!(left.is_empty(), "leases left: {left:?}");
        drop(podman);
        let (stopped, log) = daemon.terminate();
        assert!(stopped.success(), "{log}");
    });
}
