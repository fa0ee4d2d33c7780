//! vhost-user ports end to end over the real protocol: the test is the VMM (the `vhost` crate's
//! vhost-user frontend, as QEMU would be, with the guest's memory in a shared file and eventfds
//! for kicks and interrupts) and the guest driver (virtqueues laid out in that memory), talking
//! to the real vswitchd through a `vhost-user` port. A frame the "guest" sends reaches a host
//! namespace behind a veth port, and its answer comes back into the guest's receive buffers;
//! a descriptor pointing outside guest memory is survived; a second connection is served after
//! the first ends. (QEMU 7.2 under TCG cannot start a vhost-user device on this machine: no
//! ioeventfd without KVM.)

mod support;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;
use vhost::vhost_user::Frontend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const MEMORY: usize = 1 << 20;
const SIZE: u16 = 16;
const DESC: [u64; 2] = [0x1000, 0x4000];
const AVAIL: [u64; 2] = [0x2000, 0x5000];
const USED: [u64; 2] = [0x3000, 0x6000];
const RX_BUFFERS: u64 = 0x10000;
const TX_BUFFERS: u64 = 0x40000;
const WRITE: u16 = 2;
const VERSION_1: u64 = 1 << 32;
const MRG_RXBUF: u64 = 1 << 15;
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x01];

/// A VMM and its guest driver on one vhost-user connection.
struct Vmm {
    /// The connection: dropped, the device sees the VMM go.
    _frontend: Frontend,
    mem: GuestMemoryMmap,
    calls: [EventFd; 2],
    kicks: [EventFd; 2],
    avail: [u16; 2],
    rx_seen: u16,
    tx_next: u16,
    _file: File,
}

impl Vmm {
    fn connect(socket: &Path, shm: &Path) -> Vmm {
        let frontend = wait_for("the vhost-user socket", Duration::from_secs(10), || Frontend::connect(socket, 2).ok());
        Vmm::set_up(frontend, shm)
    }

    /// Waits on `listener` (a VMM listening, QEMU's `server=on`) for vswitchd to connect.
    fn accept(listener: &UnixListener, shm: &Path) -> Vmm {
        listener.set_nonblocking(false).unwrap();
        let (stream, _) = listener.accept().expect("vswitchd connects to the VMM");
        Vmm::set_up(Frontend::from_stream(stream, 2), shm)
    }

    fn set_up(frontend: Frontend, shm: &Path) -> Vmm {
        let file = File::options().read(true).write(true).create(true).truncate(true).open(shm).unwrap();
        file.set_len(MEMORY as u64).unwrap();
        let region = (GuestAddress(0), MEMORY, Some(FileOffset::new(file.try_clone().unwrap(), 0)));
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([region]).unwrap();
        let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
        frontend.set_owner().unwrap();
        let offered = frontend.get_features().unwrap();
        assert_ne!(offered & MRG_RXBUF, 0, "mergeable receive buffers offered: {offered:#x}");
        // A guest that takes no offloads: the device must complete checksums and segment.
        frontend.set_features(VERSION_1 | MRG_RXBUF).unwrap();
        let info = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: MEMORY as u64,
            userspace_addr: host,
            mmap_offset: 0,
            mmap_handle: std::os::fd::AsRawFd::as_raw_fd(&file),
        };
        frontend.set_mem_table(&[info]).unwrap();
        let calls = [EventFd::new(EFD_NONBLOCK).unwrap(), EventFd::new(EFD_NONBLOCK).unwrap()];
        let kicks = [EventFd::new(EFD_NONBLOCK).unwrap(), EventFd::new(EFD_NONBLOCK).unwrap()];
        for q in 0..2 {
            frontend.set_vring_num(q, SIZE).unwrap();
            let config = VringConfigData {
                queue_max_size: SIZE,
                queue_size: SIZE,
                flags: 0,
                desc_table_addr: host + DESC[q],
                used_ring_addr: host + USED[q],
                avail_ring_addr: host + AVAIL[q],
                log_addr: None,
            };
            frontend.set_vring_addr(q, &config).unwrap();
            frontend.set_vring_base(q, 0).unwrap();
            frontend.set_vring_call(q, &calls[q]).unwrap();
            frontend.set_vring_kick(q, &kicks[q]).unwrap();
        }
        let mut vmm =
            Vmm { _frontend: frontend, mem, calls, kicks, avail: [0; 2], rx_seen: 0, tx_next: 0, _file: file };
        for i in 0..SIZE {
            vmm.descriptor(0, i, RX_BUFFERS + u64::from(i) * 2048, 2048, WRITE);
            vmm.offer(0, i);
        }
        vmm.kick(0);
        vmm
    }

    fn descriptor(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        self.mem.write_slice(&d, GuestAddress(DESC[q] + u64::from(index) * 16)).unwrap();
    }

    fn offer(&mut self, q: usize, head: u16) {
        let slot = self.avail[q] % SIZE;
        self.mem.write_slice(&head.to_le_bytes(), GuestAddress(AVAIL[q] + 4 + u64::from(slot) * 2)).unwrap();
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem.write_slice(&self.avail[q].to_le_bytes(), GuestAddress(AVAIL[q] + 2)).unwrap();
    }

    fn kick(&self, q: usize) {
        self.kicks[q].write(1).unwrap();
    }

    fn used_idx(&self, q: usize) -> u16 {
        let mut idx = [0u8; 2];
        self.mem.read_slice(&mut idx, GuestAddress(USED[q] + 2)).unwrap();
        u16::from_le_bytes(idx)
    }

    /// Sends `frame` behind a 12-byte virtio-net header from the guest.
    fn send(&mut self, frame: &[u8]) {
        let index = self.tx_next % SIZE;
        self.tx_next += 1;
        let addr = TX_BUFFERS + u64::from(index) * 2048;
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(frame);
        self.mem.write_slice(&buf, GuestAddress(addr)).unwrap();
        self.descriptor(1, index, addr, buf.len() as u32, 0);
        self.offer(1, index);
        self.kick(1);
    }

    /// Offers a transmit descriptor that points outside guest memory.
    fn send_garbage(&mut self) {
        let index = self.tx_next % SIZE;
        self.tx_next += 1;
        self.descriptor(1, index, MEMORY as u64 - 4, 4096, 0);
        self.offer(1, index);
        self.kick(1);
    }

    /// The next frame the device put in the receive queue that `keep` accepts (others are
    /// skipped), within `timeout`.
    fn receive(&mut self, timeout: Duration, keep: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let _ = self.calls[0].read();
            while self.rx_seen != self.used_idx(0) {
                let slot = self.rx_seen % SIZE;
                self.rx_seen = self.rx_seen.wrapping_add(1);
                let mut entry = [0u8; 8];
                self.mem.read_slice(&mut entry, GuestAddress(USED[0] + 4 + u64::from(slot) * 8)).unwrap();
                let head = u32::from_le_bytes(entry[..4].try_into().unwrap()) as u16;
                let len = u32::from_le_bytes(entry[4..].try_into().unwrap()) as usize;
                let mut buf = vec![0u8; len];
                self.mem.read_slice(&mut buf, GuestAddress(RX_BUFFERS + u64::from(head) * 2048)).unwrap();
                // Give the buffer back.
                self.offer(0, head);
                self.kick(0);
                assert!(len >= 12, "a used buffer shorter than the header");
                assert_eq!(u16::from_le_bytes([buf[10], buf[11]]), 1, "num_buffers");
                assert_eq!(buf[0] & 1, 0, "no partial checksum for a guest that refused them");
                let frame = buf[12..].to_vec();
                if keep(&frame) {
                    return Some(frame);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

fn is_arp_reply_from(frame: &[u8], ip: Ipv4Addr) -> bool {
    frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2] && frame[28..32] == ip.octets()
}

/// An ICMP echo request from the guest to `dst` (MAC `dst_mac`).
fn echo_request(dst_mac: &[u8], src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(&[0xab; 56]);
    let sum = inet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(ip);
    f.extend(icmp);
    f
}

fn is_echo_reply(frame: &[u8], seq: u16) -> bool {
    frame.len() >= 42
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 1
        && frame[34] == 0
        && frame[40..42] == seq.to_be_bytes()
}

#[test]
fn a_vmm_on_a_vhost_user_port_reaches_a_host_survives_bad_descriptors_and_reconnects() {
    vmm_reaches_a_host(true);
}

/// `server = false`: the VMM listens (QEMU's `server=on`) and vswitchd connects, and connects
/// again when the connection ends.
#[test]
fn vswitchd_connects_to_a_listening_vmm_and_again_after_it_goes() {
    vmm_reaches_a_host(false);
}

fn vmm_reaches_a_host(server: bool) {
    with_tag(|tag| {
        let (sw, h1) = (format!("vu{tag}sw"), format!("vu{tag}h1"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&h1);
        let dir = std::env::temp_dir().join(format!("vswitchd-vhost-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vm.sock");
        let topology = format!(
            "[bridge]\nname = \"vu{tag}\"\n[[netns]]\nname = \"{h1}\"\n\
             [[port]]\nname = \"u{tag}h\"\ntype = \"veth\"\nnetns = \"{h1}\"\naddress = \"10.77.0.2/24\"\n\
             [[port]]\nname = \"u{tag}vm\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nserver = {server}\n",
            socket.display()
        );
        let listener = (!server).then(|| UnixListener::bind(&socket).unwrap());
        let mut daemon = Daemon::start(&sw, &topology);
        let (guest, host) = (Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2));
        let shm = Path::new("/dev/shm").join(format!("vswitchd-vhost-{tag}"));
        for connection in 0..2 {
            let mut vmm = match &listener {
                None => Vmm::connect(&socket, &shm),
                Some(l) => Vmm::accept(l, &shm),
            };
            if connection == 0 {
                // A chain past the end of guest memory: counted by the device, which goes on.
                vmm.send_garbage();
            }
            vmm.send(&arp_request(guest, host));
            let reply = vmm
                .receive(Duration::from_secs(5), |f| is_arp_reply_from(f, host))
                .unwrap_or_else(|| panic!("connection {connection}: no ARP reply from the host through vswitchd"));
            let host_mac = reply[6..12].to_vec();
            for seq in 1..=3u16 {
                vmm.send(&echo_request(&host_mac, guest, host, seq));
                let answer = vmm.receive(Duration::from_secs(5), |f| is_echo_reply(f, seq));
                assert!(answer.is_some(), "connection {connection}: no echo reply {seq}");
            }
            let ports = daemon.ctl_json(&["port", "show", &format!("u{tag}vm")]).unwrap();
            let rx = ports["ports"][0]["rx_frames"].as_u64().unwrap();
            assert!(rx >= 4, "the port counted the guest's frames: {ports}");
            // The bad chain is a named drop on the port (read with the kernel's, once a second).
            let bad = wait_for("the bad descriptor counted on the port", Duration::from_secs(5), || {
                let ports = daemon.ctl_json(&["port", "show", &format!("u{tag}vm")]).ok()?;
                let n = ports["ports"][0]["drops"]["vhost_bad_descriptor"].as_u64().unwrap_or(0);
                (n > 0).then_some(n)
            });
            assert_eq!(bad, 1, "one bad chain, counted once (also after the second connection)");
            drop(vmm); // the VMM goes away: the device waits for the next one
        }
        let _ = std::fs::remove_file(&shm);
        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "{stderr}");
        if server {
            assert!(!socket.exists(), "the socket vswitchd listened on is gone");
        }
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
