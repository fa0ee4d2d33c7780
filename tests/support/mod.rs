//! Shared end-to-end test support: unique names, RAII guards that remove every namespace and
//! process a test made (also when it fails), a launcher for the real `vswitchd` binary inside
//! a namespace of its own, and traffic generated in Rust from inside namespaces.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use vswitchd_control::netns;

pub const VSWITCHD: &str = env!("CARGO_BIN_EXE_vswitchd");
pub const VSWITCHCTL: &str = env!("CARGO_BIN_EXE_vswitchctl");

/// Fails the test with a clear message when the privileges end-to-end tests need are missing.
pub fn require_privileges() {
    let root = nix::unistd::geteuid().is_root();
    let tun = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun");
    if !root || tun.is_err() {
        panic!(
            "end-to-end tests need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and /dev/net/tun: \
             run them as root, as CI does (euid root: {root}, /dev/net/tun: {:?})",
            tun.err()
        );
    }
}

/// A short tag unique to this test process and call: names stay within 15 bytes.
pub fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:04x}{:02x}", std::process::id() & 0xffff, n & 0xff)
}

/// Waits until `check` returns `Some`, polling, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Namespaces a test owns: removed on drop if they still exist.
#[derive(Debug, Default)]
pub struct NamespaceGuard {
    names: Vec<String>,
}

impl NamespaceGuard {
    /// Creates namespace `name` now (the namespace vswitchd itself runs in).
    pub fn create(&mut self, name: &str) {
        netns::create(name).unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        self.names.push(name.to_string());
    }

    /// Remembers a namespace someone else (vswitchd) creates, to remove it if left behind.
    pub fn adopt(&mut self, name: &str) {
        self.names.push(name.to_string());
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if netns::exists(name) {
                let _ = netns::delete(name);
            }
        }
    }
}

/// A running vswitchd; killed on drop if still running.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub config: PathBuf,
    dir: PathBuf,
    /// What the daemon writes to stderr, read as it comes (a pipe nobody read would fill up
    /// and stall the daemon at its next log line).
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
}

/// Reads `child`'s stderr into a buffer on a thread of its own until the child exits.
fn drain_stderr(child: &mut Child) -> (std::sync::Arc<std::sync::Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stderr = child.stderr.take().expect("stderr piped");
    let sink = std::sync::Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&chunk[..n]);
        }
    });
    (log, reader)
}

/// Spawns `program args` with its network namespace set to `netns` (mount namespace
/// unchanged, unlike `ip netns exec`, so namespaces it mounts are visible to everyone).
pub fn spawn_in(netns_name: &str, program: &str, args: &[&str]) -> io::Result<Child> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    netns::run_in(netns_name, move || command.spawn())?
}

impl Daemon {
    /// Writes `config` to a fresh directory and starts vswitchd on it inside `netns_name`;
    /// waits until its control socket answers.
    pub fn start(netns_name: &str, config: &str) -> Daemon {
        Daemon::start_logging(netns_name, config, "debug")
    }

    /// As [`Daemon::start`], logging at `level`.
    pub fn start_logging(netns_name: &str, config: &str, level: &str) -> Daemon {
        Daemon::start_with_args(netns_name, config, level, &[])
    }

    /// As [`Daemon::start_logging`], with more `vswitchd` arguments.
    pub fn start_with_args(netns_name: &str, config: &str, level: &str, extra: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!("vswitchd-test-{}", unique_tag()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("topology.toml");
        std::fs::write(&config_path, config).unwrap();
        let socket = dir.join("ctl.sock");
        let child = spawn_in(
            netns_name,
            VSWITCHD,
            &[
                &[
                    "--config",
                    config_path.to_str().unwrap(),
                    "--socket",
                    socket.to_str().unwrap(),
                    "--log-level",
                    level,
                ],
                extra,
            ]
            .concat(),
        )
        .expect("spawn vswitchd");
        let mut child = child;
        let (log, reader) = drain_stderr(&mut child);
        let mut daemon = Daemon { child: Some(child), socket, config: config_path, dir, log, log_reader: Some(reader) };
        wait_for("vswitchd's control socket", Duration::from_secs(20), || {
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                let stderr = daemon.stderr();
                panic!("vswitchd exited early with {status}: {stderr}");
            }
            daemon.ctl_json(&["show"]).ok()
        });
        daemon
    }

    /// Runs `vswitchctl --json ARGS` against this daemon.
    pub fn ctl_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let out = self.ctl(&[&["--json"], args].concat())?;
        serde_json::from_str(&out).map_err(|e| format!("bad JSON from vswitchctl: {e}: {out}"))
    }

    /// Runs `vswitchctl ARGS`; returns stdout, or stderr on failure.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(VSWITCHCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `vswitchctl ARGS`: exit code, stdout, stderr.
    #[allow(dead_code)] // not every test binary uses it
    pub fn ctl_status(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(VSWITCHCTL).arg("--socket").arg(&self.socket).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `vswitchctl ARGS`, which must succeed; returns stdout.
    #[allow(dead_code)] // not every test binary uses it
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl_status(args);
        assert_eq!(code, 0, "vswitchctl {args:?}: {err}");
        out
    }

    /// The names of the running ports, sorted.
    #[allow(dead_code)] // not every test binary uses it
    pub fn port_names(&self) -> Vec<String> {
        let show = self.ctl_json(&["show"]).unwrap();
        let mut names: Vec<String> =
            show["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
        names.sort();
        names
    }

    /// What the daemon has written to stderr so far.
    #[allow(dead_code)] // not every test binary uses it
    pub fn log(&mut self) -> String {
        self.stderr()
    }

    /// Sends SIGTERM and waits for the exit; returns the status and stderr.
    pub fn terminate(&mut self) -> (ExitStatus, String) {
        let child = self.child.as_mut().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let status = wait_for("vswitchd to exit", Duration::from_secs(20), || child.try_wait().unwrap());
        let stderr = self.stderr();
        self.child = None;
        (status, stderr)
    }

    /// What the daemon wrote to stderr; all of it once the daemon has exited.
    fn stderr(&mut self) -> String {
        let exited = self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            if let Some(reader) = self.log_reader.take() {
                let _ = reader.join();
            }
        }
        let log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&log).into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The internet checksum of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends ICMP echo requests from inside `netns_name` to `dst` and returns how many of `count`
/// got their reply (matched by identifier, sequence and payload) within `timeout` each.
pub fn ping(netns_name: &str, dst: Ipv4Addr, count: u16, timeout: Duration) -> u16 {
    netns::run_in(netns_name, move || {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).expect("raw ICMP socket");
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let ident = (std::process::id() as u16) ^ 0x5a5a;
        let mut answered = 0;
        for seq in 1..=count {
            let payload = format!("vswitchd ping {seq}");
            let mut packet = vec![8u8, 0, 0, 0];
            packet.extend_from_slice(&ident.to_be_bytes());
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(payload.as_bytes());
            let sum = inet_checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
            socket.send_to(&packet, &SockAddr::from(SocketAddrV4::new(dst, 0))).expect("send echo request");
            let deadline = Instant::now() + timeout;
            let mut buf = [0u8; 2048];
            while Instant::now() < deadline {
                let Ok(n) = (&socket).read(&mut buf) else {
                    continue;
                };
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let icmp = &buf[ihl.min(n)..n];
                if icmp.len() >= 8
                    && icmp[0] == 0
                    && icmp[4..6] == ident.to_be_bytes()
                    && icmp[6..8] == seq.to_be_bytes()
                    && &icmp[8..] == payload.as_bytes()
                {
                    answered += 1;
                    break;
                }
            }
        }
        answered
    })
    .expect("enter namespace")
}

/// The byte at `offset` of the deterministic test stream.
fn stream_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (offset >> 20) as u8
}

/// Moves `bytes` over TCP from `client_ns` to `server_ip:port` in `server_ns` and checks every
/// byte on arrival. Returns the receiver's count of bytes that matched.
pub fn tcp_transfer(server_ns: &str, server_ip: Ipv4Addr, client_ns: &str, bytes: u64) -> u64 {
    tcp_transfer_on(server_ns, server_ip, 5201, client_ns, bytes)
}

/// [`tcp_transfer`] to TCP port `port` (so several can run at once).
#[allow(dead_code)] // not every test binary uses it
pub fn tcp_transfer_on(server_ns: &str, server_ip: Ipv4Addr, port: u16, client_ns: &str, bytes: u64) -> u64 {
    let listener =
        netns::run_in(server_ns, move || TcpListener::bind((server_ip, port))).expect("enter").expect("bind");
    let receiver = thread::spawn(move || -> u64 {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut offset = 0u64;
        loop {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                return offset;
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, stream_byte(offset + i as u64), "corrupted byte at offset {}", offset + i as u64);
            }
            offset += n as u64;
        }
    });
    let mut stream = netns::run_in(client_ns, move || {
        TcpStream::connect_timeout(&(server_ip, port).into(), Duration::from_secs(10))
    })
    .expect("enter")
    .expect("connect");
    stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = 0u64;
    while offset < bytes {
        let n = (bytes - offset).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = stream_byte(offset + i as u64);
        }
        stream.write_all(&buf[..n]).expect("write");
        offset += n as u64;
    }
    drop(stream);
    receiver.join().expect("receiver")
}

/// Sends `datagrams` UDP datagrams of `size` bytes from `client_ns` to `server_ip:port` in
/// `server_ns` the way QUIC stacks do, with `UDP_SEGMENT`: up to 40 datagrams per `send`, which
/// the sender's kernel hands to a device with USO as one super-frame. Returns how many distinct
/// datagrams arrived whole and with the right content.
#[allow(dead_code)] // not every test binary uses it
pub fn udp_gso_transfer(
    server_ns: &str,
    server_ip: Ipv4Addr,
    port: u16,
    client_ns: &str,
    size: usize,
    datagrams: u32,
) -> u32 {
    use std::net::UdpSocket;
    let content = |index: u32, i: usize| if i < 4 { index.to_be_bytes()[i] } else { (index as usize * 31 + i) as u8 };
    let receiver_socket =
        netns::run_in(server_ns, move || UdpSocket::bind((server_ip, port))).expect("enter").expect("bind");
    receiver_socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let receiver = thread::spawn(move || {
        let mut seen = vec![false; datagrams as usize];
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = receiver_socket.recv(&mut buf) {
            let index = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if n == size && index < datagrams && (0..n).all(|i| buf[i] == content(index, i)) {
                seen[index as usize] = true;
            }
            if seen.iter().all(|&s| s) {
                break;
            }
        }
        seen.iter().filter(|&&s| s).count() as u32
    });
    let sender = netns::run_in(client_ns, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect((server_ip, port))?;
        Ok::<_, io::Error>(socket)
    })
    .expect("enter")
    .expect("sender socket");
    nix::sys::socket::setsockopt(&sender, nix::sys::socket::sockopt::UdpGsoSegment, &(size as i32))
        .expect("UDP_SEGMENT");
    let mut index = 0;
    while index < datagrams {
        let burst = (datagrams - index).min(40);
        let buf: Vec<u8> = (index..index + burst).flat_map(|d| (0..size).map(move |i| content(d, i))).collect();
        sender.send(&buf).expect("send");
        index += burst;
        thread::sleep(Duration::from_millis(5)); // let the receiver keep up: this is no load test
    }
    receiver.join().expect("receiver")
}

const SOL_PACKET: i32 = 263;
const PACKET_IGNORE_OUTGOING: i32 = 23;

/// A packet socket on an interface inside a namespace: sends raw frames, receives the frames
/// arriving on it (not those it sends).
pub struct RawPort {
    socket: Socket,
}

impl RawPort {
    pub fn open(netns_name: &str, ifname: &str) -> RawPort {
        let ifname = ifname.to_string();
        let fd = netns::run_in(netns_name, move || -> io::Result<_> {
            let index = nix::net::if_::if_nametoindex(ifname.as_str())?;
            let fd = vswitchd_dataplane::sys::bound_packet_socket(index, vswitchd_dataplane::sys::ETH_P_ALL)?;
            vswitchd_dataplane::sys::set_socket_option_int(fd.as_fd(), SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
            Ok(fd)
        })
        .expect("enter")
        .expect("packet socket");
        let socket = Socket::from(fd);
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        RawPort { socket }
    }

    pub fn send(&self, frame: &[u8]) {
        (&self.socket).write_all(frame).expect("send frame");
    }

    /// Frames received within `window` for which `keep` is true.
    pub fn collect(&self, window: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + window;
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = (&self.socket).read(&mut buf) {
                if keep(&buf[..n]) {
                    frames.push(buf[..n].to_vec());
                }
            }
        }
        frames
    }
}

/// Whether namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new(netns::RUN_DIR).join(name).exists()
}

/// Runs `ip ARGS` (tests use iproute2 to build what vswitchd does not, and to observe).
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Output of `ip ARGS`.
pub fn ip_output(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A capture of the frames arriving on an interface in a namespace, with the dataplane's own
/// packet port, so VLAN tags the kernel moved into metadata are put back (as vswitchd sees
/// them). Frames queue from the moment it is opened.
#[allow(dead_code)] // not every test binary uses it
pub struct Capture {
    port: vswitchd_dataplane::port::packet::PacketPort,
}

#[allow(dead_code)]
impl Capture {
    /// Starts capturing on `ifname` in `netns_name`.
    pub fn open(netns_name: &str, ifname: &str) -> Capture {
        let ifname = ifname.to_string();
        let port = netns::run_in(netns_name, move || vswitchd_dataplane::port::packet::PacketPort::open(&ifname))
            .expect("enter")
            .expect("packet port");
        Capture { port }
    }

    /// The frames `keep` accepts among those that arrived since opening and during `window`.
    pub fn collect(mut self, window: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        use vswitchd_dataplane::port::{FrameBuf, MAX_FRAME_LEN, Port};
        let mut buf = FrameBuf::new(MAX_FRAME_LEN);
        let deadline = Instant::now() + window;
        let mut frames = Vec::new();
        while Instant::now() < deadline {
            match self.port.recv(&mut buf) {
                Ok(()) if keep(buf.frame()) => frames.push(buf.frame().to_vec()),
                Ok(()) => {}
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
        frames
    }
}

/// Writes a sysctl inside a namespace (never the root namespace's).
pub fn sysctl_in(netns_name: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    netns::run_in(netns_name, move || std::fs::write(&path, value)).expect("enter").expect("write sysctl");
}

/// The shipped topology `fixtures/NAME`, with each quoted name in `renames` replaced, so a test
/// runs exactly what users get, under namespace names of its own.
pub fn fixture(name: &str, renames: &[(&str, &str)]) -> String {
    let path = format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (from, to) in renames {
        let quoted = format!("\"{from}\"");
        assert!(text.contains(&quoted), "{name} has no {quoted}");
        text = text.replace(&quoted, &format!("\"{to}\""));
    }
    text
}

// Helpers for the attack and fault tests (tests/e2e_attacks.rs).

/// Everything named with `tag` that outlives a test if nobody removes it: namespaces, and
/// interfaces in the root namespace.
pub fn leftovers(tag: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(netns::RUN_DIR)
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    found.retain(|name| name.contains(tag));
    let mut found: Vec<String> = found.into_iter().map(|n| format!("namespace {n}")).collect();
    for line in ip_output(&["-o", "link"]).lines() {
        if line.contains(tag) {
            found.push(format!("root-namespace interface {}", line.split(':').nth(1).unwrap_or(line).trim()));
        }
    }
    found
}

/// The interfaces in namespace `netns_name` other than `lo` (names without their `@peer`).
pub fn links_in(netns_name: &str) -> Vec<String> {
    ip_output(&["-n", netns_name, "-o", "link"])
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|name| name != "lo")
        .collect()
}

impl Daemon {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it; returns what it
    /// wrote to stderr. The topology file and socket path stay for [`Daemon::restart`].
    pub fn kill_hard(&mut self) -> String {
        let child = self.child.as_mut().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        let stderr = self.stderr();
        self.child = None;
        stderr
    }

    /// Starts vswitchd again on the same topology file and socket, in `netns_name`, and waits
    /// until its control socket answers. Returns the exit status and stderr if it exits first.
    pub fn restart(&mut self, netns_name: &str) -> Result<(), String> {
        assert!(self.child.is_none(), "still running");
        let child = spawn_in(
            netns_name,
            VSWITCHD,
            &[
                "--config",
                self.config.to_str().unwrap(),
                "--socket",
                self.socket.to_str().unwrap(),
                "--log-level",
                "debug",
            ],
        )
        .expect("spawn vswitchd");
        let mut child = child;
        let (log, reader) = drain_stderr(&mut child);
        (self.log, self.log_reader) = (log, Some(reader));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let stderr = self.stderr();
                self.child = None;
                return Err(format!("exited with {status}: {stderr}"));
            }
            if self.ctl_json(&["show"]).is_ok() {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "vswitchd neither answered nor exited within 20 s");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Daemon {
    /// Starts `vswitchd --takeover` on the same topology file and socket, in `netns_name`;
    /// waits for the running one to exit and the new one to answer. Returns the old one's exit
    /// status and stderr; from then on this `Daemon` is the new process.
    #[allow(dead_code)] // not every test binary uses it
    pub fn take_over(&mut self, netns_name: &str) -> Result<(ExitStatus, String), String> {
        self.take_over_with_args(netns_name, &[])
    }

    /// As [`Daemon::take_over`], with more `vswitchd` arguments.
    #[allow(dead_code)] // not every test binary uses it
    pub fn take_over_with_args(&mut self, netns_name: &str, extra: &[&str]) -> Result<(ExitStatus, String), String> {
        let args = [
            "--config",
            self.config.to_str().unwrap(),
            "--socket",
            self.socket.to_str().unwrap(),
            "--log-level",
            "debug",
            "--takeover",
        ];
        let mut child = spawn_in(netns_name, VSWITCHD, &[&args[..], extra].concat()).map_err(|e| e.to_string())?;
        let (log, reader) = drain_stderr(&mut child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let old_status = loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait().unwrap() {
                break status;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let _ = reader.join();
                let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
                return Err(format!("the new vswitchd exited with {status} before the old one: {text}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("the old vswitchd did not exit within 30 s".into());
            }
            thread::sleep(Duration::from_millis(5));
        };
        let old_stderr = self.stderr();
        (self.log, self.log_reader) = (log, Some(reader));
        self.child = Some(child);
        wait_for("the new vswitchd's control socket", Duration::from_secs(20), || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the new vswitchd exited with {status}: {}", self.stderr());
            }
            self.ctl_json(&["show"]).ok()
        });
        Ok((old_status, old_stderr))
    }
}

/// A TAP device the test holds open the way QEMU holds a VM's: the test plays the guest and
/// writes frames, each behind a virtio-net header, into it. The device goes away with it.
#[derive(Debug)]
pub struct GuestTap {
    file: std::fs::File,
    pub name: String,
}

impl GuestTap {
    /// Creates TAP `name` (with virtio-net headers) in `netns_name`, tells the kernel the reader
    /// takes checksum, TSO and USO offloads, and brings the device up.
    pub fn create(netns_name: &str, name: &str) -> GuestTap {
        use vswitchd_dataplane::port::tap::offload::*;
        let tap_name = name.to_string();
        let fd = netns::run_in(netns_name, move || vswitchd_dataplane::sys::create_tap(&tap_name))
            .expect("enter")
            .unwrap_or_else(|e| panic!("create TAP {name}: {e}"));
        vswitchd_dataplane::sys::set_tap_offload(fd.as_fd(), CSUM | TSO4 | TSO6 | USO4 | USO6)
            .or_else(|_| vswitchd_dataplane::sys::set_tap_offload(fd.as_fd(), CSUM | TSO4 | TSO6))
            .expect("TUNSETOFFLOAD");
        ip(&["-n", netns_name, "link", "set", name, "up"]);
        GuestTap { file: std::fs::File::from(fd), name: name.to_string() }
    }

    /// Writes one frame behind the 10-byte virtio-net header `vnet_hdr`, as a guest's driver
    /// does; the kernel checks the header and may refuse the frame (EINVAL).
    pub fn write(&self, vnet_hdr: &[u8; 10], frame: &[u8]) -> io::Result<usize> {
        (&self.file).write_vectored(&[io::IoSlice::new(vnet_hdr), io::IoSlice::new(frame)])
    }
}

/// The Linux kernel as a VXLAN peer: an underlay veth `ul` between namespaces `sw` (192.0.2.1,
/// where vswitchd runs) and `kernel` (192.0.2.2, plus the addresses in `strangers`), the
/// kernel's vxlan device `vx0` (VNI 42, UDP port 4789, remote 192.0.2.1) on a kernel bridge,
/// and host namespace `host` behind it with `eth0` at `host_cidr` (MTU 1450). The caller
/// creates the three namespaces; vswitchd's side is `fixtures/vxlan-kernel-peer.toml`'s port.
pub fn kernel_vtep(sw: &str, kernel: &str, host: &str, host_cidr: &str, strangers: &[&str]) {
    ip(&["link", "add", "ul", "netns", sw, "type", "veth", "peer", "name", "ul", "netns", kernel]);
    ip(&["-n", sw, "addr", "add", "192.0.2.1/24", "dev", "ul"]);
    ip(&["-n", kernel, "addr", "add", "192.0.2.2/24", "dev", "ul"]);
    for stranger in strangers {
        ip(&["-n", kernel, "addr", "add", &format!("{stranger}/24"), "dev", "ul"]);
    }
    for ns in [sw, kernel] {
        ip(&["-n", ns, "link", "set", "ul", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let vxlan = "vx0 type vxlan id 42 dstport 4789 local 192.0.2.2 remote 192.0.2.1 dev ul";
    ip(&[&["-n", kernel, "link", "add"][..], &vxlan.split(' ').collect::<Vec<_>>()].concat());
    ip(&["-n", kernel, "link", "add", "br0", "type", "bridge"]);
    ip(&["link", "add", "eth0", "netns", host, "type", "veth", "peer", "name", "pb", "netns", kernel]);
    for dev in ["vx0", "pb"] {
        ip(&["-n", kernel, "link", "set", dev, "master", "br0"]);
        ip(&["-n", kernel, "link", "set", dev, "up"]);
    }
    ip(&["-n", kernel, "link", "set", "br0", "up"]);
    ip(&["-n", host, "link", "set", "eth0", "mtu", "1450"]);
    ip(&["-n", host, "addr", "add", host_cidr, "dev", "eth0"]);
    ip(&["-n", host, "link", "set", "eth0", "up"]);
}

impl RawPort {
    /// Sends one raw frame; the error (for instance ENOBUFS from a full queue) is the caller's.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.socket).write(frame)
    }
}

/// Runs `body` with a fresh tag and checks, after it (and its guards) are gone, that nothing
/// named with the tag is left anywhere.
pub fn with_tag(body: impl FnOnce(&str)) {
    require_privileges();
    let tag = unique_tag();
    body(&tag);
    let left = leftovers(&tag);
    assert!(left.is_empty(), "left behind after the test: {left:?}");
}
