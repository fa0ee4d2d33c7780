//! A pcapng writer (little-endian, one section): the section header, one interface description
//! per captured port, enhanced packet blocks with their direction and an optional comment, and
//! interface statistics. Pure: each function appends one block's bytes to a buffer.

/// Ethernet, as pcapng's link types number it.
const LINKTYPE_ETHERNET: u16 = 1;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_IFDROP: u16 = 5;

/// Which way a frame went, as `epb_flags` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received.
    Inbound,
    /// Sent.
    Outbound,
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Appends option `code` with `value` (padded to 4 bytes).
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    let len = value.len().min(u16::MAX as usize);
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&value[..len]);
    out.extend(std::iter::repeat_n(0u8, pad4(len)));
}

/// Appends a block of type `kind` whose body `body` writes (its length is filled in after).
fn block(out: &mut Vec<u8>, kind: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    body(out);
    let total = (out.len() - start + 4) as u32;
    out[start + 4..start + 8].copy_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
}

/// Appends the section header block, naming the application.
pub fn section_header(out: &mut Vec<u8>, application: &str) {
    block(out, SHB, |out| {
        out.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(-1i64).to_le_bytes()); // section length not given
        option(out, SHB_USERAPPL, application.as_bytes());
        option(out, OPT_END, &[]);
    });
}

/// Appends an Ethernet interface description named `name`, described by `description`, with
/// nanosecond timestamps and frames cut at `snaplen`.
pub fn interface(out: &mut Vec<u8>, name: &str, description: &str, snaplen: u32) {
    block(out, IDB, |out| {
        out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&snaplen.to_le_bytes());
        option(out, IF_NAME, name.as_bytes());
        option(out, IF_DESCRIPTION, description.as_bytes());
        option(out, IF_TSRESOL, &[9]);
        option(out, OPT_END, &[]);
    });
}

fn timestamp(out: &mut Vec<u8>, nanos: u64) {
    out.extend_from_slice(&((nanos >> 32) as u32).to_le_bytes());
    out.extend_from_slice(&(nanos as u32).to_le_bytes());
}

/// Appends an enhanced packet block: `data` (cut from a frame of `orig_len` bytes) seen on
/// interface `interface` at `nanos` since the epoch, going `direction`, with `comment`.
pub fn packet(
    out: &mut Vec<u8>,
    interface: u32,
    nanos: u64,
    data: &[u8],
    orig_len: usize,
    direction: Direction,
    comment: Option<&str>,
) {
    block(out, EPB, |out| {
        out.extend_from_slice(&interface.to_le_bytes());
        timestamp(out, nanos);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(orig_len as u32).to_le_bytes());
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, pad4(data.len())));
        let flags: u32 = match direction {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        };
        option(out, EPB_FLAGS, &flags.to_le_bytes());
        if let Some(comment) = comment {
            option(out, OPT_COMMENT, comment.as_bytes());
        }
        option(out, OPT_END, &[]);
    });
}

/// Appends interface statistics for `interface` at `nanos`: `dropped` frames it lost.
pub fn statistics(out: &mut Vec<u8>, interface: u32, nanos: u64, dropped: u64) {
    block(out, ISB, |out| {
        out.extend_from_slice(&interface.to_le_bytes());
        timestamp(out, nanos);
        option(out, ISB_IFDROP, &dropped.to_le_bytes());
        option(out, OPT_END, &[]);
    });
}

/// A block read back: what tests (and tools) need to check a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// An interface description: its name and description.
    Interface {
        /// `if_name`.
        name: String,
        /// `if_description`.
        description: String,
    },
    /// A packet.
    Packet {
        /// Its interface.
        interface: u32,
        /// Nanoseconds since the epoch.
        nanos: u64,
        /// The captured bytes.
        data: Vec<u8>,
        /// Its direction, from `epb_flags`.
        direction: Option<Direction>,
        /// Its comment.
        comment: Option<String>,
    },
    /// Interface statistics: frames dropped.
    Statistics {
        /// Its interface.
        interface: u32,
        /// `isb_ifdrop`.
        dropped: Option<u64>,
    },
    /// Any other block (the section header).
    Other(u32),
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The options in `bytes`: (code, value) pairs up to the end option.
fn options(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while bytes.len() >= 4 {
        let code = u16::from_le_bytes([bytes[0], bytes[1]]);
        let len = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
        if code == OPT_END || bytes.len() < 4 + len {
            break;
        }
        found.push((code, &bytes[4..4 + len]));
        bytes = &bytes[(4 + len + pad4(len)).min(bytes.len())..];
    }
    found
}

/// Reads the blocks of a little-endian pcapng stream written by this module; `None` if it is
/// malformed.
pub fn read(mut bytes: &[u8]) -> Option<Vec<Block>> {
    let mut blocks = Vec::new();
    while !bytes.is_empty() {
        let kind = u32_at(bytes, 0)?;
        let total = u32_at(bytes, 4)? as usize;
        if total < 12 || total % 4 != 0 || total > bytes.len() || u32_at(bytes, total - 4)? as usize != total {
            return None;
        }
        let body = &bytes[8..total - 4];
        let text = |options: &[(u16, &[u8])], code| {
            options.iter().find(|(c, _)| *c == code).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        blocks.push(match kind {
            IDB => {
                let opts = options(body.get(8..)?);
                Block::Interface {
                    name: text(&opts, IF_NAME).unwrap_or_default(),
                    description: text(&opts, IF_DESCRIPTION).unwrap_or_default(),
                }
            }
            EPB => {
                let interface = u32_at(body, 0)?;
                let nanos = (u64::from(u32_at(body, 4)?) << 32) | u64::from(u32_at(body, 8)?);
                let len = u32_at(body, 12)? as usize;
                let data = body.get(20..20 + len)?.to_vec();
                let opts = options(body.get(20 + len + pad4(len)..)?);
                let direction = opts.iter().find(|(c, _)| *c == EPB_FLAGS).and_then(|(_, v)| {
                    match u32::from_le_bytes((*v).try_into().ok()?) & 3 {
                        1 => Some(Direction::Inbound),
                        2 => Some(Direction::Outbound),
                        _ => None,
                    }
                });
                Block::Packet { interface, nanos, data, direction, comment: text(&opts, OPT_COMMENT) }
            }
            ISB => {
                let opts = options(body.get(12..)?);
                let dropped = opts
                    .iter()
                    .find(|(c, _)| *c == ISB_IFDROP)
                    .and_then(|(_, v)| Some(u64::from_le_bytes((*v).try_into().ok()?)));
                Block::Statistics { interface: u32_at(body, 0)?, dropped }
            }
            other => Block::Other(other),
        });
        bytes = &bytes[total..];
    }
    Some(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_header_is_laid_out_as_the_format_says() {
        let mut out = Vec::new();
        section_header(&mut out, "vsw");
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x0A, 0x0D, 0x0D, 0x0A, 40, 0, 0, 0,          // type, total length
            0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0,           // byte-order magic, version 1.0
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // section length: not given
            4, 0, 3, 0, b'v', b's', b'w', 0,              // shb_userappl "vsw", padded
            0, 0, 0, 0,                                   // end of options
            40, 0, 0, 0,
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn an_interface_block_names_the_port_and_says_nanoseconds() {
        let mut out = Vec::new();
        interface(&mut out, "p1", "in", 2048);
        #[rustfmt::skip]
        let want: &[u8] = &[
            1, 0, 0, 0, 48, 0, 0, 0,
            1, 0, 0, 0, 0, 8, 0, 0,                       // Ethernet, reserved, snaplen 2048
            2, 0, 2, 0, b'p', b'1', 0, 0,                 // if_name
            3, 0, 2, 0, b'i', b'n', 0, 0,                 // if_description
            9, 0, 1, 0, 9, 0, 0, 0,                       // if_tsresol: 10^-9
            0, 0, 0, 0,
            48, 0, 0, 0,
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn a_packet_block_carries_time_data_direction_and_comment() {
        let mut out = Vec::new();
        packet(&mut out, 1, 0x1_0000_0002, &[0xaa; 5], 60, Direction::Outbound, Some("drop: runt"));
        #[rustfmt::skip]
        let want: &[u8] = &[
            6, 0, 0, 0, 68, 0, 0, 0,
            1, 0, 0, 0,                                   // interface 1
            1, 0, 0, 0, 2, 0, 0, 0,                       // timestamp high, low
            5, 0, 0, 0, 60, 0, 0, 0,                      // captured, original length
            0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0, 0, 0,        // data, padded
            2, 0, 4, 0, 2, 0, 0, 0,                       // epb_flags: outbound
            1, 0, 10, 0, b'd', b'r', b'o', b'p', b':', b' ', b'r', b'u', b'n', b't', 0, 0, // comment
            0, 0, 0, 0,
            68, 0, 0, 0,
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn what_is_written_reads_back() {
        let mut out = Vec::new();
        section_header(&mut out, "vswitchd");
        interface(&mut out, "p1", "after ingress VLAN translation", 2048);
        packet(&mut out, 0, 42, &[1, 2, 3], 3, Direction::Inbound, None);
        statistics(&mut out, 0, 43, 7);
        let blocks = read(&out).unwrap();
        assert_eq!(blocks.len(), 4);
        assert_eq!(
            blocks[1],
            Block::Interface { name: "p1".into(), description: "after ingress VLAN translation".into() }
        );
        assert_eq!(
            blocks[2],
            Block::Packet {
                interface: 0,
                nanos: 42,
                data: vec![1, 2, 3],
                direction: Some(Direction::Inbound),
                comment: None
            }
        );
        assert_eq!(blocks[3], Block::Statistics { interface: 0, dropped: Some(7) });
        assert_eq!(read(&out[..out.len() - 1]), None);
    }
}
