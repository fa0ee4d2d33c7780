//! `vswitchd-cni`: a CNI plugin (spec 1.0.0, with STATUS and GC of 1.1.0) that attaches a
//! container to a running vswitchd: a veth pair whose container end is `CNI_IFNAME` in
//! `CNI_NETNS` and whose host end becomes a `netdev` port of the bridge, added and removed
//! through the control socket (`port-add`, `port-del`), with the addresses and routes the IPAM
//! plugin the configuration names hands out. The protocol is plain data in
//! [`vswitchd_control::cni`]; this file carries requests out. The host end is created in the
//! plugin's own network namespace, which must be vswitchd's (the runtime's, as the spec
//! says: usually the root namespace).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};

use vswitchd_control::cni::{self, CniError, CniResult, Command, NetConf, Request, Target, VersionInfo, VethEnd};
use vswitchd_control::ctl::{self, PortSummary, ShowResult};
use vswitchd_control::netlink::{LinkChange, NetlinkSocket, message};
use vswitchd_control::netns;

/// What `vswitchd-cni --help` prints: a CNI runtime calls the plugin with no arguments, so the
/// options are for people, and are answered before stdin is read.
const HELP: &str = "\
vswitchd-cni: a CNI plugin that attaches containers to a running vswitchd. The runtime (podman,
containerd, ...) runs it with CNI_COMMAND, CNI_NETNS, CNI_IFNAME, ... in the environment and the
network configuration on stdin; it creates a veth pair, puts one end in the container and adds
the other to the bridge as a port, with the addresses the IPAM plugin hands out.

Usage: CNI_COMMAND=ADD|DEL|CHECK|STATUS|GC|VERSION CNI_NETNS=... CNI_IFNAME=... vswitchd-cni < CONFIG

Network configuration:
  {\"cniVersion\": \"1.0.0\", \"name\": \"vsnet\", \"type\": \"vswitchd-cni\", \"bridge\": \"br0\",
   \"vlan\": 10, \"ipam\": {\"type\": \"host-local\", \"subnet\": \"10.22.0.0/24\"}}

Options:
  -h, --help     Print help
  -V, --version  Print version

See docs/containers.md and the vswitchd-cni section of docs/reference.md.
";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-h" | "--help") => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("vswitchd-cni {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let mut stdin = Vec::new();
    let outcome = match io::stdin().read_to_end(&mut stdin) {
        Err(e) => {
            Err(CniError::new(cni::IO_FAILURE, "cannot read the network configuration from stdin", e.to_string()))
        }
        Ok(_) => cni::parse_request(|name| std::env::var(name).ok(), &stdin).and_then(|request| run(request, &stdin)),
    };
    let (text, status) = match outcome {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(json)) => (json, ExitCode::SUCCESS),
        Err(error) => (serde_json::to_value(&error).unwrap_or_default(), ExitCode::FAILURE),
    };
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&text).unwrap_or_default());
    status
}

/// Carries `request` out; returns what goes on stdout on success.
fn run(request: Request, stdin: &[u8]) -> Result<Option<serde_json::Value>, CniError> {
    let (command, target, cni_path, config) = match request {
        Request::Version { cni_version } => {
            let info = VersionInfo {
                cni_version,
                supported_versions: cni::SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
            };
            return Ok(Some(serde_json::to_value(info).unwrap_or_default()));
        }
        Request::Network { command, target, cni_path, config } => (command, target, cni_path, config),
    };
    let plugin = Plugin { config: &config, cni_path: &cni_path, stdin };
    let version = config.cni_version.clone();
    let outcome = match (command, &target) {
        (Command::Add, Some(target)) => plugin.add(target).map(|r| Some(serde_json::to_value(r).unwrap_or_default())),
        (Command::Del, Some(target)) => plugin.del(target).map(|()| None),
        (Command::Check, Some(target)) => plugin.check(target).map(|()| None),
        (Command::Status, _) => plugin.status().map(|()| None),
        (Command::Gc, _) => plugin.gc().map(|()| None),
        _ => Err(CniError::new(cni::INVALID_ENVIRONMENT, "no attachment given", "")),
    };
    outcome.map_err(|e| e.in_version(&version))
}

/// A request's configuration and where its delegated plugins are.
struct Plugin<'a> {
    config: &'a NetConf,
    cni_path: &'a [PathBuf],
    /// The configuration exactly as received: delegated plugins get it unchanged.
    stdin: &'a [u8],
}

fn failed(msg: impl Into<String>, details: impl ToString) -> CniError {
    CniError::new(cni::OPERATION_FAILED, msg, details.to_string())
}

/// Logs a step that went wrong but does not fail the command (DEL is best effort).
fn note(what: &str, error: impl std::fmt::Display) {
    eprintln!("vswitchd-cni: {what}: {error}");
}

impl Plugin<'_> {
    fn socket(&self) -> PathBuf {
        self.config.socket.clone().unwrap_or_else(|| ctl::default_socket(&self.config.bridge))
    }

    /// Sends `request` to vswitchd; `Err(None)` when nobody answers on the socket.
    fn ask(&self, request: &ctl::Request) -> Result<serde_json::Value, Option<String>> {
        let socket = self.socket();
        let response = ctl::request(&socket, request).map_err(|_| None)?;
        if response.ok {
            Ok(response.result.unwrap_or_default())
        } else {
            Err(Some(response.error.unwrap_or_else(|| "refused".into())))
        }
    }

    /// The bridge's ports; a bridge that does not answer is `TRY_AGAIN_LATER` (`code`).
    fn ports(&self, code: u32) -> Result<Vec<PortSummary>, CniError> {
        let socket = self.socket();
        let unreachable = |e: String| {
            CniError::new(
                code,
                format!("vswitchd for bridge {} does not answer on {}", self.config.bridge, socket.display()),
                e,
            )
        };
        let response = ctl::request(&socket, &ctl::Request::Show {}).map_err(|e| unreachable(e.to_string()))?;
        let result =
            response.result.filter(|_| response.ok).ok_or_else(|| unreachable(response.error.unwrap_or_default()))?;
        let show: ShowResult =
            serde_json::from_value(result).map_err(|e| unreachable(format!("unexpected reply to show: {e}")))?;
        Ok(show.ports)
    }

    fn add(&self, target: &Target) -> Result<CniResult, CniError> {
        let config = self.config;
        let netns_path = target.netns.as_deref().unwrap_or(Path::new(""));
        let ports = self.ports(cni::TRY_AGAIN_LATER)?;
        if ports.iter().any(|p| p.name == target.port) {
            return Err(failed(
                format!("bridge {} has a port {} already", config.bridge, target.port),
                format!("attachment ({}, {}) is added already: DEL it first", target.container_id, target.ifname),
            ));
        }
        if config.is_gateway {
            let wanted = cni::vlan_description(config.vlan);
            if !ports.iter().any(|p| p.kind == "internal" && p.vlan == wanted) {
                return Err(CniError::new(
                    cni::INVALID_CONFIG,
                    format!("isGateway: bridge {} has no internal port in VLAN {wanted}", config.bridge),
                    "the gateway is an internal port of the topology carrying the subnet's gateway address \
                     (with the network's vlan): declare one, or set isGateway to false",
                ));
            }
        }
        if File::open(netns_path).is_err() {
            return Err(CniError::new(
                cni::UNKNOWN_CONTAINER,
                format!("container namespace {} does not exist", netns_path.display()),
                "",
            ));
        }
        let ipam = match &config.ipam {
            Some(_) => self.ipam("ADD")?.unwrap_or_default(),
            None => CniResult::default(),
        };
        let mut undo = Undo::default();
        match self.attach(target, netns_path, &ipam, &mut undo) {
            Ok(result) => Ok(result),
            Err(error) => {
                self.detach(target, &undo);
                Err(error)
            }
        }
    }

    /// ADD after IPAM: the veth pair, the port, the container's settings. `undo` records what
    /// was made, for [`Plugin::detach`] on failure.
    fn attach(
        &self,
        target: &Target,
        netns_path: &Path,
        ipam: &CniResult,
        undo: &mut Undo,
    ) -> Result<CniResult, CniError> {
        let config = self.config;
        undo.ipam = config.ipam.is_some();
        let settings = cni::container_settings(ipam)?;
        let mtu = cni::mtu(config);
        let (container_mac, host_mac) = cni::attachment_macs(&config.name, &target.container_id, &target.ifname);
        let mut host = NetlinkSocket::open().map_err(|e| failed("cannot open a netlink socket", e))?;
        if host.link_index(&target.port).map_err(|e| failed("cannot look up links", e))?.is_some() {
            return Err(failed(
                format!("interface {} exists already on the host", target.port),
                "DEL the attachment first",
            ));
        }
        let host_ns = File::open("/proc/self/ns/net").map_err(|e| failed("cannot open the host namespace", e))?;
        let (ifname, port) = (target.ifname.as_str(), target.port.as_str());
        in_container(netns_path, |nl| {
            if nl.link_index(ifname)?.is_some() {
                return Err(format!("interface {ifname} exists already in the container").into());
            }
            nl.create_veth(ifname, port).map_err(|e| format!("create veth pair {ifname}/{port}: {e}"))?;
            Ok(())
        })?;
        undo.veth = true;
        in_container(netns_path, |nl| {
            nl.set_link(ifname, LinkChange { mtu: Some(mtu), mac: Some(container_mac), ..LinkChange::default() })?;
            nl.set_link(port, LinkChange { mtu: Some(mtu), mac: Some(host_mac), ..LinkChange::default() })?;
            nl.move_link(port, host_ns.as_raw_fd()).map_err(|e| format!("move {port} to the host: {e}"))?;
            Ok(())
        })?;
        undo.host_end = true;
        let host_step = |e| failed(format!("cannot set up {port} on the host"), e);
        host.disable_ipv6_autoconf(port).map_err(host_step)?;
        host.set_link(port, LinkChange { up: Some(true), ..LinkChange::default() }).map_err(host_step)?;
        let add = ctl::Request::PortAdd {
            name: port.into(),
            kind: "netdev".into(),
            settings: cni::port_settings(config, port, mtu),
        };
        self.ask(&add).map_err(|e| match e {
            None => CniError::new(
                cni::TRY_AGAIN_LATER,
                format!("vswitchd stopped answering on {}", self.socket().display()),
                "",
            ),
            Some(e) => failed(format!("vswitchd refused port {port}"), e),
        })?;
        undo.port = true;
        in_container(netns_path, |nl| {
            let index = nl.require_link(ifname)?;
            nl.set_link(ifname, LinkChange { up: Some(true), ..LinkChange::default() })?;
            for address in &settings.addresses {
                nl.execute(message::add_address(index, *address)).map_err(|e| format!("add address {address}: {e}"))?;
            }
            for route in &settings.routes {
                nl.execute(message::route(route, true)).map_err(|e| format!("add route {route}: {e}"))?;
            }
            Ok(())
        })?;
        let host_end = VethEnd { name: port.into(), mac: host_mac };
        let container_end = VethEnd { name: ifname.into(), mac: container_mac };
        Ok(cni::build_result(config, &host_end, &container_end, &netns_path.display().to_string(), mtu, ipam))
    }

    /// Undoes what a failed ADD made, in reverse; failures are logged (the error the runtime
    /// gets is the ADD's).
    fn detach(&self, target: &Target, undo: &Undo) {
        if undo.port {
            if let Err(e) = self.ask(&ctl::Request::PortDel { name: target.port.clone() }) {
                note(&format!("remove port {}", target.port), e.unwrap_or_else(|| "vswitchd does not answer".into()));
            }
        }
        if undo.host_end {
            delete_host_link(&target.port);
        } else if undo.veth {
            if let Some(netns) = &target.netns {
                let ifname = target.ifname.clone();
                let _ = in_container(netns, move |nl| Ok(nl.delete_link(&ifname).map(drop)?));
            }
        }
        if undo.ipam {
            if let Err(e) = self.ipam("DEL") {
                note("release the IPAM lease", e);
            }
        }
    }

    fn del(&self, target: &Target) -> Result<(), CniError> {
        // The port first, so the bridge never sees its device vanish; vswitchd down means the
        // port is gone with it (live ports do not outlive the process).
        match self.ports(cni::TRY_AGAIN_LATER) {
            Ok(ports) if ports.iter().any(|p| p.name == target.port) => {
                if let Err(e) = self.ask(&ctl::Request::PortDel { name: target.port.clone() }) {
                    // Gone meanwhile (a concurrent GC) is fine; anything else is reported.
                    let still_there =
                        self.ports(cni::TRY_AGAIN_LATER).is_ok_and(|p| p.iter().any(|p| p.name == target.port));
                    if still_there {
                        return Err(failed(
                            format!("vswitchd refused to remove port {}", target.port),
                            e.unwrap_or_default(),
                        ));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => note("no port to remove", e),
        }
        if let Some(netns) = &target.netns {
            let ifname = target.ifname.clone();
            // Only a veth: what ADD made (its host end goes with it).
            let gone = in_container(netns, move |nl| match nl.link(&ifname)? {
                Some(link) if link.kind.as_deref() == Some("veth") => Ok(nl.delete_link(&ifname).map(drop)?),
                _ => Ok(()),
            });
            if let Err(e) = gone {
                note(&format!("container namespace {}", netns.display()), e);
            }
        }
        delete_host_link(&target.port);
        if self.config.ipam.is_some() {
            self.ipam("DEL")?;
        }
        Ok(())
    }

    fn check(&self, target: &Target) -> Result<(), CniError> {
        let prev = self.config.prev_result.as_ref().ok_or_else(|| {
            CniError::new(cni::INVALID_CONFIG, "CHECK needs prevResult", "the runtime passes the result of the ADD")
        })?;
        if self.config.ipam.is_some() {
            self.ipam("CHECK")?;
        }
        let ports = self.ports(cni::TRY_AGAIN_LATER)?;
        let port = ports.iter().find(|p| p.name == target.port).ok_or_else(|| {
            failed(format!("port {} is not in bridge {}", target.port, self.config.bridge), "the attachment is broken")
        })?;
        let vlan = cni::vlan_description(self.config.vlan);
        if port.kind != "netdev" || port.vlan != vlan {
            return Err(failed(
                format!("port {} is a {} port in VLAN {}", port.name, port.kind, port.vlan),
                format!("expected a netdev port in VLAN {vlan}"),
            ));
        }
        if port.link != "up" {
            return Err(failed(
                format!("port {} is {}", port.name, port.link),
                "the host end of the veth pair is not up",
            ));
        }
        let netns = target.netns.as_deref().unwrap_or(Path::new(""));
        let sandbox = netns.display().to_string();
        let mut wanted = Vec::new();
        for ip in &prev.ips {
            let interface = ip.interface.and_then(|i| prev.interfaces.get(i));
            if interface.is_some_and(|i| i.name == target.ifname && i.sandbox.as_deref() == Some(sandbox.as_str())) {
                let cidr: vswitchd_control::topology::IpCidr =
                    ip.address.parse().map_err(|e: String| CniError::new(cni::DECODE_FAILURE, "prevResult", e))?;
                wanted.push(cidr);
            }
        }
        let ifname = target.ifname.clone();
        in_container(netns, move |nl| {
            let link = nl.link(&ifname)?.ok_or_else(|| format!("interface {ifname} is not in the container"))?;
            if !link.is_running() {
                return Err(format!("interface {ifname} is not up").into());
            }
            let present: Vec<_> =
                nl.addresses()?.into_iter().filter(|a| a.index == link.index).map(|a| a.cidr).collect();
            for cidr in &wanted {
                if !present.contains(cidr) {
                    return Err(format!("address {cidr} is not on {ifname}").into());
                }
            }
            Ok(())
        })
    }

    fn status(&self) -> Result<(), CniError> {
        self.ports(cni::NOT_AVAILABLE)?;
        if self.config.ipam.is_some() && self.ipam_speaks_1_1()? {
            self.ipam("STATUS")?;
        }
        Ok(())
    }

    fn gc(&self) -> Result<(), CniError> {
        let valid: Vec<String> = self
            .config
            .valid_attachments
            .iter()
            .flatten()
            .map(|a| cni::port_name(&self.config.name, &a.container_id, &a.ifname))
            .collect();
        let mut errors = Vec::new();
        match self.ports(cni::TRY_AGAIN_LATER) {
            Ok(ports) => {
                let stale = ports.iter().filter(|p| {
                    p.kind == "netdev" && cni::is_network_port(&self.config.name, &p.name) && !valid.contains(&p.name)
                });
                for port in stale {
                    match self.ask(&ctl::Request::PortDel { name: port.name.clone() }) {
                        Ok(_) => delete_host_link(&port.name),
                        Err(e) => errors.push(format!("remove port {}: {}", port.name, e.unwrap_or_default())),
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        if self.config.ipam.is_some() {
            match self.ipam_speaks_1_1() {
                Ok(true) => {
                    if let Err(e) = self.ipam("GC") {
                        errors.push(e.to_string());
                    }
                }
                Ok(false) => note("IPAM GC", "the IPAM plugin predates CNI 1.1 (no GC): its leases stay"),
                Err(e) => errors.push(e.to_string()),
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(failed("GC left stale resources", errors.join("; "))),
        }
    }

    /// Whether the IPAM plugin speaks CNI 1.1 (STATUS and GC).
    fn ipam_speaks_1_1(&self) -> Result<bool, CniError> {
        let out = self.delegate("VERSION", format!(r#"{{"cniVersion":"{}"}}"#, cni::LATEST_VERSION).as_bytes())?;
        let info: VersionInfo = serde_json::from_slice(&out).map_err(|e| {
            CniError::new(cni::DECODE_FAILURE, "cannot decode the IPAM plugin's VERSION", e.to_string())
        })?;
        Ok(info.supported_versions.iter().any(|v| v == "1.1.0"))
    }

    /// Runs the IPAM plugin with `CNI_COMMAND=command` and the configuration as received;
    /// its result, if it printed one.
    fn ipam(&self, command: &str) -> Result<Option<CniResult>, CniError> {
        let out = self.delegate(command, self.stdin)?;
        if out.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&out)
            .map(Some)
            .map_err(|e| CniError::new(cni::DECODE_FAILURE, "cannot decode the IPAM plugin's result", e.to_string()))
    }

    /// Runs the IPAM plugin (found on `CNI_PATH`) with our environment, `CNI_COMMAND=command`
    /// and `input` on stdin; its stdout on success, its error (as it gave it) on failure.
    fn delegate(&self, command: &str, input: &[u8]) -> Result<Vec<u8>, CniError> {
        let kind = self.config.ipam.as_ref().map(|i| i.kind.as_str()).unwrap_or_default();
        let program = self.cni_path.iter().map(|dir| dir.join(kind)).find(|p| p.is_file()).ok_or_else(|| {
            let path: Vec<String> = self.cni_path.iter().map(|p| p.display().to_string()).collect();
            CniError::new(
                cni::INVALID_CONFIG,
                format!("IPAM plugin {kind:?} is not on CNI_PATH"),
                format!("CNI_PATH is {:?}", path.join(":")),
            )
        })?;
        let mut child = Process::new(&program)
            .env("CNI_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot run {}", program.display()), e))?;
        // The plugin may answer before reading everything (an error): a broken pipe is fine.
        if let Some(mut pipe) = child.stdin.take() {
            let _ = pipe.write_all(input);
        }
        let output = child.wait_with_output().map_err(|e| failed(format!("cannot run {}", program.display()), e))?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(serde_json::from_slice::<CniError>(&output.stdout).unwrap_or_else(|_| {
            failed(
                format!("IPAM plugin {kind} failed ({}) on {command}", output.status),
                String::from_utf8_lossy(&output.stdout).trim(),
            )
        }))
    }
}

/// What a failing ADD made and must undo.
#[derive(Debug, Default)]
struct Undo {
    ipam: bool,
    veth: bool,
    host_end: bool,
    port: bool,
}

/// Why a step inside the container failed.
type StepError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `f` with a netlink socket inside the container's namespace.
fn in_container<T: Send>(
    netns: &Path,
    f: impl FnOnce(&mut NetlinkSocket) -> Result<T, StepError> + Send,
) -> Result<T, CniError> {
    let shown = netns.display().to_string();
    let outcome = netns::run_in_path(netns, move || {
        let mut nl = NetlinkSocket::open()?;
        f(&mut nl)
    });
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(failed(format!("in container namespace {shown}"), e)),
        Err(e) => Err(CniError::new(
            cni::UNKNOWN_CONTAINER,
            format!("cannot enter container namespace {shown}"),
            e.to_string(),
        )),
    }
}

/// Deletes host interface `name` if it exists (its veth peer goes with it); logs a failure.
fn delete_host_link(name: &str) {
    let deleted = NetlinkSocket::open()
        .map_err(|e| e.to_string())
        .and_then(|mut nl| nl.delete_link(name).map_err(|e| e.to_string()));
    if let Err(e) = deleted {
        note(&format!("delete interface {name}"), e);
    }
}
