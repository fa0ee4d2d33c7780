//! vhost-user ports: vswitchd as the vhost-user-net backend of a QEMU `virtio-net-pci` device,
//! built on the rust-vmm crates (`vhost`, `vhost-user-backend`, `virtio-queue`, `vm-memory`).
//!
//! The backend runs on threads of its own (the vhost-user protocol on one, the virtqueues on
//! another) and meets the switch through a datagram socket pair whose messages are a
//! virtio-net header and a frame, exactly what the switch exchanges with a TAP: the switch's
//! end is an ordinary [`DatagramPort`] with offload, served by the first worker
//! ([`vswitchd_dataplane::switch::PortIo::Single`]).
//!
//! - Guest to switch: each chain of the transmit queue is a 12-byte `virtio_net_hdr_v1` and a
//!   frame; the frame goes on with the first 10 bytes of the header (checksum and GSO metadata),
//!   so a guest's 64 KiB TCP super-frames cross whole.
//! - Switch to guest: a frame and its header are written into the receive queue's buffers
//!   (mergeable: as many chains as it takes, `num_buffers` says how many). An offload the guest
//!   did not accept (a super-frame without `GUEST_TSO4`, a partial checksum without
//!   `GUEST_CSUM`) is done here first. With no buffer posted, the backend stops reading its end
//!   of the pair (it listens edge-triggered, so it does not spin) until the guest posts buffers;
//!   frames wait in the pair's buffer, and once that is full the switch counts what it cannot
//!   send to the port (`no_room`): a guest that stops reading costs drops on its port, never a
//!   stall.
//! - Guest memory and descriptor chains are untrusted: every access goes through `vm-memory`'s
//!   checked reads and writes. A chain that points outside the guest's memory, or that is too
//!   short or too long, is counted ([`DeviceCounters::bad_descriptors`]) and returned unused; the
//!   device keeps running.
//! - `server = true`: vswitchd listens on the socket and serves each QEMU that connects, one at
//!   a time; `server = false`: it connects to a QEMU listening there (`server=on`), and again,
//!   with a pause, whenever the connection ends — a restarted QEMU or vswitchd finds its peer.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tracing::{debug, info, warn};
use vhost::vhost_user::Listener;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Address, Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier};
use vswitchd_dataplane::port::datagram::DatagramPort;
use vswitchd_dataplane::port::{FrameBuf, MAX_FRAME_LEN, Port};
use vswitchd_dataplane::verdict::DropReason;
use vswitchd_dataplane::wire::{MacAddr, VnetHdr, vnet_hdr};

/// Receive queue (switch to guest), transmit queue (guest to switch).
const RX: usize = 0;
const TX: usize = 1;
/// The event id of the backend's end of the pair (after the two queues and the exit event).
const SWITCH_EVENT: u16 = 3;
/// Descriptors per queue at most.
const QUEUE_SIZE: usize = 1024;
/// `virtio_net_hdr_v1`: the 10-byte header and `num_buffers`.
const GUEST_HDR_LEN: usize = vnet_hdr::LEN + 2;
/// Spare frame buffers kept for reuse.
pub const PENDING: usize = 256;

// Feature bits (virtio 1.2, 5.1.3).
const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
const VIRTIO_F_NOTIFY_ON_EMPTY: u64 = 1 << 24;
const VIRTIO_F_ANY_LAYOUT: u64 = 1 << 27;
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// What the device counts, for `port show`'s view of a vhost-user port.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Frames the guest sent.
    pub from_guest: AtomicU64,
    /// Frames written into the guest's receive queue.
    pub to_guest: AtomicU64,
    /// Chains pointing outside the guest's memory, too short or too long: returned unused.
    pub bad_descriptors: AtomicU64,
    /// Frames from the switch dropped because the guest's buffers could not take them (an
    /// offload the guest refused that could not be done here, or a frame too big for them).
    pub undeliverable: AtomicU64,
    /// Connections served.
    pub connections: AtomicU64,
}

/// The state the vhost-user threads share.
struct NetState {
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    acked: u64,
    /// The backend's end of the pair with the switch.
    switch: UnixDatagram,
    /// Frames (header + frame) from the switch waiting for receive buffers.
    pending: VecDeque<Vec<u8>>,
    /// Spare buffers for `pending`, so a busy device does not allocate per frame.
    spare: Vec<Vec<u8>>,
    /// Scratch for a frame read from the guest or cut into segments.
    scratch: Vec<u8>,
    segment: Vec<u8>,
    /// The receive chains one frame is being written into: (head, bytes written).
    chains: Vec<(u16, u32)>,
    mac: MacAddr,
    counters: Arc<DeviceCounters>,
}

/// The backend handed to `vhost-user-backend`.
#[derive(Clone)]
struct NetBackend {
    state: Arc<Mutex<NetState>>,
}

impl NetBackend {
    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_NET_F_CSUM
            | VIRTIO_NET_F_GUEST_CSUM
            | VIRTIO_NET_F_MAC
            | VIRTIO_NET_F_GUEST_TSO4
            | VIRTIO_NET_F_GUEST_TSO6
            | VIRTIO_NET_F_HOST_TSO4
            | VIRTIO_NET_F_HOST_TSO6
            | VIRTIO_NET_F_MRG_RXBUF
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_F_NOTIFY_ON_EMPTY
            | VIRTIO_F_ANY_LAYOUT
        // No VHOST_USER_F_PROTOCOL_FEATURES: QEMU 7.2 would then send SET_VRING_ENABLE
        // without acking the bit in SET_FEATURES, which the protocol library refuses; without
        // it the rings start enabled and one queue pair needs no protocol feature.
    }

    fn acked_features(&self, features: u64) {
        debug!(features = format!("{features:#x}"), "vhost-user features acked");
        self.lock().acked = features;
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, _enabled: bool) {}

    /// The way to end the vring thread when a connection ends (without it, the thread of a
    /// finished connection would wait forever, and its device with it).
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // struct virtio_net_config: mac, status, max_virtqueue_pairs.
        let mac = self.lock().mac;
        let mut config = [0u8; 10];
        config[..6].copy_from_slice(&mac.0);
        config[6..8].copy_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        let start = (offset as usize).min(config.len());
        let end = (offset as usize).saturating_add(size as usize).min(config.len());
        let mut out = config[start..end].to_vec();
        out.resize(size as usize, 0);
        out
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.lock().mem = Some(mem);
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> io::Result<()> {
        let mut state = self.lock();
        match device_event as usize {
            TX => state.take_from_guest(&vrings[TX]),
            _ => {
                // Buffers were posted (RX) or the switch sent frames: deliver what fits.
                if device_event == SWITCH_EVENT || device_event as usize == RX {
                    state.give_to_guest(&vrings[RX]);
                }
            }
        }
        Ok(())
    }
}

impl NetState {
    /// Moves every frame the guest queued for transmission to the switch.
    fn take_from_guest(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.mem.as_ref().map(GuestAddressSpace::memory) else { return };
        let mut used = false;
        loop {
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let mut len = 0usize;
            let mut bad = false;
            for desc in chain.clone() {
                let size = desc.len() as usize;
                if desc.is_write_only() || len + size > self.scratch.len() {
                    bad = true;
                    break;
                }
                if mem.read_slice(&mut self.scratch[len..len + size], desc.addr()).is_err() {
                    bad = true;
                    break;
                }
                len += size;
            }
            if bad || len < GUEST_HDR_LEN + 14 {
                self.counters.bad_descriptors.fetch_add(1, Ordering::Relaxed);
            } else {
                // The 10-byte header, then the frame: drop num_buffers in between.
                self.scratch.copy_within(GUEST_HDR_LEN..len, vnet_hdr::LEN);
                let message = &self.scratch[..len - 2];
                match self.switch.send(message) {
                    Ok(_) => {
                        self.counters.from_guest.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => debug!(error = %e, "the switch did not take a guest's frame"),
                }
            }
            let _ = vring.add_used(head, 0);
            used = true;
        }
        if used {
            let _ = vring.signal_used_queue();
        }
    }

    /// Writes frames from the switch into the guest's receive buffers: the waiting ones first,
    /// then what the pair holds, until the buffers run out.
    fn give_to_guest(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.mem.as_ref().map(GuestAddressSpace::memory) else { return };
        let mut delivered = false;
        loop {
            if self.pending.is_empty() {
                let mut buf = self.spare.pop().unwrap_or_else(|| vec![0u8; vnet_hdr::LEN + MAX_FRAME_LEN]);
                buf.resize(vnet_hdr::LEN + MAX_FRAME_LEN, 0);
                match self.switch.recv(&mut buf) {
                    Ok(n) if n > vnet_hdr::LEN => {
                        buf.truncate(n);
                        self.prepare(buf);
                    }
                    Ok(_) => self.spare.push(buf),
                    Err(_) => {
                        self.spare.push(buf);
                        break;
                    }
                }
                continue;
            }
            match self.deliver_first(vring, &mem) {
                Delivery::Done => delivered = true,
                Delivery::NoBuffers => break,
            }
        }
        if delivered {
            let _ = vring.signal_used_queue();
        }
    }

    /// Queues `message` (header + frame) for the guest, doing first the offloads the guest did
    /// not accept: a super-frame is cut into segments, a partial checksum completed.
    fn prepare(&mut self, mut message: Vec<u8>) {
        let Ok(hdr) = VnetHdr::parse(&message[..vnet_hdr::LEN]) else {
            self.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
            self.spare.push(message);
            return;
        };
        let tso = match hdr.gso_type & !vnet_hdr::GSO_ECN {
            vnet_hdr::GSO_NONE => true,
            vnet_hdr::GSO_TCPV4 => self.acked & VIRTIO_NET_F_GUEST_TSO4 != 0,
            vnet_hdr::GSO_TCPV6 => self.acked & VIRTIO_NET_F_GUEST_TSO6 != 0,
            _ => false,
        };
        let csum = !hdr.needs_csum() || self.acked & VIRTIO_NET_F_GUEST_CSUM != 0;
        if tso && csum {
            self.pending.push_back(message);
            return;
        }
        if !hdr.is_gso() {
            match hdr.complete_checksum(&mut message[vnet_hdr::LEN..]) {
                Some(done) => {
                    message[..vnet_hdr::LEN].copy_from_slice(&done.emit());
                    self.pending.push_back(message);
                }
                None => {
                    self.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
                    self.spare.push(message);
                }
            }
            return;
        }
        let (segment_buf, pending, spare) = (&mut self.segment, &mut self.pending, &mut self.spare);
        let plain = VnetHdr::default().emit();
        let cut = vswitchd_dataplane::gso::segment(&message[vnet_hdr::LEN..], &hdr, 65_535, segment_buf, |segment| {
            let mut out = spare.pop().unwrap_or_default();
            out.clear();
            out.extend_from_slice(&plain);
            out.extend_from_slice(segment);
            pending.push_back(out);
        });
        if cut.is_err() {
            self.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
        }
        self.spare.push(message);
    }

    /// Writes the first waiting frame into as many receive chains as it takes.
    fn deliver_first(
        &mut self,
        vring: &VringRwLock,
        mem: &vm_memory::GuestMemoryLoadGuard<GuestMemoryMmap>,
    ) -> Delivery {
        // The list of chains is kept between frames: nothing is allocated per frame.
        let mut chains = std::mem::take(&mut self.chains);
        chains.clear();
        let delivery = self.deliver_first_into(&mut chains, vring, mem);
        self.chains = chains;
        delivery
    }

    fn deliver_first_into(
        &mut self,
        chains: &mut Vec<(u16, u32)>,
        vring: &VringRwLock,
        mem: &vm_memory::GuestMemoryLoadGuard<GuestMemoryMmap>,
    ) -> Delivery {
        let Some(message) = self.pending.front() else { return Delivery::Done };
        let frame = &message[vnet_hdr::LEN..];
        let total = GUEST_HDR_LEN + frame.len();
        let mergeable = self.acked & VIRTIO_NET_F_MRG_RXBUF != 0;
        // The guest's header: the switch's 10 bytes, then num_buffers (filled in below).
        let mut header = [0u8; GUEST_HDR_LEN];
        header[..vnet_hdr::LEN].copy_from_slice(&message[..vnet_hdr::LEN]);
        let mut written = 0usize;
        let mut first_header_at = None;
        while written < total {
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else {
                // Not enough buffers: give back what was taken and wait for more.
                if !chains.is_empty() {
                    let mut state = vring.get_mut();
                    let queue = state.get_queue_mut();
                    let back = queue.next_avail().wrapping_sub(chains.len() as u16);
                    queue.set_next_avail(back);
                }
                let _ = vring.enable_notification();
                return Delivery::NoBuffers;
            };
            let head = chain.head_index();
            let mut in_chain = 0u32;
            let mut bad = false;
            for desc in chain.clone() {
                if !desc.is_write_only() {
                    bad = true;
                    break;
                }
                let room = desc.len() as usize;
                if written == 0 && room < GUEST_HDR_LEN {
                    // The header is written whole into the first buffer (Linux posts at least that).
                    bad = true;
                    break;
                }
                let mut offset = 0usize;
                while offset < room && written < total {
                    let take = (room - offset).min(total - written);
                    let addr = match desc.addr().checked_add(offset as u64) {
                        Some(a) => a,
                        None => {
                            bad = true;
                            break;
                        }
                    };
                    let result = if written < GUEST_HDR_LEN {
                        let take = take.min(GUEST_HDR_LEN - written);
                        if first_header_at.is_none() {
                            first_header_at = Some(addr);
                        }
                        mem.write_slice(&header[written..written + take], addr).map(|()| take)
                    } else {
                        let at = written - GUEST_HDR_LEN;
                        mem.write_slice(&frame[at..at + take], addr).map(|()| take)
                    };
                    match result {
                        Ok(n) => {
                            written += n;
                            offset += n;
                            in_chain += n as u32;
                        }
                        Err(_) => {
                            bad = true;
                            break;
                        }
                    }
                }
                if bad || written >= total {
                    break;
                }
            }
            if bad {
                self.counters.bad_descriptors.fetch_add(1, Ordering::Relaxed);
                let _ = vring.add_used(head, 0);
                written = 0;
                first_header_at = None;
                for (h, _) in chains.drain(..) {
                    let _ = vring.add_used(h, 0);
                }
                continue;
            }
            chains.push((head, in_chain));
            if !mergeable && written < total {
                // One chain must hold the whole frame without mergeable buffers.
                self.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
                for (h, _) in chains.drain(..) {
                    let _ = vring.add_used(h, 0);
                }
                self.recycle_first();
                return Delivery::Done;
            }
        }
        if mergeable {
            if let Some(at) = first_header_at.and_then(|a| a.checked_add(vnet_hdr::LEN as u64)) {
                let _ = mem.write_slice(&(chains.len() as u16).to_le_bytes(), at);
            }
        }
        for (head, len) in chains.iter() {
            let _ = vring.add_used(*head, *len);
        }
        self.counters.to_guest.fetch_add(1, Ordering::Relaxed);
        self.recycle_first();
        Delivery::Done
    }

    fn recycle_first(&mut self) {
        if let Some(buf) = self.pending.pop_front() {
            if self.spare.len() < PENDING {
                self.spare.push(buf);
            }
        }
    }
}

enum Delivery {
    Done,
    NoBuffers,
}

/// The switch's end of a vhost-user device: the datagram pair's end, which also reports the
/// frames the device dropped (bad descriptors, undeliverable frames) as the port's drops.
#[derive(Debug)]
pub struct VhostSwitchPort {
    pair: DatagramPort,
    counters: Arc<DeviceCounters>,
    /// (bad descriptors, undeliverable) already reported.
    reported: (u64, u64),
}

impl Port for VhostSwitchPort {
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.pair.raw_fd()
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        self.pair.recv(buf)
    }

    fn send(&mut self, parts: &[io::IoSlice<'_>], offload: &VnetHdr) -> io::Result<()> {
        self.pair.send(parts, offload)
    }

    fn carries_offload(&self) -> bool {
        self.pair.carries_offload()
    }

    fn take_device_drops(&mut self, count: &mut dyn FnMut(DropReason, u64)) {
        let bad = self.counters.bad_descriptors.load(Ordering::Relaxed);
        let undeliverable = self.counters.undeliverable.load(Ordering::Relaxed);
        if bad > self.reported.0 {
            count(DropReason::VhostBadDescriptor, bad - self.reported.0);
        }
        if undeliverable > self.reported.1 {
            count(DropReason::VhostUndeliverable, undeliverable - self.reported.1);
        }
        self.reported = (bad, undeliverable);
    }
}

/// A running vhost-user device: its threads serve (or seek) QEMU connections until dropped.
pub struct VhostUserDevice {
    stop: Arc<AtomicBool>,
    socket: PathBuf,
    server: bool,
    /// What the device counts.
    pub counters: Arc<DeviceCounters>,
}

impl std::fmt::Debug for VhostUserDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VhostUserDevice({})", self.socket.display())
    }
}

impl Drop for VhostUserDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.server {
            // Wake the accept so the thread sees the stop, then take the socket file away.
            let _ = std::os::unix::net::UnixStream::connect(&self.socket);
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// Starts a vhost-user-net device on `socket` (listening with `server`, else connecting) for
/// port `name` with MAC `mac`: returns the switch's end (a port for the first worker) and the
/// device, whose threads end when it is dropped.
pub fn start(name: &str, socket: &Path, server: bool, mac: MacAddr) -> io::Result<(VhostSwitchPort, VhostUserDevice)> {
    let (port, backend_end) = DatagramPort::pair_with_offload()?;
    backend_end.set_nonblocking(true)?;
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let _ = vswitchd_dataplane::sys::set_socket_option_int(
            std::os::fd::AsFd::as_fd(&backend_end),
            libc::SOL_SOCKET,
            option,
            4 << 20,
        );
    }
    let counters = Arc::new(DeviceCounters::default());
    let state = NetState {
        mem: None,
        acked: 0,
        switch: backend_end,
        pending: VecDeque::with_capacity(PENDING),
        spare: Vec::new(),
        scratch: vec![0u8; GUEST_HDR_LEN + MAX_FRAME_LEN],
        segment: vec![0u8; MAX_FRAME_LEN],
        chains: Vec::with_capacity(QUEUE_SIZE),
        mac,
        counters: Arc::clone(&counters),
    };
    let backend = NetBackend { state: Arc::new(Mutex::new(state)) };
    let stop = Arc::new(AtomicBool::new(false));
    let mut listener = if server {
        let _ = std::fs::remove_file(socket);
        Some(
            Listener::new(socket, true)
                .map_err(|e| io::Error::other(format!("listen on {}: {e}", socket.display())))?,
        )
    } else {
        None
    };
    let (thread_stop, path, label) = (Arc::clone(&stop), socket.to_path_buf(), name.to_string());
    let serving = Arc::clone(&counters);
    thread::Builder::new().name(format!("vhost-{name}")).spawn(move || {
        let mut pause = Duration::from_millis(50);
        while !thread_stop.load(Ordering::SeqCst) {
            let memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
            let mut daemon = match VhostUserDaemon::new(format!("vhost-{label}-conn"), backend.clone(), memory) {
                Ok(d) => d,
                Err(e) => {
                    warn!(port = %label, error = ?e, "cannot start the vhost-user device");
                    return;
                }
            };
            let switch_fd = backend.lock().switch.as_raw_fd();
            if let Some(handler) = daemon.get_epoll_handlers().first() {
                if let Err(e) = handler.register_listener(
                    switch_fd,
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    u64::from(SWITCH_EVENT),
                ) {
                    warn!(port = %label, error = %e, "cannot listen to the switch");
                    return;
                }
            }
            let started = match listener.as_mut() {
                Some(l) => daemon.start(l),
                None => daemon.start_client(&path.to_string_lossy()),
            };
            if thread_stop.load(Ordering::SeqCst) {
                break;
            }
            match started {
                Ok(()) => {
                    serving.connections.fetch_add(1, Ordering::Relaxed);
                    info!(port = %label, socket = %path.display(), "vhost-user connection");
                    pause = Duration::from_millis(50);
                    let ended = daemon.wait();
                    info!(port = %label, outcome = ?ended, "vhost-user connection ended");
                }
                Err(e) => {
                    debug!(port = %label, error = ?e, "no vhost-user connection yet");
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
            for handler in daemon.get_epoll_handlers() {
                handler.send_exit_event();
            }
            let mut state = backend.lock();
            state.mem = None;
            state.acked = 0;
            while let Some(buf) = state.pending.pop_front() {
                state.spare.push(buf);
            }
        }
    })?;
    let port = VhostSwitchPort { pair: port, counters: Arc::clone(&counters), reported: (0, 0) };
    let device = VhostUserDevice { stop, socket: socket.to_path_buf(), server, counters };
    Ok((port, device))
}

/// An in-process virtqueue pair in guest memory for tests and fuzzing: the descriptor tables,
/// rings and buffers of a `virtio-net` device laid out the way a guest driver lays them out.
pub mod harness {
    use super::*;
    use vm_memory::GuestAddress;

    /// Guest memory size.
    pub const MEMORY: usize = 1 << 20;
    /// Queue size.
    pub const SIZE: u16 = 16;
    const DESC: [u64; 2] = [0x1000, 0x4000];
    const AVAIL: [u64; 2] = [0x2000, 0x5000];
    const USED: [u64; 2] = [0x3000, 0x6000];
    /// Where buffers go.
    pub const BUFFERS: u64 = 0x10000;
    /// `VIRTQ_DESC_F_NEXT`, `VIRTQ_DESC_F_WRITE`.
    pub const NEXT: u16 = 1;
    /// The device writes into this buffer.
    pub const WRITE: u16 = 2;

    /// A device over guest memory, with the switch's end of its pair.
    #[allow(missing_debug_implementations)] // guest memory and vrings: nothing to show
    pub struct Harness {
        /// Guest memory.
        pub mem: GuestMemoryAtomic<GuestMemoryMmap>,
        /// The receive and transmit queues.
        pub vrings: [VringRwLock; 2],
        /// The device state under test.
        backend: NetBackend,
        /// The switch's end.
        pub switch: UnixDatagram,
        avail_idx: [u16; 2],
    }

    impl Harness {
        /// A device whose driver acked `features`.
        pub fn new(features: u64) -> Harness {
            let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY)]).expect("guest memory");
            let mem = GuestMemoryAtomic::new(memory);
            let vrings = [0, 1].map(|q| {
                let vring =
                    <VringRwLock as VringT<GuestMemoryAtomic<GuestMemoryMmap>>>::new(mem.clone(), SIZE).expect("vring");
                vring.set_queue_size(SIZE);
                vring.set_queue_info(DESC[q], AVAIL[q], USED[q]).expect("queue info");
                vring.set_queue_ready(true);
                vring.set_enabled(true);
                vring
            });
            let (switch, backend_end) = UnixDatagram::pair().expect("pair");
            backend_end.set_nonblocking(true).expect("nonblocking");
            switch.set_nonblocking(true).expect("nonblocking");
            let state = NetState {
                mem: Some(mem.clone()),
                acked: features,
                switch: backend_end,
                pending: VecDeque::new(),
                spare: Vec::new(),
                scratch: vec![0u8; GUEST_HDR_LEN + MAX_FRAME_LEN],
                segment: vec![0u8; MAX_FRAME_LEN],
                chains: Vec::new(),
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                counters: Arc::new(DeviceCounters::default()),
            };
            Harness {
                mem,
                vrings,
                backend: NetBackend { state: Arc::new(Mutex::new(state)) },
                switch,
                avail_idx: [0; 2],
            }
        }

        /// Writes descriptor `index` of queue `q`.
        pub fn descriptor(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            let at = GuestAddress(DESC[q] + u64::from(index) * 16);
            self.mem.memory().write_slice(&d, at).expect("descriptor");
        }

        /// Makes the chain starting at `head` available on queue `q`.
        pub fn offer(&mut self, q: usize, head: u16) {
            let slot = self.avail_idx[q] % SIZE;
            let mem = self.mem.memory();
            mem.write_slice(&head.to_le_bytes(), GuestAddress(AVAIL[q] + 4 + u64::from(slot) * 2)).expect("ring");
            self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
            mem.write_slice(&self.avail_idx[q].to_le_bytes(), GuestAddress(AVAIL[q] + 2)).expect("idx");
        }

        /// The used ring's entries of queue `q` so far: (head, length).
        pub fn used(&self, q: usize) -> Vec<(u32, u32)> {
            let mem = self.mem.memory();
            let mut idx = [0u8; 2];
            mem.read_slice(&mut idx, GuestAddress(USED[q] + 2)).expect("used idx");
            (0..u16::from_le_bytes(idx))
                .map(|i| {
                    let mut e = [0u8; 8];
                    let at = GuestAddress(USED[q] + 4 + u64::from(i % SIZE) * 8);
                    mem.read_slice(&mut e, at).expect("used entry");
                    (u32::from_le_bytes(e[..4].try_into().unwrap()), u32::from_le_bytes(e[4..].try_into().unwrap()))
                })
                .collect()
        }

        /// Writes `bytes` into guest memory at `addr`.
        pub fn write(&self, addr: u64, bytes: &[u8]) {
            self.mem.memory().write_slice(bytes, GuestAddress(addr)).expect("write");
        }

        /// Reads `len` bytes of guest memory at `addr`.
        pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut out = vec![0u8; len];
            self.mem.memory().read_slice(&mut out, GuestAddress(addr)).expect("read");
            out
        }

        /// The guest kicked queue `q` (or, with `q` = 3, the switch sent something).
        pub fn kick(&self, event: u16) {
            let _ = self.backend.handle_event(event, EventSet::IN, &self.vrings, 0);
        }

        /// What the device counted.
        pub fn counters(&self) -> Arc<DeviceCounters> {
            Arc::clone(&self.backend.lock().counters)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::harness::*;
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        for (i, b) in f[14..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    #[test]
    fn a_guests_frame_reaches_the_switch_with_its_offload_header() {
        let mut h = Harness::new(VIRTIO_F_VERSION_1);
        let f = frame(60);
        let mut hdr = [0u8; GUEST_HDR_LEN];
        hdr[0] = vnet_hdr::F_NEEDS_CSUM;
        h.write(BUFFERS, &hdr);
        h.write(BUFFERS + 0x100, &f);
        h.descriptor(TX, 0, BUFFERS, GUEST_HDR_LEN as u32, NEXT, 1);
        h.descriptor(TX, 1, BUFFERS + 0x100, f.len() as u32, 0, 0);
        h.offer(TX, 0);
        h.kick(TX as u16);
        let mut got = [0u8; 256];
        let n = h.switch.recv(&mut got).expect("a message for the switch");
        assert_eq!(n, vnet_hdr::LEN + f.len());
        assert_eq!(got[0], vnet_hdr::F_NEEDS_CSUM);
        assert_eq!(&got[vnet_hdr::LEN..n], &f[..]);
        assert_eq!(h.used(TX), vec![(0, 0)]);
        assert_eq!(h.counters().from_guest.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn descriptors_outside_guest_memory_or_the_wrong_way_are_counted_and_returned() {
        let mut h = Harness::new(VIRTIO_F_VERSION_1);
        // Past the end of guest memory.
        h.descriptor(TX, 0, (MEMORY as u64) - 8, 64, 0, 0);
        h.offer(TX, 0);
        // A device-writable buffer in the transmit queue.
        h.descriptor(TX, 1, BUFFERS, 64, WRITE, 0);
        h.offer(TX, 1);
        // A chain longer than any frame.
        h.descriptor(TX, 2, BUFFERS, u32::MAX, 0, 0);
        h.offer(TX, 2);
        h.kick(TX as u16);
        let mut got = [0u8; 64];
        assert!(h.switch.recv(&mut got).is_err(), "nothing reached the switch");
        assert_eq!(h.counters().bad_descriptors.load(Ordering::Relaxed), 3);
        assert_eq!(h.used(TX).len(), 3, "every chain is returned to the guest");
    }

    #[test]
    fn a_frame_from_the_switch_fills_receive_buffers_and_says_how_many() {
        let mut h = Harness::new(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF);
        for i in 0..4u16 {
            h.descriptor(RX, i, BUFFERS + u64::from(i) * 0x1000, 1024, WRITE, 0);
            h.offer(RX, i);
        }
        let f = frame(2000);
        let mut message = vec![0u8; vnet_hdr::LEN];
        message.extend_from_slice(&f);
        h.switch.send(&message).unwrap();
        h.kick(SWITCH_EVENT);
        let used = h.used(RX);
        assert_eq!(used, vec![(0, 1024), (1, (GUEST_HDR_LEN + 2000 - 1024) as u32)]);
        let header = h.read(BUFFERS, GUEST_HDR_LEN);
        assert_eq!(u16::from_le_bytes([header[10], header[11]]), 2, "num_buffers");
        let mut got = h.read(BUFFERS + GUEST_HDR_LEN as u64, 1024 - GUEST_HDR_LEN);
        got.extend(h.read(BUFFERS + 0x1000, 2000 - (1024 - GUEST_HDR_LEN)));
        assert_eq!(got, f);
        assert_eq!(h.counters().to_guest.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn with_no_buffers_frames_wait_and_go_when_the_guest_posts_some() {
        let mut h = Harness::new(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF);
        let mut message = vec![0u8; vnet_hdr::LEN];
        message.extend_from_slice(&frame(100));
        h.switch.send(&message).unwrap();
        h.kick(SWITCH_EVENT);
        assert!(h.used(RX).is_empty());
        h.descriptor(RX, 0, BUFFERS, 2048, WRITE, 0);
        h.offer(RX, 0);
        h.kick(RX as u16);
        assert_eq!(h.used(RX), vec![(0, (GUEST_HDR_LEN + 100) as u32)]);
    }

    #[test]
    fn a_partial_checksum_is_completed_for_a_guest_that_did_not_accept_them() {
        let mut h = Harness::new(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF);
        h.descriptor(RX, 0, BUFFERS, 2048, WRITE, 0);
        h.offer(RX, 0);
        // IPv4/UDP with a partial checksum (offset 40 = 14 + 20 + 6).
        let mut f = vec![0u8; 14 + 20 + 8 + 10];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + 8 + 10) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[38..40].copy_from_slice(&18u16.to_be_bytes());
        let hdr = VnetHdr { flags: vnet_hdr::F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::default() };
        let mut message = hdr.emit().to_vec();
        message.extend_from_slice(&f);
        h.switch.send(&message).unwrap();
        h.kick(SWITCH_EVENT);
        let header = h.read(BUFFERS, GUEST_HDR_LEN);
        assert_eq!(header[0] & vnet_hdr::F_NEEDS_CSUM, 0, "the guest gets a complete checksum");
        let got = h.read(BUFFERS + GUEST_HDR_LEN as u64, f.len());
        assert_ne!(&got[40..42], &[0, 0], "checksum filled in");
    }
}
