//! The VXLAN header (RFC 7348): 8 bytes in front of the inner Ethernet frame, inside a UDP
//! datagram.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved (24 bits)                 |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//! The I flag must be set; every reserved bit must be zero on send, and a receiver that is
//! strict (as a VTEP facing the open network should be) drops anything else.

use super::Error;

/// Bytes of the header.
pub const HEADER_LEN: usize = 8;
/// The "VNI is valid" flag.
pub const FLAG_I: u8 = 0x08;
/// The IANA port.
pub const DEFAULT_PORT: u16 = 4789;
/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;
/// Bytes the encapsulation adds over IPv4: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const OVERHEAD_V4: usize = 50;
/// Bytes it adds over IPv6 (IPv6 header 40).
pub const OVERHEAD_V6: usize = 70;

/// Why a datagram is not a VXLAN packet vswitchd accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the header.
    Truncated,
    /// The I flag is clear or a reserved bit is set.
    BadFlags,
}

/// A view of a VXLAN header.
#[derive(Debug, Clone)]
pub struct Header<B> {
    buffer: B,
}

impl<B: AsRef<[u8]>> Header<B> {
    /// Wraps `buffer` after checking it holds a whole header.
    pub fn new_checked(buffer: B) -> Result<Header<B>, Error> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated { len, need: HEADER_LEN });
        }
        Ok(Header { buffer })
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The VNI.
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// Checks what a strict receiver checks: I flag set, every reserved bit zero.
    pub fn validate(&self) -> Result<u32, HeaderError> {
        let b = self.buffer.as_ref();
        if b[0] != FLAG_I || b[1..4] != [0, 0, 0] || b[7] != 0 {
            return Err(HeaderError::BadFlags);
        }
        Ok(self.vni())
    }

    /// The inner frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// The header for `vni` (which must fit 24 bits; higher bits are dropped).
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let v = (vni & VNI_MAX).to_be_bytes();
    [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// Parses a datagram into (VNI, inner frame).
pub fn parse(datagram: &[u8]) -> Result<(u32, &[u8]), HeaderError> {
    let h = Header::new_checked(datagram).map_err(|_| HeaderError::Truncated)?;
    let vni = h.validate()?;
    Ok((vni, &datagram[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VNI 42 around a 14-byte inner header (as the kernel's vxlan device sends it).
    static PACKET: [u8; 22] = [
        0x08, 0x00, 0x00, 0x00, // flags: I; reserved
        0x00, 0x00, 0x2a, 0x00, // VNI 42; reserved
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, // inner
    ];

    #[test]
    fn deconstruct_and_construct() {
        assert_eq!(parse(&PACKET), Ok((42, &PACKET[8..])));
        assert_eq!(header(42), PACKET[..8]);
        assert_eq!(header(VNI_MAX), [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0]);
        assert_eq!(Header::new_checked(&PACKET[..]).unwrap().payload().len(), 14);
    }

    #[test]
    fn strict_about_flags_reserved_bits_and_length() {
        assert_eq!(parse(&PACKET[..7]), Err(HeaderError::Truncated));
        for (at, value) in [(0, 0x00), (0, 0x0c), (1, 0x01), (3, 0x80), (7, 0x01)] {
            let mut p = PACKET;
            p[at] = value;
            assert_eq!(parse(&p), Err(HeaderError::BadFlags), "byte {at} = {value:#x}");
        }
        assert_eq!(parse(&PACKET[..8]).map(|(_, inner)| inner.len()), Ok(0));
    }
}
