//! Packet-socket ports: vswitchd attaches to an interface that exists (the switch-side end of
//! a veth pair, a VM's TAP owned by QEMU, an uplink) with an `AF_PACKET` socket.
//!
//! The socket is promiscuous, ignores what this host sends on the interface, and has
//! `PACKET_VNET_HDR` and `PACKET_AUXDATA` on. The first keeps TCP working: kernel devices
//! hand frames over with partial checksums (and GSO super-frames), and the virtio-net header
//! says so, so they can be passed on whole to ports that carry offload, or completed in
//! software for those that do not. The second restores VLAN tags: the kernel moves a received
//! tag into metadata before packet sockets see the frame, so trunks would lose it.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{MsgFlags, UnixAddr, sendmsg};

use super::tx_queue::TxQueue;
use super::{FrameBuf, MAX_PARTS, Port, SendFailure, with_vnet_header};
use crate::sys::{self, packet};
use crate::vlan::TPID_8021Q;
use crate::wire::{VnetHdr, vnet_hdr};

/// A packet socket bound to one interface. Frames up to a slot's size are queued and sent
/// together with one `sendmmsg` when the event loop flushes; bigger ones (super-frames) are
/// sent at once, after whatever was queued before them.
#[derive(Debug)]
pub struct PacketPort {
    fd: OwnedFd,
    ifindex: u32,
    tx: TxQueue,
    failed: Option<SendFailure>,
}

impl PacketPort {
    /// Attaches to interface `ifname` in the calling thread's network namespace.
    pub fn open(ifname: &str) -> io::Result<PacketPort> {
        let ifindex = nix::net::if_::if_nametoindex(ifname)
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("no interface {ifname}: {e}")))?;
        let fd = sys::bound_packet_socket(ifindex, sys::ETH_P_ALL)?;
        for option in [packet::PACKET_IGNORE_OUTGOING, packet::PACKET_AUXDATA, packet::PACKET_VNET_HDR] {
            sys::set_socket_option_int(fd.as_fd(), packet::SOL_PACKET, option, 1)?;
        }
        packet::add_promiscuous(fd.as_fd(), ifindex)?;
        for buffer in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // Best effort: the defaults work, bigger ones absorb bursts.
            let _ = sys::set_socket_option_int(fd.as_fd(), libc::SOL_SOCKET, buffer, 4 << 20);
        }
        let port = PacketPort { fd, ifindex, tx: TxQueue::new(vnet_hdr::LEN), failed: None };
        nix::fcntl::fcntl(&port.fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
        Ok(port)
    }

    /// Opens `sockets` packet sockets on `ifname` in one fanout group that hashes flows: each
    /// frame the interface receives reaches exactly one of them, and all of a flow's frames the
    /// same one. With one socket this is [`PacketPort::open`].
    pub fn open_group(ifname: &str, sockets: usize) -> io::Result<Vec<PacketPort>> {
        let first = PacketPort::open(ifname)?;
        if sockets <= 1 {
            return Ok(vec![first]);
        }
        let unique = (packet::PACKET_FANOUT_HASH | packet::PACKET_FANOUT_FLAG_UNIQUEID) << 16;
        sys::set_socket_option_int(first.fd.as_fd(), packet::SOL_PACKET, packet::PACKET_FANOUT, unique)?;
        let group = sys::get_socket_option_int(first.fd.as_fd(), packet::SOL_PACKET, packet::PACKET_FANOUT)? & 0xffff;
        let mut group_sockets = vec![first];
        for _ in 1..sockets {
            let socket = PacketPort::open(ifname)?;
            let join = group | (packet::PACKET_FANOUT_HASH << 16);
            sys::set_socket_option_int(socket.fd.as_fd(), packet::SOL_PACKET, packet::PACKET_FANOUT, join)?;
            group_sockets.push(socket);
        }
        Ok(group_sockets)
    }

    /// A packet socket handed over by another vswitchd process, bound to interface `ifindex`
    /// and set up as [`PacketPort::open`] sets one up (the options belong to the socket).
    pub fn adopt(fd: OwnedFd, ifindex: u32) -> PacketPort {
        PacketPort { fd, ifindex, tx: TxQueue::new(vnet_hdr::LEN), failed: None }
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

/// Puts back the VLAN tag the kernel moved from the frame into its auxdata.
fn restore_tag(buf: &mut FrameBuf, aux: &packet::Auxdata) {
    if aux.tp_status & packet::TP_STATUS_VLAN_VALID != 0 {
        let tpid = if aux.tp_status & packet::TP_STATUS_VLAN_TPID_VALID != 0 { aux.tp_vlan_tpid } else { TPID_8021Q };
        let [a, b] = tpid.to_be_bytes();
        let [c, d] = aux.tp_vlan_tci.to_be_bytes();
        buf.insert_tag([a, b, c, d]);
    }
}

impl Port for PacketPort {
    fn clone_fd(&self) -> Option<io::Result<OwnedFd>> {
        Some(self.fd.try_clone())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        let mut header = [0u8; vnet_hdr::LEN];
        let (len, aux, truncated) = packet::recv(self.fd.as_fd(), &mut header, buf.receive_area())?;
        buf.set_received_with_header(len, &header);
        buf.truncated |= truncated;
        restore_tag(buf, &aux);
        Ok(())
    }

    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        let mut aux = [packet::Auxdata::default(); packet::BATCH];
        let received = packet::recv_batch(self.fd.as_fd(), bufs, &mut aux)?;
        for (buf, aux) in bufs.iter_mut().zip(&aux).take(received) {
            restore_tag(buf, aux);
        }
        Ok(received)
    }

    fn send(&mut self, parts: &[IoSlice<'_>], offload: &VnetHdr) -> io::Result<()> {
        let header = offload.emit();
        if self.tx.is_full() {
            self.send_queued();
        }
        if self.tx.push(&header, parts) {
            return Ok(());
        }
        self.send_queued(); // too big for a slot: what was queued first leaves first
        let mut iov = [IoSlice::new(&[]); MAX_PARTS + 1];
        sendmsg::<UnixAddr>(
            self.fd.as_raw_fd(),
            with_vnet_header(&header, parts, &mut iov),
            &[],
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        Ok(())
    }

    fn carries_offload(&self) -> bool {
        true
    }

    fn defers_errors(&self) -> bool {
        true
    }

    fn take_kernel_drops(&mut self) -> u64 {
        packet::take_drops(self.fd.as_fd()).map_or(0, u64::from)
    }

    fn queues_sends(&self) -> bool {
        true
    }

    fn flush(&mut self) -> Result<(), SendFailure> {
        self.send_queued();
        self.failed.take().map_or(Ok(()), Err)
    }
}

impl PacketPort {
    /// Sends the queued frames, as many per `sendmmsg` as the kernel takes; what it refuses is
    /// recorded for the next [`Port::flush`] and dropped.
    fn send_queued(&mut self) {
        while !self.tx.is_empty() {
            let (slab, slot, lens) = self.tx.frames();
            match sys::send_frames(self.fd.as_fd(), slab, slot, lens) {
                Ok(sent) if sent > 0 => self.tx.consume(sent),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => {
                    let error = result.err().unwrap_or_else(|| io::ErrorKind::WouldBlock.into());
                    let for_every_frame = matches!(
                        error.raw_os_error(),
                        None | Some(
                            libc::EAGAIN | libc::ENOBUFS | libc::ENETDOWN | libc::ENXIO | libc::ENODEV | libc::EIO
                        )
                    );
                    if for_every_frame {
                        // No room, or no link: the rest would be refused the same way.
                        SendFailure::record(&mut self.failed, self.tx.len() as u64, self.tx.frame_bytes(), error);
                        self.tx.clear();
                    } else {
                        // The first frame itself was refused (its header, its size): it alone
                        // is dropped, the ones behind it still go.
                        SendFailure::record(&mut self.failed, 1, self.tx.first_frame_bytes(), error);
                        self.tx.consume(1);
                    }
                }
            }
        }
    }
}
