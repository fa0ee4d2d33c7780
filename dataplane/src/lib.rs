//! vswitchd's dataplane: everything that touches Ethernet frames, and nothing that configures the kernel.
//!
//! Layers, bottom up:
//!
//! - [`wire`]: zero-copy views over frame bytes with checked constructors. After a view's
//!   `new_checked` succeeds, no accessor panics.
//! - [`fdb`], [`bridge`]: the switching logic as plain data. No sockets, no clock: every
//!   function that needs the time takes `now` ([`time::Instant`]) as an argument, and every
//!   table exposes `run(now)` and `next_deadline()` so the event loop can sleep exactly as long
//!   as it may.
//! - [`port`]: the [`port::Port`] trait and its kinds (TAP over `/dev/net/tun`, an in-process
//!   datagram pair for tests). Ports move bytes; they do not decide anything.
//! - [`switch`]: the mio event loop that reads frames from ready ports in bounded batches, asks
//!   the bridge where they go, and writes them out. It is the only reader of the real clock.
//!
//! Invariants kept on the forwarding path: no allocation, no lock, no log line per frame;
//! every frame that is not delivered is counted under a named [`verdict::DropReason`].
//! `unsafe` code lives only in [`sys`].

pub mod bond;
pub mod bridge;
pub mod busy_poll;
pub mod capture;
pub mod fdb;
pub mod fdb_sync;
pub mod fuzzing;
pub mod gro;
pub mod gso;
pub mod handoff;
pub mod id;
pub mod mdb;
pub mod metrics;
pub mod neigh;
pub mod port;
pub mod port_modes;
pub mod stp;
pub mod switch;
pub mod sys;
pub mod time;
pub mod trace;
pub mod tunnel_mtu;
pub mod verdict;
pub mod vlan;
pub mod vxlan;
pub mod wire;

pub use id::{PortId, VlanId};
pub use time::Instant;
