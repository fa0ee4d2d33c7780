//! vswitchd's control plane: it reads the topology file, creates and removes the kernel-side
//! plumbing over netlink, serves the control socket, and hands ports to the dataplane. It never
//! touches frames.
//!
//! Two separations run through it: messages are *built* by pure functions and *executed* by a
//! socket ([`netlink`]), and a topology is turned into a *plan* of steps that is then *applied*
//! with an undo log ([`plumbing`]), so `vswitchd --check` prints exactly what a run would do and
//! a failure halfway through undoes exactly what was done. What is created is written down
//! first ([`state`]), so a restart after a kill removes what the killed instance left.

pub mod attach;
pub mod capture;
pub mod cni;
pub mod ctl;
pub mod daemon;
pub mod dot;
pub mod evpn;
pub mod fuzzing;
pub mod live;
pub mod metrics_http;
pub mod metrics_text;
pub mod monitor;
pub mod netlink;
pub mod netns;
pub mod pcapng;
pub mod plumbing;
pub mod running;
pub mod services;
pub mod state;
pub mod stdout;
pub mod takeover;
pub mod top;
pub mod topology;
pub mod topology_edit;
pub mod trace_frame;
pub mod vhost_user;
