//! IEEE 802.1Q / 802.1ad tags: the 4 bytes after the MAC addresses when the EtherType field
//! holds a TPID (0x8100 or 0x88a8).

use super::Error;
use super::ethernet::EtherType;

mod field {
    use std::ops::Range;
    pub const TCI: Range<usize> = 0..2;
    pub const INNER_ETHERTYPE: Range<usize> = 2..4;
}

/// Bytes a tag adds to a frame.
pub const TAG_LEN: usize = field::INNER_ETHERTYPE.end;

/// A view of the tag control information and the EtherType that follows it, starting at the
/// frame's payload (byte 14).
#[derive(Debug, Clone)]
pub struct Tag<B> {
    buffer: B,
}

impl<B: AsRef<[u8]>> Tag<B> {
    /// Wraps `buffer` without checking its length.
    pub fn new_unchecked(buffer: B) -> Tag<B> {
        Tag { buffer }
    }

    /// Wraps `buffer` after checking that it holds a whole tag.
    pub fn new_checked(buffer: B) -> Result<Tag<B>, Error> {
        let tag = Tag::new_unchecked(buffer);
        let len = tag.buffer.as_ref().len();
        if len < TAG_LEN {
            return Err(Error::Truncated { len, need: TAG_LEN });
        }
        Ok(tag)
    }

    fn tci(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TCI];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The EtherType of what the tag carries.
    pub fn inner_ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::INNER_ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// The EtherType after the Ethernet header and up to two VLAN tags (802.1Q or 802.1ad), and
/// the offset of the network header that follows them. Fails if the frame or a tag is cut short.
pub fn skip_tags(frame: &[u8]) -> Result<(EtherType, usize), Error> {
    let mut ethertype = super::ethernet::Frame::new_checked(frame)?.ethertype();
    let mut at = super::ethernet::HEADER_LEN;
    for _ in 0..2 {
        if !matches!(ethertype, EtherType::Vlan | EtherType::QinQ) {
            break;
        }
        ethertype = Tag::new_checked(&frame[at..])?.inner_ethertype();
        at += TAG_LEN;
    }
    Ok((ethertype, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::Frame;

    /// A VLAN 10, priority 5 tagged IPv4 frame header (the IPv4 packet itself is cut off).
    static TAGGED: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x81, 0x00, // TPID 802.1Q
        0xa0, 0x0a, // PCP 5, DEI 0, VID 10
        0x08, 0x00, // inner EtherType IPv4
    ];

    #[test]
    fn deconstruct() {
        let frame = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(frame.ethertype(), EtherType::Vlan);
        let tag = Tag::new_checked(frame.payload()).unwrap();
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (5, false, 10));
        assert_eq!(tag.inner_ethertype(), EtherType::Ipv4);
    }

    #[test]
    fn skipping_tags_finds_the_network_header() {
        assert_eq!(skip_tags(&TAGGED), Ok((EtherType::Ipv4, 18)));
        let untagged = [&TAGGED[..12], &[0x08, 0x06][..]].concat();
        assert_eq!(skip_tags(&untagged), Ok((EtherType::Arp, 14)));
        assert!(skip_tags(&TAGGED[..16]).is_err());
        assert!(skip_tags(&TAGGED[..10]).is_err());
    }

    #[test]
    fn truncated_tag_is_rejected() {
        assert_eq!(Tag::new_checked(&TAGGED[14..17]).unwrap_err(), Error::Truncated { len: 3, need: 4 });
    }
}
