//! Host services for the hosts behind the switch: DHCP and DNS through Debian's `dnsmasq` on an
//! `internal` port, NAT for an internal port's subnet (nftables) with IPv4 forwarding, and
//! `/etc/netns/NAME/hosts` files. [`plan`] says which services a topology asks for (pure, with
//! the files they write rendered as text); [`start`] starts one and returns how to stop it,
//! which the plumbing's undo log keeps with everything else vswitchd created.
//!
//! The topology's hosts are its namespaces, each named by its name with the addresses of the
//! ports whose kernel side is in it, and its internal ports, named by the port name with the
//! port's address.

use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::topology::{DhcpSpec, PortKind, Topology};

/// Where iproute2 keeps per-namespace configuration files (`ip netns exec` bind-mounts
/// `/etc/netns/NAME/hosts` over `/etc/hosts`).
pub const NETNS_ETC: &str = "/etc/netns";

/// How long a started dnsmasq has to write its pid file (it has bound its sockets then).
const DNSMASQ_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One service a topology asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// `/etc/netns/NETNS/hosts` with `text` (a `[[netns]]` with `hosts = true`).
    HostsFile {
        /// The namespace.
        netns: String,
        /// The file's contents.
        text: String,
    },
    /// IPv4 forwarding on in vswitchd's namespace (for any masquerading port); the previous
    /// value comes back on stop.
    Forwarding,
    /// NAT for an internal port's subnet: a table of vswitchd's own in nftables.
    Masquerade {
        /// The internal port.
        port: String,
        /// The nftables table (family `ip`).
        table: String,
        /// The ruleset given to `nft -f -`.
        ruleset: String,
    },
    /// dnsmasq serving DHCP and/or DNS on an internal port.
    Dnsmasq {
        /// The internal port.
        port: String,
        /// Its configuration file's contents.
        config: String,
        /// Its hosts file's contents (`addn-hosts`).
        hosts: String,
    },
}

impl Service {
    /// The name the undo log knows the service by.
    pub fn key(&self) -> String {
        match self {
            Service::HostsFile { netns, .. } => format!("hosts:{netns}"),
            Service::Forwarding => "forwarding".into(),
            Service::Masquerade { port, .. } => format!("masquerade:{port}"),
            Service::Dnsmasq { port, .. } => format!("dnsmasq:{port}"),
        }
    }

    /// The internal port the service runs on, if any.
    pub fn port(&self) -> Option<&str> {
        match self {
            Service::Masquerade { port, .. } | Service::Dnsmasq { port, .. } => Some(port),
            Service::HostsFile { .. } | Service::Forwarding => None,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::HostsFile { netns, .. } => write!(f, "write {NETNS_ETC}/{netns}/hosts"),
            Service::Forwarding => write!(f, "turn IPv4 forwarding on in vswitchd's namespace"),
            Service::Masquerade { port, table, .. } => {
                write!(f, "masquerade port {port}'s subnet (nftables table ip {table})")
            }
            Service::Dnsmasq { port, .. } => write!(f, "start dnsmasq on port {port}"),
        }
    }
}

/// The topology's hosts, each name with its address: namespaces (the addresses of the ports
/// in them), then internal ports (their own address), in file order.
pub fn hosts(topology: &Topology) -> Vec<(String, IpAddr)> {
    let mut hosts = Vec::new();
    for ns in &topology.netns {
        for port in &topology.ports {
            if let (Some(address), Some(netns)) = (port.address, port.kind.netns()) {
                if netns == ns.name && !matches!(port.kind, PortKind::Netdev { .. }) {
                    hosts.push((ns.name.clone(), address.addr));
                }
            }
        }
    }
    for port in &topology.ports {
        if let (PortKind::Internal, Some(address)) = (&port.kind, port.address) {
            hosts.push((port.name.clone(), address.addr));
        }
    }
    hosts
}

/// The first line of every file vswitchd writes for bridge `bridge`: a file that starts with
/// it is vswitchd's (a killed instance's, perhaps) and may be replaced.
pub fn marker(bridge: &str) -> String {
    format!("# Written by vswitchd for bridge {bridge}; removed when it stops.")
}

/// A namespace's hosts file: localhost, then every topology host.
pub fn hosts_file_text(bridge: &str, hosts: &[(String, IpAddr)]) -> String {
    let mut text = format!("{}\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", marker(bridge));
    for (name, address) in hosts {
        text.push_str(&format!("{address}\t{name}\n"));
    }
    text
}

/// The files of the dnsmasq serving `port` of `bridge`, in `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqFiles {
    /// Its configuration.
    pub config: PathBuf,
    /// The names it serves.
    pub hosts: PathBuf,
    /// Its DHCP leases.
    pub leases: PathBuf,
    /// Its pid.
    pub pid: PathBuf,
}

impl DnsmasqFiles {
    /// The files for `port` of `bridge` in `dir`.
    pub fn new(dir: &Path, bridge: &str, port: &str) -> DnsmasqFiles {
        let file = |ext: &str| dir.join(format!("{bridge}.dnsmasq-{port}.{ext}"));
        DnsmasqFiles { config: file("conf"), hosts: file("hosts"), leases: file("leases"), pid: file("pid") }
    }

    fn all(&self) -> [&Path; 4] {
        [&self.config, &self.hosts, &self.leases, &self.pid]
    }
}

/// dnsmasq's configuration for internal port `port`: only on that interface (bound to it, so
/// it never meets another dnsmasq), no upstream servers and no `/etc/hosts`, the topology's
/// names from `files.hosts` if `dns`, DHCP from `dhcp`.
pub fn dnsmasq_config(bridge: &str, port: &str, files: &DnsmasqFiles, dhcp: Option<&DhcpSpec>, dns: bool) -> String {
    let mut c = format!("{}\n", marker(bridge));
    let mut line = |l: String| {
        c.push_str(&l);
        c.push('\n');
    };
    line(format!("interface={port}"));
    line("bind-interfaces".into());
    line("except-interface=lo".into());
    line("no-resolv".into());
    line("no-hosts".into());
    line("domain-needed".into());
    line("bogus-priv".into());
    line("log-facility=-".into());
    line(format!("pid-file={}", files.pid.display()));
    if dns {
        line(format!("addn-hosts={}", files.hosts.display()));
    } else {
        line("port=0".into());
    }
    if let Some(d) = dhcp {
        line(format!("dhcp-leasefile={}", files.leases.display()));
        line(format!("dhcp-range={},{},{}", d.start, d.end, d.lease_secs));
    }
    c
}

/// The name of port `port`'s table in nftables: vswitchd's, the bridge's and the port's,
/// with anything but letters, digits and `_` made `_`.
pub fn table_name(bridge: &str, port: &str) -> String {
    let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>();
    format!("vswitchd_{}_{}", clean(bridge), clean(port))
}

/// The ruleset for `nft -f -` that masquerades what comes from `subnet` behind port `port`
/// and leaves by another interface. The table is added and deleted first, so a table left by
/// a killed vswitchd is replaced, not added to.
pub fn nft_ruleset(table: &str, port: &str, subnet: (Ipv4Addr, u8)) -> String {
    let mask = if subnet.1 == 0 { 0 } else { u32::MAX << (32 - u32::from(subnet.1)) };
    let network = Ipv4Addr::from(u32::from(subnet.0) & mask);
    format!(
        "add table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {network}/{prefix} oifname != \"{port}\" masquerade\n\
         \t}}\n\
         }}\n",
        prefix = subnet.1
    )
}

/// The services `topology` asks for, in the order they start: hosts files, forwarding, NAT,
/// then dnsmasq. `dir` holds dnsmasq's files.
pub fn plan(topology: &Topology, dir: &Path) -> Vec<Service> {
    let bridge = &topology.bridge.name;
    let hosts = hosts(topology);
    let mut services: Vec<Service> = topology
        .netns
        .iter()
        .filter(|ns| ns.hosts)
        .map(|ns| Service::HostsFile { netns: ns.name.clone(), text: hosts_file_text(bridge, &hosts) })
        .collect();
    let internal = || {
        topology.ports.iter().filter_map(|p| match (&p.kind, p.address) {
            (PortKind::Internal, Some(a)) if !p.services.is_empty() => Some((p, a)),
            _ => None,
        })
    };
    if internal().any(|(p, _)| p.services.masquerade) {
        services.push(Service::Forwarding);
    }
    for (port, address) in internal() {
        if let (true, IpAddr::V4(a)) = (port.services.masquerade, address.addr) {
            let table = table_name(bridge, &port.name);
            let ruleset = nft_ruleset(&table, &port.name, (a, address.prefix));
            services.push(Service::Masquerade { port: port.name.clone(), table, ruleset });
        }
    }
    for (port, _) in internal() {
        let s = &port.services;
        if s.dhcp.is_some() || s.dns {
            let files = DnsmasqFiles::new(dir, bridge, &port.name);
            let config = dnsmasq_config(bridge, &port.name, &files, s.dhcp.as_ref(), s.dns);
            let mut text = format!("{}\n", marker(bridge));
            for (name, address) in &hosts {
                text.push_str(&format!("{address} {name}\n"));
            }
            services.push(Service::Dnsmasq { port: port.name.clone(), config, hosts: text });
        }
    }
    services
}

/// A started service: how to stop it.
#[derive(Debug)]
pub enum Started {
    /// A hosts file vswitchd wrote, and the directory it created for it (if it did).
    HostsFile {
        /// The file.
        file: PathBuf,
        /// The namespace's directory, if vswitchd created it.
        created_dir: Option<PathBuf>,
        /// `/etc/netns` itself, if vswitchd created it.
        created_parent: Option<PathBuf>,
    },
    /// Forwarding turned on; the value to restore, and where that value is kept meanwhile.
    Forwarding {
        /// The value before.
        previous: String,
        /// The file that remembers it (for an instance started after a kill).
        record: PathBuf,
    },
    /// A table in nftables.
    Masquerade {
        /// Its name (family `ip`).
        table: String,
        /// The file that names it (for an instance started after a kill).
        record: PathBuf,
    },
    /// A running dnsmasq.
    Dnsmasq(Dnsmasq),
}

/// A dnsmasq vswitchd runs.
pub struct Dnsmasq {
    port: String,
    pid: u32,
    files: DnsmasqFiles,
    stopping: Arc<AtomicBool>,
    exited: crossbeam_channel::Receiver<ExitStatus>,
}

impl fmt::Debug for Dnsmasq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dnsmasq pid {} on port {}", self.pid, self.port)
    }
}

/// The IPv4 forwarding switch of this process's network namespace.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Starts `service`; `dir` holds the files vswitchd keeps (dnsmasq's, the forwarding record).
pub fn start(service: &Service, bridge: &str, dir: &Path) -> io::Result<Started> {
    match service {
        Service::HostsFile { netns, text } => write_hosts_file(Path::new(NETNS_ETC), netns, bridge, text),
        Service::Forwarding => {
            let record = dir.join(format!("{bridge}.ip_forward"));
            // A record left by a killed instance holds the value from before it.
            let previous = match fs::read_to_string(&record) {
                Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
                _ => fs::read_to_string(IP_FORWARD)?.trim().to_string(),
            };
            fs::write(&record, format!("{previous}\n"))?;
            if let Err(e) = fs::write(IP_FORWARD, "1\n") {
                let _ = fs::remove_file(&record);
                return Err(io::Error::new(e.kind(), format!("{IP_FORWARD}: {e}")));
            }
            Ok(Started::Forwarding { previous, record })
        }
        Service::Masquerade { port, table, ruleset } => {
            // Written first: a vswitchd killed from here on leaves the table's name behind.
            let record = dir.join(format!("{bridge}.masquerade-{port}"));
            fs::write(&record, format!("{table}\n"))?;
            if let Err(e) = nft(ruleset) {
                let _ = fs::remove_file(&record);
                return Err(e);
            }
            Ok(Started::Masquerade { table: table.clone(), record })
        }
        Service::Dnsmasq { port, config, hosts } => {
            start_dnsmasq(port, config, hosts, &DnsmasqFiles::new(dir, bridge, port)).map(Started::Dnsmasq)
        }
    }
}

impl Started {
    /// Stops the service and removes its files; says what could not be undone.
    pub fn stop(&self) -> Result<(), String> {
        match self {
            Started::HostsFile { file, created_dir, created_parent } => {
                match fs::remove_file(file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("{}: {e}", file.display())),
                }
                // Each left if something else is in it by now.
                for dir in [created_dir, created_parent].into_iter().flatten() {
                    let _ = fs::remove_dir(dir);
                }
                Ok(())
            }
            Started::Forwarding { previous, record } => {
                fs::write(IP_FORWARD, format!("{previous}\n")).map_err(|e| format!("{IP_FORWARD}: {e}"))?;
                let _ = fs::remove_file(record);
                Ok(())
            }
            Started::Masquerade { table, record } => {
                nft(&format!("delete table ip {table}\n")).map_err(|e| e.to_string())?;
                let _ = fs::remove_file(record);
                Ok(())
            }
            Started::Dnsmasq(d) => d.stop(),
        }
    }
}

/// Writes `text` to `etc/NETNS/hosts`, creating the directories if absent (and removing those
/// it created on stop, if empty by then). A file there that
/// vswitchd did not write (its first line is not [`marker`]) is refused, never replaced.
pub fn write_hosts_file(etc: &Path, netns: &str, bridge: &str, text: &str) -> io::Result<Started> {
    let dir = etc.join(netns);
    let file = dir.join("hosts");
    let existing = fs::read_to_string(&file).ok();
    if existing.as_ref().is_some_and(|e| e.lines().next() != Some(marker(bridge).as_str())) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not vswitchd's: left alone (remove it, or drop `hosts = true`)", file.display()),
        ));
    }
    // The directory is vswitchd's if it makes it, or if it holds nothing but vswitchd's file
    // (made by the instance this one took over from, or one that was killed).
    let created_parent = (!etc.is_dir()).then(|| etc.to_path_buf());
    let created_dir = if !dir.is_dir() {
        fs::create_dir_all(&dir)?;
        Some(dir.clone())
    } else if existing.is_some() && fs::read_dir(&dir)?.count() == 1 {
        Some(dir.clone())
    } else {
        None
    };
    let temporary = dir.join(".hosts.vswitchd");
    let written = fs::write(&temporary, text).and_then(|()| fs::rename(&temporary, &file));
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        for d in [&created_dir, &created_parent].into_iter().flatten() {
            let _ = fs::remove_dir(d);
        }
        return Err(io::Error::new(e.kind(), format!("{}: {e}", file.display())));
    }
    Ok(Started::HostsFile { file, created_dir, created_parent })
}

/// Removes what the host services of a vswitchd of `bridge` that was killed left behind, as
/// the records in `dir` and the marks on hosts files say: its dnsmasqs are stopped and their
/// files removed, forwarding gets its value from before, its nftables tables and hosts files
/// go. Returns what was removed, and what could not be, for the log.
pub fn remove_left_over(dir: &Path, bridge: &str) -> (Vec<String>, Vec<String>) {
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    let names: Vec<String> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    let dnsmasq_prefix = format!("{bridge}.dnsmasq-");
    for name in &names {
        if let Some(port) = name.strip_prefix(&dnsmasq_prefix).and_then(|n| n.strip_suffix(".conf")) {
            let files = DnsmasqFiles::new(dir, bridge, port);
            stop_left_over_dnsmasq(&files);
            for f in files.all() {
                let _ = fs::remove_file(f);
            }
            removed.push(format!("dnsmasq on port {port}"));
        }
    }
    let masquerade_prefix = format!("{bridge}.masquerade-");
    for name in &names {
        if name.starts_with(&masquerade_prefix) {
            let record = dir.join(name);
            let table = fs::read_to_string(&record).unwrap_or_default().trim().to_string();
            let clean = !table.is_empty() && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let deleted = if clean { nft(&format!("delete table ip {table}\n")) } else { Ok(()) };
            match deleted {
                Ok(()) => {
                    let _ = fs::remove_file(&record);
                    removed.push(format!("nftables table ip {table}"));
                }
                // Gone already (with the namespace it was in, say).
                Err(e) if e.to_string().contains("No such file") => {
                    let _ = fs::remove_file(&record);
                }
                Err(e) => failed.push(format!("nftables table ip {table}: {e}")),
            }
        }
    }
    let record = dir.join(format!("{bridge}.ip_forward"));
    if let Ok(previous) = fs::read_to_string(&record) {
        let previous = previous.trim().to_string();
        let started = Started::Forwarding { previous: previous.clone(), record };
        match started.stop() {
            Ok(()) => removed.push(format!("forwarding (back to {previous})")),
            Err(e) => failed.push(e),
        }
    }
    let mark = marker(bridge);
    for entry in fs::read_dir(NETNS_ETC).into_iter().flatten().filter_map(Result::ok) {
        let file = entry.path().join("hosts");
        let ours = fs::read_to_string(&file).is_ok_and(|t| t.lines().next() == Some(mark.as_str()));
        if ours {
            match fs::remove_file(&file) {
                Ok(()) => {
                    let _ = fs::remove_dir(entry.path());
                    removed.push(file.display().to_string());
                }
                Err(e) => failed.push(format!("{}: {e}", file.display())),
            }
        }
    }
    (removed, failed)
}

/// Runs `nft -f -` with `script` on its standard input.
fn nft(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                io::Error::new(e.kind(), "nft not found: masquerade needs nftables (Debian package nftables)")
            }
            _ => io::Error::new(e.kind(), format!("cannot run nft: {e}")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Stops a dnsmasq a killed vswitchd left running on `files` (its pid file names a dnsmasq
/// whose command line has the configuration file).
fn stop_left_over_dnsmasq(files: &DnsmasqFiles) {
    let Some(pid) = fs::read_to_string(&files.pid).ok().and_then(|p| p.trim().parse::<i32>().ok()) else { return };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let config = files.config.as_os_str().as_encoded_bytes();
    if !cmdline.windows(config.len()).any(|w| w == config) {
        return;
    }
    warn!(pid, "stopping the dnsmasq a killed vswitchd left running");
    let target = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && fs::metadata(format!("/proc/{pid}")).is_ok() {
        thread::sleep(Duration::from_millis(20));
    }
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
}

fn start_dnsmasq(port: &str, config: &str, hosts: &str, files: &DnsmasqFiles) -> io::Result<Dnsmasq> {
    stop_left_over_dnsmasq(files);
    for f in files.all() {
        let _ = fs::remove_file(f);
    }
    let remove_files = || {
        for f in files.all() {
            let _ = fs::remove_file(f);
        }
    };
    let written = fs::write(&files.hosts, hosts).and_then(|()| fs::write(&files.config, config));
    if let Err(e) = written {
        remove_files();
        return Err(e);
    }
    let mut command = Command::new("dnsmasq");
    command
        .arg("--keep-in-foreground")
        .arg(format!("--conf-file={}", files.config.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    vswitchd_dataplane::sys::unblock_signals_in_child(&mut command);
    let spawned = command.spawn();
    let mut child: Child = match spawned {
        Ok(c) => c,
        Err(e) => {
            remove_files();
            return Err(match e.kind() {
                io::ErrorKind::NotFound => io::Error::new(
                    e.kind(),
                    "dnsmasq not found: dhcp and dns need it (Debian package dnsmasq-base or dnsmasq)",
                ),
                _ => io::Error::new(e.kind(), format!("cannot run dnsmasq: {e}")),
            });
        }
    };
    let pid = child.id();
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    if let Some(stderr) = child.stderr.take() {
        let said = Arc::clone(&said);
        let port = port.to_string();
        let _ = thread::Builder::new().name(format!("dnsmasq-{port}")).spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                debug!(%port, "dnsmasq: {line}");
                let mut said = said.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if said.len() >= 20 {
                    said.remove(0);
                }
                said.push(line);
            }
        });
    }
    let stopping = Arc::new(AtomicBool::new(false));
    let (exit_tx, exited) = crossbeam_channel::bounded(1);
    {
        let stopping = Arc::clone(&stopping);
        let said = Arc::clone(&said);
        let port = port.to_string();
        thread::Builder::new().name(format!("dnsmasq-wait-{port}")).spawn(move || {
            let status = child.wait();
            if let Ok(status) = status {
                if !stopping.load(Ordering::SeqCst) {
                    let last = said.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join(" / ");
                    error!(%port, pid, %status, last_words = %last, "dnsmasq exited unexpectedly: DHCP/DNS on the port stopped");
                }
                let _ = exit_tx.send(status);
            }
        })?;
    }
    let dnsmasq = Dnsmasq { port: port.to_string(), pid, files: files.clone(), stopping, exited };
    // Ready once it has written its pid file: its sockets are bound by then.
    let deadline = Instant::now() + DNSMASQ_READY_TIMEOUT;
    loop {
        if let Ok(status) = dnsmasq.exited.try_recv() {
            thread::sleep(Duration::from_millis(50)); // the rest of what it said
            let last = said.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join(" / ");
            remove_files();
            return Err(io::Error::other(format!("dnsmasq exited at once ({status}): {last}")));
        }
        let written = fs::read_to_string(&files.pid).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if written == Some(pid) {
            break;
        }
        if Instant::now() > deadline {
            let _ = dnsmasq.stop();
            return Err(io::Error::new(io::ErrorKind::TimedOut, "dnsmasq did not start within 10 s"));
        }
        thread::sleep(Duration::from_millis(20));
    }
    info!(%port, pid, "dnsmasq serves the port");
    Ok(dnsmasq)
}

impl Dnsmasq {
    /// Stops it (SIGTERM, then SIGKILL after 3 s) and removes its files.
    fn stop(&self) -> Result<(), String> {
        self.stopping.store(true, Ordering::SeqCst);
        let target = nix::unistd::Pid::from_raw(self.pid as i32);
        let mut result = Ok(());
        // Not yet reaped (the waiter sends once it has), so the pid is still its.
        if self.exited.try_recv().is_err() {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
            if self.exited.recv_timeout(Duration::from_secs(3)).is_err() {
                warn!(port = %self.port, pid = self.pid, "dnsmasq ignored SIGTERM for 3 s: killing it");
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
                if self.exited.recv_timeout(Duration::from_secs(3)).is_err() {
                    result = Err(format!("dnsmasq pid {} did not exit", self.pid));
                }
            }
        }
        for f in self.files.all() {
            let _ = fs::remove_file(f);
        }
        info!(port = %self.port, pid = self.pid, "dnsmasq stopped");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::HostServices;

    const FILE: &str = r#"[bridge]
name = "br0"

[[netns]]
name = "red"
hosts = true

[[netns]]
name = "blue"

[[port]]
name = "gw"
type = "internal"
address = "10.201.0.1/24"
dhcp = { range = "10.201.0.100-10.201.0.200", lease_secs = 600 }
dns = true
masquerade = true

[[port]]
name = "tap-red"
type = "tap"
netns = "red"
address = "10.201.0.2/24"

[[port]]
name = "veth-blue"
type = "veth"
netns = "blue"
address = "10.201.0.3/24"
"#;

    fn parse(src: &str) -> Result<Topology, crate::topology::ConfigError> {
        Topology::parse(Path::new("t.toml"), src)
    }

    #[test]
    fn the_keys_parse_and_round_trip() {
        let t = parse(FILE).unwrap();
        let gw = t.port("gw").unwrap();
        assert_eq!(
            gw.services,
            HostServices {
                dhcp: Some(DhcpSpec {
                    start: Ipv4Addr::new(10, 201, 0, 100),
                    end: Ipv4Addr::new(10, 201, 0, 200),
                    lease_secs: 600
                }),
                dns: true,
                masquerade: true,
            }
        );
        assert!(t.netns[0].hosts && !t.netns[1].hosts);
        let again = parse(&t.to_toml()).unwrap();
        assert_eq!(again, t, "{}", t.to_toml());
        let defaulted = parse(&FILE.replace(", lease_secs = 600", "")).unwrap();
        assert_eq!(defaulted.port("gw").unwrap().services.dhcp.unwrap().lease_secs, 3600);
    }

    #[test]
    fn bad_values_are_refused_by_file_line_and_key() {
        let cases = [
            (
                "range = \"10.201.0.100-10.201.0.200\"",
                "range = \"10.201.0.200-10.201.0.100\"",
                "dhcp.range",
                "comes after",
            ),
            ("range = \"10.201.0.100-10.201.0.200\"", "range = \"10.201.0.100-10.202.0.1\"", "dhcp.range", "subnet"),
            ("range = \"10.201.0.100-10.201.0.200\"", "range = \"10.201.0.100\"", "dhcp.range", "FIRST-LAST"),
            ("lease_secs = 600", "lease_secs = 5", "dhcp.lease_secs", "120"),
            ("lease_secs = 600", "lease = 600", "", "unknown field"),
            ("address = \"10.201.0.1/24\"\n", "", "dhcp", "IPv4 `address`"),
            ("address = \"10.201.0.1/24\"\n", "address = \"fd00::1/64\"\n", "dhcp", "IPv4 `address`"),
            ("address = \"10.201.0.3/24\"\n", "address = \"10.201.0.3/24\"\ndns = true\n", "port[2].dns", "internal"),
            ("hosts = true", "hosts = \"yes\"", "", "invalid type"),
        ];
        for (from, to, key, message) in cases {
            assert!(FILE.contains(from), "{from}");
            let err = parse(&FILE.replacen(from, to, 1)).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("t.toml:"), "{text}");
            assert!(err.line.is_some(), "{text}");
            assert!(text.contains(key) && text.contains(message), "{to:?}: {text}");
        }
    }

    #[test]
    fn the_plan_names_every_host_and_renders_the_files() {
        let t = parse(FILE).unwrap();
        let plan = plan(&t, Path::new("/run/vswitchd"));
        let keys: Vec<String> = plan.iter().map(Service::key).collect();
        assert_eq!(keys, ["hosts:red", "forwarding", "masquerade:gw", "dnsmasq:gw"]);
        let Service::HostsFile { text, .. } = &plan[0] else { panic!() };
        assert_eq!(
            text,
            "# Written by vswitchd for bridge br0; removed when it stops.\n127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n10.201.0.2\tred\n10.201.0.3\tblue\n10.201.0.1\tgw\n"
        );
        let Service::Masquerade { table, ruleset, .. } = &plan[2] else { panic!() };
        assert_eq!(table, "vswitchd_br0_gw");
        assert!(ruleset.contains("ip saddr 10.201.0.0/24 oifname != \"gw\" masquerade"), "{ruleset}");
        assert!(ruleset.starts_with("add table ip vswitchd_br0_gw\ndelete table ip vswitchd_br0_gw\n"));
        let Service::Dnsmasq { config, hosts, .. } = &plan[3] else { panic!() };
        for line in [
            "interface=gw",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "addn-hosts=/run/vswitchd/br0.dnsmasq-gw.hosts",
            "pid-file=/run/vswitchd/br0.dnsmasq-gw.pid",
            "dhcp-leasefile=/run/vswitchd/br0.dnsmasq-gw.leases",
            "dhcp-range=10.201.0.100,10.201.0.200,600",
        ] {
            assert!(config.lines().any(|l| l == line), "{line} missing: {config}");
        }
        assert!(!config.contains("port=0"));
        assert!(hosts.contains("10.201.0.3 blue\n"), "{hosts}");
        // DHCP alone: no DNS server.
        let dhcp_only = parse(&FILE.replace("dns = true\nmasquerade = true\n", "")).unwrap();
        let plan = super::plan(&dhcp_only, Path::new("/run"));
        let keys: Vec<String> = plan.iter().map(Service::key).collect();
        assert_eq!(keys, ["hosts:red", "dnsmasq:gw"]);
        let Service::Dnsmasq { config, .. } = &plan[1] else { panic!() };
        assert!(config.lines().any(|l| l == "port=0") && !config.contains("addn-hosts"), "{config}");
        // A changed topology changes the services that name its hosts.
        let more = parse(&FILE.replace("address = \"10.201.0.3/24\"", "address = \"10.201.0.4/24\"")).unwrap();
        assert_ne!(super::plan(&more, Path::new("/run"))[3], super::plan(&t, Path::new("/run"))[3]);
    }

    #[test]
    fn a_hosts_file_not_ours_is_left_alone_and_ours_is_replaced_and_removed() {
        let etc = std::env::temp_dir().join(format!("vswitchd-hosts-{}", std::process::id()));
        let _ = fs::remove_dir_all(&etc);
        fs::create_dir_all(etc.join("theirs")).unwrap();
        fs::write(etc.join("theirs/hosts"), "10.0.0.9 mine\n").unwrap();
        let err = write_hosts_file(&etc, "theirs", "br0", "# x\n").unwrap_err();
        assert!(err.to_string().contains("is not vswitchd's"), "{err}");
        assert_eq!(fs::read_to_string(etc.join("theirs/hosts")).unwrap(), "10.0.0.9 mine\n");

        let text = hosts_file_text("br0", &[("red".into(), "10.0.0.2".parse().unwrap())]);
        let fresh = etc.join("netns");
        let made = write_hosts_file(&fresh, "red", "br0", &text).unwrap();
        made.stop().unwrap();
        assert!(!fresh.exists(), "the directories vswitchd made are removed");
        let started = write_hosts_file(&etc, "red", "br0", &text).unwrap();
        assert_eq!(fs::read_to_string(etc.join("red/hosts")).unwrap(), text);
        // Left by a killed instance: replaced.
        let again = write_hosts_file(&etc, "red", "br0", &text).unwrap();
        assert!(matches!(again, Started::HostsFile { created_dir: Some(_), .. }), "the directory holds only ours");
        // Another bridge's is not ours.
        assert!(write_hosts_file(&etc, "red", "br1", &text).is_err());
        started.stop().unwrap();
        assert!(!etc.join("red").exists(), "the directory vswitchd made is removed with the file");
        assert!(etc.join("theirs/hosts").exists());
        fs::remove_dir_all(&etc).unwrap();
    }

    #[test]
    fn port_set_changes_the_services_like_any_key() {
        let t = parse(FILE).unwrap();
        let words: Vec<String> =
            ["dns=false", "dhcp={ range = \"10.201.0.100-10.201.0.110\" }"].iter().map(|w| w.to_string()).collect();
        let assignments = crate::topology_edit::parse_assignments(&words).unwrap();
        let changed = t.with_port_set("gw", &assignments).unwrap();
        let services = changed.port("gw").unwrap().services;
        assert!(!services.dns && services.masquerade);
        assert_eq!(services.dhcp.unwrap().end, Ipv4Addr::new(10, 201, 0, 110));
        let refused =
            t.with_port_set("tap-red", &crate::topology_edit::parse_assignments(&["dns=true".into()]).unwrap());
        assert!(refused.unwrap_err().to_string().contains("applies only to ports of type internal"));
    }

    #[test]
    fn table_names_are_nft_identifiers() {
        assert_eq!(table_name("br-0", "gw.1"), "vswitchd_br_0_gw_1");
    }
}
