//! Hands frames a worker cannot send itself to the worker that can: a port with one I/O (a VM's
//! socket, a vhost-user device), or a bond given one I/O per member
//! ([`crate::switch::PortIo::Bond`]), is served by the first worker alone, so another worker
//! forwarding toward one copies the frame into a buffer from a fixed pool and passes it over a
//! bounded channel; the first worker transmits it and returns the buffer. Nothing is allocated
//! after start-up; when the pool is empty the frame is dropped and counted (`no_room`).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::PortId;
use crate::port::{FrameBuf, MAX_FRAME_LEN};
use crate::vlan::Classified;

/// Buffers in flight between the workers and the first one.
pub const POOL_SIZE: usize = 64;

/// A frame on its way to the worker that owns port `out`.
#[derive(Debug)]
pub struct Handoff {
    /// Where it goes.
    pub out: PortId,
    /// Its classification on the way in (VLAN, priority, tag bytes to strip).
    pub class: Classified,
    /// Part of a flood (a port outside the VLAN skips it silently).
    pub flooding: bool,
    /// The frame and its offload metadata.
    pub buf: FrameBuf,
}

/// A worker's end: takes buffers from the pool, sends them to the owner, wakes it once per
/// batch.
#[derive(Debug, Clone)]
pub struct HandoffSender {
    to_owner: Sender<Box<Handoff>>,
    pool: Receiver<Box<Handoff>>,
    waker: Arc<Waker>,
    wake_due: bool,
}

/// The owner's end: frames to transmit, and the way back to the pool.
#[derive(Debug)]
pub struct HandoffReceiver {
    inbox: Receiver<Box<Handoff>>,
    pool: Sender<Box<Handoff>>,
}

/// A pool of [`POOL_SIZE`] buffers and the channels around it; `waker` wakes the owner.
pub fn channel(waker: Arc<Waker>) -> (HandoffSender, HandoffReceiver) {
    let (to_owner, inbox) = crossbeam_channel::bounded(POOL_SIZE);
    let (pool_tx, pool_rx) = crossbeam_channel::bounded(POOL_SIZE);
    for _ in 0..POOL_SIZE {
        let spare = Box::new(Handoff {
            out: PortId(0),
            class: Classified { vlan: crate::VlanId::NONE, pcp: 0, strip: 0 },
            flooding: false,
            buf: FrameBuf::new(MAX_FRAME_LEN),
        });
        let _ = pool_tx.try_send(spare);
    }
    (HandoffSender { to_owner, pool: pool_rx, waker, wake_due: false }, HandoffReceiver { inbox, pool: pool_tx })
}

impl HandoffSender {
    /// Copies `buf`'s frame into a pooled buffer and passes it on for port `out`. Returns false
    /// if the pool is empty (the owner is behind): the caller counts the drop.
    pub fn send(&mut self, out: PortId, class: &Classified, flooding: bool, buf: &FrameBuf) -> bool {
        let Ok(mut handoff) = self.pool.try_recv() else { return false };
        handoff.out = out;
        handoff.class = *class;
        handoff.flooding = flooding;
        handoff.buf.copy_from(buf);
        // The inbox holds as many as the pool: it has room for every buffer taken from it.
        if self.to_owner.try_send(handoff).is_err() {
            return false;
        }
        self.wake_due = true;
        true
    }

    /// Wakes the owner if anything was sent since the last call (once per batch).
    pub fn wake(&mut self) {
        if std::mem::take(&mut self.wake_due) {
            let _ = self.waker.wake();
        }
    }
}

impl HandoffReceiver {
    /// The next frame waiting, if any.
    pub fn next(&self) -> Option<Box<Handoff>> {
        self.inbox.try_recv().ok()
    }

    /// Returns a buffer to the pool.
    pub fn recycle(&self, handoff: Box<Handoff>) {
        let _ = self.pool.try_send(handoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};

    #[test]
    fn frames_cross_in_order_and_the_pool_bounds_what_is_in_flight() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (mut tx, rx) = channel(waker);
        let class = Classified { vlan: crate::VlanId::NONE, pcp: 3, strip: 4 };
        let mut buf = FrameBuf::new(2048);
        for n in 0..POOL_SIZE {
            buf.receive_area()[..60].fill(n as u8);
            buf.set_received(60);
            assert!(tx.send(PortId(n as u16), &class, n % 2 == 0, &buf));
        }
        assert!(!tx.send(PortId(99), &class, false, &buf), "the pool is empty: nothing waits, nothing grows");
        tx.wake();
        for n in 0..POOL_SIZE {
            let handoff = rx.next().expect("in order");
            assert_eq!((handoff.out, handoff.class, handoff.flooding), (PortId(n as u16), class, n % 2 == 0));
            assert_eq!(handoff.buf.frame(), &[n as u8; 60][..]);
            rx.recycle(handoff);
        }
        assert!(rx.next().is_none());
        assert!(tx.send(PortId(1), &class, false, &buf), "recycled buffers are used again");
    }
}
