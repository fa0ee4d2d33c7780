//! Small identifiers shared by every layer of the dataplane.

use std::fmt;

/// A bridge port, as the bridge and the FDB see it: an index the tables never dereference.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

impl PortId {
    /// The port's position in per-port tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// An 802.1Q VLAN identifier (0..=4095). VLAN 0 is the bridge's single broadcast domain for
/// ports that carry no VLAN configuration.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VlanId(u16);

impl VlanId {
    /// The domain of ports without VLAN configuration.
    pub const NONE: VlanId = VlanId(0);
    /// The largest valid identifier.
    pub const MAX: u16 = 4095;

    /// Returns the VLAN for `vid`, or `None` if it does not fit in 12 bits.
    pub fn new(vid: u16) -> Option<VlanId> {
        (vid <= Self::MAX).then_some(VlanId(vid))
    }

    /// The raw 12-bit identifier.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_ids_are_twelve_bits() {
        assert_eq!(VlanId::new(0), Some(VlanId::NONE));
        assert_eq!(VlanId::new(4095).map(VlanId::get), Some(4095));
        assert_eq!(VlanId::new(4096), None);
    }
}
