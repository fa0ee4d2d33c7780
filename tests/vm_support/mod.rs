//! Real QEMU guests as test hosts: builds the test guest once (tests/vm/build-guest.sh), boots
//! it under TCG with a given `-netdev` backend inside a namespace, reads its serial console for
//! the `VMTEST` markers tests/vm/guest-init.sh prints, and always kills QEMU when dropped.
//! Also a plain HTTP/1.0 download and MD5, to check the 8 MiB file a guest serves.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use vswitchd_control::netns;

/// The QEMU binary the guests run on (Debian package `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";

/// The directory holding the built guest (`vmlinux`, `initramfs.cpio`): built on first use by
/// tests/vm/build-guest.sh into its cache (/tmp/vswitchd-vm, or `$VSWITCHD_VM_CACHE`), reused
/// afterwards; the script's lock makes parallel tests and test binaries build it once.
pub fn guest_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let qemu = Command::new(QEMU).arg("--version").output();
        if !qemu.as_ref().is_ok_and(|out| out.status.success()) {
            panic!(
                "the VM tests need {QEMU}: install it (apt-get install --no-install-recommends \
                 qemu-system-x86), as CI does ({:?})",
                qemu.err()
            );
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vm/build-guest.sh");
        let out = Command::new("sh").arg(&script).stderr(Stdio::inherit()).output().expect("run build-guest.sh");
        assert!(out.status.success(), "{} failed ({}): see its output above", script.display(), out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(dir.join("complete").exists(), "build-guest.sh printed {dir:?}, which holds no complete guest");
        dir
    })
}

/// What one guest is: its address, what it checks, and how QEMU connects its NIC.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// Names the guest in messages and panics.
    pub name: String,
    /// eth0's address with prefix, e.g. `10.78.0.1/24`.
    pub cidr: String,
    /// The address the guest pings.
    pub peer: Ipv4Addr,
    pub mac: String,
    /// Serve a random file of this many KiB at `http://ADDR:8080/blob` (0: none).
    pub http_kib: u32,
    /// A URL the guest downloads after its first ping reply, reporting the MD5.
    pub fetch: Option<String>,
    /// After PASS, ping the peer every 0.1 s for `hold_secs`, one console line per reply.
    pub watch: bool,
    /// Seconds the guest stays up after PASS; bounds a QEMU nobody killed.
    pub hold_secs: u32,
    /// The `-netdev` value without its id (the NIC is bound to id `n0`).
    pub netdev: String,
    /// Appended to the NIC's `-device virtio-net-pci,netdev=n0,mac=...` (e.g. `,vectors=0`).
    pub nic_options: String,
    /// More QEMU arguments (a chardev, a shared memory backend).
    pub qemu_args: Vec<String>,
}

impl GuestConfig {
    /// A guest at `cidr` that pings `peer` over `netdev` and stays up for two minutes.
    pub fn new(name: &str, cidr: &str, peer: Ipv4Addr, netdev: &str) -> GuestConfig {
        let host: u8 = cidr.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok()).expect("cidr").octets()[3];
        GuestConfig {
            name: name.to_string(),
            cidr: cidr.to_string(),
            peer,
            mac: format!("52:54:00:78:00:{host:02x}"),
            http_kib: 0,
            fetch: None,
            watch: false,
            hold_secs: 120,
            netdev: netdev.to_string(),
            nic_options: String::new(),
            qemu_args: Vec::new(),
        }
    }

    /// The guest's address without prefix.
    pub fn ip(&self) -> Ipv4Addr {
        self.cidr.split('/').next().and_then(|a| a.parse().ok()).expect("cidr")
    }

    /// The kernel command line guest-init.sh reads.
    pub fn kernel_command_line(&self) -> String {
        let mut line = format!(
            "console=ttyS0 quiet panic=-1 vm.ip={} vm.peer={} vm.tries=60 vm.http={} vm.watch={} vm.hold={}",
            self.cidr,
            self.peer,
            self.http_kib,
            u8::from(self.watch),
            self.hold_secs
        );
        if let Some(url) = &self.fetch {
            line.push_str(&format!(" vm.fetch={url}"));
        }
        line
    }

    /// QEMU's arguments: TCG (this machine's KVM is a nested PVM that never boots a stock
    /// kernel), the ELF kernel booted through PVH, the console on stdout.
    pub fn qemu_arguments(&self, image: &Path) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let qboot = Path::new("/usr/share/qemu/qboot.rom");
        if qboot.exists() {
            args.extend(["-bios".into(), qboot.display().to_string()]);
        }
        for arg in [
            "-accel",
            "tcg",
            "-machine",
            "pc",
            "-cpu",
            "max",
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ] {
            args.push(arg.into());
        }
        args.extend(["-kernel".into(), image.join("vmlinux").display().to_string()]);
        args.extend(["-initrd".into(), image.join("initramfs.cpio").display().to_string()]);
        args.extend(["-append".into(), self.kernel_command_line()]);
        args.extend(["-netdev".into(), format!("{},id=n0", self.netdev)]);
        args.extend(["-device".into(), format!("virtio-net-pci,netdev=n0,mac={}{}", self.mac, self.nic_options)]);
        args.extend(self.qemu_args.iter().cloned());
        args
    }
}

/// One line of a guest's console (or of QEMU's stderr, prefixed `qemu: `), with when it came.
#[derive(Debug, Clone)]
pub struct ConsoleLine {
    pub at: Instant,
    pub text: String,
}

/// A running guest: QEMU in a namespace, its console captured; killed on drop.
pub struct Guest {
    pub config: GuestConfig,
    child: Child,
    started: Instant,
    console: Arc<Mutex<Vec<ConsoleLine>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

/// Appends each line `source` produces to `console`, prefixed, until it ends.
fn capture_lines(
    source: impl Read + Send + 'static,
    prefix: &'static str,
    console: &Arc<Mutex<Vec<ConsoleLine>>>,
) -> thread::JoinHandle<()> {
    let console = Arc::clone(console);
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
            console
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ConsoleLine { at: Instant::now(), text: format!("{prefix}{text}") });
            line.clear();
        }
    })
}

impl Guest {
    /// Starts QEMU for `config` inside namespace `netns_name` (so a TAP it creates is there).
    pub fn boot(netns_name: &str, config: GuestConfig) -> Guest {
        let image = guest_image();
        let mut command = Command::new(QEMU);
        command.args(config.qemu_arguments(image)).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = netns::run_in(netns_name, move || command.spawn())
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("cannot start {QEMU}: {e}"));
        let console = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            capture_lines(child.stdout.take().expect("stdout piped"), "", &console),
            capture_lines(child.stderr.take().expect("stderr piped"), "qemu: ", &console),
        ];
        Guest { config, child, started, console, readers }
    }

    /// The console so far, one line each, with seconds since boot.
    pub fn console(&self) -> String {
        let lines = self.console.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().map(|l| format!("[{:7.3}] {}\n", (l.at - self.started).as_secs_f64(), l.text)).collect()
    }

    /// A copy of the console lines so far.
    pub fn lines(&self) -> Vec<ConsoleLine> {
        self.console.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until a console line gives `Some` from `check`; panics (showing the console) on
    /// `VMTEST FAIL`, when QEMU exits, or after `timeout`.
    pub fn wait_line<T>(&mut self, what: &str, timeout: Duration, check: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let lines = self.lines();
            for line in &lines[seen..] {
                if let Some(found) = check(&line.text) {
                    return found;
                }
                if line.text.starts_with("VMTEST FAIL") {
                    panic!(
                        "guest {} reported {} while waiting for {what}:\n{}",
                        self.config.name,
                        line.text,
                        self.console()
                    );
                }
            }
            seen = lines.len();
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100)); // the last lines
                panic!("QEMU of guest {} exited ({status}) before {what}:\n{}", self.config.name, self.console());
            }
            if Instant::now() > deadline {
                panic!("guest {}: no {what} within {timeout:?}:\n{}", self.config.name, self.console());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the console line `VMTEST KEY ...` and returns what follows `KEY`.
    pub fn marker(&mut self, key: &str, timeout: Duration) -> String {
        let prefix = format!("VMTEST {key}");
        self.wait_line(&format!("`{prefix}`"), timeout, |line| {
            let rest = line.strip_prefix(&prefix)?;
            (rest.is_empty() || rest.starts_with(' ')).then(|| rest.trim().to_string())
        })
    }

    /// The echo replies the guest's watch ping got so far (`vm.watch`): when each line came,
    /// and its sequence number.
    pub fn watch_replies(&self) -> Vec<(Instant, u32)> {
        let from = format!("bytes from {}: seq=", self.config.peer);
        self.lines()
            .iter()
            .filter_map(|line| {
                let rest = &line.text[line.text.find(&from)? + from.len()..];
                let seq = rest.split(' ').next()?.parse().ok()?;
                Some((line.at, seq))
            })
            .collect()
    }

    /// Seconds from boot to `at`.
    pub fn since_boot(&self, at: Instant) -> f64 {
        (at - self.started).as_secs_f64()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if thread::panicking() {
            eprintln!("--- console of guest {} ---\n{}--- end of console ---", self.config.name, self.console());
        }
    }
}

/// Waits for interface `ifname` to appear in `netns_name` (QEMU creates its TAP at start) and
/// brings it up: with `script=no` nobody else does.
pub fn bring_up_when_present(netns_name: &str, ifname: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new("ip").args(["-n", netns_name, "link", "set", ifname, "up"]).output().expect("run ip");
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "{ifname} did not appear in {netns_name} within {timeout:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A completed HTTP download: the body and how long it took from connect to the last byte.
#[derive(Debug)]
pub struct Download {
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Download {
    pub fn megabits_per_second(&self) -> f64 {
        self.body.len() as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Downloads `http://ip:port/path` from inside `netns_name` (HTTP/1.0: the server closes
/// after the body); fails on a non-200 status or a body shorter than its Content-Length.
pub fn http_get(netns_name: &str, ip: Ipv4Addr, port: u16, path: &str, timeout: Duration) -> io::Result<Download> {
    let start = Instant::now();
    let mut stream =
        netns::run_in(netns_name, move || TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(5)))??;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
    let mut response = Vec::with_capacity(9 << 20);
    if let Err(e) = stream.read_to_end(&mut response) {
        let waited = start.elapsed().as_secs_f64();
        return Err(io::Error::new(e.kind(), format!("{e} after {waited:.1} s, {} bytes in", response.len())));
    }
    let elapsed = start.elapsed();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no HTTP header end in {} bytes", response.len())))?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let body = response.split_off(split + 4);
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("HTTP status: {head}")));
    }
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()));
    if let Some(Ok(length)) = length {
        if length != body.len() {
            return Err(io::Error::other(format!("Content-Length {length} but {} bytes arrived", body.len())));
        }
    }
    Ok(Download { body, elapsed })
}

/// MD5 (RFC 1321) of `data`, as lowercase hex, to compare with the guest's `md5sum`.
pub fn md5_hex(data: &[u8]) -> String {
    const SHIFTS: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14,
        20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6,
        10, 15, 21,
    ];
    let constants: Vec<u32> = (0..64).map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32).collect();
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in message.chunks_exact(64) {
        let words: Vec<u32> = block.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a.wrapping_add(f).wrapping_add(constants[i]).wrapping_add(words[g]).rotate_left(SHIFTS[i]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(rotated);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    state.iter().flat_map(|s| s.to_le_bytes()).map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn md5_matches_the_rfc_1321_test_suite() {
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(md5_hex(b"message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
    assert_eq!(
        md5_hex(b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
        "57edf4a22be3c955ac49da2e2107b67a"
    );
}
