//! Zero-copy views over packet bytes.
//!
//! Conventions, the same in every view:
//! - `View<B>` wraps any byte container; getters need `B: AsRef<[u8]>`, setters also
//!   `B: AsMut<[u8]>`.
//! - `new_unchecked` wraps without checking; `new_checked` calls `check_len` and wraps.
//!   After `check_len` succeeds, no accessor panics.
//! - Field offsets live only in each module's private `field` module.
//! - Numeric protocol fields are lossless enums with an `Unknown(raw)` arm, so an
//!   unrecognised value is forwarded unchanged.

pub mod arp;
pub mod bpdu;
pub mod checksum;
pub mod ethernet;
pub mod flow;
pub mod icmp;
pub mod igmp;
pub mod l4;
pub mod lacp;
pub mod mld;
pub mod vlan;
pub mod vnet_hdr;
pub mod vxlan;

pub use ethernet::{EtherType, Frame as EthernetFrame, MacAddr};
pub use vlan::Tag as VlanTag;
pub use vnet_hdr::VnetHdr;

/// Why bytes could not be viewed as a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header it must hold.
    #[error("truncated: {len} bytes, at least {need} needed")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header needs.
        need: usize,
    },
}
