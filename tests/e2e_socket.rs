//! `socket` ports end to end with the real binaries, on one worker thread and on two: the test
//! plays QEMU on the Unix sockets (no QEMU needed), speaking `-netdev stream` (each frame
//! behind a 4-byte big-endian length) and `-netdev dgram` (a frame per datagram), and reaches a
//! host namespace behind a veth port of the same switch with ARP and ping.
//!
//! Covered: a server port QEMU connects to, whose connection a malformed length (0, or longer
//! than the MTU allows) closes, counted under `socket_bad_length`, after which a new connection
//! works; a client port that connects to the test's listener and connects again after the
//! listener is closed and opened anew; a dgram port that answers whichever peer spoke last; a
//! port added live; the socket files vswitchd bound going with `port del` and at shutdown,
//! while the one the test bound stays.

mod support;

use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use vswitchd_dataplane::port::socket::StreamDeframer;

const SECOND: Duration = Duration::from_secs(1);

/// The host behind the veth port.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A directory for the test's sockets, removed on drop.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new(tag: &str) -> SocketDir {
        let dir = std::env::temp_dir().join(format!("vswitchd-sock-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        SocketDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How the test's "QEMU" moves frames.
trait Wire {
    fn send(&mut self, frame: &[u8]);
    /// The next frame, or `None` after `timeout` without one (or once the connection ended).
    fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>>;
}

/// QEMU's `-netdev stream`: a connection carrying length-prefixed frames.
struct StreamWire {
    stream: UnixStream,
    deframer: StreamDeframer,
    ended: bool,
}

impl StreamWire {
    fn new(stream: UnixStream) -> StreamWire {
        StreamWire { stream, deframer: StreamDeframer::new(65_535), ended: false }
    }

    /// Waits until vswitchd closes the connection (all it sent read and dropped).
    fn closed_by_peer(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut scratch = [0u8; 4096];
        while Instant::now() < deadline {
            self.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            match self.stream.read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

impl Wire for StreamWire {
    fn send(&mut self, frame: &[u8]) {
        let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(frame);
        self.stream.write_all(&bytes).unwrap();
    }

    fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.deframer.next_frame().expect("vswitchd frames its stream correctly") {
                assert!(frame.len() >= 14, "a frame of {} bytes", frame.len());
                return Some(frame.to_vec());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if self.ended {
                return None;
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.stream.read(self.deframer.read_area()) {
                Ok(0) => self.ended = true,
                Ok(n) => self.deframer.commit(n),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return None,
                Err(e) => panic!("reading the stream: {e}"),
            }
        }
    }
}

/// QEMU's `-netdev dgram`: bound at its own path, sending to vswitchd's.
struct DgramWire {
    socket: UnixDatagram,
    to: PathBuf,
}

impl Wire for DgramWire {
    fn send(&mut self, frame: &[u8]) {
        self.socket.send_to(frame, &self.to).unwrap();
    }

    fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let n = self.socket.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

/// A guest: its MAC and address.
#[derive(Clone, Copy)]
struct Guest {
    mac: [u8; 6],
    ip: Ipv4Addr,
}

impl Guest {
    fn new(n: u8) -> Guest {
        Guest { mac: [0x02, 0, 0, 0x77, 0, n], ip: Ipv4Addr::new(10, 77, 0, n) }
    }

    fn arp_request(&self, target: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&self.mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&self.mac);
        f.extend_from_slice(&self.ip.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f
    }

    fn echo_request(&self, to_mac: [u8; 6], to: Ipv4Addr, seq: u16) -> Vec<u8> {
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend_from_slice(&[0xab; 32]);
        let sum = inet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0, 0, 64, 1, 0, 0]);
        ip.extend_from_slice(&self.ip.octets());
        ip.extend_from_slice(&to.octets());
        let sum = inet_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut f = to_mac.to_vec();
        f.extend_from_slice(&self.mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&icmp);
        f
    }

    /// The host's MAC, if `frame` is its ARP reply to this guest.
    fn arp_reply_from(&self, frame: &[u8], host: Ipv4Addr) -> Option<[u8; 6]> {
        let ours = frame.len() >= 42
            && frame[..6] == self.mac
            && frame[12..14] == [0x08, 0x06]
            && frame[20..22] == [0, 2]
            && frame[28..32] == host.octets()
            && frame[38..42] == self.ip.octets();
        ours.then(|| frame[22..28].try_into().unwrap())
    }

    /// Whether `frame` is the echo reply to this guest's request `seq`.
    fn is_echo_reply(&self, frame: &[u8], seq: u16) -> bool {
        frame.len() >= 42
            && frame[..6] == self.mac
            && frame[12..14] == [0x08, 0x00]
            && frame[23] == 1
            && frame[30..34] == self.ip.octets()
            && frame[34] == 0
            && frame[38..40] == [0x12, 0x34]
            && frame[40..42] == seq.to_be_bytes()
    }

    /// Resolves the host with ARP and pings it through `wire`; panics with `what` if a reply
    /// does not come.
    fn reach_host(&self, wire: &mut dyn Wire, what: &str) {
        let host_mac = self.await_reply(wire, &self.arp_request(HOST_IP), |f| self.arp_reply_from(f, HOST_IP));
        let host_mac = host_mac.unwrap_or_else(|| panic!("{what}: no ARP reply from the host"));
        for seq in 1..=3u16 {
            let request = self.echo_request(host_mac, HOST_IP, seq);
            let reply = self.await_reply(wire, &request, |f| self.is_echo_reply(f, seq).then_some(()));
            assert!(reply.is_some(), "{what}: no echo reply {seq} from the host");
        }
    }

    /// Sends `request` (again every second, five times at most) until a frame `answer` takes
    /// comes back.
    fn await_reply<T>(&self, wire: &mut dyn Wire, request: &[u8], answer: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
        for _ in 0..5 {
            wire.send(request);
            let deadline = Instant::now() + SECOND;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let Some(frame) = wire.recv(left) else { break };
                if let Some(found) = answer(&frame) {
                    return Some(found);
                }
            }
        }
        None
    }
}

/// `port`'s entry in `show`.
fn shown(daemon: &Daemon, port: &str) -> Value {
    let show = daemon.ctl_json(&["show"]).unwrap();
    show["ports"].as_array().unwrap().iter().find(|p| p["name"] == port).cloned().unwrap_or(Value::Null)
}

fn wait_link(daemon: &Daemon, port: &str, link: &str) {
    wait_for(&format!("port {port} {link}"), 10 * SECOND, || (shown(daemon, port)["link"] == link).then_some(()));
}

fn bad_lengths(daemon: &Daemon, port: &str) -> u64 {
    let shown = daemon.ctl_json(&["port", "show", port]).unwrap();
    shown["ports"][0]["drops"]["socket_bad_length"].as_u64().unwrap_or(0)
}

fn connect(path: &Path) -> StreamWire {
    StreamWire::new(UnixStream::connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display())))
}

/// Accepts vswitchd's connection on `listener` (it connects with backoff).
fn accept(listener: &UnixListener) -> StreamWire {
    listener.set_nonblocking(true).unwrap();
    let stream = wait_for("vswitchd to connect", 10 * SECOND, || listener.accept().ok().map(|(s, _)| s));
    stream.set_nonblocking(false).unwrap();
    StreamWire::new(stream)
}

fn vm_sockets(threads: usize) {
    with_tag(|tag| {
        let (sw, host) = (format!("so{tag}sw"), format!("so{tag}h"));
        let (server, client, dgram, live, veth) =
            (format!("s{tag}"), format!("c{tag}"), format!("d{tag}"), format!("e{tag}"), format!("h{tag}"));
        let dir = SocketDir::new(tag);
        let (server_path, client_path, dgram_path, live_path) =
            (dir.path("server.sock"), dir.path("client.sock"), dir.path("dgram.sock"), dir.path("live.sock"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&host);
        // The client port's QEMU listens first (vswitchd would also wait for it).
        let listener = UnixListener::bind(&client_path).unwrap();
        let mut daemon = Daemon::start(
            &sw,
            &format!(
                "[bridge]\nname = \"so{tag}\"\nthreads = {threads}\n[[netns]]\nname = \"{host}\"\n\
                 [[port]]\nname = \"{veth}\"\ntype = \"veth\"\nnetns = \"{host}\"\naddress = \"{HOST_IP}/24\"\n\
                 [[port]]\nname = \"{server}\"\ntype = \"socket\"\npath = \"{}\"\nframing = \"stream\"\n\
                 [[port]]\nname = \"{client}\"\ntype = \"socket\"\npath = \"{}\"\nserver = false\n\
                 [[port]]\nname = \"{dgram}\"\ntype = \"socket\"\npath = \"{}\"\nframing = \"dgram\"\n",
                server_path.display(),
                client_path.display(),
                dgram_path.display()
            ),
        );
        let port = shown(&daemon, &server);
        assert_eq!((port["type"].as_str(), port["link"].as_str()), (Some("socket"), Some("down")), "{port}");

        // Server: QEMU connects.
        let vm = Guest::new(2);
        let mut wire = connect(&server_path);
        vm.reach_host(&mut wire, "server port");
        wait_link(&daemon, &server, "up");
        // A zero length closes the connection, counted; the port waits for the next one.
        wire.send(&[]);
        assert!(wire.closed_by_peer(5 * SECOND), "a zero length closes the connection");
        wait_link(&daemon, &server, "down");
        assert_eq!(bad_lengths(&daemon, &server), 1);
        let mut wire = connect(&server_path);
        vm.reach_host(&mut wire, "server port, second connection");
        // So does a length past the MTU (1500 + 14 + two tags), whatever follows it.
        wire.stream.write_all(&1523u32.to_be_bytes()).unwrap();
        let _ = wire.stream.write_all(&[0u8; 1523]); // vswitchd may have closed it already
        assert!(wire.closed_by_peer(5 * SECOND), "an oversized length closes the connection");
        wait_for("the second bad length counted", 5 * SECOND, || (bad_lengths(&daemon, &server) == 2).then_some(()));
        let mut wire = connect(&server_path);
        vm.reach_host(&mut wire, "server port, third connection");
        drop(wire);
        wait_link(&daemon, &server, "down");

        // Client: vswitchd connects to QEMU, and again after QEMU went away and came back.
        let vm = Guest::new(3);
        let mut wire = accept(&listener);
        vm.reach_host(&mut wire, "client port");
        wait_link(&daemon, &client, "up");
        drop(wire);
        drop(listener);
        std::fs::remove_file(&client_path).unwrap();
        wait_link(&daemon, &client, "down");
        std::thread::sleep(SECOND); // vswitchd fails to connect meanwhile, and backs off
        let listener = UnixListener::bind(&client_path).unwrap();
        let mut wire = accept(&listener);
        vm.reach_host(&mut wire, "client port after QEMU restarted");
        wait_link(&daemon, &client, "up");

        // Datagrams: replies go to whichever peer spoke last.
        let vm = Guest::new(4);
        let mut first =
            DgramWire { socket: UnixDatagram::bind(dir.path("qemu-a.sock")).unwrap(), to: dgram_path.clone() };
        vm.reach_host(&mut first, "dgram port");
        let mut second =
            DgramWire { socket: UnixDatagram::bind(dir.path("qemu-b.sock")).unwrap(), to: dgram_path.clone() };
        vm.reach_host(&mut second, "dgram port, second peer");
        assert!(first.recv(SECOND / 2).is_none(), "the first peer no longer gets the replies");

        // A vhost-user port added live listens on its socket, which goes with `port del`.
        let vhost = dir.path("vhost.sock");
        let added =
            daemon.ctl(&["port", "add", &format!("v{tag}"), "vhost-user", &format!("socket={}", vhost.display())]);
        assert!(added.is_ok(), "{added:?}");
        assert!(vhost.exists(), "the vhost-user socket is listening");
        daemon.ctl(&["port", "del", &format!("v{tag}")]).unwrap();
        wait_for("the vhost-user socket to go", Duration::from_secs(5), || (!vhost.exists()).then_some(()));

        // A socket port added live; its file and the dgram port's go with `port del`.
        daemon.ctl(&["port", "add", &live, "socket", &format!("path={}", live_path.display())]).unwrap();
        let vm = Guest::new(6);
        let mut wire = connect(&live_path);
        vm.reach_host(&mut wire, "a port added live");
        daemon.ctl(&["port", "del", &live]).unwrap();
        assert!(wire.closed_by_peer(5 * SECOND), "the connection ends with its port");
        assert!(!live_path.exists(), "port del removed the socket vswitchd bound");
        daemon.ctl(&["port", "del", &dgram]).unwrap();
        assert!(!dgram_path.exists(), "port del removed the dgram socket");

        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "vswitchd exited with {status}: {stderr}");
        assert!(!server_path.exists(), "the listening socket is removed at shutdown");
        assert!(client_path.exists(), "the socket the test's QEMU bound is left alone");
        drop(wire);
    });
}

#[test]
fn qemu_sockets_reach_a_host_on_one_worker() {
    vm_sockets(1);
}

#[test]
fn qemu_sockets_reach_a_host_on_two_workers() {
    vm_sockets(2);
}
