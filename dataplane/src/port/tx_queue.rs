//! A transmit queue for ports that send many frames in one system call (`sendmmsg`): small
//! frames are copied, virtio-net header first, into fixed slots of one buffer allocated once,
//! and leave together when the event loop flushes at the end of a batch.

use std::io::IoSlice;

/// Frames one queue holds (one `sendmmsg`).
pub const TX_QUEUE_LEN: usize = 64;
/// Bytes per slot: a virtio-net header and a frame of a 1500-byte MTU with two tags, rounded
/// up. Larger frames (super-frames, jumbo frames) are sent on their own.
pub const TX_SLOT: usize = 2048;

/// Frames waiting to be sent, in order.
#[derive(Debug)]
pub struct TxQueue {
    slab: Box<[u8]>,
    lens: [usize; TX_QUEUE_LEN],
    count: usize,
    /// Bytes in front of each frame that are not the frame (the virtio-net header).
    header_len: usize,
}

impl TxQueue {
    /// An empty queue whose frames carry a `header_len`-byte header in front.
    pub fn new(header_len: usize) -> TxQueue {
        TxQueue {
            slab: vec![0u8; TX_QUEUE_LEN * TX_SLOT].into_boxed_slice(),
            lens: [0; TX_QUEUE_LEN],
            count: 0,
            header_len,
        }
    }

    /// Whether `header` and `parts` fit one slot.
    pub fn fits(header: &[u8], parts: &[IoSlice<'_>]) -> bool {
        header.len() + parts.iter().map(|p| p.len()).sum::<usize>() <= TX_SLOT
    }

    /// Copies `header` then `parts` into the next slot. Returns false (and queues nothing) if the
    /// queue is full or the frame does not fit a slot.
    pub fn push(&mut self, header: &[u8], parts: &[IoSlice<'_>]) -> bool {
        if self.is_full() || !TxQueue::fits(header, parts) {
            return false;
        }
        let slot = &mut self.slab[self.count * TX_SLOT..(self.count + 1) * TX_SLOT];
        let mut at = 0;
        for piece in std::iter::once(header).chain(parts.iter().map(|p| &**p)) {
            slot[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        self.lens[self.count] = at;
        self.count += 1;
        true
    }

    /// Whether another frame cannot be queued.
    pub fn is_full(&self) -> bool {
        self.count == TX_QUEUE_LEN
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The queued frames as the slab, the slot size and each frame's length (header included).
    pub fn frames(&self) -> (&[u8], usize, &[usize]) {
        (&self.slab, TX_SLOT, &self.lens[..self.count])
    }

    /// The queued frames' bytes, headers not counted (what the port's counters counted).
    pub fn frame_bytes(&self) -> u64 {
        self.lens[..self.count].iter().map(|&l| (l - self.header_len) as u64).sum()
    }

    /// The first queued frame's bytes, header not counted.
    pub fn first_frame_bytes(&self) -> u64 {
        self.lens[..self.count].first().map_or(0, |&l| (l - self.header_len) as u64)
    }

    /// Forgets the first `sent` frames (the kernel took them), keeping the rest in order.
    pub fn consume(&mut self, sent: usize) {
        let sent = sent.min(self.count);
        if sent < self.count {
            self.slab.copy_within(sent * TX_SLOT..self.count * TX_SLOT, 0);
            self.lens.copy_within(sent..self.count, 0);
        }
        self.count -= sent;
    }

    /// Forgets every queued frame.
    pub fn clear(&mut self) {
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(queue: &TxQueue, i: usize) -> Vec<u8> {
        let (slab, slot, lens) = queue.frames();
        slab[i * slot..i * slot + lens[i]].to_vec()
    }

    #[test]
    fn frames_are_queued_header_first_in_order_and_consumed_from_the_front() {
        let mut queue = TxQueue::new(2);
        assert!(queue.is_empty());
        for n in 0..5u8 {
            assert!(queue.push(&[0xaa, n], &[IoSlice::new(&[n; 3]), IoSlice::new(&[0xff])]));
        }
        assert_eq!(queue.len(), 5);
        assert_eq!(frame_of(&queue, 0), vec![0xaa, 0, 0, 0, 0, 0xff]);
        assert_eq!(queue.frame_bytes(), 5 * 4);
        queue.consume(2);
        assert_eq!(queue.len(), 3);
        assert_eq!(frame_of(&queue, 0), vec![0xaa, 2, 2, 2, 2, 0xff], "the third frame is first now");
        assert_eq!(frame_of(&queue, 2), vec![0xaa, 4, 4, 4, 4, 0xff]);
        queue.consume(10);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_full_queue_and_a_frame_too_big_for_a_slot_are_refused() {
        let mut queue = TxQueue::new(10);
        let big = vec![0u8; TX_SLOT - 9];
        assert!(!TxQueue::fits(&[0; 10], &[IoSlice::new(&big)]));
        assert!(!queue.push(&[0; 10], &[IoSlice::new(&big)]));
        assert!(queue.push(&[0; 10], &[IoSlice::new(&big[1..])]), "exactly a slot fits");
        for _ in 1..TX_QUEUE_LEN {
            assert!(queue.push(&[0; 10], &[IoSlice::new(&[1; 60])]));
        }
        assert!(queue.is_full());
        assert!(!queue.push(&[0; 10], &[IoSlice::new(&[1; 60])]));
        queue.clear();
        assert!(queue.is_empty());
    }
}
