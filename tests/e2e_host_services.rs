//! Host services on an internal port, end to end: vswitchd runs in a namespace of the test's
//! own (forwarding and NAT stay there), its dnsmasq leases an address to a real DHCP client
//! (busybox's udhcpc) and answers a DNS query for another namespace's name, `hosts = true`
//! writes the namespace's hosts file (read back through `ip netns exec ... getent`), and a
//! namespace behind the switch reaches a TCP server in an `outside` namespace with the
//! internal port's outside address as its source. After stop, all of it is gone.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;
use vswitchd_control::netns;

/// A DNS query for `name`'s A record (RFC 1035 4.1), with recursion desired.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Skips a (possibly compressed) name at `at`; returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        if len == 0 {
            return Some(at + 1);
        }
        at += 1 + len as usize;
    }
}

/// The response code and the A records of a DNS response to query `id`.
fn dns_answers(msg: &[u8], id: u16) -> (u8, Vec<Ipv4Addr>) {
    assert!(msg.len() >= 12, "short DNS response");
    assert_eq!(u16::from_be_bytes([msg[0], msg[1]]), id, "response to another query");
    assert!(msg[2] & 0x80 != 0, "not a response");
    let rcode = msg[3] & 0x0f;
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at).expect("question name") + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at).expect("answer name");
        let field = |i: usize| u16::from_be_bytes([msg[at + i], msg[at + i + 1]]);
        let (kind, class, len) = (field(0), field(2), field(8) as usize);
        let data = &msg[at + 10..at + 10 + len];
        if kind == 1 && class == 1 && len == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    (rcode, found)
}

/// Asks the DNS server at `server` from namespace `from` for `name`'s addresses.
fn resolve(from: &str, server: Ipv4Addr, name: &str) -> (u8, Vec<Ipv4Addr>) {
    let socket = netns::run_in(from, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))).unwrap().unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let id = 0x5a17;
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        socket.send_to(&dns_query(id, name), (server, 53)).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return dns_answers(&buf[..n], id);
        }
    }
    panic!("no DNS answer from {server} for {name}");
}

/// Output (stdout and stderr) and success of `ip netns exec NS ARGS`.
fn exec_in(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("run ip netns exec");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn read_sysctl_in(ns: &str, path: &'static str) -> String {
    netns::run_in(ns, move || std::fs::read_to_string(path)).unwrap().unwrap().trim().to_string()
}

#[test]
fn dhcp_dns_hosts_files_and_masquerade_are_served_and_removed_on_stop() {
    with_tag(|tag| {
        let mut namespaces = NamespaceGuard::default();
        let (home, outside) = (format!("hs-{tag}"), format!("ho-{tag}"));
        let (red, blue, client) = (format!("hr-{tag}"), format!("hb-{tag}"), format!("hd-{tag}"));
        namespaces.create(&home);
        namespaces.create(&outside);
        for ns in [&red, &blue, &client] {
            namespaces.adopt(ns);
        }
        // The "internet": a veth from vswitchd's namespace to `outside`, no route back to the
        // switch's subnet there (only NAT makes replies find their way).
        let (up, far) = (format!("ou{tag}"), format!("oo{tag}"));
        ip(&["link", "add", &up, "netns", &home, "type", "veth", "peer", "name", &far, "netns", &outside]);
        ip(&["-n", &home, "addr", "add", "198.51.100.1/24", "dev", &up]);
        ip(&["-n", &home, "link", "set", &up, "up"]);
        ip(&["-n", &outside, "addr", "add", "198.51.100.2/24", "dev", &far]);
        ip(&["-n", &outside, "link", "set", &far, "up"]);
        ip(&["-n", &outside, "link", "set", "lo", "up"]);
        let forwarding_before = read_sysctl_in(&home, "/proc/sys/net/ipv4/ip_forward");
        assert_eq!(forwarding_before, "0", "a new namespace forwards already: the test would prove nothing");

        let (gw, bridge) = (format!("gw{tag}"), format!("hs{tag}"));
        let config = format!(
            "[bridge]\nname = \"{bridge}\"\n\n\
             [[netns]]\nname = \"{red}\"\nhosts = true\nroutes = [{{ dst = \"default\", via = \"10.203.0.1\" }}]\n\n\
             [[netns]]\nname = \"{blue}\"\n\n[[netns]]\nname = \"{client}\"\n\n\
             [[port]]\nname = \"{gw}\"\ntype = \"internal\"\naddress = \"10.203.0.1/24\"\n\
             dhcp = {{ range = \"10.203.0.100-10.203.0.150\", lease_secs = 600 }}\ndns = true\nmasquerade = true\n\n\
             [[port]]\nname = \"r{tag}\"\ntype = \"veth\"\nnetns = \"{red}\"\naddress = \"10.203.0.2/24\"\n\n\
             [[port]]\nname = \"b{tag}\"\ntype = \"veth\"\nnetns = \"{blue}\"\naddress = \"10.203.0.3/24\"\n\n\
             [[port]]\nname = \"d{tag}\"\ntype = \"veth\"\nnetns = \"{client}\"\n"
        );
        let mut daemon = Daemon::start(&home, &config);
        let dir = daemon.socket.parent().unwrap().to_path_buf();
        let leases = dir.join(format!("{bridge}.dnsmasq-{gw}.leases"));
        let hosts_file = Path::new("/etc/netns").join(&red).join("hosts");

        // (1) DHCP: a real client gets an address in the range.
        let (ok, said) = exec_in(
            &client,
            &["busybox", "udhcpc", "-i", &format!("d{tag}"), "-n", "-q", "-f", "-t", "8", "-T", "1", "-s", "/bin/true"],
        );
        assert!(ok, "udhcpc got no lease: {said}\n{}", daemon.log());
        let leased: Ipv4Addr = said
            .split("lease of ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no lease in udhcpc's output: {said}"));
        assert!(
            (Ipv4Addr::new(10, 203, 0, 100)..=Ipv4Addr::new(10, 203, 0, 150)).contains(&leased),
            "leased {leased}, outside the range"
        );
        let recorded = std::fs::read_to_string(&leases).unwrap_or_default();
        assert!(recorded.contains(&leased.to_string()), "dnsmasq's leases do not have {leased}: {recorded}");

        // (2) DNS: red asks the internal port's address for blue's name.
        let (rcode, addresses) = resolve(&red, Ipv4Addr::new(10, 203, 0, 1), &blue);
        assert_eq!((rcode, addresses), (0, vec![Ipv4Addr::new(10, 203, 0, 3)]), "{}", daemon.log());
        let (rcode, addresses) = resolve(&blue, Ipv4Addr::new(10, 203, 0, 1), &gw);
        assert_eq!((rcode, addresses), (0, vec![Ipv4Addr::new(10, 203, 0, 1)]));

        // (3) hosts = true: the file names every host, and `ip netns exec` resolves with it.
        let text = std::fs::read_to_string(&hosts_file).expect("hosts file while running");
        for line in [format!("10.203.0.2\t{red}"), format!("10.203.0.3\t{blue}"), format!("10.203.0.1\t{gw}")] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from {}: {text}", hosts_file.display());
        }
        assert!(!text.contains(&client), "a namespace without an address is no host: {text}");
        let (ok, said) = exec_in(&red, &["getent", "hosts", &blue]);
        assert!(ok && said.starts_with("10.203.0.3"), "getent hosts {blue} in {red}: {said}");

        // (4) masquerade: red reaches a server outside, which sees the switch's outside address.
        assert_eq!(read_sysctl_in(&home, "/proc/sys/net/ipv4/ip_forward"), "1");
        let listener =
            netns::run_in(&outside, || TcpListener::bind((Ipv4Addr::new(198, 51, 100, 2), 8080))).unwrap().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, peer) = listener.accept().unwrap();
            let mut hello = [0u8; 5];
            stream.read_exact(&mut hello).unwrap();
            stream.write_all(b"world").unwrap();
            (peer, hello)
        });
        let mut stream = netns::run_in(&red, || {
            TcpStream::connect_timeout(&(Ipv4Addr::new(198, 51, 100, 2), 8080).into(), Duration::from_secs(10))
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("red cannot reach the outside: {e}"));
        stream.write_all(b"hello").unwrap();
        let mut reply = [0u8; 5];
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.read_exact(&mut reply).unwrap();
        let (peer, hello) = server.join().unwrap();
        assert_eq!((&hello, &reply), (b"hello", b"world"));
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            "the server saw red's own address: no NAT"
        );
        let table = format!("vswitchd_{bridge}_{gw}");
        let (listed, tables) = exec_in(&home, &["nft", "list", "tables"]);
        assert!(listed && tables.contains(&table), "nft tables: {tables}");

        let pid_file = dir.join(format!("{bridge}.dnsmasq-{gw}.pid"));
        let dnsmasq: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let (status, log) = daemon.terminate();
        assert!(status.success(), "exit {status}: {log}");
        assert!(!log.contains("ignored SIGTERM"), "dnsmasq had to be killed: {log}");
        assert!(!hosts_file.exists(), "{} outlives vswitchd", hosts_file.display());
        assert!(!hosts_file.parent().unwrap().exists(), "vswitchd's /etc/netns/{red} outlives it");
        let (_, tables) = exec_in(&home, &["nft", "list", "tables"]);
        assert!(!tables.contains(&table), "the NAT table outlives vswitchd: {tables}");
        assert_eq!(read_sysctl_in(&home, "/proc/sys/net/ipv4/ip_forward"), forwarding_before);
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains("dnsmasq"))
            .collect();
        assert!(left.is_empty(), "dnsmasq's files outlive vswitchd: {left:?}");
        let cmdline = std::fs::read(format!("/proc/{dnsmasq}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&format!("{bridge}.dnsmasq-{gw}")),
            "dnsmasq (pid {dnsmasq}) outlives vswitchd"
        );
    });
}

/// The pid in dnsmasq's pid file for port `gw` of `bridge`, in the daemon's directory.
fn dnsmasq_pid(daemon: &Daemon, bridge: &str, gw: &str) -> u32 {
    let dir = daemon.socket.parent().unwrap();
    let text = std::fs::read_to_string(dir.join(format!("{bridge}.dnsmasq-{gw}.pid"))).unwrap();
    text.trim().parse().unwrap()
}

/// Whether process `pid` is a dnsmasq that runs (not a zombie its new parent has yet to reap:
/// one whose vswitchd handed over is an orphan).
fn is_dnsmasq(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    stat.contains("(dnsmasq)") && state != Some(Some('Z'))
}

#[test]
fn names_follow_a_reload_and_the_services_survive_a_takeover() {
    with_tag(|tag| {
        let mut namespaces = NamespaceGuard::default();
        let (home, red, blue) = (format!("ts-{tag}"), format!("tr-{tag}"), format!("tb-{tag}"));
        namespaces.create(&home);
        namespaces.adopt(&red);
        namespaces.adopt(&blue);
        let (gw, bridge) = (format!("gw{tag}"), format!("ts{tag}"));
        let base = format!(
            "[bridge]\nname = \"{bridge}\"\n\n[[netns]]\nname = \"{red}\"\nhosts = true\n\n\
             [[port]]\nname = \"{gw}\"\ntype = \"internal\"\naddress = \"10.204.0.1/24\"\ndns = true\n\n\
             [[port]]\nname = \"r{tag}\"\ntype = \"veth\"\nnetns = \"{red}\"\naddress = \"10.204.0.2/24\"\n"
        );
        let mut daemon = Daemon::start(&home, &base);
        let server = Ipv4Addr::new(10, 204, 0, 1);
        let hosts_file = Path::new("/etc/netns").join(&red).join("hosts");
        assert_eq!(resolve(&red, server, &red).1, vec![Ipv4Addr::new(10, 204, 0, 2)]);
        assert_eq!(resolve(&red, server, &blue).1, Vec::<Ipv4Addr>::new(), "blue is no host yet");
        let first = dnsmasq_pid(&daemon, &bridge, &gw);

        // A reload that adds a host: dnsmasq and the hosts file name it.
        let more = format!(
            "{base}\n[[netns]]\nname = \"{blue}\"\n\n\
             [[port]]\nname = \"b{tag}\"\ntype = \"veth\"\nnetns = \"{blue}\"\naddress = \"10.204.0.3/24\"\n"
        );
        std::fs::write(&daemon.config, &more).unwrap();
        daemon.ctl_ok(&["reload"]);
        assert_eq!(resolve(&red, server, &blue).1, vec![Ipv4Addr::new(10, 204, 0, 3)], "{}", daemon.log());
        let text = std::fs::read_to_string(&hosts_file).unwrap();
        assert!(text.contains(&format!("10.204.0.3\t{blue}\n")), "{text}");
        let second = dnsmasq_pid(&daemon, &bridge, &gw);
        assert_ne!(first, second, "dnsmasq was not restarted with the new names");
        assert!(!is_dnsmasq(first), "the first dnsmasq (pid {first}) still runs");

        // A takeover: the new process serves the same names with a dnsmasq of its own.
        let (old_status, old_log) = daemon.take_over(&home).unwrap();
        assert!(old_status.success(), "{old_log}");
        assert_eq!(resolve(&red, server, &blue).1, vec![Ipv4Addr::new(10, 204, 0, 3)], "{}", daemon.log());
        let third = dnsmasq_pid(&daemon, &bridge, &gw);
        assert!(!is_dnsmasq(second), "the old process's dnsmasq (pid {second}) still runs");
        assert!(hosts_file.exists());

        let (status, log) = daemon.terminate();
        assert!(status.success(), "exit {status}: {log}");
        assert!(!is_dnsmasq(third), "dnsmasq (pid {third}) outlives vswitchd");
        assert!(!hosts_file.parent().unwrap().exists(), "/etc/netns/{red} outlives vswitchd");
    });
}

#[test]
fn a_missing_dnsmasq_or_a_foreign_hosts_file_stops_the_start_naming_the_step() {
    with_tag(|tag| {
        let mut namespaces = NamespaceGuard::default();
        let (home, red) = (format!("fs-{tag}"), format!("fr-{tag}"));
        namespaces.create(&home);
        namespaces.adopt(&red);
        let dir = std::env::temp_dir().join(format!("vswitchd-hostsvc-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("topology.toml");
        let run = |path_var: &str| {
            let (config, socket, path_var) = (config.clone(), dir.join("ctl.sock"), path_var.to_string());
            netns::run_in(&home, move || {
                Command::new(VSWITCHD)
                    .args(["--config", config.to_str().unwrap(), "--socket", socket.to_str().unwrap()])
                    .env("PATH", path_var)
                    .output()
            })
            .unwrap()
            .unwrap()
        };
        let ports = format!(
            "[[port]]\nname = \"gw{tag}\"\ntype = \"internal\"\naddress = \"10.205.0.1/24\"\ndns = true\n\n\
             [[port]]\nname = \"r{tag}\"\ntype = \"veth\"\nnetns = \"{red}\"\naddress = \"10.205.0.2/24\"\n"
        );
        // No dnsmasq on the PATH.
        std::fs::write(&config, format!("[bridge]\nname = \"fs{tag}\"\n\n[[netns]]\nname = \"{red}\"\n\n{ports}"))
            .unwrap();
        let out = run("/nonexistent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("start dnsmasq on port") && stderr.contains("dnsmasq not found"), "{stderr}");
        assert!(!netns::exists(&red), "{red} was not removed after the failed start");

        // A hosts file someone else wrote.
        let theirs = Path::new("/etc/netns").join(&red);
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("hosts"), "10.0.0.9 theirs\n").unwrap();
        std::fs::write(
            &config,
            format!("[bridge]\nname = \"fs{tag}\"\n\n[[netns]]\nname = \"{red}\"\nhosts = true\n\n{ports}"),
        )
        .unwrap();
        let out = run(&std::env::var("PATH").unwrap_or_default());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let left = std::fs::read_to_string(theirs.join("hosts")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&theirs);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("write /etc/netns/{red}/hosts")) && stderr.contains("not vswitchd's"),
            "{stderr}"
        );
        assert_eq!(left, "10.0.0.9 theirs\n", "the file that was not vswitchd's was changed");
        assert!(!netns::exists(&red), "{red} was not removed after the failed start");
    });
}

#[test]
fn a_start_after_a_kill_removes_what_the_killed_instances_services_left() {
    with_tag(|tag| {
        let mut namespaces = NamespaceGuard::default();
        let (home, red) = (format!("ks-{tag}"), format!("kr-{tag}"));
        namespaces.create(&home);
        namespaces.adopt(&red);
        let (gw, bridge) = (format!("gw{tag}"), format!("ks{tag}"));
        let with_services = format!(
            "[bridge]\nname = \"{bridge}\"\n\n[[netns]]\nname = \"{red}\"\nhosts = true\n\n\
             [[port]]\nname = \"{gw}\"\ntype = \"internal\"\naddress = \"10.206.0.1/24\"\n\
             dhcp = {{ range = \"10.206.0.10-10.206.0.20\" }}\ndns = true\nmasquerade = true\n\n\
             [[port]]\nname = \"r{tag}\"\ntype = \"veth\"\nnetns = \"{red}\"\naddress = \"10.206.0.2/24\"\n"
        );
        let mut daemon = Daemon::start(&home, &with_services);
        let hosts_file = Path::new("/etc/netns").join(&red).join("hosts");
        let table = format!("vswitchd_{bridge}_{gw}");
        let dnsmasq = dnsmasq_pid(&daemon, &bridge, &gw);
        daemon.kill_hard();
        // What a kill leaves: dnsmasq runs on (until it next writes to the log pipe nobody
        // reads any more), the file, the table and forwarding stay.
        if !is_dnsmasq(dnsmasq) {
            eprintln!("dnsmasq (pid {dnsmasq}) did not outlive the kill: only the rest is checked");
        }
        assert!(hosts_file.exists());
        assert!(exec_in(&home, &["nft", "list", "tables"]).1.contains(&table));
        assert_eq!(read_sysctl_in(&home, "/proc/sys/net/ipv4/ip_forward"), "1");

        // Started again without any host service: all of it goes.
        let plain = with_services
            .replace("hosts = true\n", "")
            .replace("dhcp = { range = \"10.206.0.10-10.206.0.20\" }\ndns = true\nmasquerade = true\n", "");
        assert_ne!(plain, with_services);
        std::fs::write(&daemon.config, &plain).unwrap();
        daemon.restart(&home).unwrap();
        let log = daemon.log();
        assert!(!is_dnsmasq(dnsmasq), "the killed instance's dnsmasq (pid {dnsmasq}) still runs: {log}");
        assert!(!hosts_file.exists() && !hosts_file.parent().unwrap().exists(), "{log}");
        assert!(!exec_in(&home, &["nft", "list", "tables"]).1.contains(&table), "{log}");
        assert_eq!(read_sysctl_in(&home, "/proc/sys/net/ipv4/ip_forward"), "0", "{log}");
        let left: Vec<String> = std::fs::read_dir(daemon.socket.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains("dnsmasq") || n.contains("masquerade") || n.contains("ip_forward"))
            .collect();
        assert!(left.is_empty(), "records left: {left:?}");
        let (status, log) = daemon.terminate();
        assert!(status.success(), "{log}");
    });
}
